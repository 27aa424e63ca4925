package devstack

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/skrfs/skrfs/internal/devstack/fakecvm"
	"github.com/skrfs/skrfs/keyrelease/attest/cvm"
)

// startCVM starts the fake CVM's vTPM (swtpm, state in DIR/cvm/swtpm) and
// seeds it as an Azure paravisor would: an AK at 0x81000003 and an HCL
// report in NV 0x01400001 signed by the fake SEV-SNP chip, whose runtime
// JSON names the AK and the VM CVMVMID.
func (s *Stack) startCVM() error {
	sw, err := fakecvm.StartSWTPM(filepath.Join(s.Dir, "cvm", "swtpm"))
	if err != nil {
		return err
	}
	t, err := cvm.OpenTPM(sw.Addr)
	if err != nil {
		sw.Close()
		return err
	}
	defer t.Close()
	hcl, err := fakecvm.Seed(t, s.Device, fakecvm.VMConfig{VMUniqueID: CVMVMID, SecureBoot: true})
	if err != nil {
		sw.Close()
		return fmt.Errorf("seed the fake vTPM: %w", err)
	}
	s.SWTPM = sw
	// A copy of the report for `skrfs attest verify --hcl-report`, and an
	// empty TCG event log (the devstack's MAA does not replay it).
	if err := os.WriteFile(filepath.Join(s.Dir, "cvm", "hcl_report.bin"), hcl, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(s.Dir, "cvm", "binary_bios_measurements"), nil, 0o644)
}

// checkSeededTEE refuses a directory seeded for another TEE: the seeded
// keys' release policies are for the TEE they were seeded with.
func (s *Stack) checkSeededTEE() error {
	p := filepath.Join(s.Dir, "tee")
	b, err := os.ReadFile(p)
	if err != nil {
		if _, serr := os.Stat(filepath.Join(s.Dir, "store", "data")); serr == nil {
			b, err = []byte(TEESNP), nil // seeded before the TEE was recorded: the fake SEV-SNP device
		}
	}
	if err == nil {
		if got := strings.TrimSpace(string(b)); got != s.opts.TEE {
			return fmt.Errorf("devstack: %s was seeded for TEE %s; use another --dir for %s", s.Dir, got, s.opts.TEE)
		}
		return nil
	}
	return os.WriteFile(p, []byte(s.opts.TEE+"\n"), 0o644)
}

// writeCVMConfig rewrites skrfs.yaml's attestation block for the fake CVM.
func (s *Stack) writeCVMConfig() error {
	p := filepath.Join(s.Dir, ConfigFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	start := bytes.Index(b, []byte("attestation:\n"))
	end := bytes.Index(b, []byte("\nidentity:\n"))
	if start < 0 || end < start {
		return fmt.Errorf("devstack: %s has no attestation block", p)
	}
	block := fmt.Sprintf(`attestation:
  # The devstack's FAKE Azure confidential VM: swtpm seeded as a paravisor's
  # vTPM (AK 0x81000003, HCL report in NV 0x01400001 from the fake SEV-SNP
  # chip). The provider is the real azure-cvm one, over TCP instead of /dev/tpmrm0.
  provider: azure-cvm
  maa: %s
  cvm:
    tpm: %s
    event_log: %s
`, s.MAAURL, s.SWTPM.Addr, filepath.Join(s.Dir, "cvm", "binary_bios_measurements"))
	out := append([]byte(block), b[end+1:]...)
	out = append(b[:start:start], out...)
	out = bytes.Replace(out, []byte("# its policy wants another HOST_DATA"), []byte("# its policy pins another VM (x-ms-azurevm-vmid)"), 1)
	return os.WriteFile(p, out, 0o600)
}
