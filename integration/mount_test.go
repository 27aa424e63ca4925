package integration

import (
	"bytes"
	"context"
	stdcrypto "crypto"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/internal/devstack"
	"github.com/skrfs/skrfs/internal/progtest"
	"github.com/skrfs/skrfs/keyrelease"
)

// These tests run the real daemon (`skrfs mount`, `skrfs run`) as a
// subprocess against an in-process devstack, and read through a real
// kernel FUSE mount with unmodified programs.

func requireFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil || os.Geteuid() != 0 {
		t.Fatalf("real FUSE mounts need /dev/fuse and root (CI runs as root): %v", err)
	}
}

func startDevstack(t *testing.T) *devstack.Stack {
	t.Helper()
	s, err := devstack.Start(context.Background(), devstack.Options{Dir: t.TempDir(), Seed: true,
		Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// daemon is a running `skrfs mount`.
type daemon struct {
	cmd      *exec.Cmd
	mnt      string
	out      *bytes.Buffer
	waitExit chan error
}

func mountDaemon(t *testing.T, cfg string) *daemon {
	t.Helper()
	return mountDaemonAt(t, cfg, "", nil)
}

// mountDaemonAt mounts at mnt (created in a temporary directory when "")
// with the daemon's environment env (nil = the test's).
func mountDaemonAt(t *testing.T, cfg, mnt string, env []string) *daemon {
	t.Helper()
	if mnt == "" {
		mnt = filepath.Join(t.TempDir(), "mnt")
		os.Mkdir(mnt, 0o755)
	}
	ready := filepath.Join(t.TempDir(), "ready")
	d := &daemon{mnt: mnt, out: &bytes.Buffer{}}
	d.cmd = exec.Command(skrfsBin(t), "mount", "--config", cfg, "--ready-file", ready, "--log-level", "info", mnt)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	d.cmd.Env = env
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- d.cmd.Wait() }()
	// The ready file is the daemon's readiness signal; poll for it with a
	// deadline (no fixed sleeps).
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("skrfs mount exited before it was ready: %v\n%s", err, d.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("skrfs mount not ready after 30s:\n%s", d.out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	d.waitExit = exited
	t.Cleanup(func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.waitExit:
		case <-time.After(20 * time.Second):
			d.cmd.Process.Kill()
			t.Errorf("skrfs mount did not exit on SIGTERM")
		}
		if isMounted(mnt) {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
			t.Errorf("mount left behind at %s", mnt)
		}
	})
	return d
}

func isMounted(dir string) bool {
	b, _ := os.ReadFile("/proc/self/mounts")
	return strings.Contains(string(b), " "+dir+" ")
}

func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	errors.As(err, &e)
	return e
}

func fileSHA(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestMountDevstack(t *testing.T) {
	requireFUSE(t)
	s := startDevstack(t)
	d := mountDaemon(t, filepath.Join(s.Dir, devstack.ConfigFile))
	plain := filepath.Join(s.Dir, "plain", "data")

	// Listing and stat attest nothing.
	if _, err := os.ReadDir(filepath.Join(d.mnt, "keys")); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(d.mnt, "data", "random-64m.bin"))
	if err != nil || st.Size() != 64<<20 {
		t.Fatalf("stat: %v", err)
	}
	if ok, _ := s.MAA.Stats(); ok != 0 {
		t.Fatalf("listing attested %d times", ok)
	}

	t.Run("files match the originals", func(t *testing.T) {
		for _, name := range []string{"hello.txt", "docs/readme.md", "nested/deeper/numbers.csv", "random-64m.bin"} {
			if fileSHA(t, filepath.Join(d.mnt, "data", name)) != fileSHA(t, filepath.Join(plain, name)) {
				t.Fatalf("%s differs from the original", name)
			}
		}
		out, err := exec.Command("sha256sum", filepath.Join(d.mnt, "data", "random-64m.bin")).Output()
		sum := fileSHA(t, filepath.Join(plain, "random-64m.bin"))
		if err != nil || !strings.HasPrefix(string(out), fmt.Sprintf("%x", sum)) {
			t.Fatalf("sha256sum: %v %s", err, out)
		}
	})
	t.Run("a TLS server loads the released key from the mount", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(d.mnt, "keys", "demo-rsa"))
		if err != nil {
			t.Fatal(err)
		}
		k, err := keyrelease.ParseKey(b)
		if err != nil {
			t.Fatal(err)
		}
		defer k.Wipe()
		progtest.TLSHandshake(t, k.Private.(stdcrypto.Signer), filepath.Join(d.mnt, "keys", "demo-rsa"))
	})
	t.Run("python seeks and tar reads through the mount", func(t *testing.T) {
		want, _ := os.ReadFile(filepath.Join(plain, "random-64m.bin"))
		script := `import sys, hashlib
f = open(sys.argv[1], 'rb')
for off in range(0, 64 << 20, 7 << 20):
    f.seek(off + 12345)
    print(hashlib.sha256(f.read(100000)).hexdigest())`
		out, err := exec.Command("/usr/bin/python3", "-c", script, filepath.Join(d.mnt, "data", "random-64m.bin")).Output()
		if err != nil {
			t.Fatal(err)
		}
		var exp strings.Builder
		for off := 0; off < 64<<20; off += 7 << 20 {
			fmt.Fprintf(&exp, "%x\n", sha256.Sum256(want[off+12345:off+12345+100000]))
		}
		if string(out) != exp.String() {
			t.Fatal("python random reads differ")
		}
		tarOut, err := exec.Command("tar", "-C", filepath.Join(d.mnt, "data"), "-cf", "-", ".").Output()
		if err != nil || len(tarOut) < 64<<20 {
			t.Fatalf("tar of the dataset: %v, %d bytes", err, len(tarOut))
		}
	})
	t.Run("keys as files", func(t *testing.T) {
		out, err := exec.Command("openssl", "pkey", "-in", filepath.Join(d.mnt, "keys", "demo-rsa"), "-noout", "-text").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "3072 bit") {
			t.Fatalf("openssl pkey: %v\n%s", err, out)
		}
		oct, err := os.ReadFile(filepath.Join(d.mnt, "keys", "demo-oct"))
		if err != nil || len(oct) != 32 {
			t.Fatalf("demo-oct: %d bytes, %v", len(oct), err)
		}
		if _, err := os.ReadFile(filepath.Join(d.mnt, "keys", "denied")); errnoOf(err) != syscall.EACCES {
			t.Fatalf("keys/denied: %v, want EACCES", err)
		}
	})
	t.Run("32 parallel readers share one release", func(t *testing.T) {
		before := s.Vault.Stats(devstack.KeyRSA).Allowed
		var wg sync.WaitGroup
		errs := make(chan error, 32)
		for i := 0; i < 32; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				name := []string{"hello.txt", "docs/readme.md", "nested/deeper/numbers.csv"}[i%3]
				got, err := os.ReadFile(filepath.Join(d.mnt, "data", name))
				want, _ := os.ReadFile(filepath.Join(plain, name))
				if err != nil || !bytes.Equal(got, want) {
					errs <- fmt.Errorf("reader %d: %v", i, err)
				}
			}(i)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if n := s.Vault.Stats(devstack.KeyRSA).Allowed - before; n > 0 {
			t.Fatalf("%d more releases of demo-rsa; the cached key should have served every reader", n)
		}
		if s.Vault.Stats(devstack.KeyRSA).Allowed != 1 {
			var lines []string
			for _, l := range strings.Split(d.out.String(), "\n") {
				if strings.Contains(l, "released") {
					lines = append(lines, l)
				}
			}
			t.Fatalf("demo-rsa released %d times in all, want 1; the daemon's releases:\n%s", s.Vault.Stats(devstack.KeyRSA).Allowed, strings.Join(lines, "\n"))
		}
	})
}

