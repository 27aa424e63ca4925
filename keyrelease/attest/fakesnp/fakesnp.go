// Package fakesnp is a FAKE SEV-SNP device for development and tests: it
// signs attestation reports for any REPORT_DATA with go-sev-guest's test
// AMD key chain, so the whole attestation and key-release path can run on
// machines without SEV-SNP. Its reports verify only against its own fake
// AMD roots, never against AMD's genuine ones, and it is used only when a
// configuration names it explicitly (attestation.provider: fake); nothing
// auto-detects it.
package fakesnp

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"sync"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	sevtest "github.com/google/go-sev-guest/testing"
	"github.com/google/go-sev-guest/verify/trust"
)

// Config is the identity of the fake TEE.
type Config struct {
	// Measurement is the launch measurement (MEASUREMENT).
	Measurement [48]byte
	// HostData is HOST_DATA; ACI puts SHA-256 of the CCE policy there
	// (see HostDataFromPolicy).
	HostData [32]byte
	// Debug sets the guest policy's debug bit (bit 19).
	Debug bool
	// VMPL is the privilege level the report claims (0 for ACI/Kata guests).
	VMPL uint32
	// GuestSVN is the guest security version number.
	GuestSVN uint32
}

// HostDataFromPolicy returns SHA-256 of a policy text, as ACI computes
// HOST_DATA from a confidential computing enforcement policy.
func HostDataFromPolicy(policy []byte) [32]byte { return sha256.Sum256(policy) }

// tcb is the fake platform's TCB: the VCEK certifies it and reports claim it.
var tcb = kds.TCBParts{BlSpl: 3, TeeSpl: 0, SnpSpl: 8, UcodeSpl: 115}

// creation is fixed so every process builds the same chain from the fixed
// test keys.
var creation = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// Device is a fake SEV-SNP device.
type Device struct {
	cfg    Config
	signer *sevtest.AmdSigner
	tcb    kds.TCBVersion
	mu     sync.Mutex
}

// New builds a device with go-sev-guest's fixed test keys (a fake ARK, ASK
// and VCEK for Milan).
func New(cfg Config) (*Device, error) {
	v, err := kds.ComposeTCBParts(tcb)
	if err != nil {
		return nil, err
	}
	b := &sevtest.AmdSignerBuilder{Keys: sevtest.DefaultAmdKeys(), ProductName: "Milan-B1", CSPID: "skrfs-fake",
		ArkCreationTime: creation, AskCreationTime: creation, AsvkCreationTime: creation, VcekCreationTime: creation,
		VlekCreationTime: creation, TCB: v}
	copy(b.HWID[:], bytes.Repeat([]byte{0x5f}, abi.ChipIDSize))
	// The VCEK certifies this chip's ID and TCB, as AMD's do.
	b.VcekCustom.Extensions = sevtest.CustomExtensions(tcb, b.HWID[:], b.CSPID, b.ProductName)
	s, err := b.TestOnlyCertChain()
	if err != nil {
		return nil, fmt.Errorf("fakesnp: %w", err)
	}
	s.Product = abi.DefaultSevProduct()
	return &Device{cfg: cfg, signer: s, tcb: v}, nil
}

// Report returns a signed 1184-byte ATTESTATION_REPORT carrying reportData.
func (d *Device) Report(reportData [64]byte) ([]byte, error) {
	pol := abi.SnpPolicyToBytes(abi.SnpPolicy{ABIMajor: 1, SMT: true, Debug: d.cfg.Debug})
	r := &spb.Report{
		Version:         3,
		GuestSvn:        d.cfg.GuestSVN,
		Policy:          pol,
		FamilyId:        make([]byte, 16),
		ImageId:         make([]byte, 16),
		Vmpl:            d.cfg.VMPL,
		SignatureAlgo:   abi.SignEcdsaP384Sha384,
		CurrentTcb:      uint64(d.tcb),
		PlatformInfo:    1, // SMT enabled
		SignerInfo:      abi.ComposeSignerInfo(abi.SignerInfo{SigningKey: abi.VcekReportSigner}),
		ReportData:      reportData[:],
		Measurement:     d.cfg.Measurement[:],
		HostData:        d.cfg.HostData[:],
		IdKeyDigest:     make([]byte, 48),
		AuthorKeyDigest: make([]byte, 48),
		ReportId:        bytes.Repeat([]byte{0x11}, 32),
		ReportIdMa:      bytes.Repeat([]byte{0xff}, 32),
		ReportedTcb:     uint64(d.tcb),
		Cpuid1EaxFms:    abi.MaskedCpuid1EaxFromSevProduct(abi.DefaultSevProduct()),
		ChipId:          d.signer.HWID[:],
		CommittedTcb:    uint64(d.tcb),
		LaunchTcb:       uint64(d.tcb),
		CurrentMajor:    1, CurrentMinor: 55, CommittedMajor: 1, CommittedMinor: 55,
		Signature: make([]byte, abi.SignatureSize),
	}
	raw, err := abi.ReportToAbiBytes(r)
	if err != nil {
		return nil, fmt.Errorf("fakesnp: %w", err)
	}
	d.mu.Lock()
	rs, ss, err := d.signer.Sign(abi.SignedComponent(raw))
	d.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("fakesnp: sign: %w", err)
	}
	if err := abi.SetSignature(rs, ss, raw); err != nil {
		return nil, fmt.Errorf("fakesnp: %w", err)
	}
	return raw, nil
}

func pemOf(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// Certs returns the fake VCEK, ASK and ARK in PEM.
func (d *Device) Certs() (vcek, ask, ark []byte) {
	return pemOf(d.signer.Vcek.Raw), pemOf(d.signer.Ask.Raw), pemOf(d.signer.Ark.Raw)
}

// CertChainPEM returns "VCEK||ASK||ARK", as MAA wants it.
func (d *Device) CertChainPEM() []byte {
	v, s, r := d.Certs()
	return bytes.Join([][]byte{v, s, r}, nil)
}

// TCB returns the reported TCB as THIM's tcbm (16 hex digits).
func (d *Device) TCB() string { return fmt.Sprintf("%016x", uint64(d.tcb)) }

// THIM returns the THIM / host-amd-cert JSON for this fake chip
// (protocol.md section 2.2).
func (d *Device) THIM() []byte {
	v, s, r := d.Certs()
	b, _ := json.Marshal(map[string]string{"vcekCert": string(v), "certificateChain": string(s) + string(r),
		"tcbm": d.TCB(), "cacheControl": "86400"})
	return b
}

// Roots returns the trusted-roots map go-sev-guest's verify.Options needs
// to accept this device's reports.
func (d *Device) Roots() map[string][]*trust.AMDRootCerts {
	return map[string][]*trust.AMDRootCerts{"Milan": {{ProductLine: "Milan",
		ProductCerts: &trust.ProductCerts{Ark: d.signer.Ark, Ask: d.signer.Ask, Asvk: d.signer.Asvk}}}}
}
