package evidence

import (
	"bytes"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/google/go-sev-guest/abi"
)

// The HCL report: what the paravisor ("HCL") of an Azure confidential VM
// stores in vTPM NV index 0x01400001 (protocol.md 13.1). All integers are
// little-endian.
//
//	0x000  32    header: "HCLA", version, report_size, request_type, 4 reserved
//	0x020  1184  hardware report (SEV-SNP report, or a TDX TD report)
//	0x4C0  20    IGVM request data: data_size, version, report_type,
//	             report_data_hash_type, variable_data_size
//	0x4D4  var   runtime JSON (variable_data_size bytes), then zero padding
const (
	hclHeaderSize   = 32
	hclHWReportOff  = 0x20
	hclHWReportSize = 1184
	hclIGVMOff      = 0x4C0
	hclIGVMSize     = 20
	hclRuntimeOff   = 0x4D4
	// HCLMaxSize bounds the NV index read (real reports are 2048 or 2600
	// bytes; the TPM limits an NV index to a few KiB).
	HCLMaxSize = 1 << 14
)

// HCL report types (IGVM report_type).
const (
	HCLReportTypeSNP = 2
	HCLReportTypeTDX = 4
)

// HCLHashSHA256 is report_data_hash_type 1.
const HCLHashSHA256 = 1

// ErrTDX: the HCL report carries a TDX TD report, which skrfs cannot
// attest yet.
var ErrTDX = errors.New("TDX confidential VMs are not supported yet")

// HCLReport is a parsed HCL report. Its fields alias the parsed bytes.
type HCLReport struct {
	Version     uint32 // header version (1 or 2)
	ReportSize  uint32 // header report_size: the used length of the NV data
	RequestType uint32 // 2 = AkCertRequest
	ReportType  uint32 // HCLReportTypeSNP or HCLReportTypeTDX
	HashType    uint32 // HCLHashSHA256
	// HWReport is the 1184-byte hardware report field: a SEV-SNP
	// ATTESTATION_REPORT for report type 2.
	HWReport []byte
	// RuntimeData is the runtime JSON exactly as stored: its SHA-256 is the
	// first half of the hardware report's REPORT_DATA.
	RuntimeData []byte
}

// TEE names the hardware of the report: "sevsnpvm", "tdxvm" or
// "unknown(N)".
func (h *HCLReport) TEE() string {
	switch h.ReportType {
	case HCLReportTypeSNP:
		return "sevsnpvm"
	case HCLReportTypeTDX:
		return "tdxvm"
	}
	return fmt.Sprintf("unknown(%d)", h.ReportType)
}

// ParseHCLReport parses an HCL report by its sizes (never by searching for
// a NUL). It accepts SNP and TDX reports; use CheckBinding and the TEE
// before trusting anything in it.
func ParseHCLReport(b []byte) (*HCLReport, error) {
	if len(b) > HCLMaxSize {
		return nil, fmt.Errorf("%w: HCL report of %d bytes (at most %d)", ErrInvalid, len(b), HCLMaxSize)
	}
	if len(b) < hclRuntimeOff {
		return nil, fmt.Errorf("%w: HCL report of %d bytes, want at least %d", ErrInvalid, len(b), hclRuntimeOff)
	}
	if string(b[:4]) != "HCLA" {
		return nil, fmt.Errorf("%w: HCL report does not start with \"HCLA\" (%x)", ErrInvalid, b[:4])
	}
	u32 := func(off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }
	h := &HCLReport{Version: u32(4), ReportSize: u32(8), RequestType: u32(12)}
	if h.Version != 1 && h.Version != 2 {
		return nil, fmt.Errorf("%w: HCL report version %d (known: 1, 2)", ErrInvalid, h.Version)
	}
	dataSize := u32(hclIGVMOff) // then the IGVM data version at +4
	h.ReportType, h.HashType = u32(hclIGVMOff+8), u32(hclIGVMOff+12)
	varSize := u32(hclIGVMOff + 16)
	if h.ReportType != HCLReportTypeSNP && h.ReportType != HCLReportTypeTDX {
		return nil, fmt.Errorf("%w: HCL report type %d (known: 2 = SEV-SNP, 4 = TDX)", ErrInvalid, h.ReportType)
	}
	if h.HashType != HCLHashSHA256 {
		return nil, fmt.Errorf("%w: HCL report_data hash type %d (known: 1 = SHA-256)", ErrInvalid, h.HashType)
	}
	if uint64(varSize) > uint64(len(b)-hclRuntimeOff) {
		return nil, fmt.Errorf("%w: HCL runtime data of %d bytes overruns the %d-byte report", ErrInvalid, varSize, len(b))
	}
	if uint64(dataSize) != uint64(varSize)+hclIGVMSize {
		return nil, fmt.Errorf("%w: HCL request data size %d is not %d + %d", ErrInvalid, dataSize, hclIGVMSize, varSize)
	}
	end := hclRuntimeOff + int(varSize)
	if h.ReportSize != 0 && int64(h.ReportSize) != int64(end) {
		return nil, fmt.Errorf("%w: HCL report size %d, but its runtime data ends at %d", ErrInvalid, h.ReportSize, end)
	}
	h.HWReport = b[hclHWReportOff : hclHWReportOff+hclHWReportSize]
	h.RuntimeData = b[hclRuntimeOff:end]
	return h, nil
}

