package examples_test

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// dockerfile is the part of a Dockerfile these checks need.
type dockerfile struct {
	stages     []string // stage names (FROM ... AS name), "" when unnamed
	runs       []string // RUN commands
	copyFrom   []string // stages named by COPY --from=
	copySrc    []string // local sources of COPY (not --from)
	entrypoint bool
}

func parseDockerfile(t *testing.T, path string) dockerfile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d dockerfile
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	fromRE := regexp.MustCompile(`(?i)^FROM\s+\S+(?:\s+AS\s+(\S+))?\s*$`)
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		instr, rest, _ := strings.Cut(line, " ")
		switch strings.ToUpper(instr) {
		case "FROM":
			m := fromRE.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("%s: bad FROM: %s", path, line)
			}
			d.stages = append(d.stages, m[1])
		case "RUN":
			d.runs = append(d.runs, rest)
		case "COPY":
			f := strings.Fields(rest)
			if from, ok := strings.CutPrefix(f[0], "--from="); ok {
				d.copyFrom = append(d.copyFrom, from)
			} else {
				d.copySrc = append(d.copySrc, f[:len(f)-1]...)
			}
		case "ENTRYPOINT":
			d.entrypoint = true
		case "ARG", "WORKDIR", "USER", "CMD", "EXPOSE", "ENV", "LABEL":
		default:
			t.Fatalf("%s: unexpected instruction %s", path, instr)
		}
	}
	return d
}

// TestDockerfiles checks the Dockerfiles without Docker (not available
// here): stages and COPY sources exist, and the build stage's `go build`
// commands run here as written and produce static binaries, as
// distroless/static needs.
func TestDockerfiles(t *testing.T) {
	root := repoRoot(t)
	for _, tc := range []struct {
		file    string
		context string   // build context, relative to the repository
		outputs []string // binaries the go build writes to /out/
	}{
		{"Dockerfile", ".", []string{"skrfs"}},
		{"examples/kafka/Dockerfile", ".", []string{"producer", "consumer"}},
		{"examples/aci/Dockerfile", "examples/aci", nil},
		{"examples/aks-kata-cc/Dockerfile.run", "examples/aks-kata-cc", nil},
		{"examples/aks-sgx/Dockerfile", ".", []string{"skrfs"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			d := parseDockerfile(t, filepath.Join(root, tc.file))
			for _, from := range d.copyFrom {
				if !slices.Contains(d.stages, from) {
					t.Errorf("COPY --from=%s names no stage (stages %q)", from, d.stages)
				}
			}
			for _, src := range d.copySrc {
				if _, err := os.Stat(filepath.Join(root, tc.context, src)); err != nil {
					t.Errorf("COPY source %s: %v", src, err)
				}
			}
			if tc.outputs == nil {
				return
			}
			if !d.entrypoint {
				t.Error("no ENTRYPOINT")
			}
			out := t.TempDir()
			built := 0
			for _, run := range d.runs {
				if !strings.Contains(run, "go build") {
					continue
				}
				cmd := strings.ReplaceAll(strings.ReplaceAll(run, "${VERSION}", "test"), "/out/", out+"/")
				c := exec.Command("sh", "-c", cmd)
				c.Dir = filepath.Join(root, tc.context)
				if b, err := c.CombinedOutput(); err != nil {
					t.Fatalf("RUN %s: %v\n%s", run, err, b)
				}
				built++
			}
			if built != 1 {
				t.Fatalf("%d RUN go build commands, want 1", built)
			}
			for _, name := range tc.outputs {
				f, err := elf.Open(filepath.Join(out, name))
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				for _, p := range f.Progs {
					if p.Type == elf.PT_INTERP {
						t.Errorf("%s is dynamically linked; distroless/static has no libc", name)
					}
				}
				f.Close()
			}
		})
	}
}
