// Package crypto implements the skrfs encrypted-object format, version 1
// (docs/format.md): envelope encryption of one file under a per-object data
// key wrapped for a Key Vault key, a chunked AES-256-GCM body with random
// access, and size arithmetic that needs no key. It performs no I/O of its
// own: callers hand it bytes, an io.Writer to seal into, or an io.ReaderAt
// to open from.
package crypto
