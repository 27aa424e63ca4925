package examples_test

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// dockerBuild is one documented `docker build` command line.
type dockerBuild struct {
	where     string
	file      string // -f, as written ("" = CONTEXT/Dockerfile)
	context   string
	target    string
	buildArgs []string // names of --build-arg
}

var (
	dockerBuildRE = regexp.MustCompile(`(?:^|[\s$])docker build\s+(.*)$`)
	subshellRE    = regexp.MustCompile(`\$\([^()]*\)`)
	argRE         = regexp.MustCompile(`(?m)^ARG\s+([A-Za-z_][A-Za-z0-9_]*)`)
)

// parseDockerBuilds finds the docker build commands in a file's text:
// shell lines of Markdown and the comment lines of Dockerfiles, with
// continuation lines joined.
func parseDockerBuilds(where, text string, dockerfileComments bool) ([]dockerBuild, error) {
	if dockerfileComments {
		var b strings.Builder
		for _, line := range strings.Split(text, "\n") {
			if c, ok := strings.CutPrefix(strings.TrimSpace(line), "#"); ok {
				b.WriteString(c)
			}
			b.WriteString("\n")
		}
		text = b.String()
	}
	text = strings.ReplaceAll(text, "\\\n", " ")
	var out []dockerBuild
	for n, line := range strings.Split(text, "\n") {
		m := dockerBuildRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		cmd, _, _ := strings.Cut(m[1], "`") // inline code in Markdown ends at the backtick
		cmd = subshellRE.ReplaceAllString(cmd, "X")
		b := dockerBuild{where: fmt.Sprintf("%s: line %d", where, n+1)}
		words := shellWords(cmd)
		var positional []string
		for i := 0; i < len(words); i++ {
			w := words[i]
			name, val, hasVal := strings.Cut(w, "=")
			value := func() (string, error) {
				if hasVal {
					return val, nil
				}
				if i+1 >= len(words) {
					return "", fmt.Errorf("%s: %s needs a value", b.where, w)
				}
				i++
				return words[i], nil
			}
			var err error
			switch name {
			case "-f", "--file":
				b.file, err = value()
			case "--target":
				b.target, err = value()
			case "--build-arg":
				var kv string
				kv, err = value()
				k, _, _ := strings.Cut(kv, "=")
				b.buildArgs = append(b.buildArgs, k)
			case "-t", "--tag", "--platform", "--progress", "--secret":
				_, err = value()
			case "--pull", "--no-cache":
			default:
				if strings.HasPrefix(w, "-") {
					return nil, fmt.Errorf("%s: docker build flag %s is not known to this check", b.where, w)
				}
				positional = append(positional, w)
			}
			if err != nil {
				return nil, err
			}
		}
		if len(positional) != 1 {
			return nil, fmt.Errorf("%s: docker build with %d build contexts %q, want 1", b.where, len(positional), positional)
		}
		b.context = positional[0]
		out = append(out, b)
	}
	return out, nil
}

// checkDockerBuild runs a documented build from the repository root as far
// as it can without Docker: the Dockerfile is where -f says (relative to the
// current directory, not to the context), the context exists, every local
// COPY source exists in the context, --target names a stage and every
// --build-arg is declared.
func checkDockerBuild(t *testing.T, root string, b dockerBuild) (dockerfilePath string, problems []string) {
	t.Helper()
	ctx := filepath.Join(root, b.context)
	if fi, err := os.Stat(ctx); err != nil || !fi.IsDir() {
		return "", []string{fmt.Sprintf("%s: build context %s is not a directory of the repository", b.where, b.context)}
	}
	path := filepath.Join(ctx, "Dockerfile")
	if b.file != "" {
		path = filepath.Join(root, b.file)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", []string{fmt.Sprintf("%s: run from the repository root, docker build finds no Dockerfile at %s (-f is relative to the current directory)", b.where, b.file)}
	}
	d := parseDockerfile(t, path)
	for _, src := range d.copySrc {
		if _, err := os.Stat(filepath.Join(ctx, src)); err != nil {
			problems = append(problems, fmt.Sprintf("%s: COPY source %s is not in the build context %s", b.where, src, b.context))
		}
	}
	if b.target != "" && !slices.Contains(d.stages, b.target) {
		problems = append(problems, fmt.Sprintf("%s: --target %s names no stage of %s", b.where, b.target, path))
	}
	var declared []string
	for _, m := range argRE.FindAllStringSubmatch(string(raw), -1) {
		declared = append(declared, m[1])
	}
	for _, a := range b.buildArgs {
		if !slices.Contains(declared, a) {
			problems = append(problems, fmt.Sprintf("%s: --build-arg %s is not an ARG of %s", b.where, a, path))
		}
	}
	rel, _ := filepath.Rel(root, path)
	return rel, problems
}

