package crypto

import (
	"bytes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/skrfs/skrfs/crypto/keywrap"
)

// Format version 2 (docs/format.md section 11): the DEK is wrapped with
// A256KW under a per-batch key BK, and BK is wrapped once per batch for the
// KEK. Chunks have random nonces kept in a nonce table after the last chunk,
// pinned by its digest TD in the header.

const (
	// NonceSize is the size of one nonce-table entry.
	NonceSize = 12
	// BatchKeySize is the size of the batch key BK.
	BatchKeySize = 32

	// fixedHeaderSizeV2: preamble, object ID, algorithm, three 2-byte
	// lengths, wrapped DEK (40), seal count (8), table digest (32), MAC.
	fixedHeaderSizeV2 = PreambleSize + ObjectIDSize + 1 + 2 + 2 + 2 + (DEKSize + 8) + 8 + sha256.Size + MACSize
	// MinHeaderSizeV2 is the smallest valid version 2 header (A256KW batch
	// key, no key reference, no name): 191 bytes.
	MinHeaderSizeV2 = fixedHeaderSizeV2 + BatchKeySize + 8

	// chunkOverheadV2 is the per-chunk overhead of version 2: the GCM tag
	// and the nonce-table entry.
	chunkOverheadV2 = TagSize + NonceSize

	// MaxSealCount is the bound on Q that writers keep (section 11.5).
	MaxSealCount = 1 << 31

	chunkInfoV2 = "skrfs/v2 chunk key"
	macInfoV2   = "skrfs/v2 header mac"
	chunkADV2   = "skrfs/v2 chunk"
)

// parseHeaderV2 parses a version 2 header whose preamble p was validated.
func parseHeaderV2(b []byte, p Preamble) (*Header, error) {
	if len(b) < p.HeaderLen {
		return nil, fmt.Errorf("%w: have %d of %d header bytes", ErrMalformedHeader, len(b), p.HeaderLen)
	}
	raw := b[:p.HeaderLen]
	h := &Header{Version: VersionV2, ChunkSize: p.ChunkSize, raw: bytes.Clone(raw)}
	r := raw[PreambleSize : p.HeaderLen-MACSize]
	copy(h.ObjectID[:], r)
	h.Wrap = WrapAlg(r[ObjectIDSize])
	r = r[ObjectIDSize+1:]
	keyRef, r, err := field(r, MaxKeyRefLen, "key reference")
	if err != nil {
		return nil, err
	}
	name, r, err := field(r, MaxNameLen, "name")
	if err != nil {
		return nil, err
	}
	wrappedBK, r, err := field(r, 4096, "wrapped batch key")
	if err != nil {
		return nil, err
	}
	const tail = DEKSize + 8 + 8 + sha256.Size
	if len(r) != tail {
		return nil, fmt.Errorf("%w: %d bytes between the wrapped batch key and the MAC, want %d", ErrMalformedHeader, len(r), tail)
	}
	if err := h.Wrap.checkWrappedLen(len(wrappedBK)); err != nil {
		return nil, err
	}
	for _, f := range []struct{ what, s string }{{"key reference", string(keyRef)}, {"name", string(name)}} {
		if err := checkText(f.what, f.s); err != nil {
			return nil, err
		}
	}
	h.KeyRef, h.Name, h.WrappedBK = string(keyRef), string(name), bytes.Clone(wrappedBK)
	h.WrappedDEK = bytes.Clone(r[:DEKSize+8])
	h.SealCount = binary.BigEndian.Uint64(r[DEKSize+8:])
	copy(h.TableDigest[:], r[DEKSize+16:])
	copy(h.MAC[:], raw[p.HeaderLen-MACSize:])
	return h, nil
}

