package wrapkey

import (
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"

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
	var h hash.Hash
	switch enc {
	case EncRSAAESKeyWrap, "":
		h = sha1.New()
	case EncRSAAESKeyWrap256:
		h = sha256.New()
	case EncRSAAESKeyWrap384:
		h = sha512.New384()
	default:
		return nil, fmt.Errorf("%w: unsupported enc %q", ErrUnwrap, enc)
	}
	k := priv.Size()
	if len(ciphertext) < k+16 {
		return nil, fmt.Errorf("%w: %d bytes, want at least %d", ErrUnwrap, len(ciphertext), k+16)
	}
	aesKey, err := rsa.DecryptOAEP(h, nil, priv, ciphertext[:k], nil)
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
