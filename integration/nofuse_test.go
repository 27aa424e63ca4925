package integration

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skrfs/skrfs/internal/devstack"
)

// plainSums returns "sha256  ./path" lines for every file under dir, as
// `sha256sum` prints them when run from dir.
func plainSums(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if d.IsDir() {
			return nil
		}
		f, _ := os.Open(p)
		h := sha256.New()
		io.Copy(h, f)
		f.Close()
		rel, _ := filepath.Rel(dir, p)
		out = append(out, hex.EncodeToString(h.Sum(nil))+"  ./"+rel)
		return nil
	})
	sort.Strings(out)
	return out
}

// sortedLines returns the lines of file p, sorted, joined by newlines.
func sortedLines(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	l := strings.Split(strings.TrimSpace(string(b)), "\n")
	sort.Strings(l)
	return strings.Join(l, "\n")
}

func shmDir(t *testing.T) string {
	t.Helper()
	parent, err := os.MkdirTemp("/dev/shm", "skrfs-test-")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	return filepath.Join(parent, "out")
}

// sumScript is the legacy program: sha256sum over the delivered dataset,
// with its output in $1.
const sumScript = `cd "$SKRFS_DIR/data" && find . -type f -print0 | sort -z | xargs -0 sha256sum > "$1" && ls "$SKRFS_DIR/keys" >> "$1.keys"`

