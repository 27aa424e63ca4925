package cvm

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// ErrTPMEvidence: the vTPM part of an AzureGuest request does not verify.
var ErrTPMEvidence = errors.New("cvm: TPM evidence")

// ParseRequest decodes an AzureGuest request body.
func ParseRequest(body []byte) (*AttestationInfo, error) {
	var outer struct {
		AttestationInfo string `json:"AttestationInfo"`
	}
	if err := json.Unmarshal(body, &outer); err != nil || outer.AttestationInfo == "" {
		return nil, fmt.Errorf("%w: no AttestationInfo: %v", ErrTPMEvidence, err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(outer.AttestationInfo, "="))
	if err != nil {
		return nil, fmt.Errorf("%w: AttestationInfo is not base64url: %v", ErrTPMEvidence, err)
	}
	var ai AttestationInfo
	if err := json.Unmarshal(raw, &ai); err != nil {
		return nil, fmt.Errorf("%w: AttestationInfo: %v", ErrTPMEvidence, err)
	}
	return &ai, nil
}

// VerifiedTPM is what VerifyTPM established.
type VerifiedTPM struct {
	AK     *rsa.PublicKey
	EncKey *rsa.PublicKey
	Nonce  string // client payload nonce (also the quote's extra data)
	PCRs   []int
}

// VerifyTPM checks the vTPM evidence of an AzureGuest request as MAA is
// understood to (protocol.md 13.2; MAA's exact checks are unpublished):
// the quote is signed by AikPub, over the client payload's nonce, and its
// PCR digest is SHA-256 of the listed PCR values (PCRs 0-7 at least); the
// encryption key is certified by AikPub and is a TPM-resident
// (fixedTPM, fixedParent, sensitiveDataOrigin) decryption key with a
// policy. The caller checks AikPub against HCLAkPub and the SNP evidence.
func VerifyTPM(ai *AttestationInfo) (*VerifiedTPM, error) {
	ti := ai.TpmInfo
	akPub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](ti.AikPub)
	if err != nil {
		return nil, fmt.Errorf("%w: AikPub: %v", ErrTPMEvidence, err)
	}
	ak, err := RSAPublic(*akPub)
	if err != nil {
		return nil, fmt.Errorf("%w: AikPub: %v", ErrTPMEvidence, err)
	}
	var cp ClientPayload
	if err := json.Unmarshal(ai.ClientPayload, &cp); err != nil || cp.Nonce == "" {
		return nil, fmt.Errorf("%w: client payload has no nonce", ErrTPMEvidence)
	}
	// The quote.
	if err := verifySig(ak, ti.PcrQuote, ti.PcrSignature); err != nil {
		return nil, fmt.Errorf("%w: quote signature: %v", ErrTPMEvidence, err)
	}
	q, err := tpm2.Unmarshal[tpm2.TPMSAttest](ti.PcrQuote)
	if err != nil || q.Type != tpm2.TPMSTAttestQuote {
		return nil, fmt.Errorf("%w: not a quote: %v", ErrTPMEvidence, err)
	}
	if !bytes.Equal(q.ExtraData.Buffer, []byte(cp.Nonce)) {
		return nil, fmt.Errorf("%w: the quote is not over the client payload's nonce", ErrTPMEvidence)
	}
	qi, err := q.Attested.Quote()
	if err != nil {
		return nil, fmt.Errorf("%w: quote: %v", ErrTPMEvidence, err)
	}
	var sel []int
	for _, s := range qi.PCRSelect.PCRSelections {
		if s.Hash != tpm2.TPMAlgSHA256 {
			return nil, fmt.Errorf("%w: quote over hash %#x, want SHA-256", ErrTPMEvidence, s.Hash)
		}
		for i, b := range s.PCRSelect {
			for bit := 0; bit < 8; bit++ {
				if b&(1<<bit) != 0 {
					sel = append(sel, i*8+bit)
				}
			}
		}
	}
	for _, want := range QuotePCRs {
		if !slices.Contains(sel, int(want)) {
			return nil, fmt.Errorf("%w: PCR %d is not quoted", ErrTPMEvidence, want)
		}
	}
	if len(ti.PCRs) != len(sel) {
		return nil, fmt.Errorf("%w: %d PCR values for %d quoted PCRs", ErrTPMEvidence, len(ti.PCRs), len(sel))
	}
	h := sha256.New()
	for i, idx := range sel {
		if ti.PCRs[i].Index != idx || len(ti.PCRs[i].Digest) != sha256.Size {
			return nil, fmt.Errorf("%w: PCR values are not those quoted", ErrTPMEvidence)
		}
		h.Write(ti.PCRs[i].Digest)
	}
	if !bytes.Equal(h.Sum(nil), qi.PCRDigest.Buffer) {
		return nil, fmt.Errorf("%w: the PCR values do not match the quoted PCR digest", ErrTPMEvidence)
	}
	// The encryption key.
	encPub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](ti.EncKeyPub)
	if err != nil {
		return nil, fmt.Errorf("%w: EncKeyPub: %v", ErrTPMEvidence, err)
	}
	encT, err := encPub.Contents()
	if err != nil {
		return nil, fmt.Errorf("%w: EncKeyPub: %v", ErrTPMEvidence, err)
	}
	a := encT.ObjectAttributes
	if !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || !a.Decrypt || a.SignEncrypt || a.UserWithAuth || len(encT.AuthPolicy.Buffer) == 0 {
		return nil, fmt.Errorf("%w: the encryption key is not a TPM-bound, policy-protected decryption key", ErrTPMEvidence)
	}
	enc, err := RSAPublic(*encPub)
	if err != nil {
		return nil, fmt.Errorf("%w: EncKeyPub: %v", ErrTPMEvidence, err)
	}
	if err := verifySig(ak, ti.EncKeyCertifyInfo, ti.EncKeyCertifyInfoSignature); err != nil {
		return nil, fmt.Errorf("%w: certify signature: %v", ErrTPMEvidence, err)
	}
	ci, err := tpm2.Unmarshal[tpm2.TPMSAttest](ti.EncKeyCertifyInfo)
	if err != nil || ci.Type != tpm2.TPMSTAttestCertify {
		return nil, fmt.Errorf("%w: not a certify structure: %v", ErrTPMEvidence, err)
	}
	cinfo, err := ci.Attested.Certify()
	if err != nil {
		return nil, fmt.Errorf("%w: certify: %v", ErrTPMEvidence, err)
	}
	name, err := tpm2.ObjectName(encT)
	if err != nil || !bytes.Equal(name.Buffer, cinfo.Name.Buffer) {
		return nil, fmt.Errorf("%w: the certified key is not EncKeyPub", ErrTPMEvidence)
	}
	return &VerifiedTPM{AK: ak, EncKey: enc, Nonce: cp.Nonce, PCRs: sel}, nil
}

func verifySig(pub *rsa.PublicKey, msg, sig []byte) error {
	d := sha256.Sum256(msg)
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, d[:], sig)
}
