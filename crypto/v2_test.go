package crypto

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// mapCache is a plain BatchKeyCache for tests (keyrelease/cache holds the
// real one, in locked memory).
type mapCache struct {
	mu     sync.Mutex
	m      map[[32]byte][]byte
	stores int
}

func (c *mapCache) UseBatchKey(id [32]byte, use func([]byte)) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	bk, ok := c.m[id]
	if ok {
		use(bk)
	}
	return ok
}

func (c *mapCache) StoreBatchKey(id [32]byte, bk []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[[32]byte][]byte{}
	}
	c.m[id] = bytes.Clone(bk)
	c.stores++
}

func openV2(t testing.TB, obj []byte, kek any, name string, cache BatchKeyCache) (*Decryptor, error) {
	t.Helper()
	h, err := ParseHeader(obj)
	if err != nil {
		return nil, err
	}
	off, n, err := h.TableRange(int64(len(obj)))
	if err != nil {
		return nil, err
	}
	return NewDecryptorOpts(h, kek, name, int64(len(obj)), OpenOptions{Table: obj[off : off+n], Cache: cache})
}

func TestV2RoundTrip(t *testing.T) {
	for _, kc := range kekCases(t) {
		b, err := NewBatch(kc.seal, "https://v.vault.azure.net/keys/k", nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, chunk := range []int{MinChunkSize, DefaultChunkSize} {
			for _, size := range []int{0, 1, chunk - 1, chunk, chunk + 1, 3*chunk + 7} {
				t.Run(fmt.Sprintf("%s/c%d/%d", kc.name, chunk, size), func(t *testing.T) {
					pt := pseudoRandom(uint64(size), size)
					obj, err := SealV2(pt, b, SealOptions{Name: "dir/f", ChunkSize: chunk})
					if err != nil {
						t.Fatal(err)
					}
					h, err := ParseHeader(obj)
					if err != nil {
						t.Fatal(err)
					}
					if h.Version != VersionV2 || h.Wrap != kc.alg || obj[5] != 2 {
						t.Fatalf("version %d alg %v", h.Version, h.Wrap)
					}
					n := NumChunks(int64(size), chunk)
					if want := CipherSizeV2(int64(size), h.Len(), chunk); int64(len(obj)) != want {
						t.Fatalf("object %d bytes, want %d", len(obj), want)
					}
					if h.SealCount != uint64(n) {
						t.Fatalf("Q = %d, want %d", h.SealCount, n)
					}
					if ps, err := h.PlainSize(int64(len(obj))); err != nil || ps != int64(size) {
						t.Fatalf("PlainSize = %d, %v", ps, err)
					}
					got, err := Open(obj, kc.opn, "dir/f")
					if err != nil || !bytes.Equal(got, pt) {
						t.Fatalf("Open: %v (equal %v)", err, bytes.Equal(got, pt))
					}
					d, err := openV2(t, obj, kc.opn, "dir/f", nil)
					if err != nil {
						t.Fatal(err)
					}
					var sb bytes.Buffer
					if _, err := d.Stream(&sb, bytes.NewReader(obj)); err != nil || !bytes.Equal(sb.Bytes(), pt) {
						t.Fatalf("Stream: %v", err)
					}
					ra := d.ReaderAt(bytes.NewReader(obj))
					for _, r := range [][2]int{{0, 1}, {size / 2, chunk}, {size - 1, 5}, {1, size}} {
						if r[0] < 0 || r[0] >= size {
							continue
						}
						p := make([]byte, r[1])
						k, err := ra.ReadAt(p, int64(r[0]))
						if err != nil && err != io.EOF {
							t.Fatal(err)
						}
						if !bytes.Equal(p[:k], pt[r[0]:r[0]+k]) {
							t.Fatalf("ReadAt(%d, %d) wrong bytes", r[0], r[1])
						}
					}
				})
			}
		}
	}
}

// The streaming writer to a file writes the header over its placeholder.
func TestV2WriterToFile(t *testing.T) {
	k := keysForTest(t)
	b, err := NewBatch(&k.rsa2048.PublicKey, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "obj"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pt := pseudoRandom(9, 5*MinChunkSize+3)
	w, err := NewWriterV2(f, b, SealOptions{Name: "x", ChunkSize: MinChunkSize})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, &oddReader{data: pt}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	obj, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(obj[:len(w.Header())], w.Header()) {
		t.Fatal("header not written at offset 0")
	}
	if got, err := Open(obj, k.rsa2048, "x"); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Open: %v", err)
	}
}

// Objects of one batch carry identical wrapped batch keys and distinct
// object IDs and wrapped DEKs; another batch has another wrapped key.
func TestV2BatchSharing(t *testing.T) {
	k := keysForTest(t)
	b1, _ := NewBatch(k.rsa2048, "", nil)
	b2, _ := NewBatch(k.rsa2048, "", nil)
	o1, _ := SealV2([]byte("a"), b1, SealOptions{Name: "a"})
	o2, _ := SealV2([]byte("a"), b1, SealOptions{Name: "a"})
	o3, _ := SealV2([]byte("a"), b2, SealOptions{Name: "a"})
	h1, _ := ParseHeader(o1)
	h2, _ := ParseHeader(o2)
	h3, _ := ParseHeader(o3)
	if !bytes.Equal(h1.WrappedBK, h2.WrappedBK) || BatchKeyID(h1) != BatchKeyID(h2) || BatchKeyID(h1) != b1.ID() {
		t.Fatal("objects of one batch have different wrapped batch keys")
	}
	if bytes.Equal(h1.WrappedDEK, h2.WrappedDEK) || h1.ObjectID == h2.ObjectID {
		t.Fatal("objects of one batch share a DEK or object ID")
	}
	if bytes.Equal(h1.WrappedBK, h3.WrappedBK) {
		t.Fatal("two batches share a wrapped batch key")
	}
	b1.Destroy()
	if _, err := SealV2([]byte("a"), b1, SealOptions{Name: "a"}); err == nil {
		t.Fatal("sealed with a destroyed batch")
	}
}

// The regression guard of issue 20 by counter: N objects of one batch
// opened through a cache cost exactly one private-key operation, for RSA
// and EC; without a cache, one per object.
func TestV2OnePrivateKeyOpPerBatch(t *testing.T) {
	k := keysForTest(t)
	const n = 1000
	for _, tc := range []struct {
		name      string
		seal, opn any
	}{{"RSA-3072", &k.rsa3072.PublicKey, k.rsa3072}, {"EC P-256", &k.p256.PublicKey, k.p256}} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := NewBatch(tc.seal, "https://v.vault.azure.net/keys/k", nil)
			if err != nil {
				t.Fatal(err)
			}
			objs := make([][]byte, n)
			for i := range objs {
				objs[i], err = SealV2(pseudoRandom(uint64(i), 4096), b, SealOptions{Name: fmt.Sprint(i)})
				if err != nil {
					t.Fatal(err)
				}
			}
			cache := &mapCache{}
			before := PrivateKeyOps()
			for i, obj := range objs {
				d, err := openV2(t, obj, tc.opn, fmt.Sprint(i), cache)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := d.ReaderAt(bytes.NewReader(obj)).ReadAt(make([]byte, 4096), 0); err != nil {
					t.Fatal(err)
				}
			}
			if ops := PrivateKeyOps() - before; ops != 1 {
				t.Fatalf("%d private-key operations for %d objects of one batch, want 1", ops, n)
			}
			if cache.stores != 1 {
				t.Fatalf("%d cache stores, want 1", cache.stores)
			}
			before = PrivateKeyOps()
			for i := range 10 {
				if _, err := openV2(t, objs[i], tc.opn, fmt.Sprint(i), nil); err != nil {
					t.Fatal(err)
				}
			}
			if ops := PrivateKeyOps() - before; ops != 10 {
				t.Fatalf("%d private-key operations for 10 uncached opens, want 10", ops)
			}
		})
	}
}

