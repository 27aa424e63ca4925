package integration

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/skrfs/skrfs/keyrelease"
)

// keyView is one key file of the devstack's mount, read and parsed.
type keyView struct {
	raw []byte
	key *keyrelease.Key
}

// readKeyViews reads and parses the raw, PEM and JWK views of the
// devstack's demo keys (each read is an open of a key file).
func readKeyViews(t *testing.T, mnt string) []keyView {
	t.Helper()
	var views []keyView
	for _, f := range []string{"demo-rsa", "demo-rsa.jwk", "demo-oct", "demo-oct.jwk"} {
		b, err := os.ReadFile(filepath.Join(mnt, "keys", f))
		if err != nil {
			t.Fatal(err)
		}
		k, err := keyrelease.ParseKey(b)
		if err != nil {
			t.Fatal(err)
		}
		views = append(views, keyView{b, k})
	}
	return views
}

// secretForms returns the forms in which key material or plaintext could
// land in a file: raw oct bytes and their hex/base64 forms, PEM body lines
// of the key files, and windows of every plaintext file.
func secretForms(t *testing.T, mnt string, plain map[string][]byte) [][]byte {
	t.Helper()
	var secrets [][]byte
	for _, v := range readKeyViews(t, mnt) {
		k, b := v.key, v.raw
		if k.Oct != nil {
			secrets = append(secrets, bytes.Clone(k.Oct), []byte(hex.EncodeToString(k.Oct)),
				[]byte(base64.StdEncoding.EncodeToString(k.Oct)), []byte(base64.RawURLEncoding.EncodeToString(k.Oct)))
		}
		for _, line := range strings.Split(string(b), "\n") {
			if len(line) > 40 && !strings.HasPrefix(line, "-----") {
				secrets = append(secrets, []byte(line))
			}
		}
	}
	for _, b := range plain {
		for off := 0; off+48 <= len(b); off += max(len(b)/16, 48) {
			secrets = append(secrets, b[off:off+48])
		}
	}
	return secrets
}

// scanForSecrets returns the files under roots that contain any secret.
func scanForSecrets(t *testing.T, secrets [][]byte, roots ...string) (hits []string, scanned int) {
	t.Helper()
	for _, root := range roots {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			scanned++
			for _, s := range secrets {
				if bytes.Contains(b, s) {
					hits = append(hits, p)
					break
				}
			}
			return nil
		})
	}
	return hits, scanned
}

func shmEntries() map[string]bool {
	es, _ := os.ReadDir("/dev/shm")
	m := map[string]bool{}
	for _, e := range es {
		m[e.Name()] = true
	}
	return m
}

// TestNoSecretsOnDisk: a mount session in which every key file and every
// object was read leaves no key material and no plaintext in any file of
// the daemon's temporary, home, cache, state and runtime directories
// (redirected to fresh directories), the configuration directory, the
// mountpoint once unmounted, or /dev/shm. (The devstack's own directory is
// the "cloud" side and keeps its vault state and the reference plaintext
// by design; it is not scanned.)
func TestNoSecretsOnDisk(t *testing.T) {
	requireFUSE(t)
	s := startDevstack(t)
	root := t.TempDir()
	env := os.Environ()
	for v, dir := range map[string]string{"TMPDIR": "tmp", "HOME": "home", "XDG_CACHE_HOME": "cache",
		"XDG_STATE_HOME": "state", "XDG_RUNTIME_DIR": "runtime", "XDG_CONFIG_HOME": "config"} {
		p := filepath.Join(root, dir)
		os.Mkdir(p, 0o700)
		env = append(env, v+"="+p)
	}
	mnt := filepath.Join(root, "mnt")
	os.Mkdir(mnt, 0o755)
	cfg := configWith(t, s, "")
	shm0 := shmEntries()
	d := mountDaemonAt(t, cfg, mnt, env)

	plain := map[string][]byte{}
	for _, name := range []string{"hello.txt", "docs/readme.md", "nested/deeper/numbers.csv", "random-64m.bin"} {
		want, err := os.ReadFile(filepath.Join(s.Dir, "plain", "data", filepath.FromSlash(name)))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(mnt, "data", filepath.FromSlash(name)))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read %s through the mount: %v (or wrong bytes)", name, err)
		}
		plain[name] = want
	}
	secrets := secretForms(t, mnt, plain)

	d.cmd.Process.Signal(syscall.SIGTERM)
	exit := <-d.waitExit
	d.waitExit <- exit // for the cleanup of mountDaemonAt
	if isMounted(mnt) {
		t.Fatal("still mounted after the daemon exited")
	}

	// The scanner finds what it looks for.
	canary := filepath.Join(t.TempDir(), "canary")
	os.WriteFile(canary, append([]byte("x"), secrets[len(secrets)-1]...), 0o600)
	if hits, _ := scanForSecrets(t, secrets, canary); len(hits) != 1 {
		t.Fatal("the scanner missed a planted secret")
	}
	var newShm []string
	for name := range shmEntries() {
		if !shm0[name] {
			newShm = append(newShm, filepath.Join("/dev/shm", name))
		}
	}
	hits, scanned := scanForSecrets(t, secrets, append([]string{root, filepath.Dir(cfg)}, newShm...)...)
	if scanned == 0 {
		t.Fatal("no file scanned: the check would be empty")
	}
	if len(hits) > 0 {
		t.Fatalf("key material or plaintext on disk after the session: %v", hits)
	}
}

// TestOtherUsersCannotReadKeys: another user (uid 65534) cannot read key
// files or objects unless the configuration grants it: allow_other is off
// by default (the kernel refuses other users), and with allow_other on
// the files' owner and modes decide; with mount.uid 65534 the same user
// can read them (so the refusals are not an artefact of the test).
func TestOtherUsersCannotReadKeys(t *testing.T) {
	requireFUSE(t)
	s := startDevstack(t)
	base, err := os.MkdirTemp("", "skrfs-perm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755) // other users must reach the mountpoint
	for i, tc := range []struct {
		name  string
		extra string
		read  bool
	}{
		{"default configuration", "", false},
		{"allow_other, files owned by root", "mount:\n  allow_other: true\n", false},
		{"allow_other, files owned by root and group-readable", "mount:\n  allow_other: true\n  file_mode: \"0440\"\n  dir_mode: \"0550\"\n", false},
		{"allow_other, files owned by uid 65534", "mount:\n  allow_other: true\n  uid: 65534\n  gid: 65534\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt := filepath.Join(base, "mnt"+string(rune('a'+i)))
			os.Mkdir(mnt, 0o755)
			d := mountDaemonAt(t, configWith(t, s, tc.extra), mnt, nil)
			for _, p := range []string{"keys/demo-oct", "keys/demo-rsa", "data/hello.txt"} {
				want, err := os.ReadFile(filepath.Join(d.mnt, p))
				if err != nil {
					t.Fatalf("root reading %s: %v", p, err)
				}
				cmd := exec.Command("cat", filepath.Join(d.mnt, p))
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				got, err := cmd.Output()
				switch {
				case tc.read && (err != nil || !bytes.Equal(got, want)):
					t.Fatalf("uid 65534 reading %s: %v %s (or other bytes)", p, err, stderr.String())
				case !tc.read && err == nil:
					t.Fatalf("uid 65534 read %s (%d bytes)", p, len(got))
				case !tc.read && !strings.Contains(stderr.String(), "Permission denied"):
					t.Fatalf("uid 65534 reading %s: %v %s, want Permission denied", p, err, stderr.String())
				}
			}
		})
	}
}
