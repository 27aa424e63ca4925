package sgxquote

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	_ "embed"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"
)

// intelRootPEM is the Intel SGX Root CA certificate (CN=Intel SGX Root CA,
// valid 2018-05-21 to 2049-12-31), as Intel publishes it at
// https://certificates.trustedservices.intel.com/IntelSGXRootCA.der.
//
//go:embed intel_sgx_root_ca.pem
var intelRootPEM []byte

// IntelRootFingerprint is the SHA-256 of the Intel SGX Root CA certificate
// (DER).
const IntelRootFingerprint = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"

// IntelRootPublicKey is the Intel SGX Root CA's public key
// (SubjectPublicKeyInfo, base64 DER), the pin every PCK chain must end at.
// The same key is hard-coded in Open Enclave's SGX verifier.
const IntelRootPublicKey = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEC6nEwMDIYZOj/iPWsCzaEKi71OiOSLRFhWGjbnBVJfVnkY4u3IjkDYYL0MxO4mqsyYjlBalTVYxFP2sJBK5zlA=="

// IntelRoot returns the embedded Intel SGX Root CA certificate, after
// checking it against the pinned key and fingerprint.
func IntelRoot() (*x509.Certificate, error) {
	blk, _ := pem.Decode(intelRootPEM)
	if blk == nil {
		return nil, fmt.Errorf("%w: embedded Intel root is not PEM", ErrInvalid)
	}
	sum := sha256.Sum256(blk.Bytes)
	if hex.EncodeToString(sum[:]) != IntelRootFingerprint {
		return nil, fmt.Errorf("%w: embedded Intel root has the wrong fingerprint", ErrInvalid)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: embedded Intel root: %v", ErrInvalid, err)
	}
	if base64.StdEncoding.EncodeToString(c.RawSubjectPublicKeyInfo) != IntelRootPublicKey {
		return nil, fmt.Errorf("%w: embedded Intel root has the wrong key", ErrInvalid)
	}
	return c, nil
}

// Options configure Verify.
type Options struct {
	// Roots are the trusted root CAs of PCK chains (nil = the Intel SGX
	// Root CA alone). A chain must end at one of them, matched by public
	// key. The devstack passes its fake root here; production never does.
	Roots []*x509.Certificate
	// HeldData, when non-nil, must hash to REPORT_DATA[0:32], with
	// REPORT_DATA[32:64] zero (MAA's runtimeData convention).
	HeldData []byte
	// Now is the time certificates are checked at (zero = time.Now).
	Now time.Time
}

// Result is a verified quote.
type Result struct {
	Quote *Quote
	// PCK is the PCK leaf certificate; Chain runs from it to the root.
	PCK   *x509.Certificate
	Chain []*x509.Certificate
	// FMSPC and PCEID come from the PCK certificate's SGX extension: the
	// keys of Intel's TCB info collateral, which this package does not
	// evaluate. A leaf without an FMSPC is not a PCK certificate and
	// fails verification; PCEID may be empty.
	FMSPC, PCEID string
}

