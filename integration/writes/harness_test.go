package writes

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/integration/azurite"
	"github.com/skrfs/skrfs/internal/devstack"
)

// One devstack and one Azurite for the package, started on first use.
// The tests do not run in parallel: the vault's release counters of the
// shared devstack must see one test at a time.
var (
	stackOnce sync.Once
	stack     *devstack.Stack
	stackErr  error
	stackDir  string

	azOnce  sync.Once
	az      *azurite.Instance
	azStop  func()
	azErr   error
	azSeq   int
	azSeqMu sync.Mutex

	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if stack != nil {
		stack.Close()
	}
	if stackDir != "" {
		os.RemoveAll(stackDir)
	}
	if azStop != nil {
		azStop()
	}
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

func requireFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil || os.Geteuid() != 0 {
		t.Fatalf("real FUSE mounts need /dev/fuse and root (CI runs as root): %v", err)
	}
}

// requireTool fails (in CI) or skips (elsewhere) when a program the test
// drives is missing; `make test` installs them (deps-apt).
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing (make deps-apt installs it): %v", name, err)
		}
		t.Skipf("%s is missing; `make deps-apt` installs it", name)
	}
	return p
}

// skrfsBin builds the daemon once, with -race.
func skrfsBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "skrfs-writes-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "skrfs")
		out, err := exec.Command("go", "build", "-race", "-o", binPath, "github.com/skrfs/skrfs/cmd/skrfs").CombinedOutput()
		if err != nil {
			buildErr = errors.New(string(out))
		}
	})
	if buildErr != nil {
		t.Fatalf("building skrfs: %v", buildErr)
	}
	return binPath
}

func devStack(t *testing.T) *devstack.Stack {
	t.Helper()
	stackOnce.Do(func() {
		stackDir, stackErr = os.MkdirTemp("", "skrfs-writes-devstack-")
		if stackErr != nil {
			return
		}
		stack, stackErr = devstack.Start(context.Background(), devstack.Options{Dir: stackDir, Seed: true, Logger: zerolog.Nop()})
	})
	if stackErr != nil {
		t.Fatalf("devstack: %v", stackErr)
	}
	return stack
}

// azureContainer returns the name of a new container on the package's
// Azurite (the daemon authenticates with AZURE_STORAGE_CONNECTION_STRING).
func azureContainer(t *testing.T) string {
	t.Helper()
	azOnce.Do(func() { az, azStop, azErr = azurite.StartMain(azurite.Options{}) })
	if azErr != nil {
		t.Fatalf("azurite: %v", azErr)
	}
	azSeqMu.Lock()
	azSeq++
	name := fmt.Sprintf("w%04d", azSeq)
	azSeqMu.Unlock()
	az.CreateContainer(t, name)
	return name
}

// dataset describes the writable dataset "out" of a test.
type dataset struct {
	local    string // store directory, or
	azure    string // container URL
	keys     string // YAML list: "[demo-oct]"
	writeKey string
	// write is the top-level write: section (staging_bytes, spill_dir),
	// indented YAML lines; "" for the defaults.
	write string
	// extra holds more keys of the dataset, as indented YAML lines.
	extra string
}

func (ds dataset) yaml() string {
	src := "    local: " + ds.local + "\n"
	if ds.azure != "" {
		src = "    azure: " + ds.azure + "\n"
	}
	y := "  - name: out\n" + src + "    keys: " + ds.keys + "\n    writable: true\n    write_key: " + ds.writeKey + "\n"
	y += ds.extra
	if ds.write != "" {
		y += "write:\n" + ds.write
	}
	return y
}

// localDataset is a writable dataset over a new store directory, sealed
// with demo-oct.
func localDataset(t *testing.T) dataset {
	return dataset{local: t.TempDir(), keys: "[demo-oct]", writeKey: devstack.KeyOct}
}

func azureDataset(t *testing.T) dataset {
	return dataset{azure: az.ContainerURL(azureContainer(t)) + "/ds", keys: "[demo-oct]", writeKey: devstack.KeyOct}
}

