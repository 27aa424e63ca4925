package evidence

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/skrfs/skrfs/keyrelease/attest/fakesnp"
)

const aciDir = "../../../shared/testdata/aci/"

var aciNow = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)

func aciEvidence(t *testing.T) ([]byte, *Chain) {
	t.Helper()
	report, err := os.ReadFile(aciDir + "snp_report.bin")
	if err != nil {
		t.Fatalf("genuine ACI evidence (../shared/testdata/aci) is required: %v", err)
	}
	thim, err := os.ReadFile(aciDir + "uvm_host_amd_certificate.json")
	if err != nil {
		t.Fatal(err)
	}
	chain, tcbm, err := ParseTHIM(thim)
	if err != nil || tcbm != "7308000000000003" {
		t.Fatalf("THIM: %v, tcbm %q", err, tcbm)
	}
	return report, chain
}

func TestGenuineACIReport(t *testing.T) {
	report, chain := aciEvidence(t)
	claims, err := Verify(report, chain, Options{Now: aciNow})
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{
		"x-ms-sevsnpvm-hostdata":          "cadd74f71ebb8fbf9782baab649612520f3c416bc5ce9ac768808ddc8d9b031c",
		"x-ms-sevsnpvm-launchmeasurement": "51068107cdc7ee3d89c7821b05bca6147eb77b2005ae759050fc049b65a1b0beabc65a9d857acecf23225f5ec76849f5",
		"x-ms-sevsnpvm-reportdata":        "ee986ff2bd7e3f22e29f640918627816cf8e23b9d9c312767168eab68c861c71" + strings.Repeat("0", 64),
		"x-ms-sevsnpvm-is-debuggable":     false,
		"x-ms-sevsnpvm-vmpl":              0,
		"x-ms-attestation-type":           "sevsnpvm",
	} {
		if claims[k] != want {
			t.Errorf("claim %s = %v, want %v", k, claims[k], want)
		}
	}
	// Any flipped bit of the signed part fails (every byte, one bit each).
	for i := 0; i < 0x2A0; i++ {
		bad := bytes.Clone(report)
		bad[i] ^= 1 << (i % 8)
		if _, err := Verify(bad, chain, Options{Now: aciNow}); err == nil {
			t.Fatalf("report with byte %#x flipped verified", i)
		}
	}
	// The runtime data binding is enforced when runtime data is given.
	if _, err := Verify(report, chain, Options{Now: aciNow, RuntimeData: []byte("{}")}); !errors.Is(err, ErrInvalid) ||
		!strings.Contains(err.Error(), "report_data does not match") {
		t.Fatalf("runtime data mismatch: %v", err)
	}
}

func TestFakeDevice(t *testing.T) {
	d, err := fakesnp.New(fakesnp.Config{HostData: fakesnp.HostDataFromPolicy([]byte("policy"))})
	if err != nil {
		t.Fatal(err)
	}
	runtime := []byte(`{"keys":[]}`)
	var rd [64]byte
	h := sha256.Sum256(runtime)
	copy(rd[:], h[:])
	report, _ := d.Report(rd)
	chain, err := ParseChainPEM(d.CertChainPEM())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(report, chain, Options{RuntimeData: runtime}); err == nil {
		t.Fatal("a fake report verified against AMD's genuine roots only")
	}
	claims, err := Verify(report, chain, Options{RuntimeData: runtime, ExtraRoots: d.Roots()})
	if err != nil {
		t.Fatal(err)
	}
	want := fakesnp.HostDataFromPolicy([]byte("policy"))
	if claims["x-ms-sevsnpvm-hostdata"] != hex.EncodeToString(want[:]) {
		t.Fatalf("claims %v", claims)
	}
}