// tdReportDataOff is REPORTDATA's offset in a TDX TDREPORT
// (REPORTMACSTRUCT: type 8, reserved 12, cpusvn 16, tee_tcb_info_hash 48,
// tee_info_hash 48, then reportdata 64).
const tdReportDataOff = 128

// ReportData returns the 64-byte REPORT_DATA of the hardware report.
func (h *HCLReport) ReportData() []byte {
	if h.ReportType == HCLReportTypeTDX {
		return h.HWReport[tdReportDataOff : tdReportDataOff+64]
	}
	return h.HWReport[0x50:0x90]
}

// CheckBinding checks that REPORT_DATA is SHA-256 of the runtime data
// followed by 32 zero bytes.
func (h *HCLReport) CheckBinding() error {
	return CheckRuntimeBinding(h.ReportData(), h.RuntimeData)
}

// CheckRuntimeBinding checks that reportData (64 bytes) is SHA-256 of
// runtime followed by 32 zero bytes.
func CheckRuntimeBinding(reportData, runtime []byte) error {
	sum := sha256.Sum256(runtime)
	want := append(sum[:], make([]byte, 32)...)
	if len(reportData) != 64 || subtle.ConstantTimeCompare(reportData, want) != 1 {
		return fmt.Errorf("%w: report_data does not match SHA-256 of the runtime data", ErrInvalid)
	}
	return nil
}

// HCLRuntime is the runtime JSON of an HCL report (protocol.md 13.1).
type HCLRuntime struct {
	// Claims is the whole JSON object (unknown members kept as data): MAA
	// echoes it as x-ms-isolation-tee.x-ms-runtime.
	Claims map[string]any
	// AkPub is the vTPM attestation key (the JWK with kid "HCLAkPub").
	AkPub *rsa.PublicKey
	// VMConfig is the "vm-configuration" object (nil if absent).
	VMConfig map[string]any
}

