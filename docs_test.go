package skrfs_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// outsidePointers are references to material that users of the repository
// do not have: the project's working notes beside the checkout.
var outsidePointers = regexp.MustCompile(`\.\./shared|/work/|\bprotocol\.md\b|cli-contract\.md|harness-notes\.md|landscape\.md|guides/style\.md`)

// mdLink matches the target of an inline Markdown link or image.
var mdLink = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)

// docProblems returns what is wrong with one Markdown file at path (relative
// to root): pointers outside the repository, and relative links whose
// target does not exist or lies outside the checkout.
func docProblems(root, path string, text []byte) []string {
	var out []string
	for i, line := range strings.Split(string(text), "\n") {
		where := path + ":" + strconv.Itoa(i+1)
		if m := outsidePointers.FindString(line); m != "" {
			out = append(out, where+": points outside the repository ("+m+")")
		}
		for _, m := range mdLink.FindAllStringSubmatch(line, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "#") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			target, _, _ = strings.Cut(target, "#")
			abs := filepath.Join(root, filepath.Dir(path), target)
			rel, err := filepath.Rel(root, abs)
			if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
				out = append(out, where+": link "+m[1]+" leaves the repository")
				continue
			}
			if _, err := os.Stat(abs); err != nil {
				out = append(out, where+": link "+m[1]+" has no target")
			}
		}
	}
	return out
}

func TestDocProblems(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "docs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "docs", "format.md"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, text string
		want       []string
	}{
		{"clean", "See [format](format.md#header), [web](https://example.com/x) and [top](#top).\n", nil},
		{"the shapes of protocol.md", "The request and response shapes are those of protocol.md section 9.3.\n",
			[]string{"docs/x.md:1: points outside the repository (protocol.md)"}},
		{"shared testdata", "works on the genuine ACI evidence in `../shared/testdata/aci`\n",
			[]string{"docs/x.md:1: points outside the repository (../shared)"}},
		{"absolute path", "\nrests on `/work/shared/testdata/aci`\n",
			[]string{"docs/x.md:2: points outside the repository (/work/)"}},
		{"dangling link", "[cli](cli.md)\n", []string{"docs/x.md:1: link cli.md has no target"}},
		{"link out of the checkout", "[notes](../../notes.md)\n", []string{"docs/x.md:1: link ../../notes.md leaves the repository"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := docProblems(root, "docs/x.md", []byte(c.text))
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

// TestDocsStayInRepository: the README, docs/ and the examples' READMEs
// (every Markdown file of the checkout) state their facts themselves: no
// pointer to the working notes beside the checkout, and every relative link
// resolves inside the repository.
func TestDocsStayInRepository(t *testing.T) {
	var files []string
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "node_modules" || d.Name() == "bin") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".md") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, must := range []string{"README.md", "docs/sidecar.md", "examples/aci/README.md"} {
		if !slices.Contains(files, must) {
			t.Fatalf("%s not found among %v", must, files)
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range docProblems(".", f, b) {
			t.Error(p)
		}
	}
}
