package cvm

import (
	"bytes"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// TPM handles and indices of an Azure CVM's vTPM (protocol.md 13.1).
const (
	HCLReportIndex = tpm2.TPMHandle(0x01400001) // HCL report (owner read)
	AKHandle       = tpm2.TPMHandle(0x81000003) // the attestation key, = HCLAkPub
	nvChunk        = 512                        // NV read chunk (below every TPM's MAX_NV_BUFFER)
)

// QuotePCRs are the PCRs quoted and bound into the encryption key's
// policy: 0-7, SHA-256 bank, as Microsoft's Linux client selects them.
var QuotePCRs = []uint{0, 1, 2, 3, 4, 5, 6, 7}

// PCRSelection is QuotePCRs in the SHA-256 bank.
func PCRSelection() tpm2.TPMLPCRSelection {
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(QuotePCRs...)}}}
}

// OpenTPM opens a TPM: a character device path (default /dev/tpmrm0, the
// kernel's resource manager) or "tcp:HOST:PORT", a TPM speaking raw TPM
// commands over TCP (swtpm's --server type=tcp data channel).
func OpenTPM(spec string) (transport.TPMCloser, error) {
	if spec == "" {
		spec = DefaultTPM
	}
	if addr, ok := strings.CutPrefix(spec, "tcp:"); ok {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return nil, err
		}
		return &streamTPM{c: c}, nil
	}
	return linuxtpm.Open(spec)
}

// DefaultTPM is the kernel's TPM resource manager.
const DefaultTPM = "/dev/tpmrm0"

// streamTPM sends raw TPM commands over a stream and reads each response
// by the size in its header.
type streamTPM struct {
	mu sync.Mutex
	c  net.Conn
}

func (s *streamTPM) Send(cmd []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.c.SetDeadline(time.Now().Add(2 * time.Minute))
	if _, err := s.c.Write(cmd); err != nil {
		return nil, err
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(s.c, hdr); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[2:6])
	if n < 10 || n > 1<<20 {
		return nil, fmt.Errorf("TPM response size %d", n)
	}
	rsp := make([]byte, n)
	copy(rsp, hdr)
	if _, err := io.ReadFull(s.c, rsp[10:]); err != nil {
		return nil, err
	}
	return rsp, nil
}

func (s *streamTPM) Close() error { return s.c.Close() }

// ReadNV reads a whole NV index with owner authorization, in chunks.
func ReadNV(t transport.TPM, index tpm2.TPMHandle) ([]byte, error) {
	pub, err := tpm2.NVReadPublic{NVIndex: index}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("NV %#x: %w", uint32(index), err)
	}
	nvp, err := pub.NVPublic.Contents()
	if err != nil {
		return nil, err
	}
	size := int(nvp.DataSize)
	var out []byte
	for off := 0; off < size; off += nvChunk {
		n := min(nvChunk, size-off)
		r, err := tpm2.NVRead{
			AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			NVIndex:    tpm2.NamedHandle{Handle: index, Name: pub.NVName},
			Size:       uint16(n), Offset: uint16(off),
		}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("NV %#x at %d: %w", uint32(index), off, err)
		}
		out = append(out, r.Data.Buffer...)
	}
	return out, nil
}

// Key is a loaded TPM key: its handle, name and public area.
type Key struct {
	Handle tpm2.TPMHandle
	Name   tpm2.TPM2BName
	Public tpm2.TPM2BPublic
	RSA    *rsa.PublicKey
}

// ReadKey reads the public area of a loaded or persistent RSA key.
func ReadKey(t transport.TPM, h tpm2.TPMHandle) (*Key, error) {
	r, err := tpm2.ReadPublic{ObjectHandle: h}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("key %#x: %w", uint32(h), err)
	}
	pub, err := RSAPublic(r.OutPublic)
	if err != nil {
		return nil, fmt.Errorf("key %#x: %w", uint32(h), err)
	}
	return &Key{Handle: h, Name: r.Name, Public: r.OutPublic, RSA: pub}, nil
}

// RSAPublic returns the RSA key of a TPM2B_PUBLIC.
func RSAPublic(p tpm2.TPM2BPublic) (*rsa.PublicKey, error) {
	tp, err := p.Contents()
	if err != nil {
		return nil, err
	}
	if tp.Type != tpm2.TPMAlgRSA {
		return nil, fmt.Errorf("not an RSA key (type %#x)", tp.Type)
	}
	parms, err := tp.Parameters.RSADetail()
	if err != nil {
		return nil, err
	}
	u, err := tp.Unique.RSA()
	if err != nil {
		return nil, err
	}
	return tpm2.RSAPub(parms, u)
}

// Quote quotes QuotePCRs with the AK over nonce and reads their values.
func Quote(t transport.TPM, ak *Key, nonce []byte) (attest, sig []byte, pcrs [][]byte, err error) {
	q, err := tpm2.Quote{
		SignHandle:     tpm2.AuthHandle{Handle: ak.Handle, Name: ak.Name, Auth: tpm2.PasswordAuth(nil)},
		QualifyingData: tpm2.TPM2BData{Buffer: nonce},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		PCRSelect:      PCRSelection(),
	}.Execute(t)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("quote: %w", err)
	}
	s, err := q.Signature.Signature.RSASSA()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("quote signature: %w", err)
	}
	// PCR_Read returns at most 8 digests per call: exactly PCRs 0-7.
	r, err := tpm2.PCRRead{PCRSelectionIn: PCRSelection()}.Execute(t)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("PCR read: %w", err)
	}
	for _, d := range r.PCRValues.Digests {
		pcrs = append(pcrs, bytes.Clone(d.Buffer))
	}
	if len(pcrs) != len(QuotePCRs) {
		return nil, nil, nil, fmt.Errorf("PCR read returned %d of %d PCRs", len(pcrs), len(QuotePCRs))
	}
	return q.Quoted.Bytes(), bytes.Clone(s.Sig.Buffer), pcrs, nil
}

