package cvm

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// The attest/AzureGuest request (protocol.md 13.2, field encodings as
// go-azguestattestation sends them): POST {"AttestationInfo": b64url(JSON)}.

// AttestationInfo is the JSON that AttestationInfo carries.
type AttestationInfo struct {
	AttestationProtocolVersion string        `json:"AttestationProtocolVersion"`
	OSType                     string        `json:"OSType"`   // base64
	OSDistro                   string        `json:"OSDistro"` // base64
	OSVersionMajor             int           `json:"OSVersionMajor"`
	OSVersionMinor             int           `json:"OSVersionMinor"`
	OSBuild                    string        `json:"OSBuild"`       // base64
	TcgLogs                    []byte        `json:"TcgLogs"`       // base64 (encoding/json)
	ClientPayload              []byte        `json:"ClientPayload"` // base64 of {"nonce": ...}
	TpmInfo                    TpmInfo       `json:"TpmInfo"`
	IsolationInfo              IsolationInfo `json:"IsolationInfo"`
}

// TpmInfo is the vTPM evidence.
type TpmInfo struct {
	AikCert                    []byte `json:"AikCert"`
	AikPub                     []byte `json:"AikPub"`                     // TPM2B_PUBLIC
	PcrQuote                   []byte `json:"PcrQuote"`                   // TPMS_ATTEST
	PcrSignature               []byte `json:"PcrSignature"`               // raw RSASSA signature
	EncKeyPub                  []byte `json:"EncKeyPub"`                  // TPM2B_PUBLIC
	EncKeyCertifyInfo          []byte `json:"EncKeyCertifyInfo"`          // TPMS_ATTEST
	EncKeyCertifyInfoSignature []byte `json:"EncKeyCertifyInfoSignature"` // raw RSASSA signature
	PcrSet                     []int  `json:"PcrSet"`
	PCRs                       []PCR  `json:"PCRs"`
}

// PCR is one quoted PCR value.
type PCR struct {
	Index  int    `json:"Index"`
	Digest []byte `json:"Digest"`
}

// IsolationInfo carries the SEV-SNP evidence of the HCL.
type IsolationInfo struct {
	Type     string            `json:"Type"` // "SevSnp"
	Evidence IsolationEvidence `json:"Evidence"`
}

// IsolationEvidence: Proof is base64 of {"SnpReport": b64url(report),
// "VcekCertChain": b64url(PEM)}; RunTimeData the HCL's runtime JSON.
type IsolationEvidence struct {
	Proof       []byte `json:"Proof"`
	RunTimeData []byte `json:"RunTimeData"`
}

// SnpProof is the JSON inside IsolationEvidence.Proof.
type SnpProof struct {
	SnpReport     string `json:"SnpReport"`
	VcekCertChain string `json:"VcekCertChain"`
}

// ClientPayload is the JSON inside AttestationInfo.ClientPayload; MAA
// echoes it as x-ms-runtime.client-payload.
type ClientPayload struct {
	Nonce string `json:"nonce"`
}

// Envelope is the decoded "token" of the AzureGuest response: the JWT
// encrypted with AES-GCM under a key encrypted to the TPM key.
type Envelope struct {
	Jwt               []byte `json:"Jwt"`
	EncryptedInnerKey []byte `json:"EncryptedInnerKey"`
	EncryptionParams  struct {
		BlockMode     string `json:"BlockMode"`
		BlockPadding  string `json:"BlockPadding"`
		Cipher        string `json:"Cipher"`
		KeySizeInBits int    `json:"KeySizeInBits"`
		Iv            []byte `json:"Iv"`
	} `json:"EncryptionParams"`
	AuthenticationData []byte `json:"AuthenticationData"`
}

// TransportKeyAAD is the AES-GCM additional data of the envelope.
const TransportKeyAAD = "Transport Key"

// ErrEnvelope: the AzureGuest response is malformed or does not open.
var ErrEnvelope = errors.New("cvm: AzureGuest response")

// maxEnvelope bounds the response.
const maxEnvelope = 1 << 20

// ParseEnvelope decodes the response's "token" (base64url of JSON; padded
// or not) and checks its parameters: AES-GCM, 128/192/256-bit key, 12-byte
// IV, 16-byte tag.
func ParseEnvelope(token string) (*Envelope, error) {
	if len(token) > maxEnvelope {
		return nil, fmt.Errorf("%w: %d bytes", ErrEnvelope, len(token))
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(token, "="))
	if err != nil {
		return nil, fmt.Errorf("%w: token is not base64url: %v", ErrEnvelope, err)
	}
	var e Envelope
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEnvelope, err)
	}
	p := e.EncryptionParams
	if !strings.EqualFold(p.Cipher, "AES") || !strings.EqualFold(p.BlockMode, "ChainingModeGCM") {
		return nil, fmt.Errorf("%w: cipher %q mode %q, want AES ChainingModeGCM", ErrEnvelope, p.Cipher, p.BlockMode)
	}
	if p.KeySizeInBits != 128 && p.KeySizeInBits != 192 && p.KeySizeInBits != 256 {
		return nil, fmt.Errorf("%w: key size %d", ErrEnvelope, p.KeySizeInBits)
	}
	if len(p.Iv) != 12 || len(e.AuthenticationData) != 16 || len(e.Jwt) == 0 || len(e.EncryptedInnerKey) == 0 {
		return nil, fmt.Errorf("%w: IV %d, tag %d, JWT %d, key %d bytes", ErrEnvelope, len(p.Iv), len(e.AuthenticationData), len(e.Jwt), len(e.EncryptedInnerKey))
	}
	return &e, nil
}

