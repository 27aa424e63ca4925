package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
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
