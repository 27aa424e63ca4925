// Package sgxquote parses Intel SGX DCAP ECDSA quotes (version 3) and
// verifies them offline up to the Intel SGX Root CA, as Microsoft Azure
// Attestation's attest/SgxEnclave does before it looks at collateral; it
// performs no I/O.
//
// Layout (Intel SGXDataCenterAttestationPrimitives sgx_quote_3.h; all
// integers little-endian):
//
//	0    header (48): version u16 = 3, attestation key type u16 = 2
//	     (ECDSA-256 with P-256), reserved u32, QE SVN u16, PCE SVN u16,
//	     QE vendor id (16), user data (20)
//	48   ISV enclave report body (384)
//	432  signature data length u32
//	436  signature data: ISV report signature (64, r||s big-endian),
//	     attestation public key (64, x||y), QE report body (384),
//	     QE report signature (64), QE auth data (u16 length + data),
//	     certification data (type u16, size u32, data); type 5 is the PCK
//	     certificate chain as PEM (PCK leaf, intermediate CA, root CA).
package sgxquote

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrInvalid is wrapped by every parse and verification failure.
var ErrInvalid = errors.New("sgx quote: invalid")

// Sizes and offsets of quote v3.
const (
	HeaderSize     = 48
	ReportBodySize = 384
	// SignedSize is the part of the quote the ISV report signature covers:
	// header and ISV enclave report body.
	SignedSize = HeaderSize + ReportBodySize
	sigLenSize = 4
	sigSize    = 64
	keySize    = 64
	// minSignatureData: signature, key, QE report, QE signature, auth data
	// length, certification data type and size.
	minSignatureData = sigSize + keySize + ReportBodySize + sigSize + 2 + 2 + 4
	// MaxQuoteSize bounds what Parse accepts (real quotes are ~4.6 KiB).
	MaxQuoteSize = 64 << 10

	// Version3 is the only quote version this package accepts.
	Version3 = 3
	// AttKeyECDSAP256 is attestation key type 2: ECDSA-256-with-P-256.
	AttKeyECDSAP256 = 2
	// CertDataPCKChain is certification data type 5: the PCK leaf and its
	// chain as concatenated PEM.
	CertDataPCKChain = 5
)

// IntelQEVendorID is the QE vendor id of Intel's quoting enclave
// (939a7233-f79c-4ca9-940a-0db3957f0607).
var IntelQEVendorID = [16]byte{0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07}

// Header is the 48-byte quote header.
type Header struct {
	Version    uint16
	AttKeyType uint16
	Reserved   uint32
	QESVN      uint16
	PCESVN     uint16
	QEVendorID [16]byte
	UserData   [20]byte
}

// Attribute flags of a report body (sgx_attributes_t.flags).
const (
	FlagInit          = 1 << 0
	FlagDebug         = 1 << 1
	FlagMode64        = 1 << 2
	FlagProvisionKey  = 1 << 4
	FlagEInitTokenKey = 1 << 5
)

// ReportBody is an SGX enclave report body (sgx_report_body_t, 384 bytes).
type ReportBody struct {
	CPUSVN       [16]byte
	MiscSelect   uint32
	ISVExtProdID [16]byte
	// AttributesFlags: FlagDebug is bit 1.
	AttributesFlags uint64
	AttributesXFRM  uint64
	MREnclave       [32]byte
	MRSigner        [32]byte
	ConfigID        [64]byte
	ISVProdID       uint16
	ISVSVN          uint16
	ConfigSVN       uint16
	ISVFamilyID     [16]byte
	ReportData      [64]byte
}

// Debuggable reports whether the enclave runs in debug mode, where its
// memory is readable from outside: never trust its secrets.
func (r *ReportBody) Debuggable() bool { return r.AttributesFlags&FlagDebug != 0 }

// Quote is a parsed quote v3. Raw is the input; the slices alias it.
type Quote struct {
	Raw    []byte
	Header Header
	Report ReportBody
	// ISVSignature is r||s over SHA-256(Raw[:SignedSize]).
	ISVSignature []byte
	// AttestationKey is the raw P-256 public key x||y.
	AttestationKey []byte
	// QEReportRaw is the QE report body as signed by the PCK key.
	QEReportRaw []byte
	QEReport    ReportBody
	// QESignature is r||s over SHA-256(QEReportRaw).
	QESignature []byte
	QEAuthData  []byte
	// CertDataType is 5 (PCK chain) for quotes this package verifies.
	CertDataType uint16
	CertData     []byte
}