// config writes the devstack's configuration plus ds.
func config(t *testing.T, ds dataset) string {
	t.Helper()
	s := devStack(t)
	b, err := os.ReadFile(filepath.Join(s.Dir, devstack.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "skrfs.yaml")
	if err := os.WriteFile(p, append(b, ds.yaml()...), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// syncBuf is a concurrency-safe output buffer.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// daemon is a running `skrfs mount`.
type daemon struct {
	t      *testing.T
	cmd    *exec.Cmd
	mnt    string
	out    *syncBuf
	exited chan error
	done   bool
}

// out returns the dataset directory of the mount.
func (d *daemon) dir() string { return filepath.Join(d.mnt, "out") }

// mount starts the daemon on cfg with extra environment variables and
// waits until it is ready. An Azure dataset gets Azurite's connection
// string.
func mount(t *testing.T, cfg string, env ...string) *daemon {
	t.Helper()
	requireFUSE(t)
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	ready := filepath.Join(t.TempDir(), "ready")
	d := &daemon{t: t, mnt: mnt, out: &syncBuf{}, exited: make(chan error, 1)}
	d.cmd = exec.Command(skrfsBin(t), "mount", "--config", cfg, "--ready-file", ready, "--log-level", "info", mnt)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	d.cmd.Env = os.Environ()
	if az != nil {
		d.cmd.Env = append(d.cmd.Env, "AZURE_STORAGE_CONNECTION_STRING="+az.ConnectionString())
	}
	d.cmd.Env = append(d.cmd.Env, env...)
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.exited <- d.cmd.Wait() }()
	t.Cleanup(func() {
		if !d.done {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
			d.cmd.Process.Kill()
			<-d.exited
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case err := <-d.exited:
			d.done = true
			t.Fatalf("skrfs mount exited before it was ready: %v\n%s", err, d.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("skrfs mount not ready after 60s:\n%s", d.out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return d
}

// unmount stops the daemon with SIGTERM (which commits nothing more: every
// file was closed) and checks that it exited cleanly and unmounted.
func (d *daemon) unmount() {
	d.t.Helper()
	if d.done {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.exited:
		d.done = true
		if err != nil {
			out := d.out.String()
			if i := strings.Index(out, "WARNING: DATA RACE"); i >= 0 {
				out = out[i:] // the race detector's report (exit status 66)
			}
			d.t.Errorf("skrfs mount exited with %v\n%s", err, out)
		}
	case <-time.After(30 * time.Second):
		d.t.Fatalf("skrfs mount did not exit on SIGTERM\n%s", d.out)
	}
	if isMounted(d.mnt) {
		syscall.Unmount(d.mnt, syscall.MNT_DETACH)
		d.t.Errorf("mount left behind at %s", d.mnt)
	}
}

// kill kills the daemon with SIGKILL, as a crash would, and detaches its
// dead mount.
func (d *daemon) kill() {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
	d.done = true
	syscall.Unmount(d.mnt, syscall.MNT_DETACH)
}

func isMounted(dir string) bool {
	b, _ := os.ReadFile("/proc/self/mounts")
	return strings.Contains(string(b), " "+dir+" ")
}

// sh runs a shell command line and fails the test on a non-zero status.
func sh(t *testing.T, script string, args ...string) string {
	t.Helper()
	cmd := exec.Command("/bin/sh", append([]string{"-c", script, "sh"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return string(out)
}

// python runs a python3 script with arguments and returns its stdout.
func python(t *testing.T, script string, args ...string) string {
	t.Helper()
	py := requireTool(t, "python3")
	cmd := exec.Command(py, append([]string{"-c", script}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("python: %v\n%s%s", err, out.String(), errb.String())
	}
	return out.String()
}

// diffTree fails unless the trees are byte-identical (diff -r).
func diffTree(t *testing.T, want, got string) {
	t.Helper()
	out, err := exec.Command("diff", "-r", want, got).CombinedOutput()
	if err != nil {
		t.Fatalf("diff -r %s %s: %v\n%s", want, got, err, out)
	}
}

// makeTree writes a small tree of files of various sizes (empty, one
// byte, one chunk and a bit, 1 MiB) under dir.
func makeTree(t *testing.T, dir string) {
	t.Helper()
	files := map[string]int{
		"empty":            0,
		"one":              1,
		"a/small.txt":      100,
		"a/b/chunk.bin":    64<<10 + 3,
		"a/b/c/deep.bin":   5000,
		"big.bin":          1 << 20,
		"x/y/z/w/leaf.txt": 17,
	}
	for name, size := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, pattern(name, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "emptydir-sibling", "has"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "emptydir-sibling", "has", "f"), []byte("f\n"), 0o600)
}

// pattern returns size deterministic bytes that differ per name.
func pattern(name string, size int) []byte {
	b := make([]byte, 0, size+32)
	seed := sha256.Sum256([]byte(name))
	for i := 0; len(b) < size; i++ {
		h := sha256.Sum256(append(seed[:], byte(i), byte(i>>8), byte(i>>16)))
		b = append(b, h[:]...)
	}
	return b[:size]
}

// storeFiles lists the regular files of a local store (relative names),
// with the temporary files of commits apart.
func storeFiles(t *testing.T, root string) (objects, temps []string) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if strings.HasPrefix(d.Name(), ".skrfs-tmp-") {
			if d.Name() != ".skrfs-tmp-lock" {
				temps = append(temps, rel)
			}
			return nil
		}
		objects = append(objects, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return objects, temps
}

// fileSum returns the SHA-256 of a file.
func fileSum(t *testing.T, p string) [32]byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// lineReader hands the lines a process prints to a channel.
func lineReader(r io.Reader) <-chan string {
	ch := make(chan string, 16)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			ch <- sc.Text()
		}
	}()
	return ch
}