func TestDockerBuildChecker(t *testing.T) {
	root := repoRoot(t)
	for _, c := range []struct {
		text string
		want string // substring of the problem; "" = none
	}{
		{"docker build -f examples/aks-kata-cc/Dockerfile.run -t r/x:1 --build-arg SKRFS_IMAGE=r/skrfs:1 examples/aks-kata-cc", ""},
		{"docker build -t skrfs:latest --build-arg VERSION=$(git describe --always --dirty) .", ""},
		// The command documented before: -f relative to the context.
		{"docker build -f Dockerfile.run -t r/x:1 \\\n  --build-arg SKRFS_IMAGE=r/skrfs:1 examples/aks-kata-cc", "finds no Dockerfile at Dockerfile.run"},
		{"docker build -t r/x:1 examples/aks-kata-cc", "finds no Dockerfile"},
		{"docker build -t r/x:1 examples/kafka", "COPY source go.mod is not in the build context"},
		{"docker build -f examples/kafka/Dockerfile --target nope .", "--target nope names no stage"},
		{"docker build --build-arg NOPE=1 examples/aci", "--build-arg NOPE is not an ARG"},
		{"docker build -t r/x:1 examples/nope", "is not a directory"},
	} {
		builds, err := parseDockerBuilds("t.md", c.text, false)
		if err != nil || len(builds) != 1 {
			t.Fatalf("%q: %v %v", c.text, builds, err)
		}
		_, problems := checkDockerBuild(t, root, builds[0])
		got := strings.Join(problems, "\n")
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%q: problems %q, want %q", c.text, got, c.want)
		}
	}
	if _, err := parseDockerBuilds("t.md", "docker build -q .", false); err == nil {
		t.Error("an unknown flag passed")
	}
}

// TestDocumentedDockerBuilds: every `docker build` the READMEs, docs and
// Dockerfile comments tell users to run (from the repository root) finds
// its Dockerfile and the files it copies; every Dockerfile is built by at
// least one documented command, and the AKS README has its image build
// step.
func TestDocumentedDockerBuilds(t *testing.T) {
	root := repoRoot(t)
	var builds []dockerBuild
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		isDockerfile := strings.HasPrefix(d.Name(), "Dockerfile")
		if d.IsDir() || (!isDockerfile && !strings.HasSuffix(p, ".md")) {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		found, err := parseDockerBuilds(rel, string(b), isDockerfile)
		if err != nil {
			t.Error(err)
		}
		builds = append(builds, found...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	built := map[string]bool{}
	fromAKS := 0
	for _, b := range builds {
		path, problems := checkDockerBuild(t, root, b)
		for _, p := range problems {
			t.Error(p)
		}
		built[path] = true
		if strings.HasPrefix(b.where, "examples/aks-kata-cc/README.md") {
			fromAKS++
		}
	}
	if len(builds) < 10 {
		t.Errorf("found %d documented docker build commands, want at least 10", len(builds))
	}
	for _, f := range []string{"Dockerfile", "examples/aci/Dockerfile", "examples/aks-kata-cc/Dockerfile.run", "examples/kafka/Dockerfile"} {
		if !built[f] {
			t.Errorf("no documented docker build uses %s", f)
		}
	}
	if fromAKS < 2 {
		t.Errorf("examples/aks-kata-cc/README.md documents %d image builds, want skrfs's and the wrapper's", fromAKS)
	}
}
