package examples_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// propagationScript plays the sidecar pattern of
// examples/aks-kata-cc/sidecar.yaml with Linux mount namespaces, the way a
// container runtime sets up volumes: in a private "node" namespace the
// emptyDir is a shared mount; the skrfs "container" gets it as an rshared
// bind (mountPropagation: Bidirectional) and mounts skrfs on it, at the
// volume's root as the manifest does; the "app" container gets it as an
// rslave bind (HostToContainer) and must see the key file; a third
// container with a private bind (mountPropagation: None) must not.
const propagationScript = `set -euo pipefail
mkdir -p "$VOL" "$SIDECAR" "$APP" "$NONE"
mount --bind "$VOL" "$VOL"
mount --make-shared "$VOL"
# The app containers start first, as nothing orders containers in a pod.
unshare --mount --propagation unchanged bash -c '
  mount --bind "$VOL" "$APP"; mount --make-rslave "$APP"
  for i in $(seq 600); do [ -e "$APP/keys/kafka-demo" ] && break; sleep 0.05; done
  head -1 "$APP/keys/kafka-demo"' >"$WORK/app.out" 2>&1 &
app=$!
unshare --mount --propagation unchanged bash -c '
  mount --bind "$VOL" "$NONE"; mount --make-private "$NONE"
  for i in $(seq 600); do [ -e "$WORK/ready" ] && break; sleep 0.05; done
  sleep 0.2
  ls -A "$NONE"; echo "none: end of listing"' >"$WORK/none.out" 2>&1 &
none=$!
unshare --mount --propagation unchanged bash -c '
  mount --bind "$VOL" "$SIDECAR"; mount --make-rshared "$SIDECAR"
  exec "$SKRFS" mount --config "$CFG" --ready-file "$WORK/ready" "$SIDECAR"' >"$WORK/skrfs.out" 2>&1 &
sidecar=$!
rc=0
wait $app || rc=$?
wait $none || rc=$?
kill -TERM $sidecar
wait $sidecar || rc=$?
exit $rc
`

// TestSidecarMountPropagation: a skrfs mount made in the sidecar's mount
// namespace on a Bidirectional volume reaches a HostToContainer container
// and not a container without propagation. Kubernetes on kata runs the same
// kernel mechanism inside the guest; this does not prove what a given AKS
// release allows, only that the manifest's pattern is sound.
func TestSidecarMountPropagation(t *testing.T) {
	requireFUSE(t)
	work := t.TempDir()
	env, cfg := kafkaDevstack(t, work)
	env = append(env, "WORK="+work, "CFG="+cfg, "SKRFS="+bin(t, "skrfs"), "VOL="+filepath.Join(work, "vol"),
		"SIDECAR="+filepath.Join(work, "sidecar"), "APP="+filepath.Join(work, "app"), "NONE="+filepath.Join(work, "none"))
	r := runCmd(t, env, "unshare", "--mount", "--propagation", "private", "bash", "-c", propagationScript)
	read := func(name string) string { b, _ := os.ReadFile(filepath.Join(work, name)); return string(b) }
	if r.code != 0 {
		t.Fatalf("exit %d\n%s%s\napp: %s\nnone: %s\nskrfs: %s", r.code, r.stdout, r.stderr, read("app.out"), read("none.out"), read("skrfs.out"))
	}
	if got := read("app.out"); got != "-----BEGIN PRIVATE KEY-----\n" {
		t.Errorf("the HostToContainer container read %q, want the key's PEM header\nskrfs: %s", got, read("skrfs.out"))
	}
	if got := read("none.out"); got != "none: end of listing\n" {
		t.Errorf("the container without propagation saw %q, want an empty volume", got)
	}
	// Nothing leaked into the test's own mount namespace.
	if m, _ := os.ReadFile("/proc/self/mounts"); strings.Contains(string(m), work) {
		t.Errorf("a mount under %s is visible outside the test's namespace", work)
	}
}
