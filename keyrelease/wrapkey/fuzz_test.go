package wrapkey

import (
	"bytes"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"testing"
)

// FuzzUnwrap feeds arbitrary ciphertexts and enc values to the
// CKM_RSA_AES_KEY_WRAP family unwrap. Properties: no panic; a failure is
// ErrUnwrap; a success yields exactly one of the targets that were
// wrapped (the RSA-OAEP and RFC 5649 integrity checks let no mutated
// ciphertext unwrap to other bytes).
func FuzzUnwrap(f *testing.F) {
	b, err := os.ReadFile("testdata/wrap-key.pem")
	if err != nil {
		f.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		f.Fatal("testdata/wrap-key.pem: no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		f.Fatal(err)
	}
	priv := k.(*rsa.PrivateKey)
	targets := [][]byte{bytes.Repeat([]byte{0xa7}, 32), bytes.Repeat([]byte{0x3c}, 7), bytes.Repeat([]byte{0x11}, 1217)}
	f.Add(wrapLikeKeyVault(f, &priv.PublicKey, sha1.New(), targets[0]), EncRSAAESKeyWrap)
	f.Add(wrapLikeKeyVault(f, &priv.PublicKey, sha256.New(), targets[1]), EncRSAAESKeyWrap256)
	f.Add(wrapLikeKeyVault(f, &priv.PublicKey, sha512.New384(), targets[2]), EncRSAAESKeyWrap384)
	f.Add(wrapLikeKeyVault(f, &priv.PublicKey, sha1.New(), targets[0]), EncRSAAESKeyWrap256)
	f.Add([]byte{}, "")
	f.Fuzz(func(t *testing.T, ct []byte, enc string) {
		got, err := Unwrap(priv, enc, ct)
		if err != nil {
			if !errors.Is(err, ErrUnwrap) {
				t.Fatalf("unclassified failure: %v", err)
			}
			return
		}
		for _, want := range targets {
			if bytes.Equal(got, want) {
				return
			}
		}
		t.Fatalf("unwrapped %d bytes that were never wrapped", len(got))
	})
}