// Parse decodes a quote v3 with an ECDSA P-256 attestation key. Every
// length must be consistent: trailing bytes and short fields are errors.
func Parse(b []byte) (*Quote, error) {
	if len(b) > MaxQuoteSize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrInvalid, len(b), MaxQuoteSize)
	}
	if len(b) < SignedSize+sigLenSize+minSignatureData {
		return nil, fmt.Errorf("%w: %d bytes, too short for a quote v3", ErrInvalid, len(b))
	}
	q := &Quote{Raw: b}
	h := &q.Header
	h.Version = binary.LittleEndian.Uint16(b[0:])
	h.AttKeyType = binary.LittleEndian.Uint16(b[2:])
	h.Reserved = binary.LittleEndian.Uint32(b[4:])
	h.QESVN = binary.LittleEndian.Uint16(b[8:])
	h.PCESVN = binary.LittleEndian.Uint16(b[10:])
	copy(h.QEVendorID[:], b[12:28])
	copy(h.UserData[:], b[28:48])
	if h.Version != Version3 {
		return nil, fmt.Errorf("%w: version want=%d have=%d", ErrInvalid, Version3, h.Version)
	}
	if h.AttKeyType != AttKeyECDSAP256 {
		return nil, fmt.Errorf("%w: attestation key type want=%d (ECDSA P-256) have=%d", ErrInvalid, AttKeyECDSAP256, h.AttKeyType)
	}
	q.Report = parseReportBody(b[HeaderSize:SignedSize])

	sigLen := binary.LittleEndian.Uint32(b[SignedSize:])
	sd := b[SignedSize+sigLenSize:]
	if uint64(sigLen) != uint64(len(sd)) {
		return nil, fmt.Errorf("%w: signature data length %d, but %d bytes follow", ErrInvalid, sigLen, len(sd))
	}
	take := func(n int) []byte {
		p := sd[:n:n]
		sd = sd[n:]
		return p
	}
	q.ISVSignature = take(sigSize)
	q.AttestationKey = take(keySize)
	q.QEReportRaw = take(ReportBodySize)
	q.QEReport = parseReportBody(q.QEReportRaw)
	q.QESignature = take(sigSize)
	authLen := int(binary.LittleEndian.Uint16(sd))
	sd = sd[2:]
	if authLen > len(sd)-6 {
		return nil, fmt.Errorf("%w: QE auth data of %d bytes overruns the quote", ErrInvalid, authLen)
	}
	q.QEAuthData = take(authLen)
	q.CertDataType = binary.LittleEndian.Uint16(sd)
	certLen := binary.LittleEndian.Uint32(sd[2:])
	sd = sd[6:]
	if uint64(certLen) != uint64(len(sd)) {
		return nil, fmt.Errorf("%w: certification data size %d, but %d bytes follow", ErrInvalid, certLen, len(sd))
	}
	q.CertData = sd[:len(sd):len(sd)]
	return q, nil
}

func parseReportBody(b []byte) ReportBody {
	var r ReportBody
	copy(r.CPUSVN[:], b[0:16])
	r.MiscSelect = binary.LittleEndian.Uint32(b[16:])
	copy(r.ISVExtProdID[:], b[32:48])
	r.AttributesFlags = binary.LittleEndian.Uint64(b[48:])
	r.AttributesXFRM = binary.LittleEndian.Uint64(b[56:])
	copy(r.MREnclave[:], b[64:96])
	copy(r.MRSigner[:], b[128:160])
	copy(r.ConfigID[:], b[192:256])
	r.ISVProdID = binary.LittleEndian.Uint16(b[256:])
	r.ISVSVN = binary.LittleEndian.Uint16(b[258:])
	r.ConfigSVN = binary.LittleEndian.Uint16(b[260:])
	copy(r.ISVFamilyID[:], b[304:320])
	copy(r.ReportData[:], b[320:384])
	return r
}