// encodeHeaderV2 builds a version 2 header with a zero MAC.
func encodeHeaderV2(chunkSize int, id [ObjectIDSize]byte, alg WrapAlg, keyRef, name string,
	wrappedBK, wrappedDEK []byte, q uint64, td [sha256.Size]byte) ([]byte, error) {
	if err := checkHeaderInputs(chunkSize, keyRef, name); err != nil {
		return nil, err
	}
	if err := alg.checkWrappedLen(len(wrappedBK)); err != nil {
		return nil, err
	}
	if len(wrappedDEK) != DEKSize+8 {
		return nil, fmt.Errorf("wrapped DEK of %d bytes, want %d", len(wrappedDEK), DEKSize+8)
	}
	hlen := fixedHeaderSizeV2 + len(keyRef) + len(name) + len(wrappedBK)
	if hlen > MaxHeaderSize {
		return nil, fmt.Errorf("header of %d bytes exceeds %d", hlen, MaxHeaderSize)
	}
	b := make([]byte, 0, hlen)
	b = append(b, magic[:]...)
	b = append(b, VersionV2, 0, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(hlen))
	b = binary.BigEndian.AppendUint32(b, uint32(chunkSize))
	b = append(b, id[:]...)
	b = append(b, byte(alg))
	for _, f := range [][]byte{[]byte(keyRef), []byte(name), wrappedBK} {
		b = binary.BigEndian.AppendUint16(b, uint16(len(f)))
		b = append(b, f...)
	}
	b = append(b, wrappedDEK...)
	b = binary.BigEndian.AppendUint64(b, q)
	b = append(b, td[:]...)
	b = append(b, make([]byte, MACSize)...)
	return b, nil
}

func checkHeaderInputs(chunkSize int, keyRef, name string) error {
	if chunkSize < MinChunkSize || chunkSize > MaxChunkSize {
		return fmt.Errorf("chunk size %d out of range [%d, %d]", chunkSize, MinChunkSize, MaxChunkSize)
	}
	if len(keyRef) > MaxKeyRefLen {
		return fmt.Errorf("key reference longer than %d bytes", MaxKeyRefLen)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("name longer than %d bytes", MaxNameLen)
	}
	for _, f := range []struct{ what, s string }{{"key reference", keyRef}, {"name", name}} {
		if err := checkText(f.what, f.s); err != nil {
			return err
		}
	}
	return nil
}

// HeaderLenV2 returns the length of version 2 headers sealed for kek with
// this key reference and name (H = 151 + R + N + W).
func HeaderLenV2(kek any, keyRef, name string) (int, error) {
	w, err := WrappedKeyLen(kek)
	if err != nil {
		return 0, err
	}
	return fixedHeaderSizeV2 + len(keyRef) + len(name) + w, nil
}

// CipherSizeV2 returns the size of a version 2 object of plainSize bytes.
func CipherSizeV2(plainSize int64, headerLen, chunkSize int) int64 {
	return int64(headerLen) + plainSize + chunkOverheadV2*NumChunks(plainSize, chunkSize)
}

// PlainSizeV2 is PlainSize for version 2 objects (docs/format.md 11.1):
// with B = S − H and U = C + 28, n = ceil(B/U), r = B − (n−1)·U, valid iff
// 28 < r ≤ U or n = 1 and r = 28; the plaintext size is B − 28·n.
func PlainSizeV2(cipherSize int64, headerLen, chunkSize int) (int64, error) {
	if headerLen < MinHeaderSizeV2 || headerLen > MaxHeaderSize {
		return 0, fmt.Errorf("%w: header length %d out of range [%d, %d]", ErrMalformedHeader, headerLen, MinHeaderSizeV2, MaxHeaderSize)
	}
	if err := CheckSizes(headerLen, chunkSize); err != nil {
		return 0, err
	}
	if cipherSize < 0 || cipherSize > MaxObjectSize {
		return 0, fmt.Errorf("%w: object size %d", ErrInvalidSize, cipherSize)
	}
	body := cipherSize - int64(headerLen)
	if body < chunkOverheadV2 {
		return 0, fmt.Errorf("%w: %d bytes after a %d-byte header", ErrInvalidSize, body, headerLen)
	}
	u := int64(chunkSize) + chunkOverheadV2
	n := (body + u - 1) / u
	last := body - (n-1)*u
	if last <= chunkOverheadV2 && !(n == 1 && last == chunkOverheadV2) {
		return 0, fmt.Errorf("%w: last chunk of %d bytes", ErrInvalidSize, last)
	}
	return body - chunkOverheadV2*n, nil
}

