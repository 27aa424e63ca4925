package crypto

import "fmt"

// Size arithmetic of docs/format.md section 6.1. None of it needs a key.

// NumChunks returns the number of chunks of a plaintext of plainSize bytes.
func NumChunks(plainSize int64, chunkSize int) int64 {
	if plainSize == 0 {
		return 1
	}
	return (plainSize + int64(chunkSize) - 1) / int64(chunkSize)
}

// CipherSize returns the object size for a plaintext of plainSize bytes.
func CipherSize(plainSize int64, headerLen, chunkSize int) int64 {
	return int64(headerLen) + plainSize + TagSize*NumChunks(plainSize, chunkSize)
}

// PlainSize returns the plaintext size of an object of cipherSize bytes
// with the given header length and chunk size, or ErrInvalidSize if no
// plaintext encrypts to that size.
func PlainSize(cipherSize int64, headerLen, chunkSize int) (int64, error) {
	body := cipherSize - int64(headerLen)
	if body < TagSize {
		return 0, fmt.Errorf("%w: %d bytes after a %d-byte header", ErrInvalidSize, body, headerLen)
	}
	t := int64(chunkSize) + TagSize
	n := (body + t - 1) / t
	last := body - (n-1)*t
	if last <= TagSize && !(n == 1 && last == TagSize) {
		return 0, fmt.Errorf("%w: last chunk of %d bytes", ErrInvalidSize, last)
	}
	return body - TagSize*n, nil
}

// PlainSize returns the plaintext size of an object of cipherSize bytes
// that has header h.
func (h *Header) PlainSize(cipherSize int64) (int64, error) {
	return PlainSize(cipherSize, h.Len(), h.ChunkSize)
}
