package crypto

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
)

// SealOptions configure a new object.
type SealOptions struct {
	// Name is the logical name the object is sealed for; readers must
	// expect exactly this name (docs/format.md section 6.3).
	Name string
	// KeyRef is the Key Vault key identifier of the KEK, written into the
	// header ("" = none).
	KeyRef string
	// ChunkSize is the plaintext chunk size; 0 means DefaultChunkSize.
	ChunkSize int
	// Rand is the randomness source for the DEK, the object ID and key
	// wrapping; nil means crypto/rand.
	Rand io.Reader
}

// keys holds the per-object secrets derived from the DEK.
type keys struct {
	aead cipher.AEAD
	ad   [sha256.Size]byte // D = SHA-256(header)
}

// deriveKeys runs the key schedule of docs/format.md section 4 and returns
// the chunk AEAD and the header MAC key. The caller wipes dek and macKey.
func deriveKeys(dek []byte, id [ObjectIDSize]byte) (cipher.AEAD, []byte, error) {
	return deriveKeysInfo(dek, id, "skrfs/v1 chunk key", "skrfs/v1 header mac")
}

func deriveKeysInfo(dek []byte, id [ObjectIDSize]byte, chunkInfo, macInfo string) (cipher.AEAD, []byte, error) {
	prk, err := hkdf.Extract(sha256.New, dek, id[:])
	if err != nil {
		return nil, nil, err
	}
	defer clear(prk)
	kc, err := hkdf.Expand(sha256.New, prk, chunkInfo, 32)
	if err != nil {
		return nil, nil, err
	}
	defer clear(kc)
	km, err := hkdf.Expand(sha256.New, prk, macInfo, 32)
	if err != nil {
		return nil, nil, err
	}
	block, err := aes.NewCipher(kc)
	if err != nil {
		return nil, nil, err
	}
	aead, err := cipher.NewGCM(block)
	return aead, km, err
}

func headerMAC(macKey, header []byte) []byte {
	m := hmac.New(sha256.New, macKey)
	m.Write(header[:len(header)-MACSize])
	return m.Sum(nil)
}

// nonce returns the 12-byte nonce of chunk i (docs/format.md section 5).
func nonce(i int64, final bool) [12]byte {
	var n [12]byte
	binary.BigEndian.PutUint64(n[:8], uint64(i))
	if final {
		n[11] = 1
	}
	return n
}

// Writer encrypts a stream into one object with bounded memory (two chunks).
// Write the plaintext, then Close to seal the final chunk. Close does not
// close the underlying writer.
type Writer struct {
	dst    io.Writer
	k      keys
	header []byte
	chunk  int
	buf    []byte // pending plaintext, up to chunk bytes
	out    []byte // sealed chunk scratch
	index  int64
	err    error
	closed bool
}

// NewWriter writes the header of a new object for kek to dst and returns a
// Writer for its plaintext.
func NewWriter(dst io.Writer, kek any, opts SealOptions) (*Writer, error) {
	rnd := opts.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	chunk := opts.ChunkSize
	if chunk == 0 {
		chunk = DefaultChunkSize
	}
	dek := make([]byte, DEKSize)
	defer clear(dek)
	var id [ObjectIDSize]byte
	if _, err := io.ReadFull(rnd, dek); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(rnd, id[:]); err != nil {
		return nil, err
	}
	alg, wrapped, err := wrapDEK(rnd, kek, dek)
	if err != nil {
		return nil, err
	}
	header, err := encodeHeader(chunk, id, alg, opts.KeyRef, opts.Name, wrapped)
	if err != nil {
		return nil, err
	}
	aead, macKey, err := deriveKeys(dek, id)
	if err != nil {
		return nil, err
	}
	copy(header[len(header)-MACSize:], headerMAC(macKey, header))
	clear(macKey)
	w := &Writer{dst: dst, header: header, chunk: chunk,
		k:   keys{aead: aead, ad: sha256.Sum256(header)},
		buf: make([]byte, 0, chunk), out: make([]byte, 0, chunk+TagSize)}
	if _, err := dst.Write(header); err != nil {
		return nil, err
	}
	return w, nil
}

// Header returns the encoded header of the object being written.
func (w *Writer) Header() []byte { return w.header }

// Write encrypts p. A chunk is written out only once the next byte is known,
// because the final chunk is sealed differently.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.closed {
		return 0, errors.New("skrfs object: write after close")
	}
	n := 0
	for len(p) > 0 {
		// Fast path: whole chunks straight from p when more data follows.
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
		k := copy(w.buf[len(w.buf):w.chunk], p)
		w.buf = w.buf[:len(w.buf)+k]
		p = p[k:]
		n += k
	}
	return n, nil
}

// ReadFrom implements io.ReaderFrom so that io.Copy reads straight into the
// chunk buffer.
func (w *Writer) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		if w.err != nil {
			return total, w.err
		}
		if len(w.buf) == w.chunk {
			// Only flush when more data follows: peek one byte.
			var one [1]byte
			k, err := io.ReadFull(r, one[:])
			if k == 0 {
				if err == io.EOF || err == io.ErrUnexpectedEOF {
					return total, nil
				}
				return total, err
			}
			if err := w.flush(false); err != nil {
				return total, err
			}
			w.buf = append(w.buf, one[0])
			total++
		}
		k, err := r.Read(w.buf[len(w.buf):w.chunk])
		w.buf = w.buf[:len(w.buf)+k]
		total += int64(k)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// flush seals the buffered plaintext as the next chunk.
func (w *Writer) flush(final bool) error {
	err := w.seal(w.buf, final)
	clear(w.buf)
	w.buf = w.buf[:0]
	return err
}

func (w *Writer) seal(pt []byte, final bool) error {
	n := nonce(w.index, final)
	w.out = w.k.aead.Seal(w.out[:0], n[:], pt, w.k.ad[:])
	w.index++
	if _, err := w.dst.Write(w.out); err != nil {
		w.err = err
		return err
	}
	return nil
}

// Close seals and writes the final chunk.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	if w.err != nil {
		return w.err
	}
	err := w.flush(true)
	clear(w.buf[:cap(w.buf)])
	return err
}

// Seal encrypts plaintext into a complete object in memory.
func Seal(plaintext []byte, kek any, opts SealOptions) ([]byte, error) {
	var b bytes.Buffer
	w, err := NewWriter(&b, kek, opts)
	if err != nil {
		return nil, err
	}
	b.Grow(int(CipherSize(int64(len(plaintext)), len(w.header), w.chunk)) - b.Len())
	if _, err := w.Write(plaintext); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
