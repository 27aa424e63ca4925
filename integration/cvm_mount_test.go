package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skrfs/skrfs/internal/devstack"
)

// TestMountDevstackCVM: the devstack's fake Azure confidential VM (swtpm
// seeded as a paravisor's vTPM) through a real FUSE mount: the daemon uses
// the azure-cvm provider (HCL report, quote, TPM-resident key,
// attest/AzureGuest, RSA_AES_KEY_WRAP_256 unwrapped through the TPM), keys
// and the dataset read back, and the key whose policy pins another VM is
// EACCES. `skrfs attest` and `skrfs explain` run as other TPM clients while
// the mount holds its own.
func TestMountDevstackCVM(t *testing.T) {
	requireFUSE(t)
	s := startDevstackWith(t, devstack.Options{TEE: devstack.TEECVM})
	cfg := filepath.Join(s.Dir, devstack.ConfigFile)
	if b, _ := os.ReadFile(cfg); !strings.Contains(string(b), "provider: azure-cvm") {
		t.Fatalf("skrfs.yaml:\n%s", b)
	}
	d := mountDaemon(t, cfg)
	pem, err := os.ReadFile(filepath.Join(d.mnt, "keys", "demo-rsa"))
	if err != nil || !bytes.HasPrefix(pem, []byte("-----BEGIN")) {
		t.Fatalf("keys/demo-rsa: %v\n%s", err, d.out)
	}
	plain := filepath.Join(s.Dir, "plain", "data")
	for _, name := range []string{"hello.txt", "docs/readme.md", "nested/deeper/numbers.csv", "random-64m.bin"} {
		if fileSHA(t, filepath.Join(d.mnt, "data", name)) != fileSHA(t, filepath.Join(plain, name)) {
			t.Fatalf("data/%s differs from the original", name)
		}
	}
	if _, err := os.ReadFile(filepath.Join(d.mnt, "keys", "denied")); errnoOf(err) != syscall.EACCES {
		t.Fatalf("keys/denied: %v, want EACCES", err)
	}
	// Other processes attest through the same vTPM meanwhile.
	r := run(t, skrfsBin(t), "attest", "--config", cfg, "--log-level", "info")
	if r.code != 0 || !strings.Contains(r.stdout, `"x-ms-compliance-status": "azure-compliant-cvm"`) || !strings.Contains(r.stdout, `"TpmEphemeralEncryptionKey"`) ||
		!strings.Contains(r.stderr, "Azure confidential VM (vTPM) attestation provider selected") || !strings.Contains(r.stderr, `"provider":"azure-cvm"`) {
		t.Fatalf("attest: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = run(t, skrfsBin(t), "explain", "--config", cfg, "denied")
	if r.code != 20 || !strings.Contains(r.stdout, "FAIL claim x-ms-azurevm-vmid") || !strings.Contains(r.stdout, "ok   claim x-ms-isolation-tee.x-ms-compliance-status") {
		t.Fatalf("explain denied: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// key create --cvm: the CVM policy (nested claims) pinned to this VM
	// releases; pinned to another VM, explain names the vmid. A policy
	// with anyOf inside allOf names the failed nested conditions.
	env := devstackEnv(t, s)
	if r = runEnv(t, env, "key", "create", "--vault", s.VaultURL, "--name", "cvm-pinned", "--kty", "oct-HSM", "--size", "256",
		"--cvm", "--vm-id", devstack.CVMVMID, "--authority", s.MAAURL); r.code != 0 {
		t.Fatalf("key create --cvm: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r = runEnv(t, env, "key", "create", "--vault", s.VaultURL, "--name", "cvm-other", "--kty", "oct-HSM", "--size", "256",
		"--cvm", "--vm-id", "11111111-2222-4333-8444-555555555555", "--authority", s.MAAURL); r.code != 0 {
		t.Fatalf("key create --cvm (other VM): %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r = runEnv(t, env, "key", "create", "--vault", s.VaultURL, "--name", "x", "--kty", "oct-HSM", "--cvm", "--vm-id", "not-a-guid", "--authority", s.MAAURL); r.code != 2 {
		t.Fatalf("key create --cvm --vm-id not-a-guid: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	nested := filepath.Join(t.TempDir(), "nested.json")
	os.WriteFile(nested, []byte(`{"version":"1.0.0","anyOf":[{"authority":"`+s.MAAURL+`","allOf":[
	  {"claim":"x-ms-isolation-tee.x-ms-compliance-status","equals":"azure-compliant-cvm"},
	  {"anyOf":[{"claim":"x-ms-isolation-tee.x-ms-attestation-type","equals":"tdxvm"},{"claim":"x-ms-azurevm-vmid","equals":"11111111-2222-4333-8444-555555555555"}]}]}]}`), 0o644)
	if r = runEnv(t, env, "key", "create", "--vault", s.VaultURL, "--name", "cvm-nested", "--kty", "oct-HSM", "--size", "256", "--policy", nested); r.code != 0 {
		t.Fatalf("key create --policy nested: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	base, _ := os.ReadFile(cfg)
	extra := ""
	for _, n := range []string{"cvm-pinned", "cvm-other", "cvm-nested"} {
		extra += "  - name: " + n + "\n    ref: " + s.VaultURL + "/keys/" + n + "\n"
	}
	cfg2 := filepath.Join(t.TempDir(), "skrfs.yaml")
	os.WriteFile(cfg2, []byte(strings.Replace(string(base), "keys:\n", "keys:\n"+extra, 1)), 0o600)
	if r = run(t, skrfsBin(t), "explain", "--config", cfg2, "cvm-pinned"); r.code != 0 || !strings.Contains(r.stdout, "release would be allowed") ||
		!strings.Contains(r.stdout, "ok   claim x-ms-isolation-tee.x-ms-sevsnpvm-is-debuggable") {
		t.Fatalf("explain cvm-pinned: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r = run(t, skrfsBin(t), "key", "release", "--config", cfg2, "cvm-pinned"); r.code != 0 || !strings.Contains(r.stdout, "256 bits") {
		t.Fatalf("key release cvm-pinned: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r = run(t, skrfsBin(t), "explain", "--config", cfg2, "cvm-other"); r.code != 20 || !strings.Contains(r.stdout, "FAIL claim x-ms-azurevm-vmid") {
		t.Fatalf("explain cvm-other: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = run(t, skrfsBin(t), "explain", "--config", cfg2, "cvm-nested")
	if r.code != 20 || !strings.Contains(r.stdout, "      FAIL anyOf:") ||
		!strings.Contains(r.stdout, `        FAIL claim x-ms-isolation-tee.x-ms-attestation-type: want equals "tdxvm", have "sevsnpvm"`) ||
		!strings.Contains(r.stdout, `        FAIL claim x-ms-azurevm-vmid: want equals "11111111-2222-4333-8444-555555555555"`) ||
		!strings.Contains(r.stdout, "      ok   claim x-ms-isolation-tee.x-ms-compliance-status") {
		t.Fatalf("explain cvm-nested: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// The sidecar API under azure-cvm: caller runtime data cannot enter an
	// HCL report, so the raw and MAA endpoints answer with a JSON error
	// (403; /attest/combined maps evidence errors to 500, as the reference
	// sidecar does); /key/release works with the TPM key.
	// The attest routes are off by default (serve.attest); turned on, they
	// still refuse under azure-cvm.
	attestCfg := filepath.Join(t.TempDir(), "skrfs-attest.yaml")
	base, err = os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(attestCfg, append(base, []byte("\nserve:\n  attest: true\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	sd, api := startServeWhole(t, attestCfg)
	rd := `{"runtime_data":"eyJrZXlzIjpbXX0="}`
	for path, status := range map[string]int{"/attest/raw": 403, "/attest/combined": 500, "/attest/maa": 403} {
		code, out := post(t, api+path, rd)
		if code != status || !strings.Contains(out["error"], "cannot bind caller runtime data") {
			t.Fatalf("%s under azure-cvm with serve.attest: %d %v", path, code, out)
		}
	}
	code, out := post(t, api+"/key/release", `{"maa_endpoint":"`+hostOf(s.MAAURL)+`","akv_endpoint":"`+hostOf(s.VaultURL)+`","kid":"demo-oct"}`)
	if code != 200 || !strings.Contains(out["key"], `"kty":"oct"`) {
		t.Fatalf("/key/release under azure-cvm: %d %v", code, out)
	}
	sd.stop(t)
	// provider auto: no SEV-SNP device here, so the vTPM with an HCL
	// report is chosen, and the log says so and why.
	autoCfg := filepath.Join(t.TempDir(), "auto.yaml")
	os.WriteFile(autoCfg, []byte(strings.Replace(string(base), "provider: azure-cvm", "provider: auto", 1)), 0o600)
	r = run(t, skrfsBin(t), "attest", "--config", autoCfg, "--log-level", "info")
	if r.code != 0 || !strings.Contains(r.stderr, "attestation.provider auto: no SEV-SNP guest device, but a vTPM holding an HCL report") ||
		!strings.Contains(r.stdout, `"x-ms-attestation-type": "azurevm"`) {
		t.Fatalf("provider auto: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// The seeded HCL report verifies offline as far as it can without certificates.
	r = run(t, skrfsBin(t), "attest", "verify", "--hcl-report", filepath.Join(s.Dir, "cvm", "hcl_report.bin"))
	if r.code != 22 || !strings.Contains(r.stdout, devstack.CVMVMID) {
		t.Fatalf("attest verify --hcl-report: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// startServeWhole is startServe, waiting until the ready file holds the
// address (it is created before it is written).
func startServeWhole(t *testing.T, cfg string) (*daemonProc, string) {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	d := execDaemon(t, "serve", "--config", cfg, "--listen", "127.0.0.1:0", "--ready-file", ready)
	waitReady(t, ready, d)
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(ready)
		if addr, _, ok := strings.Cut(string(b), "\n"); ok && addr != "" {
			return d, "http://" + addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("ready file %s stays empty", ready)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
