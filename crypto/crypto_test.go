package crypto

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"sync"
	"testing"
)

type testKeys struct {
	rsa2048, rsa3072, rsa4096 *rsa.PrivateKey
	oct, oct2                 []byte
	p256, p384                *ecdsa.PrivateKey
}

var (
	keysOnce sync.Once
	tk       testKeys
)

func keysForTest(tb testing.TB) testKeys {
	tb.Helper()
	keysOnce.Do(func() {
		must := func(k *rsa.PrivateKey, err error) *rsa.PrivateKey {
			if err != nil {
				panic(err)
			}
			return k
		}
		tk.rsa2048 = must(rsa.GenerateKey(rand.Reader, 2048))
		tk.rsa3072 = must(rsa.GenerateKey(rand.Reader, 3072))
		tk.rsa4096 = must(rsa.GenerateKey(rand.Reader, 4096))
		tk.oct = bytes.Repeat([]byte{0x42}, 32)
		tk.oct2 = bytes.Repeat([]byte{0x43}, 32)
		tk.p256, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tk.p384, _ = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	})
	return tk
}

func pseudoRandom(seed uint64, n int) []byte {
	r := mrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	b := make([]byte, n)
	r.Read(b)
	return b
}

type kekCase struct {
	name      string
	seal, opn any
	alg       WrapAlg
}

func kekCases(tb testing.TB) []kekCase {
	k := keysForTest(tb)
	ecdhPriv, _ := k.p256.ECDH()
	return []kekCase{
		{"RSA-2048 public", &k.rsa2048.PublicKey, k.rsa2048, WrapRSAOAEP256},
		{"RSA-3072", k.rsa3072, k.rsa3072, WrapRSAOAEP256},
		{"RSA-4096", &k.rsa4096.PublicKey, k.rsa4096, WrapRSAOAEP256},
		{"oct AES-256", k.oct, k.oct, WrapA256KW},
		{"EC P-256", &k.p256.PublicKey, k.p256, WrapECDHESP256KW},
		{"EC P-256 via ecdh", ecdhPriv.PublicKey(), ecdhPriv, WrapECDHESP256KW},
		{"EC P-384", &k.p384.PublicKey, k.p384, WrapECDHESP384KW},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, kc := range kekCases(t) {
		for _, chunk := range []int{MinChunkSize, DefaultChunkSize} {
			for _, size := range []int{0, 1, chunk - 1, chunk, chunk + 1, 3*chunk + 7} {
				t.Run(fmt.Sprintf("%s/chunk%d/size%d", kc.name, chunk, size), func(t *testing.T) {
					pt := pseudoRandom(uint64(size), size)
					obj, err := Seal(pt, kc.seal, SealOptions{Name: "obj", KeyRef: "https://v.vault.azure.net/keys/k", ChunkSize: chunk})
					if err != nil {
						t.Fatal(err)
					}
					h, err := ParseHeader(obj)
					if err != nil {
						t.Fatal(err)
					}
					if h.Wrap != kc.alg || h.ChunkSize != chunk || h.Name != "obj" {
						t.Fatalf("header %+v", h)
					}
					if want := CipherSize(int64(size), h.Len(), chunk); int64(len(obj)) != want {
						t.Fatalf("object size %d, CipherSize says %d", len(obj), want)
					}
					if ps, err := h.PlainSize(int64(len(obj))); err != nil || ps != int64(size) {
						t.Fatalf("PlainSize = %d, %v; want %d", ps, err, size)
					}
					got, err := Open(obj, kc.opn, "obj")
					if err != nil || !bytes.Equal(got, pt) {
						t.Fatalf("Open = %d bytes, %v; want %d bytes back", len(got), err, size)
					}
				})
			}
		}
	}
}

func TestRoundTrip100MiB(t *testing.T) {
	if testing.Short() {
		t.Skip("100 MiB round trip skipped in -short mode")
	}
	k := keysForTest(t)
	for _, kc := range []kekCase{{"RSA", &k.rsa2048.PublicKey, k.rsa2048, 0}, {"oct", k.oct, k.oct, 0}} {
		t.Run(kc.name, func(t *testing.T) {
			const size = 100 << 20
			pt := pseudoRandom(9, size)
			var obj bytes.Buffer
			w, err := NewWriter(&obj, kc.seal, SealOptions{Name: "big"})
			if err != nil {
				t.Fatal(err)
			}
			// io.Copy through ReadFrom, from a reader that returns odd sizes.
			if _, err := io.Copy(w, &oddReader{data: pt}); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			got, err := Open(obj.Bytes(), kc.opn, "big")
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("Open: %v (equal=%v)", err, bytes.Equal(got, pt))
			}
		})
	}
}