// PlainSizeOf dispatches PlainSize on the format version.
func PlainSizeOf(version int, cipherSize int64, headerLen, chunkSize int) (int64, error) {
	switch version {
	case Version:
		return PlainSize(cipherSize, headerLen, chunkSize)
	case VersionV2:
		return PlainSizeV2(cipherSize, headerLen, chunkSize)
	}
	return 0, fmt.Errorf("%w: version %d", ErrUnsupportedVersion, version)
}

// TableRange returns the byte range of the nonce table of a version 2
// object of cipherSize bytes with header h. For a one-chunk object the
// table ends the object, so a reader that fetched the header together with
// the whole (small) object already has it.
func (h *Header) TableRange(cipherSize int64) (off, n int64, err error) {
	if h.Version != VersionV2 {
		return 0, 0, fmt.Errorf("%w: version %d objects have no nonce table", ErrUnsupportedVersion, h.Version)
	}
	plain, err := h.PlainSize(cipherSize)
	if err != nil {
		return 0, 0, err
	}
	n = NonceSize * NumChunks(plain, h.ChunkSize)
	return cipherSize - n, n, nil
}

// Batch is a batch key BK wrapped once for a KEK. Every object sealed with
// the same Batch carries the same wrapped bytes (docs/format.md 11.3).
// A Batch is safe for concurrent use; Destroy wipes BK.
type Batch struct {
	mu      sync.RWMutex
	alg     WrapAlg
	keyRef  string
	bk      []byte
	wrapped []byte
}

// NewBatch draws a fresh batch key and wraps it for kek (the public part
// suffices). keyRef is written into every object of the batch; rnd nil
// means crypto/rand.
func NewBatch(kek any, keyRef string, rnd io.Reader) (*Batch, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	if len(keyRef) > MaxKeyRefLen {
		return nil, fmt.Errorf("key reference longer than %d bytes", MaxKeyRefLen)
	}
	if err := checkText("key reference", keyRef); err != nil {
		return nil, err
	}
	bk := make([]byte, BatchKeySize)
	if _, err := io.ReadFull(rnd, bk); err != nil {
		return nil, err
	}
	alg, wrapped, err := wrapKey(rnd, kek, bk, ecdhInfoV2)
	if err != nil {
		clear(bk)
		return nil, err
	}
	return &Batch{alg: alg, keyRef: keyRef, bk: bk, wrapped: wrapped}, nil
}

// KeyRef returns the key reference of the batch.
func (b *Batch) KeyRef() string { return b.keyRef }

// WrappedKey returns the wrapped batch key (shared by the whole batch).
func (b *Batch) WrappedKey() []byte { return bytes.Clone(b.wrapped) }

// ID returns the batch-key cache key of the batch (BatchKeyID).
func (b *Batch) ID() [sha256.Size]byte { return batchKeyID(b.alg, b.keyRef, b.wrapped) }

// Destroy wipes the batch key; sealing with b fails afterwards.
func (b *Batch) Destroy() {
	b.mu.Lock()
	clear(b.bk)
	b.bk = nil
	b.mu.Unlock()
}

// wrapDEK wraps dek under BK with A256KW.
func (b *Batch) wrapDEK(dek []byte) ([]byte, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.bk == nil {
		return nil, errors.New("skrfs object: batch key destroyed")
	}
	return keywrap.Wrap(b.bk, dek)
}

// BatchKeyCache holds unwrapped batch keys, so that readers make one
// private-key operation per batch (docs/format.md 11.3). A cache belongs
// to exactly one KEK: it is consulted only with that KEK, since its keys
// are found by the wrapped bytes alone. Implementations keep the keys in
// locked memory and wipe them with their KEK.
type BatchKeyCache interface {
	// UseBatchKey calls use with the cached batch key for id and reports
	// true, or reports false when none is cached. use must not retain bk.
	UseBatchKey(id [sha256.Size]byte, use func(bk []byte)) bool
	// StoreBatchKey copies bk into the cache under id.
	StoreBatchKey(id [sha256.Size]byte, bk []byte)
}

