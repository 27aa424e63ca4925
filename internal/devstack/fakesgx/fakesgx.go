// Package fakesgx is the devstack's FAKE Intel SGX platform: a quoting
// enclave stand-in that signs genuine-format DCAP quotes (version 3, ECDSA
// P-256, certification data type 5) with a devstack attestation key, under
// a fake PCK certificate chain (PCK leaf with the SGX extension and an
// FMSPC, a PCK CA, a devstack root). keyrelease/evidence/sgxquote accepts
// these quotes only when its Options.Roots names the devstack root, never
// by default. Dev serves them as Gramine's /dev/attestation pseudo-files
// over FUSE, so the sgx provider's production file I/O runs unchanged.
//
// Nothing here is an enclave: the "enclave identity" is whatever the
// caller configures. It exists to exercise the protocol end to end.
package fakesgx

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"

	"github.com/skrfs/skrfs/keyrelease/evidence/sgxquote"
)

// Enclave is the identity the fake quotes report.
type Enclave struct {
	MREnclave [32]byte
	MRSigner  [32]byte
	ProductID uint16
	SVN       uint16
	// Debug sets the DEBUG attribute: the enclave's memory is readable by
	// the host, and release policies must refuse it.
	Debug bool
}

// FMSPC is the fake platform's FMSPC (in the PCK certificate).
var FMSPC = []byte{0x00, 0x90, 0x6e, 0xd5, 0x00, 0x00}

// Platform is a fake SGX machine: its PCK chain and attestation key.
type Platform struct {
	root, ca, pck *x509.Certificate
	pckKey        *ecdsa.PrivateKey
	attKey        *ecdsa.PrivateKey
	chainPEM      []byte
	authData      []byte
}

// NewPlatform generates a fresh fake platform (keys in memory only).
func NewPlatform() (*Platform, error) {
	now := time.Now()
	gen := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	}
	rootKey, caKey, pckKey, attKey := gen(), gen(), gen(), gen()
	serial := func() *big.Int { n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62)); return n }
	tmpl := func(cn string, ca bool) *x509.Certificate {
		return &x509.Certificate{SerialNumber: serial(),
			Subject:   pkix.Name{CommonName: cn, Organization: []string{"skrfs devstack (FAKE, not Intel)"}},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
			BasicConstraintsValid: true, IsCA: ca}
	}
	rootT := tmpl("skrfs devstack FAKE SGX Root CA", true)
	rootDER, err := x509.CreateCertificate(rand.Reader, rootT, rootT, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, err
	}
	root, _ := x509.ParseCertificate(rootDER)
	caT := tmpl("skrfs devstack FAKE SGX PCK Processor CA", true)
	caDER, err := x509.CreateCertificate(rand.Reader, caT, root, &caKey.PublicKey, rootKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	ext, err := sgxExtension()
	if err != nil {
		return nil, err
	}
	pckT := tmpl("skrfs devstack FAKE SGX PCK Certificate", false)
	pckT.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment
	pckT.ExtraExtensions = []pkix.Extension{ext}
	pckDER, err := x509.CreateCertificate(rand.Reader, pckT, ca, &pckKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	pck, _ := x509.ParseCertificate(pckDER)
	var chain []byte
	for _, der := range [][]byte{pckDER, caDER, rootDER} {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	auth := make([]byte, 32)
	for i := range auth {
		auth[i] = byte(i)
	}
	return &Platform{root: root, ca: ca, pck: pck, pckKey: pckKey, attKey: attKey, chainPEM: chain, authData: auth}, nil
}

// sgxExtension is the PCK certificate's SGX extension (OID
// 1.2.840.113741.1.13.1), holding the FMSPC and a PCE-ID.
func sgxExtension() (pkix.Extension, error) {
	type item struct {
		ID    asn1.ObjectIdentifier
		Value []byte
	}
	v, err := asn1.Marshal([]item{
		{asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 3}, []byte{0, 0}},
		{asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 4}, FMSPC},
	})
	return pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1}, Value: v}, err
}