// oddReader returns data in pieces of varying size.
type oddReader struct {
	data []byte
	n    int
}

func (r *oddReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	r.n++
	k := min(len(p), len(r.data), 1+(r.n*7919)%100000)
	copy(p, r.data[:k])
	r.data = r.data[k:]
	return k, nil
}

func TestWriterPieces(t *testing.T) {
	k := keysForTest(t)
	pt := pseudoRandom(3, 5*MinChunkSize)
	for _, piece := range []int{1, 7, MinChunkSize - 1, MinChunkSize, MinChunkSize + 1, len(pt)} {
		var obj bytes.Buffer
		w, err := NewWriter(&obj, k.oct, SealOptions{Name: "p", ChunkSize: MinChunkSize})
		if err != nil {
			t.Fatal(err)
		}
		for rest := pt; len(rest) > 0; {
			n := min(piece, len(rest))
			if _, err := w.Write(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("x")); err == nil {
			t.Fatal("Write after Close succeeded")
		}
		// Exactly 5 full chunks and no empty trailing chunk.
		if want := CipherSize(int64(len(pt)), len(w.Header()), MinChunkSize); int64(obj.Len()) != want {
			t.Fatalf("piece %d: object %d bytes, want %d", piece, obj.Len(), want)
		}
		got, err := Open(obj.Bytes(), k.oct, "p")
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("piece %d: %v", piece, err)
		}
	}
}

