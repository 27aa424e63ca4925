package examples_test

// Every skrfs command line in the examples and the READMEs names a
// subcommand and flags that exist: they are parsed out of manifests, the
// ARM template, shell scripts and Markdown (code blocks and inline code),
// and checked against the built binary's --help. YAML configuration
// snippets in the READMEs decode strictly into internal/config's schema.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/skrfs/skrfs/internal/config"
)

// helpInfo is what `skrfs PATH... --help` says about a command.
type helpInfo struct {
	subs     map[string]bool
	flags    map[string]bool // flag name -> takes a value
	runnable bool
}

type cli struct {
	bin   string
	mu    sync.Mutex
	cache map[string]*helpInfo
}

var (
	flagLineRE = regexp.MustCompile(`^\s+(?:-\w, )?--([a-z0-9][a-z0-9-]*)(?: ([a-zA-Z]+))?(?:\s|$)`)
	subLineRE  = regexp.MustCompile(`^\s+([a-z][a-z0-9-]*)\s`)
)

func (c *cli) help(t *testing.T, path []string) *helpInfo {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	key := strings.Join(path, " ")
	if h, ok := c.cache[key]; ok {
		return h
	}
	out, err := exec.Command(c.bin, append(append([]string{}, path...), "--help")...).CombinedOutput()
	if err != nil {
		t.Fatalf("skrfs %s --help: %v\n%s", key, err, out)
	}
	h := &helpInfo{subs: map[string]bool{}, flags: map[string]bool{}}
	section := ""
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasSuffix(line, ":") && !strings.HasPrefix(line, " ") {
			section = line
			continue
		}
		switch section {
		case "Usage:":
			if l := strings.TrimSpace(line); l != "" && !strings.HasSuffix(l, "[command]") {
				h.runnable = true
			}
		case "Available Commands:":
			if m := subLineRE.FindStringSubmatch(line); m != nil {
				h.subs[m[1]] = true
			}
		case "Flags:", "Global Flags:":
			if m := flagLineRE.FindStringSubmatch(line); m != nil {
				h.flags[m[1]] = m[2] != ""
			}
		}
	}
	if len(h.flags) == 0 {
		t.Fatalf("skrfs %s --help lists no flags:\n%s", key, out)
	}
	c.cache[key] = h
	return h
}

// check validates one command line (the arguments after the program).
func (c *cli) check(t *testing.T, args []string) error {
	var path []string
	info := c.help(t, nil)
	positional := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return nil
		case strings.HasPrefix(a, "--"):
			name, _, hasValue := strings.Cut(a[2:], "=")
			takes, ok := info.flags[name]
			if !ok {
				return fmt.Errorf("skrfs %s has no flag --%s", strings.Join(path, " "), name)
			}
			if takes && !hasValue {
				i++
			}
		case a == "-h":
		case strings.HasPrefix(a, "-") && len(a) > 1:
			return fmt.Errorf("skrfs %s: unknown short flag %s", strings.Join(path, " "), a)
		case !positional && info.subs[a]:
			path = append(path, a)
			info = c.help(t, path)
		default:
			if !positional && !info.runnable {
				return fmt.Errorf("skrfs %s has no subcommand %q", strings.Join(path, " "), a)
			}
			positional = true
		}
	}
	if len(path) == 0 && len(args) > 0 && !positional {
		return nil // global flags only, e.g. --version
	}
	if !info.runnable {
		return fmt.Errorf("skrfs %s needs a subcommand", strings.Join(path, " "))
	}
	return nil
}

// invocation is one skrfs command line found in a file.
type invocation struct {
	where string
	args  []string
}

// shellWords splits a shell command line into words, honouring quotes and
// stopping at the first operator (|, ||, &&, ;, &, a closing parenthesis)
// or comment; redirections are dropped.
func shellWords(s string) []string {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	flush := func() {
		if inWord {
			w := cur.String()
			if !strings.HasPrefix(w, ">") && !strings.HasPrefix(w, "<") && !strings.HasPrefix(w, "2>") {
				words = append(words, w)
			}
		}
		cur.Reset()
		inWord = false
	}
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			flush()
		case (r == '|' || r == ';' || r == '&' || r == ')' || r == '#') && !inWord:
			return words
		case r == '|' || r == ';' || r == ')':
			flush()
			return words
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	flush()
	return words
}

