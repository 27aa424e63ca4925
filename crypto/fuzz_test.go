package crypto

import (
	"bytes"
	"testing"
)

// FuzzParseHeader: the parser never panics, and whatever it accepts
// re-encodes to the same bytes.
func FuzzParseHeader(f *testing.F) {
	k := keysForTest(f)
	for _, key := range []any{k.rsa2048, k.oct, k.p256, k.p384} {
		obj, _ := Seal([]byte("seed"), key, SealOptions{Name: "n", KeyRef: "https://v.vault.azure.net/keys/k"})
		f.Add(obj)
	}
	f.Add([]byte("SKRFS\x01\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			return
		}
		enc, err := encodeHeader(h.ChunkSize, h.ObjectID, h.Wrap, h.KeyRef, h.Name, h.WrappedDEK)
		if err != nil {
			t.Fatalf("accepted header does not re-encode: %v", err)
		}
		copy(enc[len(enc)-MACSize:], h.MAC[:])
		if !bytes.Equal(enc, b[:h.Len()]) {
			t.Fatalf("re-encoded header differs")
		}
	})
}

// FuzzOpen: a mutated object either fails or opens to exactly the original
// plaintext; it never yields other bytes.
func FuzzOpen(f *testing.F) {
	k := keysForTest(f)
	pt := pseudoRandom(2, 3*MinChunkSize+7)
	obj, err := Seal(pt, k.oct, SealOptions{Name: "f", ChunkSize: MinChunkSize})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(obj)
	f.Add(obj[:len(obj)-10])
	f.Add(append(bytes.Clone(obj), obj[200:300]...))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := Open(b, k.oct, "f")
		if err == nil && !bytes.Equal(got, pt) {
			t.Fatalf("Open accepted a modified object and returned other plaintext")
		}
	})
}

// FuzzVerifyManifest: the manifest parser never panics; whatever it accepts
// was signed by the pinned key and re-encodes to the same payload.
func FuzzVerifyManifest(f *testing.F) {
	s, err := NewLocalSigner(keysForTest(f).p256)
	if err != nil {
		f.Fatal(err)
	}
	v, _ := NewManifestVerifier(s.Public())
	for _, n := range []int{0, 1, 3} {
		tok, err := SignManifest(testManifest(n), s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(tok)
	}
	f.Add([]byte("e30.e30.e30"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := InspectManifest(b); err == nil {
			if _, err := EncodeManifestPayload(m); err != nil {
				t.Fatalf("inspected manifest does not re-encode: %v", err)
			}
		}
		m, err := VerifyManifest(b, v)
		if err != nil {
			if m != nil {
				t.Fatal("a refused manifest returned a view")
			}
			return
		}
		enc, err := EncodeManifestPayload(m)
		if err != nil {
			t.Fatalf("accepted manifest does not re-encode: %v", err)
		}
		if _, err := VerifyManifest(b, v); err != nil {
			t.Fatal("verification is not deterministic")
		}
		_ = enc
	})
}