// countingReaderAt counts the ciphertext bytes read.
type countingReaderAt struct {
	b     []byte
	bytes int64
	calls int
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.calls++
	if off >= int64(len(c.b)) {
		return 0, io.EOF
	}
	n := copy(p, c.b[off:])
	c.bytes += int64(n)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func TestRandomAccess(t *testing.T) {
	k := keysForTest(t)
	const chunk = 1024
	pt := pseudoRandom(4, 50*chunk+123)
	obj, err := Seal(pt, k.p384, SealOptions{Name: "r", ChunkSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	h, _ := ParseHeader(obj)
	d, err := NewDecryptor(h, k.p384, "r", int64(len(obj)))
	if err != nil {
		t.Fatal(err)
	}
	r := mrand.New(mrand.NewPCG(1, 2))
	for i := 0; i < 500; i++ {
		off := r.Int64N(int64(len(pt)) + 10)
		n := r.IntN(5*chunk) + 1
		src := &countingReaderAt{b: obj}
		p := make([]byte, n)
		got, err := d.ReaderAt(src).ReadAt(p, off)
		want := max(0, min(int64(n), int64(len(pt))-off))
		if int64(got) != want || (want < int64(n) && err != io.EOF) || (want == int64(n) && err != nil) {
			t.Fatalf("ReadAt(off %d, n %d) = %d, %v; want %d", off, n, got, err, want)
		}
		if !bytes.Equal(p[:got], pt[min(off, int64(len(pt))):min(off, int64(len(pt)))+want]) {
			t.Fatalf("ReadAt(off %d, n %d): wrong bytes", off, n)
		}
		if want > 0 {
			// Only the chunks covering the range were read.
			first, last := off/chunk, (off+want-1)/chunk
			_, cn := d.CipherRange(first, last)
			if src.bytes != cn || src.calls != 1 || cn > (last-first+1)*(chunk+TagSize) {
				t.Fatalf("ReadAt(off %d, n %d) read %d bytes in %d calls, want %d in 1", off, n, src.bytes, src.calls, cn)
			}
		}
	}
}

func TestSizeArithmetic(t *testing.T) {
	// The worked examples of docs/format.md section 7.
	const h, c = 381, 65536
	for _, tc := range []struct{ plain, chunks, object int64 }{
		{0, 1, 397}, {1, 1, 398}, {65535, 1, 65932}, {65536, 1, 65933}, {65537, 2, 65950},
		{196615, 4, 197060}, {1 << 30, 16384, 1074004349},
	} {
		if n := NumChunks(tc.plain, c); n != tc.chunks {
			t.Errorf("NumChunks(%d) = %d, want %d", tc.plain, n, tc.chunks)
		}
		if s := CipherSize(tc.plain, h, c); s != tc.object {
			t.Errorf("CipherSize(%d) = %d, want %d", tc.plain, s, tc.object)
		}
		if p, err := PlainSize(tc.object, h, c); p != tc.plain || err != nil {
			t.Errorf("PlainSize(%d) = %d, %v; want %d", tc.object, p, err, tc.plain)
		}
	}
	// Every size from the header up: PlainSize inverts CipherSize, and sizes
	// that no plaintext produces are refused.
	const sc = MinChunkSize
	valid := map[int64]int64{}
	for p := int64(0); p < 5*sc; p++ {
		valid[CipherSize(p, MinHeaderSize, sc)] = p
	}
	for s := int64(0); s < CipherSize(5*sc, MinHeaderSize, sc); s++ {
		p, err := PlainSize(s, MinHeaderSize, sc)
		want, ok := valid[s]
		if ok != (err == nil) || (ok && p != want) {
			t.Fatalf("PlainSize(%d) = %d, %v; valid=%v want %d", s, p, err, ok, want)
		}
		if err != nil && !errors.Is(err, ErrInvalidSize) {
			t.Fatalf("PlainSize(%d) error %v is not ErrInvalidSize", s, err)
		}
	}
}

func TestHeaderSizes(t *testing.T) {
	// docs/format.md section 7: H = 71 + R + N + W.
	k := keysForTest(t)
	ref := "https://myvault.vault.azure.net/keys/data-key"
	for _, tc := range []struct {
		key  any
		want int
	}{{k.rsa2048, 381}, {k.rsa3072, 509}, {k.rsa4096, 637}, {k.oct, 165}, {k.p256, 230}, {k.p384, 262}} {
		obj, err := Seal(nil, tc.key, SealOptions{Name: "hello.txt", KeyRef: ref})
		if err != nil {
			t.Fatal(err)
		}
		if h, _ := ParseHeader(obj); h.Len() != tc.want {
			t.Errorf("%T: header %d bytes, want %d", tc.key, h.Len(), tc.want)
		}
		if n, err := HeaderLen(tc.key, ref, "hello.txt"); n != tc.want || err != nil {
			t.Errorf("HeaderLen(%T) = %d, %v; want %d", tc.key, n, err, tc.want)
		}
	}
}

func TestSealRejects(t *testing.T) {
	k := keysForTest(t)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	x25519, _ := ecdh.X25519().GenerateKey(rand.Reader)
	for _, tc := range []struct {
		name string
		key  any
		opts SealOptions
		want string
	}{
		{"RSA-1024", &small.PublicKey, SealOptions{}, "1024 bits"},
		{"short oct", []byte("short"), SealOptions{}, "oct key of 5 bytes"},
		{"unknown key type", "a string", SealOptions{}, "unsupported or mismatched key type"},
		{"nil key", nil, SealOptions{}, "no key"},
		{"X25519", x25519.PublicKey(), SealOptions{}, "want P-256 or P-384"},
		{"tiny chunk", k.oct, SealOptions{ChunkSize: 255}, "chunk size 255"},
		{"huge chunk", k.oct, SealOptions{ChunkSize: MaxChunkSize + 1}, "out of range"},
		{"control char in name", k.oct, SealOptions{Name: "a\nb"}, "control character"},
		{"bad UTF-8 name", k.oct, SealOptions{Name: "\xff"}, "not valid UTF-8"},
		{"C1 control in name", k.oct, SealOptions{Name: "a\u0085b"}, "U+0085"},
		{"bidi override in name", k.oct, SealOptions{Name: "gpj.\u202etxt"}, "U+202E"},
		{"long name", k.oct, SealOptions{Name: string(bytes.Repeat([]byte("n"), MaxNameLen+1))}, "name longer"},
	} {
		if _, err := Seal([]byte("x"), tc.key, tc.opts); err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("%s: Seal error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

// Offsets of header fields in a sealed object with the given key ref and
// name lengths (docs/format.md section 2.2).
func fieldOffsets(h *Header) (keyRefLen, keyRef, nameLen, name, wrapLen, wrap, mac int) {
	keyRefLen = 33
	keyRef = 35
	nameLen = keyRef + len(h.KeyRef)
	name = nameLen + 2
	wrapLen = name + len(h.Name)
	wrap = wrapLen + 2
	mac = h.Len() - MACSize
	return
}

func flip(obj []byte, i int, bit byte) []byte {
	b := bytes.Clone(obj)
	b[i] ^= bit
	return b
}

func TestTamperMatrix(t *testing.T) {
	k := keysForTest(t)
	const chunk = MinChunkSize
	pt := pseudoRandom(5, 3*chunk+7) // 4 chunks: 3 full, 1 of 7 bytes
	opts := SealOptions{Name: "victim", KeyRef: "https://v.vault.azure.net/keys/k/1", ChunkSize: chunk}
	obj, err := Seal(pt, k.rsa2048, opts)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := Seal(pt, k.rsa2048, opts) // same key, name and plaintext; new DEK
	h, _ := ParseHeader(obj)
	H := h.Len()
	T := chunk + TagSize
	body := func(i int) int { return H + i*T }
	krl, kr, nl, nm, wl, wr, mac := fieldOffsets(h)
	swapChunks := bytes.Clone(obj)
	copy(swapChunks[body(0):body(1)], obj[body(1):body(2)])
	copy(swapChunks[body(1):body(2)], obj[body(0):body(1)])
	splice := bytes.Clone(obj)
	copy(splice[body(1):body(2)], other[body(1):body(2)])
	otherHeader := append(bytes.Clone(other[:H]), obj[H:]...)
	chunkSize := flip(obj, 15, 0x01) // chunk size 256 -> 257

	tests := []struct {
		name      string
		obj       []byte
		key       any
		wantErr   error
		wantChunk int64 // -1: not a chunk error
	}{
		{"intact", obj, k.rsa2048, nil, -1},
		{"magic", flip(obj, 0, 0x01), k.rsa2048, ErrBadMagic, -1},
		{"version", flip(obj, 5, 0x02), k.rsa2048, ErrUnsupportedVersion, -1},
		{"reserved", flip(obj, 7, 0x01), k.rsa2048, ErrMalformedHeader, -1},
		{"header length", flip(obj, 11, 0x01), k.rsa2048, ErrMalformedHeader, -1},
		{"header length high bit", flip(obj, 8, 0x80), k.rsa2048, ErrMalformedHeader, -1},
		{"chunk size", chunkSize, k.rsa2048, ErrHeaderAuth, -1},
		{"chunk size high bit", flip(obj, 12, 0x40), k.rsa2048, ErrMalformedHeader, -1},
		{"object ID", flip(obj, 20, 0x01), k.rsa2048, ErrHeaderAuth, -1},
		{"wrap algorithm", flip(obj, 32, 0x02), k.rsa2048, ErrMalformedHeader, -1},
		{"key ref length", flip(obj, krl+1, 0x01), k.rsa2048, ErrMalformedHeader, -1},
		{"key ref", flip(obj, kr+3, 0x01), k.rsa2048, ErrHeaderAuth, -1},
		{"name length", flip(obj, nl+1, 0x01), k.rsa2048, ErrMalformedHeader, -1},
		{"name", flip(obj, nm, 0x01), k.rsa2048, ErrHeaderAuth, -1},
		{"wrapped key length", flip(obj, wl+1, 0x01), k.rsa2048, ErrMalformedHeader, -1},
		{"wrapped key", flip(obj, wr+10, 0x01), k.rsa2048, ErrWrongKey, -1},
		{"MAC", flip(obj, mac+5, 0x01), k.rsa2048, ErrHeaderAuth, -1},
		{"chunk 1 body", flip(obj, body(1)+100, 0x01), k.rsa2048, ErrChunkAuth, 1},
		{"chunk 0 tag", flip(obj, body(1)-1, 0x80), k.rsa2048, ErrChunkAuth, 0},
		{"final chunk tag", flip(obj, len(obj)-1, 0x01), k.rsa2048, ErrChunkAuth, 3},
		{"truncated at chunk boundary", obj[:body(3)], k.rsa2048, ErrTruncated, 2},
		{"truncated to one chunk", obj[:body(1)], k.rsa2048, ErrTruncated, 0},
		{"truncated inside final chunk", obj[:len(obj)-5], k.rsa2048, ErrChunkAuth, 3},
		{"truncated into final tag", obj[:len(obj)-10], k.rsa2048, ErrInvalidSize, -1},
		{"truncated to header", obj[:H], k.rsa2048, ErrInvalidSize, -1},
		{"truncated inside header", obj[:H-1], k.rsa2048, ErrMalformedHeader, -1},
		{"appended bytes", append(bytes.Clone(obj), 1, 2, 3), k.rsa2048, ErrChunkAuth, 3},
		{"appended chunk", append(bytes.Clone(obj), obj[body(0):body(1)]...), k.rsa2048, ErrChunkAuth, 3},
		{"swapped chunks", swapChunks, k.rsa2048, ErrChunkAuth, 0},
		{"chunk spliced from another object", splice, k.rsa2048, ErrChunkAuth, 1},
		{"header of another object", otherHeader, k.rsa2048, ErrChunkAuth, 0},
		{"wrong RSA key", obj, k.rsa3072, ErrWrongKey, -1},
		{"oct key for RSA object", obj, k.oct, ErrKeyType, -1},
		{"public key cannot open", obj, &k.rsa2048.PublicKey, ErrKeyType, -1},
		{"empty", nil, k.rsa2048, ErrBadMagic, -1},
		{"three bytes", []byte("SKR"), k.rsa2048, ErrBadMagic, -1},
		{"preamble only", obj[:10], k.rsa2048, ErrMalformedHeader, -1},
		{"zero header", make([]byte, len(obj)), k.rsa2048, ErrBadMagic, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Open(tc.obj, tc.key, "victim")
			if tc.wantErr == nil {
				if err != nil || !bytes.Equal(got, pt) {
					t.Fatalf("Open = %v", err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) || got != nil {
				t.Fatalf("Open = %d bytes, %v; want %v", len(got), err, tc.wantErr)
			}
			var ce *ChunkError
			if errors.As(err, &ce) != (tc.wantChunk >= 0) || (ce != nil && ce.Index != tc.wantChunk) {
				t.Fatalf("Open error %v: want chunk %d", err, tc.wantChunk)
			}
		})
	}

	// The final flag: a last chunk appended as a full copy of a final chunk
	// is reported as extension when the object's old final chunk is not the
	// last any more.
	full, _ := Seal(pseudoRandom(6, 2*chunk), k.oct, SealOptions{Name: "x", ChunkSize: chunk})
	hf, _ := ParseHeader(full)
	ext := append(bytes.Clone(full), full[hf.Len():hf.Len()+T]...)
	if _, err := Open(ext, k.oct, "x"); !errors.Is(err, ErrExtended) {
		t.Fatalf("chunk appended after a full final chunk: %v, want ErrExtended", err)
	}

	// Two objects swapped in storage: each is refused under the other's name.
	a, _ := Seal([]byte("contents of a"), k.oct, SealOptions{Name: "a.txt"})
	if _, err := Open(a, k.oct, "b.txt"); !errors.Is(err, ErrNameMismatch) {
		t.Fatalf("object a opened as b: %v, want ErrNameMismatch", err)
	}
}

func TestChunkSizeFlipIsCaughtBeforeDecrypting(t *testing.T) {
	// A chunk size change that keeps the object size valid is still caught
	// by the MAC; one that makes it invalid is caught by the size check.
	k := keysForTest(t)
	obj, _ := Seal(pseudoRandom(1, 1000), k.oct, SealOptions{Name: "c", ChunkSize: 256})
	for c := uint32(256); c < 300; c++ {
		b := bytes.Clone(obj)
		binary.BigEndian.PutUint32(b[12:], c)
		_, err := Open(b, k.oct, "c")
		if c == 256 {
			if err != nil {
				t.Fatal(err)
			}
			continue
		}
		if !errors.Is(err, ErrHeaderAuth) && !errors.Is(err, ErrInvalidSize) {
			t.Fatalf("chunk size %d: %v", c, err)
		}
	}
}

// PlainSize takes its parameters from storage: out-of-range values are
// errors (a chunk size of -16 used to divide by zero), never a panic.
func TestPlainSizeRejectsBadParameters(t *testing.T) {
	const maxInt = int(^uint(0) >> 1)
	for _, tc := range []struct {
		size   int64
		hl, cs int
	}{
		{1000, 400, -16}, {1000, 400, 0}, {1000, 400, -1}, {1000, 400, MinChunkSize - 1},
		{1000, 400, MaxChunkSize + 1}, {1000, 400, maxInt}, {1000, 400, -maxInt - 1},
		{1000, -400, 4096}, {1000, 0, 4096}, {1000, MinHeaderSize - 1, 4096},
		{1000, MaxHeaderSize + 1, 4096}, {1000, maxInt, 4096},
		{-1, 400, 4096}, {MaxObjectSize + 1, 400, 4096}, {1<<63 - 1, 400, 4096},
	} {
		if p, err := PlainSize(tc.size, tc.hl, tc.cs); err == nil || !errors.Is(err, ErrFormat) {
			t.Errorf("PlainSize(%d, %d, %d) = %d, %v; want a format error", tc.size, tc.hl, tc.cs, p, err)
		}
	}
}
