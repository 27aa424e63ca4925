package crypto

import (
	"bytes"
	"io"
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

// FuzzParseHeaderV2: the version 2 parser never panics, and whatever it
// accepts re-encodes to the same bytes.
func FuzzParseHeaderV2(f *testing.F) {
	k := keysForTest(f)
	for _, key := range []any{k.rsa2048, k.oct, k.p256, k.p384} {
		b, err := NewBatch(key, "https://v.vault.azure.net/keys/k", nil)
		if err != nil {
			f.Fatal(err)
		}
		obj, _ := SealV2([]byte("seed"), b, SealOptions{Name: "n"})
		f.Add(obj)
	}
	f.Add([]byte("SKRFS\x02\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil || h.Version != VersionV2 {
			return
		}
		enc, err := encodeHeaderV2(h.ChunkSize, h.ObjectID, h.Wrap, h.KeyRef, h.Name, h.WrappedBK, h.WrappedDEK, h.SealCount, h.TableDigest)
		if err != nil {
			t.Fatalf("accepted header does not re-encode: %v", err)
		}
		copy(enc[len(enc)-MACSize:], h.MAC[:])
		if !bytes.Equal(enc, b[:h.Len()]) {
			t.Fatalf("re-encoded header differs")
		}
		if _, err := h.PlainSize(int64(len(b))); err == nil {
			if off, n, err := h.TableRange(int64(len(b))); err != nil || off < int64(h.Len()) || off+n != int64(len(b)) {
				t.Fatalf("table range %d+%d of %d bytes: %v", off, n, len(b), err)
			}
		}
	})
}

// FuzzOpenV2: a mutated version 2 object either fails or opens to exactly
// the original plaintext, with and without a warm batch-key cache.
func FuzzOpenV2(f *testing.F) {
	k := keysForTest(f)
	pt := pseudoRandom(2, 3*MinChunkSize+7)
	b, err := NewBatch(k.oct, "", nil)
	if err != nil {
		f.Fatal(err)
	}
	obj, err := SealV2(pt, b, SealOptions{Name: "f", ChunkSize: MinChunkSize})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(obj)
	f.Add(obj[:len(obj)-10])
	f.Add(append(bytes.Clone(obj), obj[200:300]...))
	cache := &mapCache{}
	if _, err := openV2(f, obj, k.oct, "f", cache); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := Open(b, k.oct, "f")
		if err == nil && !bytes.Equal(got, pt) {
			t.Fatalf("Open accepted a modified object and returned other plaintext")
		}
		d, err := openV2(t, b, k.oct, "f", cache)
		if err != nil {
			return
		}
		got, err = io.ReadAll(io.NewSectionReader(d.ReaderAt(bytes.NewReader(b)), 0, d.PlainSize()))
		if err == nil && !bytes.Equal(got, pt) {
			t.Fatalf("cached open accepted a modified object and returned other plaintext")
		}
	})
}
