package examples_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// repoRoot is the repository root (the directory holding go.mod).
func repoRoot(tb testing.TB) string {
	tb.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// examplesDir is the examples/ directory.
func examplesDir(tb testing.TB) string { return filepath.Join(repoRoot(tb), "examples") }

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// bin builds skrfs and the Kafka example's programs once per test process
// and returns the path of one of them: skrfs, producer, consumer or
// localbroker.
func bin(tb testing.TB, name string) string {
	tb.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "skrfs-examples-bin-"); buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", binDir+"/", "github.com/skrfs/skrfs/cmd/skrfs",
			"github.com/skrfs/skrfs/examples/kafka/producer", "github.com/skrfs/skrfs/examples/kafka/consumer",
			"github.com/skrfs/skrfs/examples/kafka/localbroker").CombinedOutput()
		if err != nil {
			buildErr = errors.New(string(out))
		}
	})
	if buildErr != nil {
		tb.Fatalf("building: %v", buildErr)
	}
	return filepath.Join(binDir, name)
}

func requireFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil || os.Geteuid() != 0 {
		t.Fatalf("real FUSE mounts need /dev/fuse and root (CI runs as root): %v", err)
	}
}

type result struct {
	code           int
	stdout, stderr string
}

// runCmd runs a program to completion (at most two minutes) with env
// (nil: the test's environment).
func runCmd(t *testing.T, env []string, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("%s %v: timed out\n%s%s", name, args, out.String(), errb.String())
	}
	return result{code, out.String(), errb.String()}
}

// syncBuf is a goroutine-safe output buffer for background processes.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// proc is a background process, killed at the end of the test.
type proc struct {
	cmd    *exec.Cmd
	out    *syncBuf
	exited chan error
}

func start(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	p := &proc{out: &syncBuf{}, exited: make(chan error, 1)}
	p.cmd = exec.Command(name, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
	})
	return p
}

// waitFor polls cond every 20 ms for at most 30 s, failing early when p
// exits.
func (p *proc) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		select {
		case err := <-p.exited:
			p.exited <- err
			t.Fatalf("%s exited before %s: %v\n%s", p.cmd.Path, what, err, p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 30s:\n%s", what, p.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for the exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		p.exited <- err
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not stop:\n%s", p.cmd.Path, p.out.String())
	}
}

// placeholderRE matches the ${NAME} placeholders of the example
// configuration templates.
var placeholderRE = regexp.MustCompile(`\$\{([A-Z_]+)\}`)

// render replaces ${NAME} with vars[NAME]; a placeholder without a value
// fails the test.
func render(t *testing.T, tmpl string, vars map[string]string) string {
	t.Helper()
	return placeholderRE.ReplaceAllStringFunc(tmpl, func(m string) string {
		name := placeholderRE.FindStringSubmatch(m)[1]
		v, ok := vars[name]
		if !ok {
			t.Fatalf("no value for placeholder %s", m)
		}
		return v
	})
}

// envFile reads the export lines of the devstack's devstack.env.
func envFile(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if kv, ok := strings.CutPrefix(line, "export "); ok {
			k, v, _ := strings.Cut(kv, "=")
			vars[k] = strings.Trim(v, "'")
		}
	}
	return vars
}

// environ is os.Environ() plus vars.
func environ(vars map[string]string) []string {
	env := os.Environ()
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	return env
}
