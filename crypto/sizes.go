package crypto

import "fmt"

// Size arithmetic of docs/format.md section 6.1. None of it needs a key.
//
// PlainSize takes its inputs from storage (blob metadata or a cleartext
// preamble), so it range-checks them before any arithmetic: a chunk size
// of zero or less would divide by zero, and absurd values would overflow.

// NumChunks returns the number of chunks of a plaintext of plainSize bytes.
// chunkSize must be positive: callers pass a validated header's, or the
// sealing side's own.
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

// CheckSizes reports whether a header length and chunk size are within the
// ranges of the format (docs/format.md section 2.3), as ParsePreamble
// requires of a preamble. Values from unauthenticated storage metadata
// must pass it before they are used.
func CheckSizes(headerLen, chunkSize int) error {
	if headerLen < MinHeaderSize || headerLen > MaxHeaderSize {
		return fmt.Errorf("%w: header length %d out of range [%d, %d]", ErrMalformedHeader, headerLen, MinHeaderSize, MaxHeaderSize)
	}
	if chunkSize < MinChunkSize || chunkSize > MaxChunkSize {
		return fmt.Errorf("%w: chunk size %d out of range [%d, %d]", ErrMalformedHeader, chunkSize, MinChunkSize, MaxChunkSize)
	}
	return nil
}

// MaxObjectSize bounds the object sizes PlainSize accepts (1 PiB), far
// beyond any blob a store holds, so that no size arithmetic can overflow.
const MaxObjectSize = 1 << 50

// PlainSize returns the plaintext size of an object of cipherSize bytes
// with the given header length and chunk size, or ErrInvalidSize if no
// plaintext encrypts to that size. A header length or chunk size outside
// the format's ranges (CheckSizes), or a negative or absurd object size,
// is an error, never a panic.
func PlainSize(cipherSize int64, headerLen, chunkSize int) (int64, error) {
	if err := CheckSizes(headerLen, chunkSize); err != nil {
		return 0, err
	}
	if cipherSize < 0 || cipherSize > MaxObjectSize {
		return 0, fmt.Errorf("%w: object size %d", ErrInvalidSize, cipherSize)
	}
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
	if h.Version == VersionV2 {
		return PlainSizeV2(cipherSize, h.Len(), h.ChunkSize)
	}
	return PlainSize(cipherSize, h.Len(), h.ChunkSize)
}
