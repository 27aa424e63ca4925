package wrapkey

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"io"
	"testing"
)

// opaqueDecrypter is a key whose private part Unwrap cannot reach, as a
// TPM key: only Decrypt. It records the options it was called with.
type opaqueDecrypter struct {
	k    *rsa.PrivateKey
	opts []crypto.DecrypterOpts
}

func (o *opaqueDecrypter) Public() crypto.PublicKey { return &o.k.PublicKey }
func (o *opaqueDecrypter) Decrypt(r io.Reader, msg []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	o.opts = append(o.opts, opts)
	return o.k.Decrypt(r, msg, opts)
}

// TestUnwrapWithDecrypter: the release path unwraps through
// crypto.Decrypter, asking for OAEP with the enc's hash.
func TestUnwrapWithDecrypter(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	target := bytes.Repeat([]byte{0x5a}, 32)
	d := &opaqueDecrypter{k: k}
	got, err := UnwrapWith(d, EncRSAAESKeyWrap256, wrapLikeKeyVault(t, &k.PublicKey, sha256.New(), target))
	if err != nil || !bytes.Equal(got, target) {
		t.Fatalf("unwrap: %v", err)
	}
	if o, ok := d.opts[0].(*rsa.OAEPOptions); !ok || o.Hash != crypto.SHA256 {
		t.Fatalf("decrypt options %#v", d.opts[0])
	}
	// SHA-1 wrapped, SHA-256 asked: OAEP fails, classified.
	if _, err := UnwrapWith(d, EncRSAAESKeyWrap256, wrapLikeKeyVault(t, &k.PublicKey, sha1.New(), target)); !errors.Is(err, ErrUnwrap) {
		t.Fatalf("wrong hash: %v", err)
	}
	if _, err := UnwrapWith(d, "A256KW", nil); !errors.Is(err, ErrUnwrap) {
		t.Fatalf("unknown enc: %v", err)
	}
}
