package wrapkey

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"hash"
	"regexp"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/skrfs/skrfs/crypto/keywrap"
)

func TestRuntimeData(t *testing.T) {
	w, err := NewWrappingKey()
	if err != nil {
		t.Fatal(err)
	}
	// Exactly one key, members sorted, key_ops encrypt, no alg/use.
	re := regexp.MustCompile(`^\{"keys":\[\{"e":"AQAB","key_ops":\["encrypt"\],"kid":"[A-Za-z0-9_-]{43}","kty":"RSA","n":"[A-Za-z0-9_-]{342}"\}\]\}$`)
	if !re.Match(w.RuntimeData) {
		t.Fatalf("runtime data %s", w.RuntimeData)
	}
	// kid is the RFC 7638 thumbprint as jwx computes it.
	set, err := jwk.Parse(w.RuntimeData)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := set.Key(0)
	tp, _ := k.Thumbprint(sha256New())
	if got := b64(tp); got != w.KID || k.KeyID() != w.KID {
		t.Fatalf("kid %s, jwx thumbprint %s", w.KID, got)
	}
	rd := w.ReportData()
	h := sha256.Sum256(w.RuntimeData)
	if !bytes.Equal(rd[:32], h[:]) || !bytes.Equal(rd[32:], make([]byte, 32)) {
		t.Fatal("REPORT_DATA is not SHA-256(runtime data) || zeros")
	}
	var parsed map[string][]map[string]any
	if err := json.Unmarshal(w.RuntimeData, &parsed); err != nil || len(parsed["keys"]) != 1 {
		t.Fatal("not a JWK set of one key")
	}
}

func wrapLikeKeyVault(t testing.TB, pub *rsa.PublicKey, h hash.Hash, target []byte) []byte {
	aesKey := make([]byte, 32)
	rand.Read(aesKey)
	c1, err := rsa.EncryptOAEP(h, rand.Reader, pub, aesKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := keywrap.WrapPad(aesKey, target)
	if err != nil {
		t.Fatal(err)
	}
	return append(c1, c2...)
}

func TestUnwrap(t *testing.T) {
	w, _ := NewWrappingKey()
	target := bytes.Repeat([]byte{0xAB}, 32)
	for _, tc := range []struct {
		enc string
		h   hash.Hash
	}{{EncRSAAESKeyWrap, sha1.New()}, {EncRSAAESKeyWrap256, sha256.New()}, {EncRSAAESKeyWrap384, sha512.New384()}} {
		ct := wrapLikeKeyVault(t, &w.Private.PublicKey, tc.h, target)
		got, err := Unwrap(w.Private, tc.enc, ct)
		if err != nil || !bytes.Equal(got, target) {
			t.Fatalf("%s: %v", tc.enc, err)
		}
		// Wrong enc (hash), tampered KWP, wrong key: all refused.
		other := EncRSAAESKeyWrap256
		if tc.enc == other {
			other = EncRSAAESKeyWrap
		}
		if _, err := Unwrap(w.Private, other, ct); !errors.Is(err, ErrUnwrap) {
			t.Fatalf("%s unwrapped as %s: %v", tc.enc, other, err)
		}
		bad := bytes.Clone(ct)
		bad[len(bad)-1] ^= 1
		if _, err := Unwrap(w.Private, tc.enc, bad); !errors.Is(err, ErrUnwrap) {
			t.Fatalf("tampered: %v", err)
		}
	}
	w2, _ := NewWrappingKey()
	ct := wrapLikeKeyVault(t, &w.Private.PublicKey, sha1.New(), target)
	if _, err := Unwrap(w2.Private, EncRSAAESKeyWrap, ct); !errors.Is(err, ErrUnwrap) {
		t.Fatalf("wrong wrapping key: %v", err)
	}
	if _, err := Unwrap(w.Private, "A256KW", ct); !errors.Is(err, ErrUnwrap) {
		t.Fatalf("unknown enc: %v", err)
	}
}
