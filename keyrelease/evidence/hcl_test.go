package evidence

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"
)

const cvmDir = "../../../shared/testdata/cvm/"

func readCVM(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(cvmDir + name)
	if err != nil {
		tb.Fatalf("genuine CVM evidence (../shared/testdata/cvm) is required: %v", err)
	}
	return b
}

func cvmChain(tb testing.TB) *Chain {
	tb.Helper()
	c, err := ParseChainPEM(append(readCVM(tb, "vcek.pem"), readCVM(tb, "ask_ark.pem")...))
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// TestGenuineHCLReport: the 2048-byte HCL report of a real CVM parses by
// its sizes, and its runtime JSON is bound into the SNP REPORT_DATA.
func TestGenuineHCLReport(t *testing.T) {
	b := readCVM(t, "hcl_report.bin")
	h, err := ParseHCLReport(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.Version != 1 || h.ReportSize != 1819 || h.RequestType != 2 || h.ReportType != HCLReportTypeSNP || h.TEE() != "sevsnpvm" ||
		len(h.RuntimeData) != 583 || len(h.HWReport) != 1184 {
		t.Fatalf("parsed %+v", h)
	}
	if err := h.CheckBinding(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h.RuntimeData, b[1236:1819]) || !strings.HasPrefix(string(h.RuntimeData), `{"keys":[{"kid":"HCLAkPub"`) {
		t.Fatalf("runtime data %q", h.RuntimeData)
	}
	claims, rt, err := VerifyCVM(h.HWReport, h.RuntimeData, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	tee := claims["x-ms-isolation-tee"].(map[string]any)
	if claims["x-ms-attestation-type"] != "azurevm" || tee["x-ms-attestation-type"] != "sevsnpvm" ||
		claims["x-ms-azurevm-vmid"] != "BAEFD3E1-184B-4C4C-AB88-0BDAD260505F" || rt.AkPub.N.BitLen() != 2048 ||
		rt.VMConfig["secure-boot"] != true || tee["x-ms-runtime"].(map[string]any)["vm-configuration"] == nil {
		t.Fatalf("claims %v", claims)
	}
	// Any flipped bit of the runtime data breaks the binding.
	for i := 0; i < len(h.RuntimeData); i++ {
		bad := bytes.Clone(b)
		bad[1236+i] ^= 1 << (i % 8)
		h2, err := ParseHCLReport(bad)
		if err != nil {
			t.Fatal(err)
		}
		if h2.CheckBinding() == nil {
			t.Fatalf("runtime byte %d flipped: binding still holds", i)
		}
		if _, _, err := VerifyCVM(h2.HWReport, h2.RuntimeData, nil, Options{}); err == nil {
			t.Fatalf("runtime byte %d flipped: VerifyCVM passed", i)
		}
	}
}

// TestGenuineCVMReportVerifies: the genuine CVM SNP report, its runtime
// JSON and VCEK/ASK/ARK verify; any flipped bit of the signed report or
// of the runtime JSON fails.
func TestGenuineCVMReportVerifies(t *testing.T) {
	report, runtime, chain := readCVM(t, "snp_report.bin"), readCVM(t, "runtime_data.json"), cvmChain(t)
	claims, rt, err := VerifyCVM(report, runtime, chain, Options{Now: aciNow})
	if err != nil {
		t.Fatal(err)
	}
	tee := claims["x-ms-isolation-tee"].(map[string]any)
	if tee["x-ms-sevsnpvm-launchmeasurement"] != "5677f1de87289e7ad2c7e99c805d0468b1a9ccd83f0d245afa5242d405da4d5725852f8c6550564870e5f3206dfb1841" ||
		tee["x-ms-sevsnpvm-is-debuggable"] != false || tee["x-ms-sevsnpvm-vmpl"] != 0 ||
		!strings.HasPrefix(tee["x-ms-sevsnpvm-reportdata"].(string), "0ccc0895ef2f2c3b8c8568f5a2bb65ff5bf9387a09359742ad41e686cacfd38b") ||
		claims["x-ms-azurevm-vmid"] != "B6C98C3B-4EC7-4DA6-BD2F-7D98D20D7B75" || rt.AkPub.E != 65537 {
		t.Fatalf("claims %v", claims)
	}
	for i := 0; i < signedPart; i++ {
		bad := bytes.Clone(report)
		bad[i] ^= 1 << (i % 8)
		if _, _, err := VerifyCVM(bad, runtime, chain, Options{Now: aciNow}); err == nil {
			t.Fatalf("report byte %#x flipped verified", i)
		}
	}
	for i := range runtime {
		bad := bytes.Clone(runtime)
		bad[i] ^= 1 << (i % 8)
		if _, _, err := VerifyCVM(report, bad, chain, Options{Now: aciNow}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("runtime byte %d flipped: %v", i, err)
		}
	}
	// The ACI chain (another chip) does not vouch for this report.
	if _, aciChain := aciEvidence(t); true {
		if _, _, err := VerifyCVM(report, runtime, aciChain, Options{Now: aciNow}); err == nil {
			t.Fatal("verified with another chip's VCEK")
		}
	}
}

func setU32(b []byte, off int, v uint32) { binary.LittleEndian.PutUint32(b[off:], v) }

// TestHCLReportTDX: a report_type 4 report parses as TDX (its binding is
// read from the TD report's REPORTDATA), not as garbage.
func TestHCLReportTDX(t *testing.T) {
	b := bytes.Clone(readCVM(t, "hcl_report.bin"))
	setU32(b, 0x4C0+8, HCLReportTypeTDX)
	h, err := ParseHCLReport(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.TEE() != "tdxvm" {
		t.Fatalf("TEE %s", h.TEE())
	}
	if h.CheckBinding() == nil {
		t.Fatal("an SNP report's bytes bound as a TD report")
	}
	// Put the SNP REPORT_DATA where a TD report has it: now bound.
	copy(b[0x20+128:0x20+192], bytes.Clone(b[0x20+0x50:0x20+0x90]))
	h, _ = ParseHCLReport(b)
	if err := h.CheckBinding(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ErrTDX.Error(), "TDX confidential VMs are not supported yet") {
		t.Fatal(ErrTDX)
	}
}

func TestParseHCLReportRejects(t *testing.T) {
	good := readCVM(t, "hcl_report.bin")
	for _, tc := range []struct {
		name string
		mut  func([]byte) []byte
		want string
	}{
		{"short", func(b []byte) []byte { return b[:0x4D0] }, "at least"},
		{"magic", func(b []byte) []byte { b[0] = 'X'; return b }, "HCLA"},
		{"version", func(b []byte) []byte { setU32(b, 4, 7); return b }, "version 7"},
		{"report type", func(b []byte) []byte { setU32(b, 0x4C8, 3); return b }, "type 3"},
		{"hash type", func(b []byte) []byte { setU32(b, 0x4CC, 2); return b }, "hash type 2"},
		{"var size overruns", func(b []byte) []byte { setU32(b, 0x4D0, 5000); setU32(b, 0x4C0, 5020); return b }, "overruns"},
		{"data size", func(b []byte) []byte { setU32(b, 0x4C0, 604); return b }, "request data size"},
		{"report size", func(b []byte) []byte { setU32(b, 8, 1820); return b }, "report size"},
		{"too big", func(b []byte) []byte { return append(b, make([]byte, HCLMaxSize)...) }, "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseHCLReport(tc.mut(bytes.Clone(good)))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestParseHCLRuntimeRejects(t *testing.T) {
	for _, tc := range []struct{ name, json, want string }{
		{"not json", `{"keys":`, "not a JSON object"},
		{"trailing", `{"keys":[]} {}`, "trailing"},
		{"no ak", `{"keys":[{"kid":"HCLEkPub","kty":"RSA","n":"AQAB","e":"AQAB"}]}`, "no HCLAkPub"},
		{"ec ak", `{"keys":[{"kid":"HCLAkPub","kty":"EC"}]}`, "want RSA"},
		{"tiny modulus", `{"keys":[{"kid":"HCLAkPub","kty":"RSA","n":"AQAB","e":"AQAB"}]}`, "modulus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseHCLRuntime([]byte(tc.json))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// FuzzParseHCLReport: the HCL parser never panics, never returns slices
// outside its input, and whatever it accepts re-checks consistently: a
// report whose binding holds has runtime data that hashes into its
// REPORT_DATA.
func FuzzParseHCLReport(f *testing.F) {
	good := readCVM(f, "hcl_report.bin")
	f.Add(good)
	tdx := bytes.Clone(good)
	setU32(tdx, 0x4C8, HCLReportTypeTDX)
	f.Add(tdx)
	f.Add(good[:0x4D4])
	f.Add([]byte("HCLA"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHCLReport(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if len(h.HWReport) != 1184 || len(h.RuntimeData) > len(b)-0x4D4 || !bytes.Equal(h.RuntimeData, b[0x4D4:0x4D4+len(h.RuntimeData)]) {
			t.Fatalf("bad slices: %d %d", len(h.HWReport), len(h.RuntimeData))
		}
		if h.CheckBinding() == nil {
			if err := CheckRuntimeBinding(h.ReportData(), h.RuntimeData); err != nil {
				t.Fatal("binding not deterministic")
			}
		}
		if rt, err := ParseHCLRuntime(h.RuntimeData); err == nil && rt.AkPub == nil {
			t.Fatal("runtime without AK accepted")
		}
		if h.ReportType == HCLReportTypeSNP {
			VerifyCVM(h.HWReport, h.RuntimeData, nil, Options{})
		}
	})
}