// Verify checks, in order: the quote's structure (Parse) and QE vendor;
// the PCK chain in the certification data up to a trusted root (pinned by
// key); the QE report signature by the PCK leaf; that the QE is no debug
// enclave; QE REPORT_DATA = SHA-256(attestation key || QE auth data) and
// zeros; the ISV report signature by the attestation key over header and
// body; and, when opts.HeldData is set, the report data binding. TCB status
// (TCB info, QE identity, CRLs) needs Intel's collateral and is not
// evaluated: callers must say so.
func Verify(b []byte, opts Options) (*Result, error) {
	q, err := Parse(b)
	if err != nil {
		return nil, err
	}
	if q.Header.QEVendorID != IntelQEVendorID {
		return nil, fmt.Errorf("%w: QE vendor id %x is not Intel's", ErrInvalid, q.Header.QEVendorID)
	}
	if q.CertDataType != CertDataPCKChain {
		return nil, fmt.Errorf("%w: certification data type want=%d (PCK chain) have=%d", ErrInvalid, CertDataPCKChain, q.CertDataType)
	}
	certs, err := parsePEMChain(q.CertData)
	if err != nil {
		return nil, err
	}
	roots := opts.Roots
	if roots == nil {
		r, err := IntelRoot()
		if err != nil {
			return nil, err
		}
		roots = []*x509.Certificate{r}
	}
	chain, err := verifyChain(certs, roots, opts.Now)
	if err != nil {
		return nil, err
	}
	pck := certs[0]
	fmspc, pceid := pckExtension(pck)
	if fmspc == "" {
		// Other certificates chain to the Intel SGX Root CA too (the TCB
		// signing certificate); only a PCK certificate carries the SGX
		// extension with the platform's FMSPC.
		return nil, fmt.Errorf("%w: the leaf certificate %q is not a PCK certificate (no SGX extension with an FMSPC)", ErrInvalid, pck.Subject.CommonName)
	}
	pckKey, ok := pck.PublicKey.(*ecdsa.PublicKey)
	if !ok || pckKey.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: PCK key is not ECDSA P-256", ErrInvalid)
	}
	if !verifyRS(pckKey, q.QEReportRaw, q.QESignature) {
		return nil, fmt.Errorf("%w: QE report signature does not verify with the PCK key", ErrInvalid)
	}
	if q.QEReport.Debuggable() {
		return nil, fmt.Errorf("%w: the quoting enclave is a debug enclave", ErrInvalid)
	}
	h := sha256.New()
	h.Write(q.AttestationKey)
	h.Write(q.QEAuthData)
	if !bytes.Equal(q.QEReport.ReportData[:32], h.Sum(nil)) || !allZero(q.QEReport.ReportData[32:]) {
		return nil, fmt.Errorf("%w: QE report data is not SHA-256(attestation key || QE auth data)", ErrInvalid)
	}
	attKey, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append([]byte{4}, q.AttestationKey...))
	if err != nil {
		return nil, fmt.Errorf("%w: attestation key: %v", ErrInvalid, err)
	}
	if !verifyRS(attKey, q.Raw[:SignedSize], q.ISVSignature) {
		return nil, fmt.Errorf("%w: ISV enclave report signature does not verify with the attestation key", ErrInvalid)
	}
	if opts.HeldData != nil {
		if err := CheckHeldData(&q.Report, opts.HeldData); err != nil {
			return nil, err
		}
	}
	return &Result{Quote: q, PCK: pck, Chain: chain, FMSPC: fmspc, PCEID: pceid}, nil
}

// CheckHeldData requires REPORT_DATA = SHA-256(held) followed by 32 zeros.
func CheckHeldData(r *ReportBody, held []byte) error {
	sum := sha256.Sum256(held)
	if !bytes.Equal(r.ReportData[:32], sum[:]) || !allZero(r.ReportData[32:]) {
		return fmt.Errorf("%w: report data is not SHA-256 of the held data", ErrInvalid)
	}
	return nil
}

// verifyRS checks a raw r||s P-256 signature over SHA-256(msg).
func verifyRS(k *ecdsa.PublicKey, msg, sig []byte) bool {
	d := sha256.Sum256(msg)
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:64])
	return ecdsa.Verify(k, d[:], r, s)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// parsePEMChain decodes the certification data: PEM certificates, leaf
// first, then nothing but whitespace or NUL padding.
func parsePEMChain(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := b
	for {
		blk, r := pem.Decode(rest)
		if blk == nil {
			break
		}
		rest = r
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: PCK chain holds a PEM %q block", ErrInvalid, blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: PCK chain: %v", ErrInvalid, err)
		}
		certs = append(certs, c)
		if len(certs) > 5 {
			return nil, fmt.Errorf("%w: PCK chain of more than 5 certificates", ErrInvalid)
		}
	}
	if len(bytes.Trim(rest, " \t\r\n\x00")) != 0 {
		return nil, fmt.Errorf("%w: PCK chain has trailing non-PEM bytes", ErrInvalid)
	}
	if len(certs) < 2 {
		return nil, fmt.Errorf("%w: PCK chain has %d certificates, want leaf, intermediate and root", ErrInvalid, len(certs))
	}
	return certs, nil
}

