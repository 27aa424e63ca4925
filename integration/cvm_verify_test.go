package integration

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAttestVerifyGenuineCVM: `skrfs attest verify` on genuine Azure CVM
// evidence: the SNP report, runtime JSON and VCEK/ASK/ARK verify (exit 0);
// the HCL report without a VCEK shows its claims but exits 22 with
// "signature: not verified (no certificates)"; a TDX HCL report is called
// TDX; flipped bits fail (exit 21).
func TestAttestVerifyGenuineCVM(t *testing.T) {
	cvm := filepath.Join(repoRoot(t), "..", "shared", "testdata", "cvm")
	dir := t.TempDir()
	vcek, _ := os.ReadFile(filepath.Join(cvm, "vcek.pem"))
	askArk, _ := os.ReadFile(filepath.Join(cvm, "ask_ark.pem"))
	certs := filepath.Join(dir, "certs.pem")
	os.WriteFile(certs, append(vcek, askArk...), 0o644)
	report, runtime := filepath.Join(cvm, "snp_report.bin"), filepath.Join(cvm, "runtime_data.json")

	r := run(t, skrfsBin(t), "attest", "verify", "--report", report, "--runtime-data", runtime, "--certs", certs)
	var out struct {
		Claims          map[string]any `json:"claims"`
		Signature       string         `json:"signature"`
		AkPub           map[string]any `json:"HCLAkPub"`
		VMConfiguration map[string]any `json:"vm-configuration"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &out) != nil {
		t.Fatalf("genuine CVM evidence: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	tee, _ := out.Claims["x-ms-isolation-tee"].(map[string]any)
	if out.Claims["x-ms-attestation-type"] != "azurevm" || tee["x-ms-attestation-type"] != "sevsnpvm" ||
		tee["x-ms-sevsnpvm-launchmeasurement"] != "5677f1de87289e7ad2c7e99c805d0468b1a9ccd83f0d245afa5242d405da4d5725852f8c6550564870e5f3206dfb1841" ||
		out.AkPub["bits"] != 2048.0 || out.VMConfiguration["vmUniqueId"] != "B6C98C3B-4EC7-4DA6-BD2F-7D98D20D7B75" ||
		!strings.HasPrefix(out.Signature, "verified") || !strings.Contains(r.stderr, "runtime-data binding: verified") {
		t.Fatalf("claims: %s\n%s", r.stdout, r.stderr)
	}

	// Without certificates: claims, but never exit 0.
	r = run(t, skrfsBin(t), "attest", "verify", "--hcl-report", filepath.Join(cvm, "hcl_report.bin"))
	if r.code != 22 || !strings.Contains(r.stderr, "signature: not verified (no certificates)") ||
		!strings.Contains(r.stdout, `"vmUniqueId": "BAEFD3E1-184B-4C4C-AB88-0BDAD260505F"`) || !strings.Contains(r.stdout, `"kid": "HCLAkPub"`) {
		t.Fatalf("hcl report without certs: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// The HCL report is from another chip: this VCEK fails it.
	if r = run(t, skrfsBin(t), "attest", "verify", "--hcl-report", filepath.Join(cvm, "hcl_report.bin"), "--certs", certs); r.code != 21 {
		t.Fatalf("hcl report with another chip's VCEK: %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	hcl, _ := os.ReadFile(filepath.Join(cvm, "hcl_report.bin"))
	flip := func(name string, b []byte, i int) string {
		c := append([]byte(nil), b...)
		c[i] ^= 0x04
		p := filepath.Join(dir, name)
		os.WriteFile(p, c, 0o644)
		return p
	}
	// A flipped byte of the runtime JSON inside the HCL report.
	if r = run(t, skrfsBin(t), "attest", "verify", "--hcl-report", flip("hcl-rt.bin", hcl, 1300)); r.code != 21 || !strings.Contains(r.stderr, "report_data") {
		t.Fatalf("flipped HCL runtime data: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	rep, _ := os.ReadFile(report)
	rt, _ := os.ReadFile(runtime)
	if r = run(t, skrfsBin(t), "attest", "verify", "--report", flip("rep.bin", rep, 0x1A0), "--runtime-data", runtime, "--certs", certs); r.code != 21 {
		t.Fatalf("flipped report: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r = run(t, skrfsBin(t), "attest", "verify", "--report", report, "--runtime-data", flip("rt.json", rt, 100), "--certs", certs); r.code != 21 {
		t.Fatalf("flipped runtime data: %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// TDX: reported as TDX, refused with a clear error.
	tdx := append([]byte(nil), hcl...)
	binary.LittleEndian.PutUint32(tdx[0x4C8:], 4)
	p := filepath.Join(dir, "tdx.bin")
	os.WriteFile(p, tdx, 0o644)
	if r = run(t, skrfsBin(t), "attest", "verify", "--hcl-report", p); r.code != 21 || !strings.Contains(r.stderr, "TEE tdxvm") ||
		!strings.Contains(r.stderr, "TDX confidential VMs are not supported yet") {
		t.Fatalf("TDX: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