// skrfsCallRE finds a call of skrfs in a shell line: the program as
// skrfs, "$SKRFS", bin/skrfs, /skrfs or ./skrfs.
var skrfsCallRE = regexp.MustCompile(`(?:^|[\s($])(?:"\$SKRFS"|\$SKRFS|\$\(BIN\)|(?:\.?/|bin/|[\w./-]*/bin/)?skrfs)\s+(.*)$`)

// shellInvocations finds skrfs command lines in shell text (continuation
// lines joined, comments skipped).
func shellInvocations(where, text string) []invocation {
	var out []invocation
	text = strings.ReplaceAll(text, "\\\n", " ")
	for n, line := range strings.Split(text, "\n") {
		l := strings.TrimSpace(line)
		l = strings.TrimPrefix(l, "$ ")
		if strings.HasPrefix(l, "#") || strings.HasPrefix(l, "echo ") {
			continue // comments and messages mention skrfs without running it
		}
		m := skrfsCallRE.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		out = append(out, invocation{fmt.Sprintf("%s: line %d", where, n+1), shellWords(m[1])})
	}
	return out
}

// synopsisWords turns a synopsis from a table or inline code (with [..],
// (..), |, metavariables) into arguments.
func synopsisWords(s string) []string {
	var words []string
	for _, w := range strings.Fields(s) {
		w = strings.Trim(w, "[]()")
		if w == "" || w == "|" || w == `\|` || w == "..." {
			continue
		}
		words = append(words, w)
	}
	return words
}

var inlineRE = regexp.MustCompile("`(skrfs [^`]+)`")

// markdownInvocations finds skrfs command lines in fenced code blocks and
// inline code spans of a Markdown file, and returns its YAML blocks.
func markdownInvocations(where, text string) (invs []invocation, yamlBlocks []string) {
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		fence, ok := strings.CutPrefix(strings.TrimSpace(lines[i]), "```")
		if !ok {
			for _, m := range inlineRE.FindAllStringSubmatch(lines[i], -1) {
				invs = append(invs, invocation{fmt.Sprintf("%s: line %d", where, i+1), synopsisWords(strings.TrimPrefix(m[1], "skrfs "))})
			}
			continue
		}
		var block []string
		start := i + 1
		for i++; i < len(lines) && !strings.HasPrefix(strings.TrimSpace(lines[i]), "```"); i++ {
			block = append(block, lines[i])
		}
		body := strings.Join(block, "\n")
		switch fence {
		case "yaml", "yml":
			yamlBlocks = append(yamlBlocks, body)
		case "sh", "bash", "console", "shell", "":
			for _, inv := range shellInvocations(where, body) {
				var n int
				fmt.Sscanf(inv.where[strings.LastIndex(inv.where, "line ")+5:], "%d", &n)
				inv.where = fmt.Sprintf("%s: line %d", where, start+n-1)
				invs = append(invs, inv)
			}
		}
	}
	return invs, yamlBlocks
}

