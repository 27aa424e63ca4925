// Package evidence verifies SEV-SNP evidence as Microsoft Azure Attestation
// does for confidential containers (report signature by the VCEK, AMD chain,
// TCB, runtime data, UVM endorsement) and turns it into MAA's flat claim set: the devstack's MAA stand-in and
// `skrfs attest verify` use it.
package evidence

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"
)

// ErrInvalid is wrapped by every verification failure.
var ErrInvalid = errors.New("evidence: invalid")

// Options configure verification.
type Options struct {
	// ExtraRoots are trusted in addition to AMD's genuine roots (which are
	// always trusted), e.g. the devstack's fake AMD chain.
	ExtraRoots map[string][]*trust.AMDRootCerts
	// RuntimeData, when non-nil, must hash to REPORT_DATA[0:32], with
	// REPORT_DATA[32:64] zero.
	RuntimeData []byte
	// Now is the time certificates are checked at (zero = time.Now).
	Now time.Time
	// Endorsements are UVM endorsements (raw COSE_Sign1) sent with the
	// report. When one verifies, is by a trusted endorser and endorses the
	// report's launch measurement, the claims carry
	// x-ms-compliance-status: azure-compliant-uvm. An endorsement that does
	// not verify is an error.
	Endorsements [][]byte
	// Endorsers are the trusted endorsement issuers (nil = MicrosoftUVM).
	Endorsers []Endorser
}

// Chain holds the AMD certificates of a report: VCEK, ASK, ARK.
type Chain struct {
	VCEK, ASK, ARK *x509.Certificate
}

// ParseChainPEM parses "VCEK||ASK||ARK" PEM text (MAA's VcekCertChain).
func ParseChainPEM(b []byte) (*Chain, error) {
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate chain: %v", ErrInvalid, err)
		}
		certs = append(certs, c)
	}
	if len(certs) != 3 {
		return nil, fmt.Errorf("%w: certificate chain has %d certificates, want VCEK, ASK and ARK", ErrInvalid, len(certs))
	}
	return &Chain{VCEK: certs[0], ASK: certs[1], ARK: certs[2]}, nil
}

// ParseTHIM parses THIM's JSON (also the ACI host-amd-cert file, decoded):
// {"vcekCert", "certificateChain", "tcbm", "cacheControl"}.
func ParseTHIM(b []byte) (*Chain, string, error) {
	var t struct {
		VcekCert         string `json:"vcekCert"`
		CertificateChain string `json:"certificateChain"`
		Tcbm             string `json:"tcbm"`
	}
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, "", fmt.Errorf("%w: THIM JSON: %v", ErrInvalid, err)
	}
	c, err := ParseChainPEM([]byte(t.VcekCert + t.CertificateChain))
	return c, t.Tcbm, err
}