// A cached batch key is never used for a key that could not open the
// object: a public key, a key of another kind, another RSA size.
func TestV2CacheRefusesUnfitKeys(t *testing.T) {
	k := keysForTest(t)
	b, _ := NewBatch(k.rsa2048, "", nil)
	obj, _ := SealV2([]byte("secret"), b, SealOptions{Name: "n"})
	cache := &mapCache{}
	if _, err := openV2(t, obj, k.rsa2048, "n", cache); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		key  any
		want error
	}{
		{"RSA public key", &k.rsa2048.PublicKey, ErrKeyType},
		{"oct key", k.oct, ErrKeyType},
		{"EC key", k.p256, ErrKeyType},
		{"RSA-3072", k.rsa3072, ErrWrongKey},
	} {
		if _, err := openV2(t, obj, tc.key, "n", cache); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// A header that does not authenticate never enters the cache, and a wrong
// key that unwraps BK is caught by the DEK unwrap.
func TestV2CacheStoresOnlyAuthenticated(t *testing.T) {
	k := keysForTest(t)
	b, _ := NewBatch(k.oct, "", nil)
	obj, _ := SealV2([]byte("secret"), b, SealOptions{Name: "n"})
	bad := bytes.Clone(obj)
	h, _ := ParseHeader(obj)
	bad[h.Len()-MACSize] ^= 1
	cache := &mapCache{}
	if _, err := openV2(t, bad, k.oct, "n", cache); !errors.Is(err, ErrHeaderAuth) {
		t.Fatalf("tampered MAC: %v", err)
	}
	if cache.stores != 0 {
		t.Fatal("a batch key from an unauthenticated header was cached")
	}
}

func TestV2SizeArithmetic(t *testing.T) {
	for _, c := range []int{MinChunkSize, 4096, DefaultChunkSize} {
		for _, p := range []int64{0, 1, int64(c) - 1, int64(c), int64(c) + 1, 10*int64(c) + 3} {
			s := CipherSizeV2(p, MinHeaderSizeV2, c)
			got, err := PlainSizeV2(s, MinHeaderSizeV2, c)
			if err != nil || got != p {
				t.Fatalf("c=%d p=%d: PlainSizeV2(%d) = %d, %v", c, p, s, got, err)
			}
			// The v1 rule gives another answer (or none) for most sizes:
			// dispatch on the version matters.
			if v, err := PlainSizeOf(VersionV2, s, MinHeaderSizeV2, c); err != nil || v != p {
				t.Fatalf("PlainSizeOf: %d, %v", v, err)
			}
		}
		// Invalid: between 1 and 28 bytes into a new chunk.
		for _, r := range []int64{1, 27, 28} {
			s := CipherSizeV2(int64(c), MinHeaderSizeV2, c) + r
			if _, err := PlainSizeV2(s, MinHeaderSizeV2, c); !errors.Is(err, ErrInvalidSize) {
				t.Fatalf("c=%d extra %d: %v", c, r, err)
			}
		}
	}
	for _, tc := range []struct {
		s      int64
		h, c   int
		wantOK bool
	}{
		{MinHeaderSizeV2 + 27, MinHeaderSizeV2, 256, false},
		{MinHeaderSizeV2 + 28, MinHeaderSizeV2, 256, true},
		{MinHeaderSizeV2 + 28, MinHeaderSizeV2 - 1, 256, false},
		{MinHeaderSizeV2 + 28, MinHeaderSizeV2, 0, false},
		{-1, MinHeaderSizeV2, 256, false},
		{MaxObjectSize + 1, MinHeaderSizeV2, 256, false},
	} {
		_, err := PlainSizeV2(tc.s, tc.h, tc.c)
		if (err == nil) != tc.wantOK {
			t.Errorf("PlainSizeV2(%d, %d, %d) = %v", tc.s, tc.h, tc.c, err)
		}
	}
	if MinHeaderSizeV2 != 191 || fixedHeaderSizeV2 != 151 {
		t.Fatalf("H constants %d %d disagree with docs/format.md 11.1", MinHeaderSizeV2, fixedHeaderSizeV2)
	}
}

// v2Offsets returns the offsets of the v2 header fields of obj.
func v2Offsets(h *Header) (wrappedBK, wrappedDEK, q, td, mac int) {
	r := len(h.KeyRef)
	n := len(h.Name)
	w := len(h.WrappedBK)
	wrappedBK = 39 + r + n
	wrappedDEK = wrappedBK + w
	q = wrappedDEK + 40
	td = q + 8
	mac = h.Len() - MACSize
	return
}

func TestV2TamperMatrix(t *testing.T) {
	k := keysForTest(t)
	const c = MinChunkSize
	pt := pseudoRandom(7, 3*c+10) // 4 chunks
	for _, key := range []struct {
		name      string
		seal, opn any
		other     any
	}{
		{"RSA", k.rsa2048, k.rsa2048, k.rsa3072},
		{"oct", k.oct, k.oct, k.oct2},
		{"EC", k.p256, k.p256, nil},
	} {
		b, err := NewBatch(key.seal, "https://v.vault.azure.net/keys/k", nil)
		if err != nil {
			t.Fatal(err)
		}
		obj, err := SealV2(pt, b, SealOptions{Name: "f", ChunkSize: c})
		if err != nil {
			t.Fatal(err)
		}
		h, _ := ParseHeader(obj)
		H := h.Len()
		u := c + TagSize
		n := 4
		tabOff := len(obj) - NonceSize*n
		wbk, wdek, q, td, mac := v2Offsets(h)
		chunk := func(i int) []byte { return obj[H+i*u : min(H+(i+1)*u, tabOff)] }
		nonceOf := func(i int) []byte { return obj[tabOff+i*NonceSize : tabOff+(i+1)*NonceSize] }
		cat := func(parts ...[]byte) []byte {
			var o []byte
			for _, p := range parts {
				o = append(o, p...)
			}
			return o
		}
		other, _ := NewBatch(key.seal, "https://v.vault.azure.net/keys/k", nil)
		otherObj, _ := SealV2(pt, other, SealOptions{Name: "f", ChunkSize: c})
		oh, _ := ParseHeader(otherObj)
		cases := []struct {
			name string
			obj  []byte
			key  any
			want error
		}{
			{"version 3", func() []byte { o := bytes.Clone(obj); o[5] = 3; return o }(), key.opn, ErrUnsupportedVersion},
			{"header length", func() []byte {
				o := bytes.Clone(obj)
				binary.BigEndian.PutUint32(o[8:], uint32(H+1))
				return o
			}(), key.opn, ErrMalformedHeader},
			{"chunk size", func() []byte {
				o := bytes.Clone(obj)
				binary.BigEndian.PutUint32(o[12:], c*2)
				return o
			}(), key.opn, ErrHeaderAuth}, // the size still fits; the MAC covers C
			{"object ID", flip(obj, 16, 1), key.opn, ErrHeaderAuth},
			{"name", flip(obj, 37+len(h.KeyRef), 1), key.opn, ErrHeaderAuth},
			{"key ref", flip(obj, 35+3, 1), key.opn, ErrHeaderAuth},
			{"wrapped batch key", flip(obj, wbk+len(h.WrappedBK)-1, 1), key.opn, ErrWrongKey},
			{"wrapped DEK", flip(obj, wdek+3, 1), key.opn, ErrWrongKey},
			{"seal count", flip(obj, q+7, 1), key.opn, ErrHeaderAuth},
			{"table digest", flip(obj, td, 1), key.opn, ErrHeaderAuth},
			{"MAC", flip(obj, mac, 1), key.opn, ErrHeaderAuth},
			{"nonce table", flip(obj, tabOff+5, 1), key.opn, ErrHeaderAuth},
			{"nonce table swapped", cat(obj[:tabOff], nonceOf(1), nonceOf(0), nonceOf(2), nonceOf(3)), key.opn, ErrHeaderAuth},
			{"chunk body", flip(obj, H+10, 1), key.opn, ErrChunkAuth},
			{"chunk tag", flip(obj, H+u-1, 1), key.opn, ErrChunkAuth},
			{"chunks swapped with their nonces", cat(obj[:H], chunk(1), chunk(0), chunk(2), chunk(3), nonceOf(1), nonceOf(0), nonceOf(2), nonceOf(3)), key.opn, ErrHeaderAuth},
			{"chunks swapped", cat(obj[:H], chunk(1), chunk(0), chunk(2), chunk(3), obj[tabOff:]), key.opn, ErrChunkAuth},
			{"truncated by a chunk", cat(obj[:H], chunk(0), chunk(1), chunk(2), obj[tabOff:tabOff+3*NonceSize]), key.opn, ErrHeaderAuth},
			{"truncated by a byte", obj[:len(obj)-1], key.opn, ErrHeaderAuth}, // the table moves
			{"truncated into the overhead", obj[:len(obj)-20], key.opn, ErrInvalidSize},
			{"extended by a chunk", cat(obj[:tabOff], chunk(1), obj[tabOff:], nonceOf(1)), key.opn, ErrHeaderAuth},
			{"chunk of another object", cat(obj[:H], otherObj[oh.Len():oh.Len()+u], obj[H+u:]), key.opn, ErrChunkAuth},
			{"header of another batch", cat(otherObj[:oh.Len()], obj[H:]), key.opn, ErrHeaderAuth},
			{"wrong name", obj, key.opn, ErrNameMismatch},
		}
		if key.other != nil {
			cases = append(cases, struct {
				name string
				obj  []byte
				key  any
				want error
			}{"wrong key", obj, key.other, ErrWrongKey})
		}
		for _, tc := range cases {
			t.Run(key.name+"/"+tc.name, func(t *testing.T) {
				name := "f"
				if tc.name == "wrong name" {
					name = "g"
				}
				for _, cache := range []BatchKeyCache{nil, &mapCache{}} {
					got, err := Open(tc.obj, tc.key, name)
					if cache != nil {
						// Warm the cache with the genuine object, then
						// open the tampered one through it. A cache
						// belongs to one KEK: with another key it
						// starts empty.
						if tc.name == "wrong key" {
							cache = &mapCache{}
						} else if _, err := openV2(t, obj, key.opn, "f", cache); err != nil {
							t.Fatal(err)
						}
						var d *Decryptor
						d, err = openV2(t, tc.obj, tc.key, name, cache)
						got = nil
						if err == nil {
							got, err = io.ReadAll(io.NewSectionReader(d.ReaderAt(bytes.NewReader(tc.obj)), 0, d.PlainSize()))
						}
					}
					if !errors.Is(err, tc.want) {
						t.Fatalf("cache=%v: err = %v, want %v", cache != nil, err, tc.want)
					}
					if len(got) != 0 {
						t.Fatalf("returned %d bytes", len(got))
					}
				}
			})
		}
	}
}

// Truncation and extension that keep the table consistent (a writer's own
// bug, or an attacker holding the DEK) are still diagnosed through AD_i.
func TestV2FinalFlag(t *testing.T) {
	k := keysForTest(t)
	b, _ := NewBatch(k.oct, "", nil)
	pt := pseudoRandom(3, 3*MinChunkSize)
	obj, _ := SealV2(pt, b, SealOptions{Name: "f", ChunkSize: MinChunkSize})
	h, _ := ParseHeader(obj)
	d, err := openV2(t, obj, k.oct, "f", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Decrypt chunk 2 (final) as if it were chunk 2 of a 4-chunk object.
	u := MinChunkSize + TagSize
	last := obj[h.Len()+2*u : h.Len()+3*u]
	d.chunks = 4
	if _, err := d.DecryptChunks(nil, last, 2); !errors.Is(err, ErrExtended) {
		t.Fatalf("final chunk read as non-final: %v", err)
	}
	d.chunks = 2
	d.table = d.table[:2*NonceSize]
	mid := obj[h.Len()+u : h.Len()+2*u]
	if _, err := d.DecryptChunks(nil, mid, 1); !errors.Is(err, ErrTruncated) {
		t.Fatalf("non-final chunk read as final: %v", err)
	}
}

// A version 2 object opened without its table is refused, not misread.
func TestV2NeedsTable(t *testing.T) {
	k := keysForTest(t)
	b, _ := NewBatch(k.oct, "", nil)
	obj, _ := SealV2([]byte("x"), b, SealOptions{Name: "f"})
	h, _ := ParseHeader(obj)
	if _, err := NewDecryptor(h, k.oct, "f", int64(len(obj))); !errors.Is(err, ErrHeaderAuth) {
		t.Fatalf("no table: %v", err)
	}
	if _, _, err := (&Header{Version: 1}).TableRange(100); err == nil {
		t.Fatal("v1 header has a table range")
	}
	_ = sha256.Size
}

// A sized writer writes the header first and streams in order; its object
// is the same format, and a plaintext of another size fails at Close.
func TestV2SizedWriter(t *testing.T) {
	k := keysForTest(t)
	b, _ := NewBatch(&k.p256.PublicKey, "", nil)
	for _, size := range []int{0, 1, MinChunkSize, MinChunkSize + 1, 5*MinChunkSize + 3} {
		pt := pseudoRandom(uint64(size), size)
		var buf bytes.Buffer
		w, err := NewWriterV2Sized(&buf, b, SealOptions{Name: "s", ChunkSize: MinChunkSize}, int64(size))
		if err != nil {
			t.Fatal(err)
		}
		hdr := bytes.Clone(w.Header())
		if !bytes.Equal(buf.Bytes(), hdr) {
			t.Fatal("header not written first")
		}
		if _, err := io.Copy(w, &oddReader{data: pt}); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if got, err := Open(buf.Bytes(), k.p256, "s"); err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("size %d: %v", size, err)
		}
		for _, other := range []int{size + 1, size - 1, size + MinChunkSize} {
			if other < 0 {
				continue
			}
			w, _ := NewWriterV2Sized(io.Discard, b, SealOptions{Name: "s", ChunkSize: MinChunkSize}, int64(size))
			_, werr := w.Write(pseudoRandom(1, other))
			if cerr := w.Close(); werr == nil && cerr == nil {
				t.Fatalf("announced %d, wrote %d: no error", size, other)
			}
		}
	}
}

// With a cache and no KEK, a cached batch key opens the object and a miss
// is ErrBatchKeyNotCached (the caller then opens with the KEK).
func TestV2CacheOnly(t *testing.T) {
	k := keysForTest(t)
	b, _ := NewBatch(k.rsa2048, "", nil)
	obj, _ := SealV2([]byte("secret"), b, SealOptions{Name: "n"})
	cache := &mapCache{}
	if _, err := openV2(t, obj, nil, "n", cache); !errors.Is(err, ErrBatchKeyNotCached) {
		t.Fatalf("miss: %v", err)
	}
	if _, err := openV2(t, obj, k.rsa2048, "n", cache); err != nil {
		t.Fatal(err)
	}
	ops := PrivateKeyOps()
	d, err := openV2(t, obj, nil, "n", cache)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(io.NewSectionReader(d.ReaderAt(bytes.NewReader(obj)), 0, d.PlainSize())); err != nil || string(got) != "secret" {
		t.Fatalf("cache-only open: %q, %v", got, err)
	}
	if PrivateKeyOps() != ops {
		t.Fatal("cache-only open made a private-key operation")
	}
	if _, err := openV2(t, flip(obj, 16, 1), nil, "n", cache); !errors.Is(err, ErrHeaderAuth) {
		t.Fatalf("tampered, cache only: %v", err)
	}
}

// TestV2RenameHeader: a renamed header with the old body opens under the
// new name only, to the same plaintext, with the KEK or a warm cache; a
// forged header is not renamed; version 1 objects cannot be.
func TestV2RenameHeader(t *testing.T) {
	for _, kc := range kekCases(t) {
		t.Run(kc.name, func(t *testing.T) {
			b, err := NewBatch(kc.seal, "https://v.vault.azure.net/keys/k", nil)
			if err != nil {
				t.Fatal(err)
			}
			pt := pseudoRandom(9, 3*MinChunkSize+5)
			obj, err := SealV2(pt, b, SealOptions{Name: "old/name", ChunkSize: MinChunkSize})
			if err != nil {
				t.Fatal(err)
			}
			h, _ := ParseHeader(obj)
			cache := &mapCache{}
			for _, tc := range []struct {
				name  string
				kek   any
				cache BatchKeyCache
			}{{"kek", kc.opn, nil}, {"kek fills cache", kc.opn, cache}, {"cache only", nil, cache}} {
				nh, err := RenameHeaderV2(h, tc.kek, tc.cache, "new/name")
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				renamed := append(nh, obj[h.Len():]...)
				if got, err := Open(renamed, kc.opn, "new/name"); err != nil || !bytes.Equal(got, pt) {
					t.Fatalf("%s: open under the new name: %v", tc.name, err)
				}
				if _, err := Open(renamed, kc.opn, "old/name"); !errors.Is(err, ErrNameMismatch) {
					t.Fatalf("%s: open under the old name: %v", tc.name, err)
				}
			}
			forged := bytes.Clone(obj)
			forged[h.Len()-1] ^= 1 // the MAC
			fh, _ := ParseHeader(forged)
			if _, err := RenameHeaderV2(fh, kc.opn, nil, "new/name"); !errors.Is(err, ErrHeaderAuth) {
				t.Fatalf("forged header renamed: %v", err)
			}
			v1, _ := Seal(pt, kc.seal, SealOptions{Name: "old/name", ChunkSize: MinChunkSize})
			h1, _ := ParseHeader(v1)
			if _, err := RenameHeaderV2(h1, kc.opn, nil, "x"); !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("version 1 renamed: %v", err)
			}
		})
	}
}
