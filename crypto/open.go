package crypto

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"io"
)

// Decryptor opens the chunks of one object whose header MAC, name and size
// have been verified. It is safe for concurrent use.
type Decryptor struct {
	h          *Header
	k          keys
	table      []byte // version 2: the nonce table (12 bytes per chunk)
	bodyEnd    int64  // end of the last chunk (cipherSize, less the v2 table)
	cipherSize int64
	plainSize  int64
	chunks     int64
}

// NewDecryptor unwraps the object's data key with kek, verifies the header
// MAC, checks that the object was sealed for name and that cipherSize (the
// object's total size) is possible. Pass h.Name as name only when the caller
// has no expectation of its own (as `skrfs decrypt` without --name).
//
// A version 2 object also needs its nonce table: use NewDecryptorOpts.
func NewDecryptor(h *Header, kek any, name string, cipherSize int64) (*Decryptor, error) {
	return NewDecryptorOpts(h, kek, name, cipherSize, OpenOptions{})
}

// NewDecryptorOpts is NewDecryptor for version 1 and 2 objects. For version
// 2 it runs the checks of docs/format.md 11.2 in order: batch key (from
// opts.Cache, or unwrapped with kek and then cached), DEK, header MAC, name,
// nonce table digest.
func NewDecryptorOpts(h *Header, kek any, name string, cipherSize int64, opts OpenOptions) (*Decryptor, error) {
	if h.Version == VersionV2 {
		return newDecryptorV2(h, kek, name, cipherSize, opts)
	}
	plain, err := h.PlainSize(cipherSize)
	if err != nil {
		return nil, err
	}
	dek, err := unwrapDEK(h, kek)
	if err != nil {
		return nil, err
	}
	defer clear(dek)
	aead, macKey, err := deriveKeys(dek, h.ObjectID)
	if err != nil {
		return nil, err
	}
	ok := hmac.Equal(headerMAC(macKey, h.raw), h.MAC[:])
	clear(macKey)
	if !ok {
		return nil, ErrHeaderAuth
	}
	if h.Name != name {
		return nil, fmt.Errorf("%w: sealed for %q, expected %q", ErrNameMismatch, h.Name, name)
	}
	return &Decryptor{h: h, k: keys{aead: aead, ad: sha256.Sum256(h.raw)},
		cipherSize: cipherSize, bodyEnd: cipherSize, plainSize: plain, chunks: NumChunks(plain, h.ChunkSize)}, nil
}

// Header returns the (now authenticated) header.
func (d *Decryptor) Header() *Header { return d.h }

// PlainSize returns the plaintext size.
func (d *Decryptor) PlainSize() int64 { return d.plainSize }

// NumChunks returns the number of chunks.
func (d *Decryptor) NumChunks() int64 { return d.chunks }

// ChunkSpan returns the chunks [first, last] that hold plaintext bytes
// [off, off+n), clipped to the plaintext size. ok is false when the range
// is empty after clipping.
func (d *Decryptor) ChunkSpan(off, n int64) (first, last int64, ok bool) {
	end := min(off+n, d.plainSize)
	if off < 0 || n <= 0 || off >= end {
		return 0, 0, false
	}
	c := int64(d.h.ChunkSize)
	return off / c, (end - 1) / c, true
}

// CipherRange returns the byte range of the object that holds the sealed
// chunks [first, last].
func (d *Decryptor) CipherRange(first, last int64) (off, n int64) {
	t := int64(d.h.ChunkSize) + TagSize
	off = int64(d.h.Len()) + first*t
	end := min(int64(d.h.Len())+(last+1)*t, d.bodyEnd)
	return off, end - off
}

// DecryptChunks authenticates and decrypts the consecutive sealed chunks in
// src, the first of which is chunk first, and appends their plaintext to
// dst. dst must not overlap src. On failure nothing is appended and the
// error is a *ChunkError naming the chunk.
func (d *Decryptor) DecryptChunks(dst, src []byte, first int64) ([]byte, error) {
	t := d.h.ChunkSize + TagSize
	start := len(dst)
	for i := first; len(src) > 0; i++ {
		n := min(t, len(src))
		var err error
		dst, err = d.openChunk(dst, i, src[:n])
		if err != nil {
			clear(dst[start:])
			return dst[:start], err
		}
		src = src[n:]
	}
	return dst, nil
}

func (d *Decryptor) openChunk(dst []byte, i int64, ct []byte) ([]byte, error) {
	if i >= d.chunks {
		return dst, &ChunkError{Index: i, Err: fmt.Errorf("%w: beyond the last chunk %d", ErrChunkAuth, d.chunks-1)}
	}
	final := i == d.chunks-1
	if d.table != nil {
		return d.openChunkV2(dst, i, final, ct)
	}
	n := nonce(i, final)
	out, err := d.k.aead.Open(dst, n[:], ct, d.k.ad[:])
	if err == nil {
		return out, nil
	}
	// Tell truncation and extension from other damage: does the chunk
	// verify with the opposite final flag? Its plaintext is discarded.
	alt := nonce(i, !final)
	scratch, aerr := d.k.aead.Open(nil, alt[:], ct, d.k.ad[:])
	clear(scratch)
	switch {
	case aerr == nil && final:
		return dst, &ChunkError{Index: i, Err: ErrTruncated}
	case aerr == nil:
		return dst, &ChunkError{Index: i, Err: ErrExtended}
	}
	return dst, &ChunkError{Index: i, Err: ErrChunkAuth}
}

// ReaderAt returns an io.ReaderAt over the plaintext, reading ciphertext
// from src (the whole object, header included). Each call reads and
// authenticates exactly the chunks that cover the requested range.
func (d *Decryptor) ReaderAt(src io.ReaderAt) io.ReaderAt { return &reader{d: d, src: src} }

