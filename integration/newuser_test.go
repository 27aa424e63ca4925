package integration

import (
	"bytes"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/skrfs/skrfs/internal/devstack"
	"github.com/skrfs/skrfs/keyrelease"
)

// fuseMountsAt counts the FUSE mounts at dir.
func fuseMountsAt(dir string) int {
	b, _ := os.ReadFile("/proc/self/mounts")
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[1] == dir && strings.HasPrefix(f[2], "fuse") {
			n++
		}
	}
	return n
}

// TestCLIFailsEarlyWithOneLine: what a new user tripped over on the command
// line, against the devstack: key create refuses keys that upload or the
// release would refuse later; upload names the way for an oct key URL;
// explain reports a key missing from the vault in one line; usage hints
// name the full command; a failed mount says what to do and leaves nothing
// mounted.
func TestCLIFailsEarlyWithOneLine(t *testing.T) {
	requireFUSE(t)
	s := startDevstack(t)
	env := devstackEnv(t, s)
	cfg := filepath.Join(s.Dir, devstack.ConfigFile)
	policy := filepath.Join(s.Dir, "cce-policy.rego")

	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"P-521", []string{"key", "create", "--vault", s.VaultURL, "--name", "ec521", "--kty", "EC-HSM", "--curve", "P-521", "--cce-policy", policy, "--authority", s.MAAURL},
			2, []string{"--curve P-521: skrfs objects can be sealed for P-256 and P-384 keys only", "Run 'skrfs key create --help' for usage."}},
		{"software RSA", []string{"key", "create", "--vault", s.VaultURL, "--name", "soft", "--kty", "RSA", "--cce-policy", policy, "--authority", s.MAAURL},
			2, []string{"Key Vault releases only HSM-backed exportable keys", "use RSA-HSM"}},
		{"oct key URL", []string{"upload", "--key", s.VaultURL + "/keys/demo-oct", "--to", t.TempDir(), filepath.Join(s.Dir, "plain", "data", "hello.txt")},
			12, []string{"oct keys cannot be fetched; pass the key file"}},
	} {
		r := runEnv(t, env, tc.args...)
		for _, w := range tc.want {
			if r.code != tc.code || !strings.Contains(r.stderr, w) {
				t.Errorf("%s: exit %d, want %d and %q:\n%s%s", tc.name, r.code, tc.code, w, r.stdout, r.stderr)
			}
		}
	}
	// The refused keys were not created.
	for _, name := range []string{"ec521", "soft"} {
		if r := runEnv(t, env, "key", "release", "--config", configWithKey(t, s, name), name); !strings.Contains(r.stderr, "not found") {
			t.Errorf("refused key %s exists in the vault: %d %s", name, r.code, r.stderr)
		}
	}

	// explain for a configured key that the vault does not have.
	r := runEnv(t, env, "explain", "--config", configWithKey(t, s, "ghost"), "ghost")
	var errLines []string // without the JSON log lines
	for _, l := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		if !strings.HasPrefix(l, "{") {
			errLines = append(errLines, l)
		}
	}
	if r.code == 0 || len(errLines) != 1 || !strings.HasPrefix(errLines[0], "skrfs: ") || !strings.Contains(r.stderr, "key not found") ||
		!strings.Contains(r.stderr, "HTTP 404") || strings.Contains(r.stderr, "RESPONSE") || strings.Contains(r.stderr, "----") {
		t.Errorf("explain of a missing key: exit %d, want one line:\n%s", r.code, r.stderr)
	}

	// Mounts that cannot work.
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	for _, tc := range []struct{ mnt, want string }{
		{file, "the mountpoint is not a directory"},
		{filepath.Join(dir, "missing"), "the mountpoint does not exist: create it"},
	} {
		r := runEnv(t, env, "mount", "--config", cfg, tc.mnt)
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("mount at %s: exit %d, want %q:\n%s", tc.mnt, r.code, tc.want, r.stderr)
		}
		if n := fuseMountsAt(tc.mnt); n != 0 {
			syscall.Unmount(tc.mnt, syscall.MNT_DETACH)
			t.Errorf("the failed mount at %s left %d mounts", tc.mnt, n)
		}
	}
}