// Verify checks the report's signature by the VCEK, the VCEK -> ASK -> ARK
// chain against AMD's genuine roots (and opts.ExtraRoots), and the binding
// of runtime data, and returns the MAA claims of the report.
func Verify(report []byte, chain *Chain, opts Options) (map[string]any, error) {
	if len(report) != abi.ReportSize {
		return nil, fmt.Errorf("%w: report of %d bytes, want %d", ErrInvalid, len(report), abi.ReportSize)
	}
	rep, err := abi.ReportToProto(report)
	if err != nil {
		return nil, fmt.Errorf("%w: report: %v", ErrInvalid, err)
	}
	product, err := productOf(rep, chain.VCEK)
	if err != nil {
		return nil, err
	}
	att := &spb.Attestation{Report: rep, CertificateChain: &spb.CertificateChain{
		VcekCert: chain.VCEK.Raw, AskCert: chain.ASK.Raw, ArkCert: chain.ARK.Raw}}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	vo := &verify.Options{DisableCertFetching: true, Now: now, Product: product}
	err = verify.SnpAttestation(att, vo)
	if err != nil && opts.ExtraRoots != nil {
		vo.TrustedRoots = opts.ExtraRoots
		if err2 := verify.SnpAttestation(att, vo); err2 == nil {
			err = nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: report signature or AMD certificate chain: %v", ErrInvalid, err)
	}
	if err := checkTCB(rep, chain.VCEK); err != nil {
		return nil, err
	}
	if opts.RuntimeData != nil {
		h := sha256.Sum256(opts.RuntimeData)
		if !bytes.Equal(rep.ReportData[:32], h[:]) || !bytes.Equal(rep.ReportData[32:], make([]byte, 32)) {
			return nil, fmt.Errorf("%w: report_data does not match SHA-256 of the runtime data", ErrInvalid)
		}
	}
	claims := Claims(rep)
	trusted := opts.Endorsers
	if trusted == nil {
		trusted = []Endorser{MicrosoftUVM}
	}
	for i, b := range opts.Endorsements {
		e, err := VerifyEndorsement(b, trusted)
		if err != nil {
			return nil, fmt.Errorf("endorsement %d: %w", i, err)
		}
		if e.LaunchMeasurement == claims["x-ms-sevsnpvm-launchmeasurement"] {
			claims["x-ms-compliance-status"] = "azure-compliant-uvm"
		}
	}
	return claims, nil
}

// productOf takes the product from a v3 report's CPUID, else from the
// VCEK's product-name extension; never a hard-coded Milan.
func productOf(rep *spb.Report, vcek *x509.Certificate) (*spb.SevProduct, error) {
	if fms := rep.GetCpuid1EaxFms(); fms != 0 {
		return abi.SevProductFromCpuid1Eax(fms), nil
	}
	ext, err := kds.VcekCertificateExtensions(vcek)
	if err != nil {
		return nil, fmt.Errorf("%w: VCEK extensions: %v", ErrInvalid, err)
	}
	p, err := kds.ParseProductName(ext.ProductName, abi.VcekReportSigner)
	if err != nil {
		return nil, fmt.Errorf("%w: VCEK product %q: %v", ErrInvalid, ext.ProductName, err)
	}
	return p, nil
}

// checkTCB requires the VCEK to certify the TCB the report claims.
func checkTCB(rep *spb.Report, vcek *x509.Certificate) error {
	ext, err := kds.VcekCertificateExtensions(vcek)
	if err != nil {
		return fmt.Errorf("%w: VCEK extensions: %v", ErrInvalid, err)
	}
	if uint64(ext.TCBVersion) != rep.ReportedTcb {
		return fmt.Errorf("%w: VCEK certifies TCB %016x but the report claims %016x", ErrInvalid, uint64(ext.TCBVersion), rep.ReportedTcb)
	}
	return nil
}

// Claims returns the flat MAA claims of a report (the x-ms-sevsnpvm-*
// claims of MAA's SEV-SNP tokens for confidential containers).
func Claims(rep *spb.Report) map[string]any {
	pol, _ := abi.ParseSnpPolicy(rep.Policy)
	tcb := kds.DecomposeTCBVersion(kds.TCBVersion(rep.ReportedTcb))
	h := hex.EncodeToString
	return map[string]any{
		"x-ms-attestation-type":           "sevsnpvm",
		"x-ms-sevsnpvm-hostdata":          h(rep.HostData),
		"x-ms-sevsnpvm-launchmeasurement": h(rep.Measurement),
		"x-ms-sevsnpvm-reportdata":        h(rep.ReportData),
		"x-ms-sevsnpvm-is-debuggable":     pol.Debug,
		"x-ms-sevsnpvm-vmpl":              int(rep.Vmpl),
		"x-ms-sevsnpvm-guestsvn":          int(rep.GuestSvn),
		"x-ms-sevsnpvm-bootloader-svn":    int(tcb.BlSpl),
		"x-ms-sevsnpvm-tee-svn":           int(tcb.TeeSpl),
		"x-ms-sevsnpvm-snpfw-svn":         int(tcb.SnpSpl),
		"x-ms-sevsnpvm-microcode-svn":     int(tcb.UcodeSpl),
		"x-ms-sevsnpvm-smt-allowed":       pol.SMT,
		"x-ms-sevsnpvm-migration-allowed": pol.MigrateMA,
		"x-ms-sevsnpvm-familyId":          h(rep.FamilyId),
		"x-ms-sevsnpvm-imageId":           h(rep.ImageId),
		"x-ms-sevsnpvm-idkeydigest":       h(rep.IdKeyDigest),
		"x-ms-sevsnpvm-authorkeydigest":   h(rep.AuthorKeyDigest),
		"x-ms-sevsnpvm-reportid":          h(rep.ReportId),
	}
}