// verifyChain verifies the leaf through the given intermediates to one of
// roots, and requires the chain to end at a root whose public key equals a
// trusted root's key (the pin).
func verifyChain(certs, roots []*x509.Certificate, now time.Time) ([]*x509.Certificate, error) {
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if now.IsZero() {
		now = time.Now()
	}
	chains, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return nil, fmt.Errorf("%w: PCK certificate chain: %v", ErrInvalid, err)
	}
	for _, ch := range chains {
		top := ch[len(ch)-1]
		for _, r := range roots {
			if bytes.Equal(top.RawSubjectPublicKeyInfo, r.RawSubjectPublicKeyInfo) {
				return ch, nil
			}
		}
	}
	return nil, fmt.Errorf("%w: PCK certificate chain does not end at a pinned root key", ErrInvalid)
}

// OIDs of the SGX PCK certificate extension (Intel "SGX PCK Certificate
// and CRL Profile").
var (
	oidSGXExtensions = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1}
	oidPCEID         = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 3}
	oidFMSPC         = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 4}
)

// pckExtension extracts FMSPC and PCE-ID (hex) for the TCB message; it
// never fails verification: collateral is not evaluated here.
func pckExtension(c *x509.Certificate) (fmspc, pceid string) {
	for _, e := range c.Extensions {
		if !e.Id.Equal(oidSGXExtensions) {
			continue
		}
		var items []struct {
			ID    asn1.ObjectIdentifier
			Value asn1.RawValue
		}
		if _, err := asn1.Unmarshal(e.Value, &items); err != nil {
			return "", ""
		}
		for _, it := range items {
			switch {
			case it.ID.Equal(oidFMSPC) && it.Value.Tag == asn1.TagOctetString:
				fmspc = hex.EncodeToString(it.Value.Bytes)
			case it.ID.Equal(oidPCEID) && it.Value.Tag == asn1.TagOctetString:
				pceid = hex.EncodeToString(it.Value.Bytes)
			}
		}
	}
	return fmspc, pceid
}

// Claims returns MAA's attest/SgxEnclave claims for the quote
// (protocol.md section 14). heldData, when non-nil, is reported as
// x-ms-sgx-ehd (base64url), as MAA does for binary runtime data.
func Claims(q *Quote, heldData []byte) map[string]any {
	r := &q.Report
	c := map[string]any{
		"x-ms-attestation-type":            "sgx",
		"x-ms-sgx-mrenclave":               hex.EncodeToString(r.MREnclave[:]),
		"x-ms-sgx-mrsigner":                hex.EncodeToString(r.MRSigner[:]),
		"x-ms-sgx-is-debuggable":           r.Debuggable(),
		"x-ms-sgx-product-id":              int(r.ISVProdID),
		"x-ms-sgx-svn":                     int(r.ISVSVN),
		"x-ms-sgx-config-id":               hex.EncodeToString(r.ConfigID[:]),
		"x-ms-sgx-config-svn":              int(r.ConfigSVN),
		"x-ms-sgx-isv-extended-product-id": hex.EncodeToString(r.ISVExtProdID[:]),
		"x-ms-sgx-isv-family-id":           hex.EncodeToString(r.ISVFamilyID[:]),
		"x-ms-sgx-report-data":             hex.EncodeToString(r.ReportData[:]),
	}
	if heldData != nil {
		c["x-ms-sgx-ehd"] = base64.RawURLEncoding.EncodeToString(heldData)
	}
	return c
}
