package wrapkey

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
)

// WrappingKey is the ephemeral RSA key of one release (protocol.md section
// 4): its public part goes into the attestation as runtime data, Key Vault
// wraps the released key to it, and it never leaves this process.
type WrappingKey struct {
	Private *rsa.PrivateKey
	// KID is the RFC 7638 JWK thumbprint (SHA-256, base64url without padding).
	KID string
	// RuntimeData is the exact JSON sent to MAA as runtime data; REPORT_DATA
	// is its SHA-256 followed by 32 zero bytes.
	RuntimeData []byte
}

// runtimeJWK is the public JWK with members in sorted order, as Microsoft's
// reference sidecar serialises it.
type runtimeJWK struct {
	E      string   `json:"e"`
	KeyOps []string `json:"key_ops"`
	KID    string   `json:"kid"`
	Kty    string   `json:"kty"`
	N      string   `json:"n"`
}

// NewWrappingKey generates a fresh RSA-2048 wrapping key and its runtime
// data.
func NewWrappingKey() (*WrappingKey, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	return wrappingKeyFrom(k)
}

func wrappingKeyFrom(k *rsa.PrivateKey) (*WrappingKey, error) {
	b64 := base64.RawURLEncoding.EncodeToString
	e := b64(big.NewInt(int64(k.E)).Bytes())
	n := b64(k.N.Bytes())
	// RFC 7638: the required members in lexicographic order, no whitespace.
	tp := sha256.Sum256([]byte(`{"e":"` + e + `","kty":"RSA","n":"` + n + `"}`))
	kid := b64(tp[:])
	rd, err := json.Marshal(struct {
		Keys []runtimeJWK `json:"keys"`
	}{[]runtimeJWK{{E: e, KeyOps: []string{"encrypt"}, KID: kid, Kty: "RSA", N: n}}})
	if err != nil {
		return nil, err
	}
	return &WrappingKey{Private: k, KID: kid, RuntimeData: rd}, nil
}

// ReportData returns SHA-256(RuntimeData) followed by 32 zero bytes: the
// 64-byte REPORT_DATA that binds the SEV-SNP report to this key.
func (w *WrappingKey) ReportData() [64]byte {
	var rd [64]byte
	h := sha256.Sum256(w.RuntimeData)
	copy(rd[:], h[:])
	return rd
}

// Wipe zeroes the private key's secret integers.
func (w *WrappingKey) Wipe() {
	if w.Private == nil {
		return
	}
	for _, i := range append([]*big.Int{w.Private.D}, w.Private.Primes...) {
		clear(i.Bits())
		i.SetInt64(0)
	}
	w.Private = nil
}
