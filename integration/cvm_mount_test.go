package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

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
	// The seeded HCL report verifies offline as far as it can without certificates.
	r = run(t, skrfsBin(t), "attest", "verify", "--hcl-report", filepath.Join(s.Dir, "cvm", "hcl_report.bin"))
	if r.code != 22 || !strings.Contains(r.stdout, devstack.CVMVMID) {
		t.Fatalf("attest verify --hcl-report: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