func TestMountRefusals(t *testing.T) {
	requireFUSE(t)
	s := startDevstack(t)
	store := filepath.Join(s.Dir, "store", "data")
	plain := filepath.Join(s.Dir, "plain", "data")
	// A stored object with one byte flipped in chunk 10 (of 1024).
	obj, _ := os.ReadFile(filepath.Join(store, "random-64m.bin"))
	h, _ := crypto.ParseHeader(obj)
	chunk := int64(h.ChunkSize)
	bad := bytes.Clone(obj)
	bad[int64(h.Len())+10*(chunk+crypto.TagSize)+100] ^= 1
	os.WriteFile(filepath.Join(store, "tampered.bin"), bad, 0o644)
	// An object that names a key nobody configured (on an attacker's vault).
	evil, _ := crypto.Seal([]byte("from an attacker's vault"), bytes.Repeat([]byte{1}, 32),
		crypto.SealOptions{Name: "evil.txt", KeyRef: "https://evil.vault.azure.net/keys/demo-oct"})
	os.WriteFile(filepath.Join(store, "evil.txt"), evil, 0o644)
	// Two objects swapped.
	os.Rename(filepath.Join(store, "hello.txt"), filepath.Join(store, "swap.tmp"))
	os.Rename(filepath.Join(store, "docs", "readme.md"), filepath.Join(store, "hello.txt"))
	os.Rename(filepath.Join(store, "swap.tmp"), filepath.Join(store, "docs", "readme.md"))

	d := mountDaemon(t, filepath.Join(s.Dir, devstack.ConfigFile))
	// tampered.bin is sealed for "random-64m.bin": the name check refuses it.
	if _, err := os.Open(filepath.Join(d.mnt, "data", "tampered.bin")); errnoOf(err) != syscall.EIO {
		t.Fatalf("object sealed for another name: %v, want EIO", err)
	}
	for _, name := range []string{"hello.txt", "docs/readme.md"} {
		if _, err := os.ReadFile(filepath.Join(d.mnt, "data", name)); errnoOf(err) != syscall.EIO {
			t.Fatalf("swapped %s: %v, want EIO", name, err)
		}
	}
	if _, err := os.ReadFile(filepath.Join(d.mnt, "data", "evil.txt")); errnoOf(err) != syscall.EACCES {
		t.Fatalf("object naming an unconfigured key: %v, want EACCES", err)
	}
	// Now tamper the real object in place: reads of chunk 10 fail with EIO,
	// every other range is right.
	os.WriteFile(filepath.Join(store, "random-64m.bin"), bad, 0o644)
	f, err := os.Open(filepath.Join(d.mnt, "data", "random-64m.bin"))
	if err != nil {
		t.Fatalf("open: %v\n%s", err, d.out)
	}
	defer f.Close()
	want, _ := os.ReadFile(filepath.Join(plain, "random-64m.bin"))
	p := make([]byte, 4096)
	if n, err := f.ReadAt(p, 10*chunk+5); errnoOf(err) != syscall.EIO {
		st, _ := f.Stat()
		t.Fatalf("read of the tampered chunk: %d, %v, want EIO (size %d)\n%s", n, err, st.Size(), d.out)
	}
	for _, off := range []int64{0, 9 * chunk, 11 * chunk, 1000 * chunk} {
		if _, err := f.ReadAt(p, off); err != nil && err != io.EOF {
			t.Fatalf("read at %d: %v", off, err)
		}
		if !bytes.Equal(p, want[off:off+4096]) {
			t.Fatalf("wrong bytes at %d", off)
		}
	}
}