// BatchKeyID returns the cache key of a version 2 header's batch key:
// SHA-256(A || key reference || wrapped BK).
func BatchKeyID(h *Header) [sha256.Size]byte {
	return batchKeyID(h.Wrap, h.KeyRef, h.WrappedBK)
}

func batchKeyID(alg WrapAlg, keyRef string, wrapped []byte) [sha256.Size]byte {
	s := sha256.New()
	s.Write([]byte{byte(alg)})
	s.Write([]byte(keyRef))
	s.Write(wrapped)
	var id [sha256.Size]byte
	s.Sum(id[:0])
	return id
}

// chunkADV2Of returns AD_i = "skrfs/v2 chunk" || BE64(i) || final_i.
func chunkADV2Of(dst []byte, i int64, final bool) []byte {
	dst = append(dst[:0], chunkADV2...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(i))
	f := byte(0)
	if final {
		f = 1
	}
	return append(dst, f)
}

// WriterV2 encrypts a stream into one version 2 object. It writes a
// placeholder of H zero bytes, the chunks and the nonce table; Close then
// computes the header. When dst is an io.WriterAt (an *os.File), Close
// writes the header over the placeholder; otherwise the caller takes
// Header() after Close and puts it at offset 0 (Azure: the header block,
// staged last).
type WriterV2 struct {
	dst    io.Writer
	rnd    io.Reader
	batch  *Batch
	id     [ObjectIDSize]byte
	name   string
	header []byte
	aead   cipher.AEAD
	macKey []byte
	wdek   []byte
	chunk  int
	buf    []byte
	out    []byte
	ad     []byte
	table  []byte
	index  int64
	err    error
	closed bool

	// Sized writers (NewWriterV2Sized) drew the table first and wrote the
	// header first.
	sized   bool
	size    int64 // the promised plaintext size
	written int64
}

// NewWriterV2 starts a version 2 object sealed with batch b.
func NewWriterV2(dst io.Writer, b *Batch, opts SealOptions) (*WriterV2, error) {
	w, err := newWriterV2(dst, b, opts, -1)
	if err != nil {
		return nil, err
	}
	if _, err := dst.Write(make([]byte, w.HeaderLen())); err != nil {
		clear(w.macKey)
		return nil, err
	}
	return w, nil
}

// newWriterV2 makes a writer whose chunk buffers start at bufCap bytes
// (-1: a whole chunk); they grow to a chunk when more is written.
func newWriterV2(dst io.Writer, b *Batch, opts SealOptions, bufCap int) (*WriterV2, error) {
	rnd := opts.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	chunk := opts.ChunkSize
	if chunk == 0 {
		chunk = DefaultChunkSize
	}
	if opts.KeyRef != "" && opts.KeyRef != b.keyRef {
		return nil, fmt.Errorf("key reference %q differs from the batch's %q", opts.KeyRef, b.keyRef)
	}
	if err := checkHeaderInputs(chunk, b.keyRef, opts.Name); err != nil {
		return nil, err
	}
	hlen := fixedHeaderSizeV2 + len(b.keyRef) + len(opts.Name) + len(b.wrapped)
	if hlen > MaxHeaderSize {
		return nil, fmt.Errorf("header of %d bytes exceeds %d", hlen, MaxHeaderSize)
	}
	var id [ObjectIDSize]byte
	if _, err := io.ReadFull(rnd, id[:]); err != nil {
		return nil, err
	}
	dek := make([]byte, DEKSize)
	defer clear(dek)
	if _, err := io.ReadFull(rnd, dek); err != nil {
		return nil, err
	}
	wdek, err := b.wrapDEK(dek)
	if err != nil {
		return nil, err
	}
	aead, macKey, err := deriveKeysInfo(dek, id, chunkInfoV2, macInfoV2)
	if err != nil {
		return nil, err
	}
	if bufCap < 0 || bufCap > chunk {
		bufCap = chunk
	}
	w := &WriterV2{dst: dst, rnd: rnd, batch: b, id: id, name: opts.Name, aead: aead, macKey: macKey,
		wdek: wdek, chunk: chunk, buf: make([]byte, 0, bufCap), out: make([]byte, 0, bufCap+TagSize)}
	return w, nil
}

