package keyrelease

import (
	"errors"
	"slices"
	"testing"
)

// FuzzParseKey feeds arbitrary bytes to ParseKey, which reads key files and
// JWKs (with Key Vault's key_ops). Properties: no panic; failures wrap
// ErrKeyFormat; a parsed key's operations are well formed, and its JWK view
// parses back to the same type, reference and operations.
func FuzzParseKey(f *testing.F) {
	f.Add([]byte(`{"kty":"oct","k":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8","key_ops":["encrypt","import"],"kid":"https://v.vault.azure.net/keys/k/0a"}`))
	f.Add([]byte(`{"key":{"kty":"oct-HSM","k":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8","key_ops":"sign"}}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","key_ops":["verify"]}]}`))
	f.Add(make([]byte, 32))
	f.Add([]byte("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParseKey(data)
		if err != nil {
			if !errors.Is(err, ErrKeyFormat) {
				t.Fatalf("unclassified failure: %v", err)
			}
			return
		}
		defer k.Wipe()
		if err := CheckOps(k.Ops); err != nil {
			t.Fatalf("parsed key with malformed ops %q: %v", k.Ops, err)
		}
		b, err := k.Marshal(FormatJWK)
		if err != nil {
			return // e.g. an oct key of a size jwx refuses; nothing served
		}
		back, err := ParseKey(b)
		if err != nil {
			t.Fatalf("the JWK view of a parsed key does not parse: %v\n%s", err, b)
		}
		defer back.Wipe()
		if back.Type != k.Type || back.Ref != k.Ref || !slices.Equal(back.Ops, k.Ops) {
			t.Fatalf("JWK view round trip: %s %v %v -> %s %v %v", k.Type, k.Ref, k.Ops, back.Type, back.Ref, back.Ops)
		}
	})
}
