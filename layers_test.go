// Package skrfs_test holds the test that keeps the import direction of the
// repository one way: cmd -> fs -> {keyrelease, blob, crypto}
// (docs/architecture.md). The module root has no other Go code.
package skrfs_test

import (
	"bufio"
	"bytes"
	"os/exec"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/skrfs/skrfs"

// layerRule says which of the module's packages a group of packages may
// depend on, directly or through other packages (non-test code only).
type layerRule struct {
	// layer is the package prefix the rule applies to ("crypto" means
	// crypto and crypto/...).
	layer string
	// allowed lists the prefixes those packages may depend on, besides
	// their own layer.
	allowed []string
	why     string
}

// layerRules is the architecture of docs/architecture.md, as dependencies:
// the object format stands alone, stores and key release know nothing of
// each other or of the filesystem, and the filesystem sees only the three
// small seams, never a concrete store, releaser or internal helper.
var layerRules = []layerRule{
	{layer: "crypto", why: "the object format (crypto/...) depends on the standard library only"},
	{layer: "blob", why: "stores (blob/...) know nothing of keys, the format or the filesystem"},
	{layer: "keyrelease", allowed: []string{"crypto"}, why: "key release (keyrelease/...) may use crypto/... but not blob, fs, internal/ or cmd"},
	{layer: "fs", allowed: []string{"blob!", "keyrelease!", "crypto"}, why: "fs depends only on the blob and keyrelease interfaces and on crypto; cmd wires the implementations"},
	{layer: "internal", allowed: []string{"crypto", "blob", "keyrelease", "fs"}, why: "internal helpers are wired by cmd and must not import cmd or the test harness"},
}

// within reports whether pkg (a path relative to the module) is prefix or
// lies under it. A prefix ending in "!" matches that package only.
func within(pkg, prefix string) bool {
	if exact, ok := strings.CutSuffix(prefix, "!"); ok {
		return pkg == exact
	}
	return pkg == prefix || strings.HasPrefix(pkg, prefix+"/")
}

// layerViolations checks deps (package -> its transitive dependencies, both
// relative to the module; packages outside it already dropped) against
// layerRules and returns one line per forbidden dependency, sorted.
func layerViolations(deps map[string][]string) []string {
	var out []string
	for pkg, ds := range deps {
		for _, r := range layerRules {
			if !within(pkg, r.layer) {
				continue
			}
			for _, d := range ds {
				ok := within(d, r.layer)
				for _, a := range r.allowed {
					ok = ok || within(d, a)
				}
				if !ok {
					out = append(out, pkg+" -> "+d+": "+r.why)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

func TestLayerRules(t *testing.T) {
	cases := []struct {
		name string
		deps map[string][]string
		want []string
	}{
		{
			name: "the architecture as documented",
			deps: map[string][]string{
				"crypto":             {"crypto/keywrap"},
				"keyrelease/wrapkey": {"crypto/keywrap"},
				"fs":                 {"blob", "keyrelease", "crypto", "crypto/keywrap"},
				"internal/upload":    {"blob", "crypto", "crypto/keywrap"},
				"internal/metrics":   {"fs", "keyrelease/cache", "keyrelease"},
				"cmd/skrfs":          {"fs", "internal/devstack", "integration/azurite", "blob/azblob"},
			},
		},
		{
			name: "the arrow of issue 17 item 16: crypto on an internal helper",
			deps: map[string][]string{
				"crypto":             {"internal/keywrap"},
				"keyrelease/wrapkey": {"internal/keywrap"},
			},
			want: []string{
				"crypto -> internal/keywrap: " + layerRules[0].why,
				"keyrelease/wrapkey -> internal/keywrap: " + layerRules[2].why,
			},
		},
		{
			name: "upward and sideways arrows",
			deps: map[string][]string{
				"blob/azblob":    {"blob", "keyrelease"},
				"keyrelease/skr": {"fs", "blob"},
				"fs":             {"cmd/skrfs", "blob/localdir", "keyrelease/skr", "internal/harden"},
				"internal/x":     {"integration/azurite"},
				"crypto":         {"cryptox"},
			},
			want: []string{
				"blob/azblob -> keyrelease: " + layerRules[1].why,
				"crypto -> cryptox: " + layerRules[0].why,
				"fs -> blob/localdir: " + layerRules[3].why,
				"fs -> cmd/skrfs: " + layerRules[3].why,
				"fs -> internal/harden: " + layerRules[3].why,
				"fs -> keyrelease/skr: " + layerRules[3].why,
				"internal/x -> integration/azurite: " + layerRules[4].why,
				"keyrelease/skr -> blob: " + layerRules[2].why,
				"keyrelease/skr -> fs: " + layerRules[2].why,
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := layerViolations(c.deps)
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("violations:\n got %q\nwant %q", got, c.want)
			}
		})
	}
}

// TestImportDirection runs `go list -deps` over the module and fails on any
// dependency against the direction of docs/architecture.md.
func TestImportDirection(t *testing.T) {
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, "./...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	deps := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		pkg, ok := strings.CutPrefix(f[0], module+"/")
		if !ok {
			continue // the module root (this test) or another module
		}
		var own []string
		for _, d := range f[1:] {
			if rel, ok := strings.CutPrefix(d, module+"/"); ok {
				own = append(own, rel)
			}
		}
		deps[pkg] = own
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, must := range []string{"crypto", "crypto/keywrap", "fs", "keyrelease/wrapkey", "blob/azblob"} {
		if _, ok := deps[must]; !ok {
			t.Fatalf("go list did not report package %s; got %d packages", must, len(deps))
		}
	}
	if v := layerViolations(deps); len(v) > 0 {
		t.Errorf("imports against the direction cmd -> fs -> {keyrelease, blob, crypto}:\n%s", strings.Join(v, "\n"))
	}
}