// Root is the fake root CA: pass it in sgxquote.Options.Roots.
func (p *Platform) Root() *x509.Certificate { return p.root }

// Quote returns a quote v3 for the enclave with reportData, signed like
// Intel's quoting enclave signs (ISV signature by the attestation key over
// header and report body; QE report signed by the PCK key, its report data
// SHA-256(attestation key || auth data)).
func (p *Platform) Quote(e Enclave, reportData [64]byte) ([]byte, error) {
	q := make([]byte, sgxquote.SignedSize)
	binary.LittleEndian.PutUint16(q[0:], sgxquote.Version3)
	binary.LittleEndian.PutUint16(q[2:], sgxquote.AttKeyECDSAP256)
	binary.LittleEndian.PutUint16(q[8:], 8)   // QE SVN
	binary.LittleEndian.PutUint16(q[10:], 13) // PCE SVN
	copy(q[12:28], sgxquote.IntelQEVendorID[:])
	flags := uint64(sgxquote.FlagInit | sgxquote.FlagMode64)
	if e.Debug {
		flags |= sgxquote.FlagDebug
	}
	body := q[sgxquote.HeaderSize:]
	putReport(body, flags, e.MREnclave, e.MRSigner, e.ProductID, e.SVN, reportData)

	attPub := make([]byte, 64)
	p.attKey.PublicKey.X.FillBytes(attPub[:32])
	p.attKey.PublicKey.Y.FillBytes(attPub[32:])
	isvSig, err := signRS(p.attKey, q)
	if err != nil {
		return nil, err
	}
	qe := make([]byte, sgxquote.ReportBodySize)
	var qeRD [64]byte
	h := sha256.New()
	h.Write(attPub)
	h.Write(p.authData)
	copy(qeRD[:], h.Sum(nil))
	qeSigner := sha256.Sum256([]byte("skrfs devstack FAKE quoting enclave"))
	putReport(qe, sgxquote.FlagInit|sgxquote.FlagMode64|sgxquote.FlagProvisionKey, sha256.Sum256([]byte("fake QE")), qeSigner, 1, 8, qeRD)
	qeSig, err := signRS(p.pckKey, qe)
	if err != nil {
		return nil, err
	}
	var sd []byte
	sd = append(sd, isvSig...)
	sd = append(sd, attPub...)
	sd = append(sd, qe...)
	sd = append(sd, qeSig...)
	sd = binary.LittleEndian.AppendUint16(sd, uint16(len(p.authData)))
	sd = append(sd, p.authData...)
	sd = binary.LittleEndian.AppendUint16(sd, sgxquote.CertDataPCKChain)
	sd = binary.LittleEndian.AppendUint32(sd, uint32(len(p.chainPEM)))
	sd = append(sd, p.chainPEM...)
	q = binary.LittleEndian.AppendUint32(q, uint32(len(sd)))
	return append(q, sd...), nil
}

func putReport(b []byte, flags uint64, mrenclave, mrsigner [32]byte, prod, svn uint16, rd [64]byte) {
	binary.LittleEndian.PutUint64(b[48:], flags)
	binary.LittleEndian.PutUint64(b[56:], 0xe7) // XFRM: x87, SSE, AVX, AVX-512
	copy(b[64:96], mrenclave[:])
	copy(b[128:160], mrsigner[:])
	binary.LittleEndian.PutUint16(b[256:], prod)
	binary.LittleEndian.PutUint16(b[258:], svn)
	copy(b[320:384], rd[:])
}

// signRS signs SHA-256(msg) and returns r||s, 32 bytes each.
func signRS(k *ecdsa.PrivateKey, msg []byte) ([]byte, error) {
	d := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, k, d[:])
	if err != nil {
		return nil, fmt.Errorf("fakesgx: sign: %w", err)
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	s.FillBytes(out[32:])
	return out, nil
}