type reader struct {
	d   *Decryptor
	src io.ReaderAt
}

func (r *reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("skrfs object: negative offset %d", off)
	}
	if off >= r.d.plainSize {
		return 0, io.EOF
	}
	first, last, _ := r.d.ChunkSpan(off, int64(len(p)))
	coff, cn := r.d.CipherRange(first, last)
	ct := make([]byte, cn)
	if _, err := r.src.ReadAt(ct, coff); err != nil && !(err == io.EOF && len(ct) == int(cn)) {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	pt, err := r.d.DecryptChunks(make([]byte, 0, len(ct)), ct, first)
	if err != nil {
		return 0, err
	}
	n := copy(p, pt[off-first*int64(r.d.h.ChunkSize):])
	clear(pt)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Open authenticates and decrypts a complete object held in memory.
func Open(obj []byte, kek any, name string) ([]byte, error) {
	h, err := ParseHeader(obj)
	if err != nil {
		return nil, err
	}
	var opts OpenOptions
	if h.Version == VersionV2 {
		off, n, err := h.TableRange(int64(len(obj)))
		if err != nil {
			return nil, err
		}
		opts.Table = obj[off : off+n]
	}
	d, err := NewDecryptorOpts(h, kek, name, int64(len(obj)), opts)
	if err != nil {
		return nil, err
	}
	pt, err := d.DecryptChunks(make([]byte, 0, d.plainSize), obj[h.Len():d.bodyEnd], 0)
	if err != nil {
		return nil, err
	}
	return pt, nil
}

// streamBatch is how much ciphertext Stream reads per call.
const streamBatch = 1 << 20

// Stream authenticates and decrypts the whole object from src (the object,
// header included) and writes the plaintext to w in order, with memory
// bounded by about 2 MiB. It stops at the first chunk that fails, so w may
// have received the plaintext of the chunks before it: callers that must
// not expose partial plaintext write to a temporary destination.
func (d *Decryptor) Stream(w io.Writer, src io.ReaderAt) (int64, error) {
	per := max(1, streamBatch/(d.h.ChunkSize+TagSize))
	var ct, pt []byte
	defer func() { clear(pt[:cap(pt)]) }()
	var written int64
	for first := int64(0); first < d.chunks; first += int64(per) {
		last := min(first+int64(per), d.chunks) - 1
		off, n := d.CipherRange(first, last)
		if int64(cap(ct)) < n {
			ct = make([]byte, n)
		}
		ct = ct[:n]
		if k, err := src.ReadAt(ct, off); int64(k) != n {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return written, err
		}
		var err error
		pt, err = d.DecryptChunks(pt[:0], ct, first)
		if err != nil {
			return written, err
		}
		k, err := w.Write(pt)
		written += int64(k)
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

func newDecryptorV2(h *Header, kek any, name string, cipherSize int64, opts OpenOptions) (*Decryptor, error) {
	plain, err := h.PlainSize(cipherSize)
	if err != nil {
		return nil, err
	}
	chunks := NumChunks(plain, h.ChunkSize)
	dek, bk, err := unwrapDEKV2(h, kek, opts.Cache)
	if err != nil {
		return nil, err
	}
	defer clear(dek)
	defer clear(bk)
	aead, macKey, err := deriveKeysInfo(dek, h.ObjectID, chunkInfoV2, macInfoV2)
	if err != nil {
		return nil, err
	}
	ok := hmac.Equal(headerMAC(macKey, h.raw), h.MAC[:])
	clear(macKey)
	if !ok {
		return nil, ErrHeaderAuth
	}
	if bk != nil && opts.Cache != nil {
		opts.Cache.StoreBatchKey(BatchKeyID(h), bk)
	}
	if h.Name != name {
		return nil, fmt.Errorf("%w: sealed for %q, expected %q", ErrNameMismatch, h.Name, name)
	}
	if int64(len(opts.Table)) != NonceSize*chunks {
		if opts.Table == nil {
			return nil, fmt.Errorf("%w: version 2 object opened without its nonce table", ErrHeaderAuth)
		}
		return nil, fmt.Errorf("%w: nonce table of %d bytes, want %d", ErrHeaderAuth, len(opts.Table), NonceSize*chunks)
	}
	if td := sha256.Sum256(opts.Table); !hmac.Equal(td[:], h.TableDigest[:]) {
		return nil, fmt.Errorf("%w: nonce table digest mismatch", ErrHeaderAuth)
	}
	return &Decryptor{h: h, k: keys{aead: aead}, table: bytes.Clone(opts.Table),
		cipherSize: cipherSize, bodyEnd: cipherSize - NonceSize*chunks, plainSize: plain, chunks: chunks}, nil
}

func (d *Decryptor) openChunkV2(dst []byte, i int64, final bool, ct []byte) ([]byte, error) {
	n := d.table[i*NonceSize : (i+1)*NonceSize]
	var adb [len(chunkADV2) + 9]byte
	ad := chunkADV2Of(adb[:0], i, final)
	out, err := d.k.aead.Open(dst, n, ct, ad)
	if err == nil {
		return out, nil
	}
	alt := chunkADV2Of(adb[:0], i, !final)
	scratch, aerr := d.k.aead.Open(nil, n, ct, alt)
	clear(scratch)
	switch {
	case aerr == nil && final:
		return dst, &ChunkError{Index: i, Err: ErrTruncated}
	case aerr == nil:
		return dst, &ChunkError{Index: i, Err: ErrExtended}
	}
	return dst, &ChunkError{Index: i, Err: ErrChunkAuth}
}