// ParseHCLRuntime parses the runtime JSON and its HCLAkPub JWK.
func ParseHCLRuntime(b []byte) (*HCLRuntime, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var claims map[string]any
	if err := d.Decode(&claims); err != nil || claims == nil {
		return nil, fmt.Errorf("%w: HCL runtime data is not a JSON object: %v", ErrInvalid, err)
	}
	if d.More() {
		return nil, fmt.Errorf("%w: HCL runtime data has trailing bytes", ErrInvalid)
	}
	var parsed struct {
		Keys []struct {
			Kid string `json:"kid"`
			Kty string `json:"kty"`
			N   string `json:"n"`
			E   string `json:"e"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(b, &parsed); err != nil {
		return nil, fmt.Errorf("%w: HCL runtime keys: %v", ErrInvalid, err)
	}
	rt := &HCLRuntime{Claims: claims}
	if vc, ok := claims["vm-configuration"].(map[string]any); ok {
		rt.VMConfig = vc
	}
	for _, k := range parsed.Keys {
		if k.Kid != "HCLAkPub" {
			continue
		}
		if k.Kty != "RSA" {
			return nil, fmt.Errorf("%w: HCLAkPub is a %q key, want RSA", ErrInvalid, k.Kty)
		}
		pub, err := rsaFromJWK(k.N, k.E)
		if err != nil {
			return nil, fmt.Errorf("%w: HCLAkPub: %v", ErrInvalid, err)
		}
		rt.AkPub = pub
	}
	if rt.AkPub == nil {
		return nil, fmt.Errorf("%w: HCL runtime data has no HCLAkPub key", ErrInvalid)
	}
	return rt, nil
}

func rsaFromJWK(n64, e64 string) (*rsa.PublicKey, error) {
	n, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(n64, "="))
	if err != nil || len(n) < 128 || len(n) > 1024 {
		return nil, fmt.Errorf("bad modulus (%d bytes): %v", len(n), err)
	}
	e, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(e64, "="))
	if err != nil || len(e) == 0 || len(e) > 4 {
		return nil, fmt.Errorf("bad exponent: %v", err)
	}
	ev := int(new(big.Int).SetBytes(e).Int64())
	if ev < 3 || ev%2 == 0 {
		return nil, fmt.Errorf("bad exponent %d", ev)
	}
	return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: ev}, nil
}

// CVMClaims returns MAA-style AzureGuest claims for SEV-SNP evidence of an
// Azure CVM: top-level x-ms-attestation-type azurevm, and the report's
// claims nested under x-ms-isolation-tee with the runtime JSON as its
// x-ms-runtime. snpClaims are the report's flat claims (Claims or Verify).
// The vTPM parts (PCRs, the TPM encryption key, x-ms-compliance-status)
// exist only in a token from MAA and are not invented here.
func CVMClaims(snpClaims map[string]any, rt *HCLRuntime) map[string]any {
	tee := map[string]any{}
	for k, v := range snpClaims {
		tee[k] = v
	}
	tee["x-ms-attestation-type"] = "sevsnpvm"
	tee["x-ms-runtime"] = rt.Claims
	out := map[string]any{
		"x-ms-attestation-type": "azurevm",
		"x-ms-isolation-tee":    tee,
	}
	if rt.VMConfig != nil {
		if id, ok := rt.VMConfig["vmUniqueId"].(string); ok {
			out["x-ms-azurevm-vmid"] = id
		}
	}
	return out
}

// AkPubSummary describes HCLAkPub for display: size and SHA-256 of the
// modulus.
func AkPubSummary(pub *rsa.PublicKey) map[string]any {
	sum := sha256.Sum256(pub.N.Bytes())
	return map[string]any{"kty": "RSA", "bits": pub.N.BitLen(), "e": pub.E, "n-sha256": hex.EncodeToString(sum[:])}
}

// VerifyCVM verifies the SEV-SNP report and runtime JSON of an Azure CVM
// (from an HCL report, or given separately): the runtime-data binding,
// the HCLAkPub key, and, when chain is not nil, the report signature, the
// AMD chain and the TCB as Verify does. It returns the AzureGuest-style
// claims and the parsed runtime data. With a nil chain nothing vouches for
// the report: the caller must say the signature was not verified.
func VerifyCVM(report, runtime []byte, chain *Chain, opts Options) (map[string]any, *HCLRuntime, error) {
	if len(report) != abi.ReportSize {
		return nil, nil, fmt.Errorf("%w: report of %d bytes, want %d", ErrInvalid, len(report), abi.ReportSize)
	}
	if err := CheckRuntimeBinding(report[0x50:0x90], runtime); err != nil {
		return nil, nil, err
	}
	rt, err := ParseHCLRuntime(runtime)
	if err != nil {
		return nil, nil, err
	}
	var snp map[string]any
	if chain != nil {
		opts.RuntimeData = runtime
		opts.Endorsements = nil
		if snp, err = Verify(report, chain, opts); err != nil {
			return nil, nil, err
		}
	} else {
		rep, err := abi.ReportToProto(report)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: report: %v", ErrInvalid, err)
		}
		snp = Claims(rep)
	}
	return CVMClaims(snp, rt), rt, nil
}
