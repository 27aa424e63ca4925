package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/veraison/go-cose"
)

// aciDir holds genuine evidence of an ACI confidential container group:
// snp_report.bin, its AMD certificates, and the UVM endorsement of that
// same UVM (uvm_reference_info.cose, launch measurement 51068107...).
// reference-info-base64 is a genuine endorsement of another UVM.
const aciDir = "../../../shared/testdata/aci/"

// aciAt is a time at which the genuine VCEK is valid.
const aciAt = "2025-06-01T00:00:00Z"

const aciMeasurement = "51068107cdc7ee3d89c7821b05bca6147eb77b2005ae759050fc049b65a1b0beabc65a9d857acecf23225f5ec76849f5"

// runSkrfs runs the skrfs command line in-process, as main does, and
// returns stdout, stderr and the exit code main would use.
func runSkrfs(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := newRootCmd()
	var stdout, stderr bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SetArgs(args)
	err := cmd.Execute()
	if err != nil {
		stderr.WriteString("skrfs: " + err.Error() + "\n")
	}
	return stdout.String(), stderr.String(), exitCode(err)
}

func verifyArgs(endorsements ...string) []string {
	args := []string{"attest", "verify", "--report", aciDir + "snp_report.bin",
		"--certs", aciDir + "uvm_host_amd_certificate.json", "--at", aciAt}
	for _, e := range endorsements {
		args = append(args, "--endorsement", e)
	}
	return args
}

func writeTemp(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func readACI(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(aciDir + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAttestVerifyEndorsementGenuine(t *testing.T) {
	raw := readACI(t, "uvm_reference_info.cose")
	b64 := writeTemp(t, "reference-info-base64", []byte(base64.StdEncoding.EncodeToString(raw)+"\n"))
	for _, c := range []struct {
		name  string
		files []string
	}{
		{"raw COSE_Sign1", []string{aciDir + "uvm_reference_info.cose"}},
		{"base64 as in a security context", []string{b64}},
		{"the same endorsement twice", []string{aciDir + "uvm_reference_info.cose", b64}},
	} {
		t.Run(c.name, func(t *testing.T) {
			stdout, stderr, code := runSkrfs(t, verifyArgs(c.files...)...)
			if code != exitOK {
				t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
			}
			var claims map[string]any
			if err := json.Unmarshal([]byte(stdout), &claims); err != nil {
				t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
			}
			if claims["x-ms-compliance-status"] != "azure-compliant-uvm" {
				t.Errorf("x-ms-compliance-status = %v, want azure-compliant-uvm", claims["x-ms-compliance-status"])
			}
			if claims["x-ms-sevsnpvm-launchmeasurement"] != aciMeasurement {
				t.Errorf("launch measurement %v", claims["x-ms-sevsnpvm-launchmeasurement"])
			}
			if !strings.Contains(stderr, "feed ContainerPlat-AMD-UVM, guest SVN 22, signed 2023-02-08T05:42:23Z") {
				t.Errorf("stderr does not describe the endorsement:\n%s", stderr)
			}
		})
	}
	// Without --endorsement the same evidence carries no compliance claim.
	stdout, stderr, code := runSkrfs(t, verifyArgs()...)
	if code != exitOK || strings.Contains(stdout, "x-ms-compliance-status") {
		t.Fatalf("without an endorsement: exit %d\n%s%s", code, stdout, stderr)
	}
}

// TestAttestVerifyEndorsementRejected: a flipped byte anywhere in the
// signed payload, an endorsement of another UVM (genuine, but for another
// launch measurement), and files that are no endorsement all fail with the
// attestation exit code and no compliance claim.
func TestAttestVerifyEndorsementRejected(t *testing.T) {
	raw := readACI(t, "uvm_reference_info.cose")
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(raw); err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(raw, msg.Payload)
	if at < 0 || len(msg.Payload) < 100 {
		t.Fatalf("payload (%d bytes) not found in the file", len(msg.Payload))
	}
	for i := range msg.Payload {
		b := bytes.Clone(raw)
		b[at+i] ^= 0x01
		stdout, stderr, code := runSkrfs(t, verifyArgs(writeTemp(t, "flipped.cose", b))...)
		if code != exitAttestation || !strings.Contains(stderr, "UVM endorsement signature") || strings.Contains(stdout, "azure-compliant-uvm") {
			t.Fatalf("payload byte %d flipped: exit %d\n%s%s", i, code, stdout, stderr)
		}
	}

	other := aciDir + "reference-info-base64"
	for _, files := range [][]string{{other}, {aciDir + "uvm_reference_info.cose", other}} {
		stdout, stderr, code := runSkrfs(t, verifyArgs(files...)...)
		if code != exitAttestation || strings.Contains(stdout, "azure-compliant-uvm") ||
			!strings.Contains(stderr, "endorses launch measurement 03fea02823189b25d0623a5c81f97c8ba4d2fbc48c914a55ce525f90454ddcec303743dac2fc013f0846912d1412f6df, but the report's is "+aciMeasurement) {
			t.Fatalf("endorsement of another UVM %v: exit %d\n%s%s", files, code, stdout, stderr)
		}
	}

	for _, c := range []struct{ name, file, want string }{
		{"not COSE", writeTemp(t, "junk", []byte("hello")), "not a COSE_Sign1"},
		{"truncated", writeTemp(t, "short.cose", raw[:len(raw)/2]), "not a COSE_Sign1"},
		{"an AMD certificate instead", aciDir + "uvm_host_amd_certificate.json", "not a COSE_Sign1"},
		{"missing file", filepath.Join(t.TempDir(), "absent"), "no such file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			stdout, stderr, code := runSkrfs(t, verifyArgs(c.file)...)
			if code == exitOK || strings.Contains(stdout, "azure-compliant-uvm") || !strings.Contains(stderr, c.want) {
				t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
			}
		})
	}

	// --endorsement does not replace the report.
	_, stderr, code := runSkrfs(t, "attest", "verify", "--endorsement", aciDir+"uvm_reference_info.cose")
	if code != exitUsage || !strings.Contains(stderr, "--report and --certs (or --hcl-report) are required") {
		t.Fatalf("no report: exit %d %s", code, stderr)
	}
}