// NewWriterV2Sized starts a version 2 object of exactly plainSize bytes of
// plaintext. Knowing the size, it draws the chunk count's random nonces
// first, so the header (which pins their digest TD) is complete at once and
// the object streams in order, header first: HEADER || CHUNKS || TABLE. It
// suits destinations that cannot seek (an upload stream). Close fails if
// the plaintext written was not exactly plainSize bytes.
func NewWriterV2Sized(dst io.Writer, b *Batch, opts SealOptions, plainSize int64) (*WriterV2, error) {
	if plainSize < 0 || plainSize > MaxObjectSize {
		return nil, fmt.Errorf("plaintext size %d out of range", plainSize)
	}
	chunk := opts.ChunkSize
	if chunk == 0 {
		chunk = DefaultChunkSize
	}
	if chunk < MinChunkSize || chunk > MaxChunkSize {
		return nil, fmt.Errorf("chunk size %d out of range [%d, %d]", chunk, MinChunkSize, MaxChunkSize)
	}
	n := NumChunks(plainSize, chunk)
	if n > 1<<28 {
		return nil, fmt.Errorf("plaintext of %d bytes needs %d chunks; use a larger chunk size", plainSize, n)
	}
	// A small object needs buffers of its size, not of a chunk.
	w, err := newWriterV2(nil, b, opts, int(min(plainSize, int64(chunk))))
	if err != nil {
		return nil, err
	}
	w.dst, w.sized, w.size = dst, true, plainSize
	w.table = make([]byte, NonceSize*n)
	if _, err := io.ReadFull(w.rnd, w.table); err != nil {
		clear(w.macKey)
		return nil, err
	}
	td := sha256.Sum256(w.table)
	h, err := encodeHeaderV2(w.chunk, w.id, w.batch.alg, w.batch.keyRef, w.name, w.batch.wrapped, w.wdek, uint64(n), td)
	if err != nil {
		clear(w.macKey)
		return nil, err
	}
	copy(h[len(h)-MACSize:], headerMAC(w.macKey, h))
	clear(w.macKey)
	w.header = h
	if _, err := dst.Write(h); err != nil {
		return nil, err
	}
	return w, nil
}

// HeaderLen returns the header length H of the object being written.
func (w *WriterV2) HeaderLen() int {
	return fixedHeaderSizeV2 + len(w.batch.keyRef) + len(w.name) + len(w.batch.wrapped)
}

// Header returns the encoded header; it is valid only after Close.
func (w *WriterV2) Header() []byte { return w.header }

// Write encrypts p. A chunk is sealed only once the next byte is known.
func (w *WriterV2) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.closed {
		return 0, errors.New("skrfs object: write after close")
	}
	n := 0
	for len(p) > 0 {
		for len(w.buf) == 0 && len(p) > w.chunk {
			if err := w.seal(p[:w.chunk], false); err != nil {
				return n, err
			}
			p, n = p[w.chunk:], n+w.chunk
		}
		if len(w.buf) == w.chunk {
			if err := w.flush(false); err != nil {
				return n, err
			}
		}
		if cap(w.buf) < w.chunk && len(w.buf)+len(p) > cap(w.buf) {
			nb := make([]byte, len(w.buf), w.chunk) // more than the size hint
			copy(nb, w.buf)
			clear(w.buf)
			w.buf = nb
		}
		k := copy(w.buf[len(w.buf):min(w.chunk, cap(w.buf))], p)
		w.buf = w.buf[:len(w.buf)+k]
		p = p[k:]
		n += k
	}
	return n, nil
}

func (w *WriterV2) flush(final bool) error {
	err := w.seal(w.buf, final)
	clear(w.buf)
	w.buf = w.buf[:0]
	return err
}

