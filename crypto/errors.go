package crypto

import (
	"errors"
	"fmt"
)

// Error classes. Every error returned by this package wraps exactly one of
// the specific errors below, and each specific error wraps its class, so a
// caller can test either (errors.Is(err, ErrUnauthenticated) or
// errors.Is(err, ErrTruncated)). See docs/format.md section 8.
var (
	// ErrFormat: the object is not a well-formed version 1 object.
	ErrFormat = errors.New("skrfs object: malformed")
	// ErrUnauthenticated: an integrity check failed; no plaintext is returned.
	ErrUnauthenticated = errors.New("skrfs object: authentication failed")

	ErrBadMagic           = fmt.Errorf("%w: not an skrfs object (bad magic)", ErrFormat)
	ErrUnsupportedVersion = fmt.Errorf("%w: unsupported version", ErrFormat)
	ErrMalformedHeader    = fmt.Errorf("%w: malformed header", ErrFormat)
	ErrInvalidSize        = fmt.Errorf("%w: impossible object size (truncated or extended)", ErrFormat)

	ErrWrongKey     = fmt.Errorf("%w: the key does not unwrap this object's data key", ErrUnauthenticated)
	ErrHeaderAuth   = fmt.Errorf("%w: header MAC mismatch (header tampered)", ErrUnauthenticated)
	ErrNameMismatch = fmt.Errorf("%w: object was sealed for another name", ErrUnauthenticated)
	ErrChunkAuth    = fmt.Errorf("%w: chunk tag mismatch", ErrUnauthenticated)
	ErrTruncated    = fmt.Errorf("%w: object truncated at a chunk boundary", ErrUnauthenticated)
	ErrExtended     = fmt.Errorf("%w: data appended after the final chunk", ErrUnauthenticated)

	// ErrKeyType: the key given cannot be used with this object's wrap
	// algorithm (an RSA key for an A256KW object, say), or is unsupported.
	ErrKeyType = errors.New("skrfs object: unsupported or mismatched key type")

	// ErrBatchKeyNotCached: a version 2 object was opened with a batch-key
	// cache and no KEK, and its batch key is not cached: open it with the
	// KEK.
	ErrBatchKeyNotCached = fmt.Errorf("%w: batch key not cached (the key-encryption key is needed)", ErrKeyType)
)

// ChunkError reports the chunk that failed authentication.
type ChunkError struct {
	Index int64 // 0-based chunk index
	Err   error // ErrChunkAuth, ErrTruncated or ErrExtended
}

func (e *ChunkError) Error() string { return fmt.Sprintf("chunk %d: %v", e.Index, e.Err) }
func (e *ChunkError) Unwrap() error { return e.Err }