// Open decrypts the JWT with the inner key (already decrypted by the TPM).
func (e *Envelope) Open(innerKey []byte) (string, error) {
	if len(innerKey)*8 != e.EncryptionParams.KeySizeInBits {
		return "", fmt.Errorf("%w: inner key of %d bits, want %d", ErrEnvelope, len(innerKey)*8, e.EncryptionParams.KeySizeInBits)
	}
	blk, err := aes.NewCipher(innerKey)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrEnvelope, err)
	}
	gcm, err := cipher.NewGCM(blk)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrEnvelope, err)
	}
	jwt, err := gcm.Open(nil, e.EncryptionParams.Iv, append(bytes.Clone(e.Jwt), e.AuthenticationData...), []byte(TransportKeyAAD))
	if err != nil {
		return "", fmt.Errorf("%w: AES-GCM: %v", ErrEnvelope, err)
	}
	return string(jwt), nil
}

// Seal is the envelope MAA builds (used by the devstack's MAA): the JWT
// under a fresh AES-256-GCM key, the key encrypted by encryptKey (RSAES
// PKCS#1 v1.5 to the TPM key).
func Seal(jwt string, aesKey, iv []byte, encryptKey func([]byte) ([]byte, error)) (string, error) {
	blk, err := aes.NewCipher(aesKey)
	if err != nil {
		return "", err
	}
	gcm, err := cipher.NewGCM(blk)
	if err != nil {
		return "", err
	}
	ct := gcm.Seal(nil, iv, []byte(jwt), []byte(TransportKeyAAD))
	ek, err := encryptKey(aesKey)
	if err != nil {
		return "", err
	}
	var e Envelope
	e.Jwt, e.AuthenticationData = ct[:len(ct)-16], ct[len(ct)-16:]
	e.EncryptedInnerKey = ek
	e.EncryptionParams.BlockMode, e.EncryptionParams.Cipher = "ChainingModeGCM", "AES"
	e.EncryptionParams.KeySizeInBits, e.EncryptionParams.Iv = len(aesKey)*8, iv
	b, err := json.Marshal(e)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// EncKeyKID is the kid MAA gives the TPM key in x-ms-runtime.keys.
const EncKeyKID = "TpmEphemeralEncryptionKey"

// ErrRuntime: the token's runtime claims do not match this attestation.
var ErrRuntime = errors.New("cvm: token runtime claims")

// CheckRuntime is the AzureGuest token check (the SEV-SNP one compares
// x-ms-runtime with the JSON sent; MAA builds this one itself):
// x-ms-runtime.client-payload.nonce is our nonce, x-ms-runtime.keys holds
// our TPM key as TpmEphemeralEncryptionKey (and no other RSA key Key Vault
// could wrap to first), and x-ms-isolation-tee.x-ms-runtime equals the HCL
// report's runtime JSON.
func CheckRuntime(claims map[string]any, nonce string, encKey *rsa.PublicKey, hclRuntime []byte) error {
	rt, ok := claims["x-ms-runtime"].(map[string]any)
	if !ok {
		return fmt.Errorf("%w: no x-ms-runtime", ErrRuntime)
	}
	cp, _ := rt["client-payload"].(map[string]any)
	if got, _ := cp["nonce"].(string); got != nonce {
		return fmt.Errorf("%w: x-ms-runtime.client-payload.nonce is not our nonce", ErrRuntime)
	}
	keys, _ := rt["keys"].([]any)
	if len(keys) == 0 {
		return fmt.Errorf("%w: x-ms-runtime.keys is empty", ErrRuntime)
	}
	first, _ := keys[0].(map[string]any)
	if first["kid"] != EncKeyKID || first["kty"] != "RSA" {
		return fmt.Errorf("%w: the first x-ms-runtime key is %v, want our %s", ErrRuntime, first["kid"], EncKeyKID)
	}
	n, _ := first["n"].(string)
	e, _ := first["e"].(string)
	nb, err1 := base64.RawURLEncoding.DecodeString(strings.TrimRight(n, "="))
	eb, err2 := base64.RawURLEncoding.DecodeString(strings.TrimRight(e, "="))
	if err1 != nil || err2 != nil || new(big.Int).SetBytes(nb).Cmp(encKey.N) != 0 || new(big.Int).SetBytes(eb).Int64() != int64(encKey.E) {
		return fmt.Errorf("%w: %s is not our TPM key", ErrRuntime, EncKeyKID)
	}
	tee, _ := claims["x-ms-isolation-tee"].(map[string]any)
	if tee == nil {
		return fmt.Errorf("%w: no x-ms-isolation-tee", ErrRuntime)
	}
	var want any
	if err := json.Unmarshal(hclRuntime, &want); err != nil {
		return fmt.Errorf("%w: HCL runtime data: %v", ErrRuntime, err)
	}
	wb, _ := json.Marshal(want)
	gb, _ := json.Marshal(tee["x-ms-runtime"])
	if !bytes.Equal(wb, gb) {
		return fmt.Errorf("%w: x-ms-isolation-tee.x-ms-runtime is not our HCL report's runtime data", ErrRuntime)
	}
	return nil
}

// JWK is the RSA public JWK of a key, as x-ms-runtime.keys carries it.
func JWK(kid string, pub *rsa.PublicKey, ops ...string) map[string]any {
	b64 := base64.RawURLEncoding.EncodeToString
	return map[string]any{"kid": kid, "kty": "RSA", "key_ops": ops,
		"n": b64(pub.N.Bytes()), "e": b64(big.NewInt(int64(pub.E)).Bytes())}
}