func (w *WriterV2) seal(pt []byte, final bool) error {
	var nonce [NonceSize]byte
	if w.sized {
		w.written += int64(len(pt))
		last := int64(len(w.table)/NonceSize) - 1
		if w.index > last || w.written > w.size || (final != (w.index == last)) {
			w.err = fmt.Errorf("skrfs object: plaintext is not the %d bytes announced", w.size)
			return w.err
		}
		copy(nonce[:], w.table[w.index*NonceSize:])
	} else {
		if _, err := io.ReadFull(w.rnd, nonce[:]); err != nil {
			w.err = err
			return err
		}
		w.table = append(w.table, nonce[:]...)
	}
	w.ad = chunkADV2Of(w.ad, w.index, final)
	w.out = w.aead.Seal(w.out[:0], nonce[:], pt, w.ad)
	w.index++
	if _, err := w.dst.Write(w.out); err != nil {
		w.err = err
		return err
	}
	return nil
}

// Close seals the final chunk, writes the nonce table and computes the
// header (written at offset 0 when dst is an io.WriterAt).
func (w *WriterV2) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	defer clear(w.macKey)
	if w.err != nil {
		return w.err
	}
	err := w.flush(true)
	clear(w.buf[:cap(w.buf)])
	if err != nil {
		return err
	}
	if w.sized && w.written != w.size {
		w.err = fmt.Errorf("skrfs object: plaintext of %d bytes, %d announced", w.written, w.size)
		return w.err
	}
	if _, err := w.dst.Write(w.table); err != nil {
		w.err = err
		return err
	}
	if w.sized {
		return nil
	}
	td := sha256.Sum256(w.table)
	h, err := encodeHeaderV2(w.chunk, w.id, w.batch.alg, w.batch.keyRef, w.name, w.batch.wrapped, w.wdek, uint64(w.index), td)
	if err != nil {
		w.err = err
		return err
	}
	copy(h[len(h)-MACSize:], headerMAC(w.macKey, h))
	w.header = h
	if wa, ok := w.dst.(io.WriterAt); ok {
		if _, err := wa.WriteAt(h, 0); err != nil {
			w.err = err
			return err
		}
	}
	return nil
}

// SealV2 encrypts plaintext into a complete version 2 object in memory.
func SealV2(plaintext []byte, b *Batch, opts SealOptions) ([]byte, error) {
	var buf bytes.Buffer
	w, err := NewWriterV2(&buf, b, opts)
	if err != nil {
		return nil, err
	}
	buf.Grow(int(CipherSizeV2(int64(len(plaintext)), w.HeaderLen(), w.chunk)) - buf.Len())
	if _, err := w.Write(plaintext); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	out := buf.Bytes()
	copy(out, w.header)
	return out, nil
}

// OpenOptions carry what opening a version 2 object needs beyond the key.
type OpenOptions struct {
	// Table is the object's nonce table (Header.TableRange); required for
	// version 2, ignored for version 1.
	Table []byte
	// Cache, when set, holds unwrapped batch keys across objects.
	Cache BatchKeyCache
}

// unwrapDEKV2 recovers the DEK of a version 2 header: BK from the cache or
// by unwrapping it with kek, then A256KW(BK). It returns the DEK and, when
// BK was unwrapped here, BK for the caller to cache once the header MAC
// has verified.
func unwrapDEKV2(h *Header, kek any, cache BatchKeyCache) (dek, bk []byte, err error) {
	unwrapWith := func(bk []byte) {
		dek, err = keywrap.Unwrap(bk, h.WrappedDEK)
		if err != nil {
			err = fmt.Errorf("%w (data key: %v)", ErrWrongKey, err)
		}
	}
	if cache != nil {
		if kek == nil {
			// Cache only: the cache belongs to one KEK and is found by the
			// exact wrapped bytes (and A), which that KEK unwrapped for an
			// object whose MAC verified; a miss needs the KEK.
			if cache.UseBatchKey(BatchKeyID(h), unwrapWith) {
				return dek, nil, err
			}
			return nil, nil, ErrBatchKeyNotCached
		}
		if err := checkKEKFor(h, kek); err != nil {
			return nil, nil, err
		}
		if cache.UseBatchKey(BatchKeyID(h), unwrapWith) {
			return dek, nil, err
		}
	}
	bk, err = unwrapKey(h.Wrap, h.WrappedBK, kek, ecdhInfoV2)
	if err != nil {
		return nil, nil, err
	}
	unwrapWith(bk)
	if err != nil {
		clear(bk)
		return nil, nil, err
	}
	return dek, bk, nil
}