// TestNoFuseOnSNPDevstack: FUSE-free delivery on the SEV-SNP devstack:
// `skrfs fetch` delivers the mount's layout; `skrfs run --no-fuse` lets an
// unmodified program (sha256sum) read the files and wipes DIR when it
// exits, with its exit status; --exec replaces skrfs with the program.
func TestNoFuseOnSNPDevstack(t *testing.T) {
	s := startDevstack(t)
	cfg := filepath.Join(s.Dir, devstack.ConfigFile)
	env := devstackEnv(t, s)
	want := plainSums(t, filepath.Join(s.Dir, "plain", "data"))

	t.Run("fetch", func(t *testing.T) {
		dir := shmDir(t)
		r := runEnv(t, env, "fetch", "--config", cfg, dir)
		if r.code != 0 {
			t.Fatalf("fetch: %d\n%s", r.code, r.stderr)
		}
		if got := plainSums(t, filepath.Join(dir, "data")); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("delivered files differ from the originals:\n%v\nwant\n%v", got, want)
		}
		for _, k := range []string{"demo-rsa", "demo-rsa.jwk", "demo-rsa.pub.pem", "demo-oct", "demo-oct.jwk"} {
			if fi, err := os.Stat(filepath.Join(dir, "keys", k)); err != nil || fi.Mode().Perm() != 0o400 {
				t.Errorf("keys/%s: %v", k, err)
			}
		}
		// The mount answers EACCES for keys/denied; fetch leaves it out and says so.
		if _, err := os.Stat(filepath.Join(dir, "keys", "denied")); !errors.Is(err, os.ErrNotExist) || !strings.Contains(r.stderr, "key denied: release denied") {
			t.Errorf("keys/denied: %v\n%s", err, r.stderr)
		}
		// DIR must be empty: nothing is mixed with or wiped from a non-empty DIR.
		if r := runEnv(t, env, "fetch", "--config", cfg, dir); r.code != 2 || !strings.Contains(r.stderr, "not empty") {
			t.Errorf("fetch into a non-empty DIR: %d %s", r.code, r.stderr)
		}
	})

	t.Run("run child mode", func(t *testing.T) {
		dir := shmDir(t)
		out := filepath.Join(t.TempDir(), "sums")
		r := runEnv(t, env, "run", "--no-fuse", "--config", cfg, "--dir", dir, "--", "sh", "-c", sumScript+"; exit 7", "sh", out)
		if r.code != 7 {
			t.Fatalf("run --no-fuse: exit %d, want the program's 7\n%s", r.code, r.stderr)
		}
		if got := sortedLines(t, out); got != strings.Join(want, "\n") {
			t.Fatalf("sha256sum in the program:\n%s\nwant\n%s", got, strings.Join(want, "\n"))
		}
		if keys, _ := os.ReadFile(out + ".keys"); !strings.Contains(string(keys), "demo-oct.jwk") {
			t.Errorf("keys seen by the program: %q", keys)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("DIR after the program exited: %v", err)
		}
	})

	t.Run("run default dir under /dev/shm", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "dir")
		r := runEnv(t, env, "run", "--no-fuse", "--config", cfg, "--", "sh", "-c", `echo "$SKRFS_DIR" > "$1"; test -s "$SKRFS_DIR/data/docs/readme.md"`, "sh", out)
		b, _ := os.ReadFile(out)
		dir := strings.TrimSpace(string(b))
		if r.code != 0 || !strings.HasPrefix(dir, "/dev/shm/skrfs-") {
			t.Fatalf("exit %d, SKRFS_DIR %q\n%s", r.code, dir, r.stderr)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s left behind: %v", dir, err)
		}
	})

	t.Run("run exec mode", func(t *testing.T) {
		dir := shmDir(t)
		out := filepath.Join(t.TempDir(), "sums")
		cmd := exec.Command(skrfsBin(t), "run", "--no-fuse", "--exec", "--config", cfg, "--dir", dir, "--",
			"sh", "-c", sumScript+` && echo $$ > "$1.pid"`, "sh", out)
		cmd.Env = env
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("run --no-fuse --exec: %v\n%s", err, b)
		}
		if got := sortedLines(t, out); got != strings.Join(want, "\n") {
			t.Fatalf("sha256sum in the program:\n%s", got)
		}
		// execve: the program ran as the process skrfs was.
		pid, _ := os.ReadFile(out + ".pid")
		if strings.TrimSpace(string(pid)) != strconv.Itoa(cmd.Process.Pid) {
			t.Fatalf("program pid %s, skrfs pid %d: not exec'd", pid, cmd.Process.Pid)
		}
		if !strings.Contains(string(b), "nothing will wipe the delivered files") {
			t.Errorf("no warning that exec mode leaves the files:\n%s", b)
		}
	})

	t.Run("SIGTERM wipes", func(t *testing.T) {
		dir := shmDir(t)
		ready := filepath.Join(t.TempDir(), "ready")
		cmd := exec.Command(skrfsBin(t), "run", "--no-fuse", "--config", cfg, "--dir", dir, "--",
			"sh", "-c", `trap 'exit 0' TERM; touch "$1"; while :; do sleep 0.1; done`, "sh", ready)
		cmd.Env = env
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 100)
		go func() {
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			if _, err := os.Stat(ready); err == nil {
				break
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatal("the program never started")
			}
			time.Sleep(50 * time.Millisecond)
		}
		if _, err := os.Stat(filepath.Join(dir, "data", "docs", "readme.md")); err != nil {
			t.Fatalf("not delivered while the program runs: %v", err)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		err := cmd.Wait()
		for range lines {
		}
		if err != nil {
			t.Fatalf("skrfs after SIGTERM: %v (the program exits 0 on TERM)", err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("DIR after SIGTERM: %v", err)
		}
	})

	t.Run("no secrets in logs or left behind", func(t *testing.T) {
		// Key material and plaintext, in every form, from a fetch with
		// debug logging (the layout is the mount's, so the mount's
		// hygiene helpers apply).
		dir := shmDir(t)
		r := runEnv(t, env, "--log-level", "debug", "fetch", "--config", cfg, dir)
		if r.code != 0 || !strings.Contains(r.stderr, "dataset delivered") {
			t.Fatalf("fetch: %d\n%s", r.code, r.stderr)
		}
		plain := map[string][]byte{}
		for _, f := range []string{"hello.txt", "docs/readme.md", "nested/deeper/numbers.csv"} {
			b, _ := os.ReadFile(filepath.Join(dir, "data", filepath.FromSlash(f)))
			plain[f] = b
		}
		secrets := secretForms(t, dir, plain)
		keysOnly := secretForms(t, dir, nil)
		for _, sec := range secrets {
			if len(sec) >= 16 && strings.Contains(r.stderr, string(sec)) {
				t.Fatalf("secret material %.20q... in the logs", sec)
			}
		}
		// The same keys (one devstack) through run --no-fuse, delivering to
		// its default DIR under /dev/shm: once it has exited, no file in
		// /dev/shm holds them.
		r = runEnv(t, env, "--log-level", "debug", "run", "--no-fuse", "--config", cfg, "--", "cat", "/dev/null")
		if r.code != 0 {
			t.Fatalf("run --no-fuse: %d\n%s", r.code, r.stderr)
		}
		for _, sec := range secrets {
			if len(sec) >= 16 && strings.Contains(r.stderr, string(sec)) {
				t.Fatalf("secret material %.20q... in the logs of run --no-fuse", sec)
			}
		}
		os.RemoveAll(filepath.Dir(dir)) // our own fetch
		if hits, n := scanForSecrets(t, keysOnly, "/dev/shm"); len(hits) > 0 {
			t.Fatalf("key material left in %v (%d files scanned)", hits, n)
		}
	})

	t.Run("tampered object", func(t *testing.T) {
		// Runs last but one: it breaks the devstack's copy of hello.txt.
		obj := filepath.Join(s.Dir, "store", "data", "hello.txt")
		b, err := os.ReadFile(obj)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)-5] ^= 1
		os.WriteFile(obj, b, 0o644)
		dir := shmDir(t)
		ran := filepath.Join(t.TempDir(), "ran")
		r := runEnv(t, env, "run", "--no-fuse", "--config", cfg, "--dir", dir, "--", "touch", ran)
		if r.code != 11 || !strings.Contains(r.stderr, "hello.txt") {
			t.Fatalf("tampered object: exit %d, want 11 (authentication failed)\n%s", r.code, r.stderr)
		}
		if _, err := os.Stat(ran); err == nil {
			t.Fatal("the program ran although the delivery failed")
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("DIR after a failed delivery: %v", err)
		}
		b[len(b)-5] ^= 1
		os.WriteFile(obj, b, 0o644)
	})

	t.Run("refusals", func(t *testing.T) {
		disk := filepath.Join(t.TempDir(), "out") // the harness's TMPDIR is ext4
		if r := runEnv(t, env, "fetch", "--config", cfg, disk); r.code != 2 || !strings.Contains(r.stderr, "not tmpfs or ramfs") {
			t.Errorf("disk-backed DIR: %d %s", r.code, r.stderr)
		}
		if _, err := os.Stat(disk); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("refused DIR was created: %v", err)
		}
		if r := runEnv(t, env, "fetch", "--config", cfg, "--allow-disk", disk); r.code != 0 {
			t.Errorf("--allow-disk: %d %s", r.code, r.stderr)
		}
		if r := runEnv(t, env, "fetch", "--config", cfg, "--max-size", "1MiB", shmDir(t)); r.code == 0 || !strings.Contains(r.stderr, "size limit exceeded") {
			t.Errorf("--max-size: %d %s", r.code, r.stderr)
		}
		// Inside an enclave only the configured in-enclave tmpfs is trusted.
		enc := append(append([]string(nil), env...), "SKRFS_ASSUME_ENCLAVE=1")
		if r := runEnv(t, enc, "fetch", "--config", cfg, shmDir(t)); r.code != 2 || !strings.Contains(r.stderr, "delivery.enclave_dir is not configured") {
			t.Errorf("enclave without enclave_dir: %d %s", r.code, r.stderr)
		}
		encDir := shmDir(t)
		b, _ := os.ReadFile(cfg)
		cfg2 := filepath.Join(t.TempDir(), "skrfs.yaml")
		os.WriteFile(cfg2, append(b, []byte("delivery:\n  enclave_dir: "+encDir+"\n")...), 0o600)
		if r := runEnv(t, enc, "fetch", "--config", cfg2, shmDir(t)); r.code != 2 || !strings.Contains(r.stderr, "is not "+encDir) {
			t.Errorf("enclave, other DIR: %d %s", r.code, r.stderr)
		}
		out := filepath.Join(t.TempDir(), "dir")
		if r := runEnv(t, enc, "run", "--no-fuse", "--config", cfg2, "--", "sh", "-c", `echo "$SKRFS_DIR" > "$1"`, "sh", out); r.code != 0 {
			t.Errorf("enclave, default DIR: %d %s", r.code, r.stderr)
		}
		if b, _ := os.ReadFile(out); strings.TrimSpace(string(b)) != encDir {
			t.Errorf("enclave default DIR %q, want %s", b, encDir)
		}
		if r := runEnv(t, env, "run", "--config", cfg, "--exec", "--", "true"); r.code != 2 {
			t.Errorf("--exec without --no-fuse: %d %s", r.code, r.stderr)
		}
	})
}