func TestSkrfsCommandLines(t *testing.T) {
	c := &cli{bin: bin(t, "skrfs"), cache: map[string]*helpInfo{}}
	root := repoRoot(t)
	// Each file and the least number of skrfs command lines it must
	// yield (so a parser regression cannot pass silently).
	for _, tc := range []struct {
		file string
		min  int
	}{
		{"README.md", 12},
		{"examples/local/README.md", 5},
		{"examples/local/walkthrough.sh", 8},
		{"examples/aci/README.md", 3},
		{"examples/aks-kata-cc/README.md", 2},
		{"examples/aks-sgx/README.md", 3},
		{"examples/kafka/README.md", 3},
		{"examples/aci/azuredeploy.json", 1},
		{"examples/aks-kata-cc/sidecar.yaml", 1},
		{"examples/aks-kata-cc/run-wrapper.yaml", 1},
		{"examples/kafka/consumer.yaml", 1},
		{"docs/config.md", 1}, // its reference YAML block decodes into the schema
	} {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(root, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			var invs []invocation
			var yamlBlocks []string
			switch {
			case strings.HasSuffix(tc.file, ".md"):
				invs, yamlBlocks = markdownInvocations(tc.file, string(b))
			case strings.HasSuffix(tc.file, ".sh"):
				invs = shellInvocations(tc.file, string(b))
			case strings.HasSuffix(tc.file, ".json"):
				for _, r := range decodeARM(t, filepath.Join(root, tc.file)).Resources {
					for _, ct := range r.Properties.Containers {
						if cmd := ct.Properties.Command; len(cmd) > 0 && filepath.Base(cmd[0]) == "skrfs" {
							invs = append(invs, invocation{tc.file + ": container " + ct.Name, cmd[1:]})
						}
					}
				}
			default:
				for _, pod := range decodeManifests(t, filepath.Join(root, tc.file)).pods {
					for _, ct := range pod.Spec.Containers {
						if args := skrfsArgs(ct); args != nil {
							invs = append(invs, invocation{tc.file + ": container " + ct.Name, args})
						}
					}
				}
			}
			if len(invs) < tc.min {
				t.Errorf("found %d skrfs command lines, want at least %d: %v", len(invs), tc.min, invs)
			}
			for _, inv := range invs {
				if err := c.check(t, inv.args); err != nil {
					t.Errorf("%s: %v (in: skrfs %s)", inv.where, err, strings.Join(inv.args, " "))
				}
			}
			for i, y := range yamlBlocks {
				if strings.Contains(y, "apiVersion:") {
					continue // a Kubernetes manifest, checked with the files
				}
				dec := yaml.NewDecoder(bytes.NewReader([]byte(y)))
				dec.KnownFields(true)
				var cfg config.Config
				if err := dec.Decode(&cfg); err != nil {
					t.Errorf("%s: YAML block %d is not a skrfs configuration: %v", tc.file, i+1, err)
				}
			}
		})
	}
}

// TestCommandLineChecker: the checker refuses what does not exist.
func TestCommandLineChecker(t *testing.T) {
	c := &cli{bin: bin(t, "skrfs"), cache: map[string]*helpInfo{}}
	for _, tc := range []struct {
		line string
		ok   bool
	}{
		{`skrfs mount --config c.yaml --ready-file r /mnt`, true},
		{`"$SKRFS" --log-level info run --config c.yaml --mountpoint /m -- sh -c 'cat x --bogus'`, true},
		{`skrfs key create --vault V --name N --kty RSA-HSM --cce-policy p --authority A`, true},
		{`skrfs attest verify --report r --certs c`, true},
		{`skrfs mount --config c.yaml --listen :8080 /mnt`, false},
		{`skrfs serve --config c.yaml`, true},
		{`skrfs serve --config c.yaml --listen 127.0.0.1:8080 --metrics-listen 127.0.0.1:9090`, true},
		{`skrfs sever --config c.yaml`, false},
		{`skrfs key frobnicate --vault V`, false},
		{`skrfs key`, false},
		{`skrfs mount -x /mnt`, false},
		{`kid=$("$SKRFS" key create --vault "$V" --name k --kty RSA-HSM --size 3072 --cce-policy p --authority "$A")`, true},
		{`kid=$("$SKRFS" key create --vault "$V" --nmae k)`, false},
	} {
		invs := shellInvocations("case", tc.line)
		if len(invs) != 1 {
			t.Fatalf("%s: found %d command lines", tc.line, len(invs))
		}
		if err := c.check(t, invs[0].args); (err == nil) != tc.ok {
			t.Errorf("%s: error %v, want ok=%v", tc.line, err, tc.ok)
		}
	}
}
