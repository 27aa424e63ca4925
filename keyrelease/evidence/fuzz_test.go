package evidence

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"strings"
	"testing"
)

// aciSeeds loads the genuine ACI evidence for the fuzz targets.
func aciSeeds(f *testing.F) (report []byte, chain *Chain, thim [][]byte, cose [][]byte) {
	f.Helper()
	read := func(name string) []byte {
		b, err := os.ReadFile(aciDir + name)
		if err != nil {
			f.Fatalf("genuine ACI evidence (../shared/testdata/aci) is required: %v", err)
		}
		return b
	}
	b64 := func(name string) []byte {
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(read(name))))
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	report = read("snp_report.bin")
	thim = [][]byte{read("uvm_host_amd_certificate.json"), b64("host-amd-cert-base64")}
	chain, _, err := ParseTHIM(thim[0])
	if err != nil {
		f.Fatal(err)
	}
	cose = [][]byte{read("uvm_reference_info.cose"), b64("reference-info-base64")}
	return report, chain, thim, cose
}

// signedPart is the part of a SEV-SNP report its signature covers.
const signedPart = 0x2A0

// FuzzVerifyReport: the SNP report parser and verifier never panic on any
// bytes, and with the genuine ACI certificate chain they accept only
// reports whose signed part is the genuine report's: no mutation of what
// the VCEK signed passes.
func FuzzVerifyReport(f *testing.F) {
	report, chain, _, _ := aciSeeds(f)
	f.Add(report)
	f.Add(report[:signedPart])
	bad := bytes.Clone(report)
	bad[0x38] ^= 0x80 // the guest policy's debug bit area
	f.Add(bad)
	f.Fuzz(func(t *testing.T, b []byte) {
		claims, err := Verify(b, chain, Options{Now: aciNow})
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("unclassified rejection: %v", err)
			}
			return
		}
		if !bytes.Equal(b[:signedPart], report[:signedPart]) {
			t.Fatalf("a report with a modified signed part verified")
		}
		if claims["x-ms-sevsnpvm-hostdata"] != "cadd74f71ebb8fbf9782baab649612520f3c416bc5ce9ac768808ddc8d9b031c" {
			t.Fatalf("claims do not come from the report: %v", claims["x-ms-sevsnpvm-hostdata"])
		}
	})
}

// FuzzParseTHIM: the THIM / host-amd-cert JSON and PEM chain parsers never
// panic, and whatever chain they accept can make the genuine report verify
// only if it carries the genuine VCEK: a substituted certificate chain is
// never trusted.
func FuzzParseTHIM(f *testing.F) {
	report, genuine, thim, _ := aciSeeds(f)
	for _, b := range thim {
		f.Add(b)
	}
	f.Add([]byte(`{"vcekCert":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n","certificateChain":"","tcbm":"0"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		chain, _, err := ParseTHIM(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("unclassified rejection: %v", err)
			}
			return
		}
		if chain.VCEK == nil || chain.ASK == nil || chain.ARK == nil {
			t.Fatal("accepted a chain with a missing certificate")
		}
		if _, err := Verify(report, chain, Options{Now: aciNow}); err == nil && !bytes.Equal(chain.VCEK.Raw, genuine.VCEK.Raw) {
			t.Fatal("the genuine report verified under another VCEK")
		}
	})
}

// FuzzVerifyEndorsement: the UVM endorsement (COSE_Sign1) parser never
// panics, and with Microsoft's endorser trusted it accepts only the
// launch measurements Microsoft signed.
func FuzzVerifyEndorsement(f *testing.F) {
	_, _, _, cose := aciSeeds(f)
	genuine := map[string]bool{}
	for _, b := range cose {
		f.Add(b)
		e, err := VerifyEndorsement(b, []Endorser{MicrosoftUVM})
		if err != nil {
			f.Fatalf("genuine endorsement: %v", err)
		}
		genuine[e.LaunchMeasurement] = true
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := VerifyEndorsement(b, []Endorser{MicrosoftUVM})
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("unclassified rejection: %v", err)
			}
			return
		}
		if !genuine[e.LaunchMeasurement] || e.Endorser != MicrosoftUVM {
			t.Fatalf("accepted an endorsement of %q by %+v", e.LaunchMeasurement, e.Endorser)
		}
	})
}
