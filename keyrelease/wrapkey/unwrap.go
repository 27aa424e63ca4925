package wrapkey

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"

	"github.com/skrfs/skrfs/crypto/keywrap"
)

// Key export algorithms of Key Vault's release (the "enc" values).
const (
	EncRSAAESKeyWrap    = "CKM_RSA_AES_KEY_WRAP" // OAEP-SHA1 + RFC 5649
	EncRSAAESKeyWrap256 = "RSA_AES_KEY_WRAP_256" // OAEP-SHA256 + RFC 5649
	EncRSAAESKeyWrap384 = "RSA_AES_KEY_WRAP_384" // OAEP-SHA384 + RFC 5649
)

// ErrUnwrap: the wrapped key could not be unwrapped with our wrapping key.
var ErrUnwrap = errors.New("wrapkey: cannot unwrap the released key")

// Unwrap reverses Key Vault's CKM_RSA_AES_KEY_WRAP family (protocol.md
// 5.5): the first modulus-length bytes are an RSA-OAEP encryption of an
// ephemeral AES key, the rest the RFC 5649 wrap of the target key under it.
func Unwrap(priv *rsa.PrivateKey, enc string, ciphertext []byte) ([]byte, error) {
	if priv == nil {
		return nil, fmt.Errorf("%w: no wrapping key", ErrUnwrap)
	}
	return UnwrapWith(priv, enc, ciphertext)
}

// OAEPHash is the OAEP (and MGF1) hash of an enc value.
func OAEPHash(enc string) (crypto.Hash, error) {
	switch enc {
	case EncRSAAESKeyWrap, "":
		return crypto.SHA1, nil
	case EncRSAAESKeyWrap256:
		return crypto.SHA256, nil
	case EncRSAAESKeyWrap384:
		return crypto.SHA384, nil
	}
	return 0, fmt.Errorf("%w: unsupported enc %q", ErrUnwrap, enc)
}

// UnwrapWith is Unwrap with any RSA decrypter: the RSA-OAEP step is
// dec.Decrypt with rsa.OAEPOptions (a software key, or a TPM key whose
// TPM2_RSA_Decrypt does it), the RFC 5649 step is in software.
func UnwrapWith(dec crypto.Decrypter, enc string, ciphertext []byte) ([]byte, error) {
	h, err := OAEPHash(enc)
	if err != nil {
		return nil, err
	}
	pub, ok := dec.Public().(*rsa.PublicKey)
	if !ok || pub == nil || pub.N == nil {
		return nil, fmt.Errorf("%w: the wrapping key is not an RSA key", ErrUnwrap)
	}
	k := pub.Size()
	if len(ciphertext) < k+16 {
		return nil, fmt.Errorf("%w: %d bytes, want at least %d", ErrUnwrap, len(ciphertext), k+16)
	}
	aesKey, err := dec.Decrypt(rand.Reader, ciphertext[:k], &rsa.OAEPOptions{Hash: h})
	if err != nil {
		return nil, fmt.Errorf("%w: RSA-OAEP: %v", ErrUnwrap, err)
	}
	defer clear(aesKey)
	target, err := keywrap.UnwrapPad(aesKey, ciphertext[k:])
	if err != nil {
		return nil, fmt.Errorf("%w: AES key wrap: %v", ErrUnwrap, err)
	}
	return target, nil
}