// checkKEKFor refuses a KEK that cannot open h, before the batch-key cache
// is consulted: a public key (it cannot open anything), a key of the wrong
// kind for A, or one whose wrapped length is not W. The cache belongs to
// one KEK, so a cached batch key is never used for a key that could not
// have unwrapped it.
func checkKEKFor(h *Header, kek any) error {
	var want WrapAlg
	switch k := kek.(type) {
	case *rsa.PrivateKey:
		want = WrapRSAOAEP256
	case []byte:
		want = WrapA256KW
	case *ecdsa.PrivateKey:
		pub, err := k.PublicKey.ECDH()
		if err != nil {
			return fmt.Errorf("%w: %v", ErrKeyType, err)
		}
		a, err := ecdhAlg(pub.Curve())
		if err != nil {
			return err
		}
		want = a
	case *ecdh.PrivateKey:
		a, err := ecdhAlg(k.Curve())
		if err != nil {
			return err
		}
		want = a
	default:
		return fmt.Errorf("%w: %T cannot open objects (a private key is needed)", ErrKeyType, kek)
	}
	if h.Wrap != want {
		return mismatch(h.Wrap, "a "+want.String()+" key")
	}
	w, err := WrappedKeyLen(kek)
	if err != nil {
		return err
	}
	if w != len(h.WrappedBK) {
		return fmt.Errorf("%w: wrapped batch key of %d bytes, this key wraps to %d", ErrWrongKey, len(h.WrappedBK), w)
	}
	return nil
}

// ReadTable returns the nonce table of a version 2 object of size bytes
// whose header is h: from head (the bytes already read from the start of
// the object) when they cover it, which they do for small objects, else
// with one read from src. The table is authenticated later, against the
// header's digest, by NewDecryptorOpts.
func ReadTable(src io.ReaderAt, size int64, h *Header, head []byte) ([]byte, error) {
	off, n, err := h.TableRange(size)
	if err != nil {
		return nil, err
	}
	if off+n <= int64(len(head)) {
		return head[off : off+n], nil
	}
	if n > 64<<20 {
		return nil, fmt.Errorf("%w: nonce table of %d bytes", ErrInvalidSize, n)
	}
	tbl := make([]byte, n)
	if k, err := src.ReadAt(tbl, off); int64(k) != n {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return tbl, nil
}

// RenameHeaderV2 returns the header of version 2 object h renamed to name
// (docs/format.md 11.4): the same object ID, wrapped keys, seal count and
// table digest, the new name, and a new MAC. The body (chunks and nonce
// table) stays valid as it is. It needs the data key: kek, or the batch
// key from cache (kek nil: cache only, as NewDecryptorOpts). The old
// header's MAC is verified first, so only an authentic header is renamed.
func RenameHeaderV2(h *Header, kek any, cache BatchKeyCache, name string) ([]byte, error) {
	if h.Version != VersionV2 {
		return nil, fmt.Errorf("%w: version %d objects bind the name into every chunk", ErrUnsupportedVersion, h.Version)
	}
	dek, bk, err := unwrapDEKV2(h, kek, cache)
	if err != nil {
		return nil, err
	}
	defer clear(dek)
	defer clear(bk)
	_, macKey, err := deriveKeysInfo(dek, h.ObjectID, chunkInfoV2, macInfoV2)
	if err != nil {
		return nil, err
	}
	defer clear(macKey)
	if !hmac.Equal(headerMAC(macKey, h.raw), h.MAC[:]) {
		return nil, ErrHeaderAuth
	}
	if bk != nil && cache != nil {
		cache.StoreBatchKey(BatchKeyID(h), bk) // unwrapped here, and authenticated
	}
	out, err := encodeHeaderV2(h.ChunkSize, h.ObjectID, h.Wrap, h.KeyRef, name, h.WrappedBK, h.WrappedDEK, h.SealCount, h.TableDigest)
	if err != nil {
		return nil, err
	}
	copy(out[len(out)-MACSize:], headerMAC(macKey, out))
	return out, nil
}
