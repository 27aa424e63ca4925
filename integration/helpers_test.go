package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/skrfs/skrfs/internal/devstack"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// skrfsBin builds the skrfs binary once per test process.
func skrfsBin(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "skrfs-bin-")
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
		tb.Fatalf("building skrfs: %v", buildErr)
	}
	return binPath
}

// repoRoot returns the repository root (the directory holding go.mod).
func repoRoot(tb testing.TB) string {
	tb.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

type result struct {
	code           int
	stdout, stderr string
}

func run(tb testing.TB, name string, args ...string) result {
	tb.Helper()
	cmd := exec.Command(name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	return result{code, out.String(), errb.String()}
}

// daemonProc is a skrfs subprocess with captured output.
type daemonProc struct {
	cmd    *exec.Cmd
	out    *syncBuf
	exited chan error
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) Bytes() []byte               { s.mu.Lock(); defer s.mu.Unlock(); return bytes.Clone(s.b.Bytes()) }

func execDaemon(t *testing.T, args ...string) *daemonProc {
	t.Helper()
	return execDaemonEnv(t, nil, args...)
}

// execDaemonEnv starts the daemon with extra environment variables.
func execDaemonEnv(t *testing.T, env []string, args ...string) *daemonProc {
	t.Helper()
	d := &daemonProc{out: &syncBuf{}, exited: make(chan error, 1)}
	d.cmd = exec.Command(skrfsBin(t), args...)
	if env != nil {
		d.cmd.Env = append(os.Environ(), env...)
	}
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.exited <- d.cmd.Wait() }()
	t.Cleanup(func() { d.cmd.Process.Kill() })
	return d
}

// mountDevstack starts the devstack and a daemon mounting its
// configuration (with extra environment and flags), and waits until the
// mount is ready.
func mountDevstack(t *testing.T, env []string, flags ...string) (mnt string, d *daemonProc) {
	t.Helper()
	requireFUSE(t)
	s := startDevstack(t)
	mnt = filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mnt, 0o755)
	ready := filepath.Join(t.TempDir(), "ready")
	args := append([]string{"mount", "--config", filepath.Join(s.Dir, devstack.ConfigFile), "--ready-file", ready}, flags...)
	d = execDaemonEnv(t, env, append(args, mnt)...)
	// Runs before the daemon is killed: a test that stops early leaves no
	// dead mount behind (a killed daemon cannot unmount).
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	waitReady(t, ready, d)
	return mnt, d
}

// waitReady waits for a readiness file with a deadline.
func waitReady(t *testing.T, ready string, d *daemonProc) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			return
		}
		select {
		case err := <-d.exited:
			t.Fatalf("daemon exited before it was ready: %v\n%s", err, d.out.Bytes())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not ready after 30s:\n%s", d.out.Bytes())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (d *daemonProc) stop(t *testing.T) {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("daemon did not stop on SIGTERM")
	}
}
