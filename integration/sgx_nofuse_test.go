package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/skrfs/skrfs/internal/devstack"
)

// sgxPyScript is a second legacy program: python3 reads a delivered key (a
// JWK) and a delivered data file and writes what it saw to $1.
const sgxPyScript = `
import hashlib, json, os, sys
d = os.environ["SKRFS_DIR"]
jwk = json.load(open(os.path.join(d, "keys", "demo-oct.jwk")))
body = open(os.path.join(d, "data", "docs", "readme.md"), "rb").read()
open(sys.argv[1], "w").write(jwk["kty"] + " " + hashlib.sha256(body).hexdigest())
`

// TestNoFuseOnSGXDevstack: the SGX flow end to end on the devstack's fake
// enclave: the sgx provider writes user_report_data and reads quotes from
// the fake Gramine /dev/attestation (FUSE), MAA's attest/SgxEnclave
// stand-in verifies them and issues the SGX claims, the fake vault
// releases under SGX policies to the key in x-ms-runtime, and `skrfs run
// --no-fuse` hands the plaintext to unmodified programs (sha256sum,
// python3), then wipes DIR; --exec replaces skrfs with the program; the
// debug build of the same enclave is refused every key, and the program
// never runs.
func TestNoFuseOnSGXDevstack(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed")
	}
	s := startDevstackWith(t, devstack.Options{TEE: devstack.TEESGX})
	cfg := filepath.Join(s.Dir, devstack.ConfigFile)
	if b, _ := os.ReadFile(cfg); !strings.Contains(string(b), "provider: sgx") {
		t.Fatalf("devstack --tee sgx wrote no sgx configuration:\n%s", b)
	}
	env := devstackEnv(t, s)
	want := plainSums(t, filepath.Join(s.Dir, "plain", "data"))
	readme, err := os.ReadFile(filepath.Join(s.Dir, "plain", "data", "docs", "readme.md"))
	if err != nil {
		t.Fatal(err)
	}
	okBefore, _ := s.MAA.Stats()

	t.Run("child mode", func(t *testing.T) {
		dir := shmDir(t)
		out := filepath.Join(t.TempDir(), "sums")
		r := runEnv(t, env, "run", "--no-fuse", "--config", cfg, "--dir", dir, "--",
			"sh", "-c", sumScript+` && python3 -c "$2" "$1.py"`, "sh", out, sgxPyScript)
		if r.code != 0 {
			t.Fatalf("run --no-fuse: exit %d\n%s", r.code, r.stderr)
		}
		if got := sortedLines(t, out); got != strings.Join(want, "\n") {
			t.Fatalf("sha256sum in the program:\n%s\nwant\n%s", got, strings.Join(want, "\n"))
		}
		py, _ := os.ReadFile(out + ".py")
		if string(py) != "oct "+sha256Hex(readme) {
			t.Fatalf("python3 saw %q", py)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("DIR after the program exited: %v", err)
		}
		if ok, _ := s.MAA.Stats(); ok <= okBefore {
			t.Fatalf("no attestation reached attest/SgxEnclave")
		}
	})

	t.Run("exec mode", func(t *testing.T) {
		dir := shmDir(t)
		out := filepath.Join(t.TempDir(), "sums")
		cmd := exec.Command(skrfsBin(t), "run", "--no-fuse", "--exec", "--config", cfg, "--dir", dir, "--",
			"sh", "-c", sumScript+` && python3 -c "$2" "$1.py" && echo $$ > "$1.pid"`, "sh", out, sgxPyScript)
		cmd.Env = env
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("run --no-fuse --exec: %v\n%s", err, b)
		}
		if got := sortedLines(t, out); got != strings.Join(want, "\n") {
			t.Fatalf("sha256sum in the program:\n%s", got)
		}
		if py, _ := os.ReadFile(out + ".py"); string(py) != "oct "+sha256Hex(readme) {
			t.Fatalf("python3 saw %q", py)
		}
		pid, _ := os.ReadFile(out + ".pid")
		if strings.TrimSpace(string(pid)) != strconv.Itoa(cmd.Process.Pid) {
			t.Fatalf("program pid %s, skrfs pid %d: not exec'd", pid, cmd.Process.Pid)
		}
	})

	t.Run("auto detects the enclave", func(t *testing.T) {
		b, _ := os.ReadFile(cfg)
		auto := filepath.Join(t.TempDir(), "skrfs.yaml")
		os.WriteFile(auto, []byte(strings.Replace(string(b), "provider: sgx", "provider: auto", 1)), 0o600)
		dir := shmDir(t)
		r := runEnv(t, env, "--log-level", "info", "fetch", "--config", auto, dir)
		if r.code != 0 {
			t.Fatalf("fetch with provider auto: exit %d\n%s", r.code, r.stderr)
		}
		if !strings.Contains(r.stderr, `"provider":"sgx"`) || !strings.Contains(r.stderr, "attestation.provider auto") ||
			!strings.Contains(r.stderr, "SGX attestation provider selected") {
			t.Fatalf("auto did not log its choice of sgx:\n%s", r.stderr)
		}
		if _, err := os.Stat(filepath.Join(dir, "keys", "demo-oct")); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("attest and explain", func(t *testing.T) {
		r := runEnv(t, env, "attest", "--config", cfg)
		if r.code != 0 {
			t.Fatalf("attest: exit %d\n%s", r.code, r.stderr)
		}
		var claims map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &claims); err != nil {
			t.Fatalf("attest printed no JSON claims: %v\n%s", err, r.stdout)
		}
		if claims["x-ms-attestation-type"] != "sgx" || claims["x-ms-sgx-mrenclave"] != hex.EncodeToString(devstack.SGXMREnclave[:]) ||
			claims["x-ms-sgx-is-debuggable"] != false || claims["x-ms-runtime"] == nil {
			t.Fatalf("claims: %v", claims)
		}
		r = runEnv(t, env, "explain", "--config", filepath.Join(s.Dir, devstack.DebugConfigFile), "demo-rsa")
		if !strings.Contains(r.stdout+r.stderr, "DENIED") || !strings.Contains(r.stdout+r.stderr, "debug build") {
			t.Fatalf("explain for the debug enclave: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("no FUSE and no sidecar API in SGX", func(t *testing.T) {
		// A mount hands every plaintext page to the kernel, and the sidecar
		// API's loopback socket is the host's under Gramine: both refused,
		// before anything is released.
		mnt := t.TempDir()
		for name, args := range map[string][]string{
			"mount":        {"mount", "--config", cfg, mnt},
			"run (FUSE)":   {"run", "--config", cfg, "--mountpoint", mnt, "--", "true"},
			"serve":        {"serve", "--config", cfg, "--listen", "127.0.0.1:0"},
			"mount (auto)": {"mount", "--config", configWith(t, s, ""), mnt},
		} {
			if name == "mount (auto)" {
				b, _ := os.ReadFile(args[2])
				os.WriteFile(args[2], []byte(strings.Replace(string(b), "provider: sgx", "provider: auto", 1)), 0o600)
			}
			r := runEnv(t, env, args...)
			if r.code != 2 || !strings.Contains(r.stderr, "outside the enclave") || !strings.Contains(r.stderr, "run --no-fuse") {
				t.Errorf("%s under sgx: exit %d\n%s", name, r.code, r.stderr)
			}
		}
		if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), mnt) {
			t.Fatalf("%s was mounted", mnt)
		}
	})

	t.Run("debug enclave denied", func(t *testing.T) {
		dir := shmDir(t)
		marker := filepath.Join(t.TempDir(), "ran")
		r := runEnv(t, env, "run", "--no-fuse", "--config", filepath.Join(s.Dir, devstack.DebugConfigFile), "--dir", dir, "--",
			"sh", "-c", `touch "$1"`, "sh", marker)
		if r.code != 20 {
			t.Fatalf("debug enclave: exit %d, want 20 (release denied)\n%s", r.code, r.stderr)
		}
		if !strings.Contains(r.stderr, "release denied") || !strings.Contains(r.stderr, `x-ms-sgx-is-debuggable: want equals "false", have true`) {
			t.Fatalf("the error does not say the debug enclave was refused:\n%s", r.stderr)
		}
		if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
			t.Fatal("the program ran without its data")
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("DIR after the denial: %v", err)
		}
	})
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