// configWithKey writes the devstack's configuration with one more key,
// name, at the devstack's vault.
func configWithKey(t *testing.T, s *devstack.Stack, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.Dir, devstack.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	out := strings.Replace(string(b), "keys:\n", "keys:\n  - name: "+name+"\n    ref: "+s.VaultURL+"/keys/"+name+"\n", 1)
	p := filepath.Join(t.TempDir(), "skrfs.yaml")
	if err := os.WriteFile(p, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestKeyFilesForNewUsers: through the real daemon with its key cache and
// --fuse-debug: a key file's size shows right after its first read; an
// oct key's pub.pem vanishes once the key is known to be oct; reading the
// denied key logs one warning, not two; no key byte reaches the log.
func TestKeyFilesForNewUsers(t *testing.T) {
	mnt, d := mountDevstack(t, nil, "--log-level", "info", "--fuse-debug")
	keys := filepath.Join(mnt, "keys")

	// `head -c 64 keys/demo-oct; stat -c %s keys/demo-oct`
	p := filepath.Join(keys, "demo-oct")
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, p, 0, unix.STATX_SIZE, &stx); err != nil || stx.Size != 0 {
		t.Fatalf("size before the first release: %d, %v", stx.Size, err)
	}
	fd, err := syscall.Open(p, syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := syscall.Read(fd, buf)
	syscall.Close(fd)
	if err := unix.Statx(unix.AT_FDCWD, p, 0, unix.STATX_SIZE, &stx); err != nil || stx.Size != 32 || n != 32 {
		t.Errorf("read %d bytes, then stat size %d (%v), want 32", n, stx.Size, err)
	}
	oct := bytes.Clone(buf[:32])

	// demo-oct is oct: its pub.pem is gone; demo-rsa's stays.
	if _, err := os.Stat(filepath.Join(keys, "demo-oct.pub.pem")); errnoOf(err) != syscall.ENOENT {
		t.Errorf("demo-oct.pub.pem after a release: %v, want ENOENT", err)
	}
	ents, _ := os.ReadDir(keys)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Contains(strings.Join(names, " "), "demo-oct.pub.pem") || !strings.Contains(strings.Join(names, " "), "demo-rsa.pub.pem") {
		t.Errorf("keys/ after the release of demo-oct: %v", names)
	}
	rsaPEM, err := os.ReadFile(filepath.Join(keys, "demo-rsa"))
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := keyrelease.ParseKey(rsaPEM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(filepath.Join(keys, "denied")); errnoOf(err) != syscall.EACCES {
		t.Fatalf("denied: %v, want EACCES", err)
	}
	d.stop(t)
	logs := d.out.Bytes()
	var warnings int
	for _, line := range strings.Split(string(logs), "\n") {
		if strings.Contains(line, "denied") && strings.Contains(line, `"level":"warn"`) {
			warnings++
		}
	}
	if warnings != 1 {
		t.Errorf("reading the denied key logged %d warnings, want 1", warnings)
	}
	if !bytes.Contains(logs, []byte("rx ")) || !bytes.Contains(logs, []byte("READ")) {
		t.Fatalf("no FUSE debug output; the check below would be empty:\n%.2000s", logs)
	}
	q := strconv.Quote(string(oct[:8]))
	jwkRSA, err := rsaKey.Marshal(keyrelease.FormatJWK)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range [][]byte{oct[:8], []byte(hex.EncodeToString(oct[:8])), []byte(q[:len(q)-1]), rsaPEM[28:60], jwkRSA[len(jwkRSA)-40:]} {
		if bytes.Contains(logs, secret) {
			t.Errorf("key bytes %q in the daemon's log", secret)
		}
	}
}

// TestServeIsHardened: the sidecar API daemon holds released keys, so it
// runs with no core dumps and locked memory, like the mount. It starts
// with a core limit set (ulimit -c), which it must drop.
func TestServeIsHardened(t *testing.T) {
	s := startDevstack(t)
	ready := filepath.Join(t.TempDir(), "ready")
	d := &daemonProc{out: &syncBuf{}, exited: make(chan error, 1)}
	d.cmd = exec.Command("sh", "-c", `ulimit -c 1024 && exec "$0" "$@"`, skrfsBin(t), "serve",
		"--config", filepath.Join(s.Dir, devstack.ConfigFile), "--listen", "127.0.0.1:0", "--ready-file", ready)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.exited <- d.cmd.Wait() }()
	t.Cleanup(func() { d.cmd.Process.Kill() })
	waitReady(t, ready, d)
	pid := d.cmd.Process.Pid
	limits, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/limits")
	if !strings.Contains(string(limits), "Max core file size        0") {
		t.Errorf("skrfs serve can dump core:\n%s", limits)
	}
	status, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if !strings.Contains(string(status), "VmLck:") || strings.Contains(string(status), "VmLck:\t       0 kB") {
		t.Errorf("skrfs serve locked no memory:\n%s", status)
	}
	d.stop(t)
}