// pcrPolicy returns the PolicyPCR digest of QuotePCRs at their current
// values, from a trial session.
func pcrPolicy(t transport.TPM) ([]byte, error) {
	sess, closeSess, err := tpm2.PolicySession(t, tpm2.TPMAlgSHA256, 16, tpm2.Trial())
	if err != nil {
		return nil, err
	}
	defer closeSess()
	if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: PCRSelection()}).Execute(t); err != nil {
		return nil, err
	}
	d, err := tpm2.PolicyGetDigest{PolicySession: sess.Handle()}.Execute(t)
	if err != nil {
		return nil, err
	}
	return d.PolicyDigest.Buffer, nil
}

// EncKeyTemplate is the token encryption key (protocol.md 13.2): RSA-2048,
// decrypt, fixedTPM, fixedParent, sensitiveDataOrigin, noDA, no user auth
// (only the PCR policy), scheme NULL (the caller picks RSAES or OAEP).
func EncKeyTemplate(policy []byte) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgRSA,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
			NoDA: true, Decrypt: true},
		AuthPolicy: tpm2.TPM2BDigest{Buffer: policy},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme:    tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull},
			KeyBits:   2048,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: make([]byte, 256)}),
	}
}

// CreateEncKey creates the PCR-bound encryption key in the NULL hierarchy
// (it vanishes at TPM reset; flush it when done).
func CreateEncKey(t transport.TPM) (*Key, error) {
	pol, err := pcrPolicy(t)
	if err != nil {
		return nil, fmt.Errorf("PCR policy: %w", err)
	}
	r, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHNull, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(EncKeyTemplate(pol)),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("create encryption key: %w", err)
	}
	pub, err := RSAPublic(r.OutPublic)
	if err != nil {
		Flush(t, r.ObjectHandle)
		return nil, err
	}
	return &Key{Handle: r.ObjectHandle, Name: r.Name, Public: r.OutPublic, RSA: pub}, nil
}

// Certify certifies key with the AK.
func Certify(t transport.TPM, key, ak *Key) (info, sig []byte, err error) {
	r, err := tpm2.Certify{
		ObjectHandle: tpm2.AuthHandle{Handle: key.Handle, Name: key.Name, Auth: tpm2.PasswordAuth(nil)},
		SignHandle:   tpm2.AuthHandle{Handle: ak.Handle, Name: ak.Name, Auth: tpm2.PasswordAuth(nil)},
		InScheme:     tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
	}.Execute(t)
	if err != nil {
		return nil, nil, fmt.Errorf("certify: %w", err)
	}
	s, err := r.Signature.Signature.RSASSA()
	if err != nil {
		return nil, nil, fmt.Errorf("certify signature: %w", err)
	}
	return r.CertifyInfo.Bytes(), bytes.Clone(s.Sig.Buffer), nil
}

// Decrypt runs TPM2_RSA_Decrypt with key under a PolicyPCR session:
// scheme is TPMAlgRSAES or TPMAlgOAEP (with hash).
func Decrypt(t transport.TPM, key *Key, ct []byte, scheme tpm2.TPMAlgID, hash tpm2.TPMIAlgHash) ([]byte, error) {
	sess, closeSess, err := tpm2.PolicySession(t, tpm2.TPMAlgSHA256, 16)
	if err != nil {
		return nil, err
	}
	defer closeSess()
	if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: PCRSelection()}).Execute(t); err != nil {
		return nil, fmt.Errorf("PCR policy: %w", err)
	}
	var in tpm2.TPMTRSADecrypt
	switch scheme {
	case tpm2.TPMAlgRSAES:
		in = tpm2.TPMTRSADecrypt{Scheme: tpm2.TPMAlgRSAES, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSAES, &tpm2.TPMSEncSchemeRSAES{})}
	case tpm2.TPMAlgOAEP:
		in = tpm2.TPMTRSADecrypt{Scheme: tpm2.TPMAlgOAEP, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgOAEP, &tpm2.TPMSEncSchemeOAEP{HashAlg: hash})}
	default:
		return nil, errors.New("unsupported decryption scheme")
	}
	r, err := tpm2.RSADecrypt{
		KeyHandle:  tpm2.AuthHandle{Handle: key.Handle, Name: key.Name, Auth: sess},
		CipherText: tpm2.TPM2BPublicKeyRSA{Buffer: ct},
		InScheme:   in,
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("TPM2_RSA_Decrypt: %w", err)
	}
	return r.Message.Buffer, nil
}

// Flush unloads a transient object.
func Flush(t transport.TPM, h tpm2.TPMHandle) {
	tpm2.FlushContext{FlushHandle: h}.Execute(t)
}
