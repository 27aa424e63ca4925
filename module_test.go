package skrfs_test

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// TestGoModTidy fails when go.mod or go.sum differ from what `go mod tidy`
// would write: a direct dependency marked "// indirect", a requirement no
// package uses, or a missing checksum. `make lint` and `make test` run the
// same check (the tidy-check target).
func TestGoModTidy(t *testing.T) {
	cmd := exec.Command("go", "mod", "tidy", "-diff")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if stdout.Len() > 0 {
			t.Fatalf("go.mod/go.sum are not tidy; run `go mod tidy` and check that pinned versions stay:\n%s", stdout.String())
		}
		t.Fatalf("go mod tidy -diff: %v\n%s", err, stderr.String())
	}
}

// minVersions are the lowest versions the local stand-ins were verified
// with (IMDS through a transport hook, workload identity against a local
// Entra). go.mod was once silently left at azidentity v1.14.0 / MSAL
// v1.8.0 after a tidy dropped and re-resolved the requirement.
var minVersions = map[string]string{
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity":               "v1.15.0",
	"github.com/AzureAD/microsoft-authentication-library-for-go":     "v1.10.1",
	"github.com/Azure/azure-sdk-for-go/sdk/azcore":                   "v1.23.3",
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob":           "v1.8.3",
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys": "v1.5.0",
	"github.com/hanwen/go-fuse/v2":                                   "v2.12.1",
	"github.com/google/go-sev-guest":                                 "v0.15.0",
}

// releaseLess compares two release versions vX.Y.Z (no pre-release).
func releaseLess(a, b string) bool {
	var x, y [3]int
	if _, err := fmt.Sscanf(a, "v%d.%d.%d", &x[0], &x[1], &x[2]); err != nil {
		return true // unparsable: treat as too old, so the test names it
	}
	if _, err := fmt.Sscanf(b, "v%d.%d.%d", &y[0], &y[1], &y[2]); err != nil {
		return false
	}
	for i := range x {
		if x[i] != y[i] {
			return x[i] < y[i]
		}
	}
	return false
}

func TestReleaseLess(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"v1.14.0", "v1.15.0", true},
		{"v1.8.0", "v1.10.1", true},
		{"v1.15.0", "v1.15.0", false},
		{"v1.16.2", "v1.15.0", false},
		{"v2.0.0", "v1.99.9", false},
		{"garbage", "v1.0.0", true},
	} {
		if got := releaseLess(c.a, c.b); got != c.want {
			t.Errorf("releaseLess(%s, %s) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

// TestPinnedVersions fails when the build list selects a module below the
// version the harness was verified with.
func TestPinnedVersions(t *testing.T) {
	args := []string{"list", "-m", "-f", "{{.Path}} {{.Version}}"}
	for m := range minVersions {
		args = append(args, m)
	}
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, version, _ := strings.Cut(line, " ")
		min, ok := minVersions[path]
		if !ok {
			continue
		}
		seen[path] = true
		if releaseLess(version, min) {
			t.Errorf("%s is %s, below the verified %s: pin it with `go get %s@%s`", path, version, min, path, min)
		}
	}
	for m := range minVersions {
		if !seen[m] {
			t.Errorf("%s is not in the build list", m)
		}
	}
}

// TestStaticBuild: the release binary builds without cgo (make build, the
// Dockerfile), so it runs on distroless/static and in confidential VM
// images without a C library; the TPM client is pure Go.
func TestStaticBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := t.TempDir() + "/skrfs"
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/skrfs")
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build ./cmd/skrfs: %v\n%s", err, out)
	}
	out, err := exec.Command("go", "version", "-m", bin).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("CGO_ENABLED=0")) {
		t.Fatalf("go version -m: %v\n%s", err, out)
	}
}
