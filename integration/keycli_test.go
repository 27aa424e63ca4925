package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skrfs/skrfs/internal/devstack"
)

// devstackEnv returns the environment of DIR/devstack.env.
func devstackEnv(t *testing.T, s *devstack.Stack) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.Dir, devstack.EnvFile))
	if err != nil {
		t.Fatal(err)
	}
	env := os.Environ()
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "export "); ok {
			env = append(env, strings.Replace(strings.Replace(v, "='", "=", 1), "'", "", -1))
		}
	}
	return env
}

func runEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(skrfsBin(t), args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{code, out.String(), errb.String()}
}

func TestKeyCommandsAgainstDevstack(t *testing.T) {
	s := startDevstack(t)
	cfg := filepath.Join(s.Dir, devstack.ConfigFile)
	env := devstackEnv(t, s)

	r := runEnv(t, env, "key", "release", "--config", cfg, "demo-rsa")
	if r.code != 0 || !strings.Contains(r.stdout, "3072 bits") || !strings.Contains(r.stdout, "BEGIN PUBLIC KEY") || strings.Contains(r.stdout, "PRIVATE") {
		t.Fatalf("key release demo-rsa: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r = runEnv(t, env, "key", "release", "--config", cfg, "denied")
	if r.code != 20 || !strings.Contains(r.stderr, "claim x-ms-sevsnpvm-hostdata") {
		t.Fatalf("key release denied: %d %s", r.code, r.stderr)
	}
	r = runEnv(t, env, "explain", "--config", cfg, "denied")
	if r.code != 20 || !strings.Contains(r.stdout, "FAIL claim x-ms-sevsnpvm-hostdata") || !strings.Contains(r.stdout, "ok   claim x-ms-sevsnpvm-vmpl") ||
		!strings.Contains(r.stdout, `ok   claim x-ms-compliance-status: want equals "azure-compliant-uvm"`) {
		t.Fatalf("explain denied: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r = runEnv(t, env, "explain", "--config", cfg, "demo-oct"); r.code != 0 || !strings.Contains(r.stdout, "release would be allowed") {
		t.Fatalf("explain demo-oct: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runEnv(t, env, "attest", "--config", cfg)
	var claims map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &claims) != nil || claims["iss"] != s.MAAURL || claims["x-ms-runtime"] == nil {
		t.Fatalf("attest: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// key create with a CCE policy, through DefaultAzureCredential and the
	// environment of devstack.env.
	r = runEnv(t, env, "key", "create", "--vault", s.VaultURL, "--name", "from-cce", "--kty", "oct-HSM",
		"--cce-policy", filepath.Join(s.Dir, "cce-policy.rego"), "--authority", s.MAAURL)
	if r.code != 0 || !strings.HasPrefix(r.stdout, s.VaultURL+"/keys/from-cce/") {
		t.Fatalf("key create: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

func TestAttestVerifyGenuineACI(t *testing.T) {
	aci := filepath.Join(repoRoot(t), "..", "shared", "testdata", "aci")
	report := filepath.Join(aci, "snp_report.bin")
	certs := filepath.Join(aci, "uvm_host_amd_certificate.json")
	r := run(t, skrfsBin(t), "attest", "verify", "--report", report, "--certs", certs, "--policy", filepath.Join(aci, "uvm_security_policy.base64"))
	if r.code != 0 || !strings.Contains(r.stdout, `"x-ms-sevsnpvm-launchmeasurement": "51068107cdc7ee3d89c7821b05bca6147eb77b2005ae759050fc049b65a1b0beabc65a9d857acecf23225f5ec76849f5"`) {
		t.Fatalf("attest verify: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	b, _ := os.ReadFile(report)
	b[0x100] ^= 0x40
	bad := filepath.Join(t.TempDir(), "bad.bin")
	os.WriteFile(bad, b, 0o644)
	if r := run(t, skrfsBin(t), "attest", "verify", "--report", bad, "--certs", certs); r.code != 21 || !strings.Contains(r.stderr, "signature") {
		t.Fatalf("flipped report: %d %s", r.code, r.stderr)
	}
}

// TestReleaseThroughEachIdentity: the same release with managed identity
// (the devstack's skrfs.yaml), workload identity (federated token against
// the Entra stand-in) and a static bearer token.
func TestReleaseThroughEachIdentity(t *testing.T) {
	s := startDevstack(t)
	base, err := os.ReadFile(filepath.Join(s.Dir, devstack.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	staticTok, _, err := s.Identity.Mint("https://vault.azure.net", devstack.ClientID)
	if err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokFile, []byte(staticTok), 0o600)
	managed := "identity:\n  kind: managed\n  client_id: " + devstack.ClientID + "\n  imds_endpoint: " + s.IMDSURL + "\n"
	for _, tc := range []struct{ name, identity string }{
		{"managed", managed},
		{"workload", "identity:\n  kind: workload\n  client_id: " + devstack.ClientID + "\n  tenant_id: " + devstack.TenantID +
			"\n  token_file: " + s.FederatedTokenFile + "\n  authority_host: " + s.EntraURL + "/\n"},
		{"token", "identity:\n  kind: token\n  token_file: " + tokFile + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := strings.Replace(string(base), managed, tc.identity, 1)
			if tc.name != "managed" && cfg == string(base) {
				t.Fatal("identity block not found in skrfs.yaml")
			}
			p := filepath.Join(t.TempDir(), "skrfs.yaml")
			os.WriteFile(p, []byte(cfg), 0o600)
			for _, key := range []string{devstack.KeyRSA, devstack.KeyOct} {
				if r := run(t, skrfsBin(t), "key", "release", "--config", p, key); r.code != 0 || !strings.Contains(r.stdout, "type:") {
					t.Fatalf("%s release of %s: %d\n%s%s", tc.name, key, r.code, r.stdout, r.stderr)
				}
			}
		})
	}
}