func TestSIGTERMWithOpenFiles(t *testing.T) {
	requireFUSE(t)
	s := startDevstack(t)
	d := mountDaemon(t, filepath.Join(s.Dir, devstack.ConfigFile))
	f, err := os.Open(filepath.Join(d.mnt, "data", "hello.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.waitExit:
	case <-time.After(20 * time.Second):
		t.Fatal("daemon did not exit on SIGTERM with a file open")
	}
	d.waitExit = closedChan()
	if isMounted(d.mnt) {
		t.Fatal("still mounted after SIGTERM")
	}
}

func closedChan() chan error {
	c := make(chan error, 1)
	c <- nil
	return c
}

func TestRun(t *testing.T) {
	requireFUSE(t)
	s := startDevstack(t)
	cfg := filepath.Join(s.Dir, devstack.ConfigFile)
	plain := filepath.Join(s.Dir, "plain", "data", "hello.txt")
	// The child reads through the private mount and exits 3.
	cmd := exec.Command(skrfsBin(t), "run", "--config", cfg, "--", "sh", "-c",
		`cmp "$SKRFS_MOUNTPOINT/data/hello.txt" "$1" && [ "$(wc -c < "$SKRFS_MOUNTPOINT/keys/demo-oct")" = 32 ] && echo "$SKRFS_MOUNTPOINT" && exit 3`, "sh", plain)
	out, err := cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("skrfs run: %v, want exit status 3\n%s", err, out)
	}
	mnt := strings.TrimSpace(string(out))
	if mnt == "" || isMounted(mnt) {
		t.Fatalf("mount %q left behind", mnt)
	}
	// A signal to skrfs run reaches the child.
	cmd = exec.Command(skrfsBin(t), "run", "--config", cfg, "--", "sh", "-c", `trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done`)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	io.ReadFull(stdout, buf)
	cmd.Process.Signal(syscall.SIGTERM)
	err = cmd.Wait()
	if !errors.As(err, &ee) || ee.ExitCode() != 42 {
		t.Fatalf("signal forwarding: %v, want exit 42", err)
	}
}

// TestStaleMountCleanup: a daemon killed with SIGKILL leaves a dead mount
// (ENOTCONN); the next `skrfs mount` at that place removes it and mounts.
func TestStaleMountCleanup(t *testing.T) {
	requireFUSE(t)
	s := startDevstack(t)
	cfg := filepath.Join(s.Dir, devstack.ConfigFile)
	d := mountDaemon(t, cfg)
	d.cmd.Process.Kill()
	<-d.waitExit
	d.waitExit = closedChan()
	if _, err := os.Stat(filepath.Join(d.mnt, "data")); errnoOf(err) != syscall.ENOTCONN {
		t.Fatalf("after SIGKILL: %v, want ENOTCONN from the dead mount", err)
	}
	ready := filepath.Join(t.TempDir(), "ready")
	cmd := exec.Command(skrfsBin(t), "mount", "--config", cfg, "--ready-file", ready, d.mnt)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("second mount not ready:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if b, err := os.ReadFile(filepath.Join(d.mnt, "data", "hello.txt")); err != nil || !strings.HasPrefix(string(b), "Hello from skrfs") {
		t.Fatalf("read after remount: %v", err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	if isMounted(d.mnt) {
		m, _ := os.ReadFile("/proc/self/mounts")
		t.Fatalf("still mounted after the second daemon stopped:\n%s\n%s", out.String(), m)
	}
}
