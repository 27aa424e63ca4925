package crypto

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// Layout constants of format version 1 (docs/format.md section 2).
const (
	Version   = 1 // format version 1 (docs/format.md sections 2-6)
	VersionV2 = 2 // format version 2 (docs/format.md section 11)

	PreambleSize = 16 // magic, version, reserved, header length, chunk size
	ObjectIDSize = 16
	MACSize      = 32
	TagSize      = 16 // AES-GCM tag per chunk
	DEKSize      = 32 // AES-256 data-encryption key

	MinChunkSize     = 256
	MaxChunkSize     = 16 << 20
	DefaultChunkSize = 64 << 10
	MaxHeaderSize    = 64 << 10
	MaxKeyRefLen     = 2048
	MaxNameLen       = 4096

	// fixedHeaderSize is the header size with empty key ref, name and DEK:
	// preamble + object ID + algorithm + three 2-byte lengths + MAC.
	fixedHeaderSize = PreambleSize + ObjectIDSize + 1 + 2 + 2 + 2 + MACSize
	// MinHeaderSize is the smallest valid header: no key reference, no
	// name, and the shortest wrapped key (A256KW, 40 bytes).
	MinHeaderSize = fixedHeaderSize + DEKSize + 8
)

var magic = [5]byte{'S', 'K', 'R', 'F', 'S'}

// WrapAlg identifies how the data-encryption key is wrapped for the KEK.
type WrapAlg uint8

// Wrap algorithms (docs/format.md section 3).
const (
	WrapRSAOAEP256   WrapAlg = 1
	WrapA256KW       WrapAlg = 2
	WrapECDHESP256KW WrapAlg = 3
	WrapECDHESP384KW WrapAlg = 4
)

func (a WrapAlg) String() string {
	switch a {
	case WrapRSAOAEP256:
		return "RSA-OAEP-256"
	case WrapA256KW:
		return "A256KW"
	case WrapECDHESP256KW:
		return "ECDH-ES-P256+A256KW"
	case WrapECDHESP384KW:
		return "ECDH-ES-P384+A256KW"
	}
	return fmt.Sprintf("unknown(%d)", uint8(a))
}

// checkWrappedLen reports whether n is a valid wrapped-DEK length for a.
func (a WrapAlg) checkWrappedLen(n int) error {
	ok := false
	switch a {
	case WrapRSAOAEP256:
		ok = n >= 256 && n <= 512
	case WrapA256KW:
		ok = n == DEKSize+8
	case WrapECDHESP256KW:
		ok = n == 65+DEKSize+8
	case WrapECDHESP384KW:
		ok = n == 97+DEKSize+8
	default:
		return fmt.Errorf("%w: unknown wrap algorithm %d", ErrMalformedHeader, uint8(a))
	}
	if !ok {
		return fmt.Errorf("%w: wrapped key of %d bytes is invalid for %v", ErrMalformedHeader, n, a)
	}
	return nil
}

// Header is the parsed header of one object. The key reference and name are
// unauthenticated until a Decryptor has checked the header MAC.
type Header struct {
	ChunkSize  int
	ObjectID   [ObjectIDSize]byte
	Wrap       WrapAlg
	KeyRef     string
	Name       string
	WrappedDEK []byte // v1: the DEK wrapped for the KEK; v2: A256KW(BK, DEK)
	MAC        [MACSize]byte

	// Version is the format version (1 or 2).
	Version int
	// Version 2 only (docs/format.md section 11.1).
	WrappedBK   []byte            // the batch key wrapped for the KEK
	SealCount   uint64            // Q: chunk sealings ever made under the DEK
	TableDigest [sha256.Size]byte // TD = SHA-256(nonce table)

	raw []byte // the exact header bytes, MAC included
}

// Len returns the header length H in bytes.
func (h *Header) Len() int { return len(h.raw) }

// Bytes returns the encoded header. The caller must not modify it.
func (h *Header) Bytes() []byte { return h.raw }

// Preamble is the fixed first part of every object.
type Preamble struct {
	Version   int
	HeaderLen int
	ChunkSize int
}

// ParsePreamble validates the first PreambleSize bytes of an object.
//
// The checks run in the order of docs/format.md section 2.3, so that a short
// or foreign file is reported as "not an skrfs object" first.
func ParsePreamble(b []byte) (Preamble, error) {
	if len(b) < len(magic) || !bytes.Equal(b[:len(magic)], magic[:]) {
		return Preamble{}, ErrBadMagic
	}
	if len(b) > 5 && b[5] != Version && b[5] != VersionV2 {
		return Preamble{}, fmt.Errorf("%w: want=%d or %d have=%d", ErrUnsupportedVersion, Version, VersionV2, b[5])
	}
	if len(b) < PreambleSize {
		return Preamble{}, fmt.Errorf("%w: %d bytes, want at least %d", ErrMalformedHeader, len(b), PreambleSize)
	}
	if b[6] != 0 || b[7] != 0 {
		return Preamble{}, fmt.Errorf("%w: reserved bytes %02x%02x are not zero", ErrMalformedHeader, b[6], b[7])
	}
	h := binary.BigEndian.Uint32(b[8:12])
	c := binary.BigEndian.Uint32(b[12:16])
	minH := uint32(MinHeaderSize)
	if b[5] == VersionV2 {
		minH = MinHeaderSizeV2
	}
	if h < minH || h > MaxHeaderSize {
		return Preamble{}, fmt.Errorf("%w: header length %d out of range [%d, %d]", ErrMalformedHeader, h, minH, MaxHeaderSize)
	}
	if c < MinChunkSize || c > MaxChunkSize {
		return Preamble{}, fmt.Errorf("%w: chunk size %d out of range [%d, %d]", ErrMalformedHeader, c, MinChunkSize, MaxChunkSize)
	}
	return Preamble{Version: int(b[5]), HeaderLen: int(h), ChunkSize: int(c)}, nil
}

// ParseHeader parses and validates a header. b must start at the beginning
// of the object and hold at least the whole header; bytes after the header
// are ignored. It needs no key and checks no MAC.
func ParseHeader(b []byte) (*Header, error) {
	p, err := ParsePreamble(b)
	if err != nil {
		return nil, err
	}
	if len(b) < p.HeaderLen {
		return nil, fmt.Errorf("%w: have %d of %d header bytes", ErrMalformedHeader, len(b), p.HeaderLen)
	}
	if p.Version == VersionV2 {
		return parseHeaderV2(b, p)
	}
	raw := b[:p.HeaderLen]
	h := &Header{Version: Version, ChunkSize: p.ChunkSize, raw: bytes.Clone(raw)}
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
	wrapped, r, err := field(r, 4096, "wrapped key")
	if err != nil {
		return nil, err
	}
	if len(r) != 0 {
		return nil, fmt.Errorf("%w: %d unexplained bytes before the MAC", ErrMalformedHeader, len(r))
	}
	if err := h.Wrap.checkWrappedLen(len(wrapped)); err != nil {
		return nil, err
	}
	for _, f := range []struct{ what, s string }{{"key reference", string(keyRef)}, {"name", string(name)}} {
		if err := checkText(f.what, f.s); err != nil {
			return nil, err
		}
	}
	h.KeyRef, h.Name, h.WrappedDEK = string(keyRef), string(name), bytes.Clone(wrapped)
	copy(h.MAC[:], raw[p.HeaderLen-MACSize:])
	return h, nil
}

// field reads a 2-byte length and that many bytes.
func field(r []byte, max int, what string) (val, rest []byte, err error) {
	if len(r) < 2 {
		return nil, nil, fmt.Errorf("%w: header ends inside the %s length", ErrMalformedHeader, what)
	}
	n := int(binary.BigEndian.Uint16(r))
	if n > max {
		return nil, nil, fmt.Errorf("%w: %s of %d bytes exceeds %d", ErrMalformedHeader, what, n, max)
	}
	if len(r)-2 < n {
		return nil, nil, fmt.Errorf("%w: %s of %d bytes overruns the header", ErrMalformedHeader, what, n)
	}
	return r[2 : 2+n], r[2+n:], nil
}

// checkText rejects invalid UTF-8 and the characters of docs/format.md
// section 2.2 in header strings: C0 and C1 controls, DEL, line and
// paragraph separators, and bidirectional formatting characters, so that a
// name printed by `skrfs inspect` or `ls` cannot disguise itself.
func checkText(what, s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrMalformedHeader, what)
	}
	for _, c := range s {
		if forbiddenRune(c) {
			return fmt.Errorf("%w: %s contains control character %U", ErrMalformedHeader, what, c)
		}
	}
	return nil
}

func forbiddenRune(c rune) bool {
	return c < 0x20 || (c >= 0x7f && c <= 0x9f) || c == 0x2028 || c == 0x2029 ||
		c == 0x200e || c == 0x200f || (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069)
}

// encodeHeader builds the header bytes with a zero MAC; the caller fills the
// MAC into the last MACSize bytes.
func encodeHeader(chunkSize int, id [ObjectIDSize]byte, alg WrapAlg, keyRef, name string, wrapped []byte) ([]byte, error) {
	if chunkSize < MinChunkSize || chunkSize > MaxChunkSize {
		return nil, fmt.Errorf("chunk size %d out of range [%d, %d]", chunkSize, MinChunkSize, MaxChunkSize)
	}
	if len(keyRef) > MaxKeyRefLen {
		return nil, fmt.Errorf("key reference longer than %d bytes", MaxKeyRefLen)
	}
	if len(name) > MaxNameLen {
		return nil, fmt.Errorf("name longer than %d bytes", MaxNameLen)
	}
	for _, f := range []struct{ what, s string }{{"key reference", keyRef}, {"name", name}} {
		if err := checkText(f.what, f.s); err != nil {
			return nil, err
		}
	}
	if err := alg.checkWrappedLen(len(wrapped)); err != nil {
		return nil, err
	}
	hlen := fixedHeaderSize + len(keyRef) + len(name) + len(wrapped)
	b := make([]byte, 0, hlen)
	b = append(b, magic[:]...)
	b = append(b, Version, 0, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(hlen))
	b = binary.BigEndian.AppendUint32(b, uint32(chunkSize))
	b = append(b, id[:]...)
	b = append(b, byte(alg))
	for _, f := range [][]byte{[]byte(keyRef), []byte(name), wrapped} {
		b = binary.BigEndian.AppendUint16(b, uint16(len(f)))
		b = append(b, f...)
	}
	b = append(b, make([]byte, MACSize)...)
	return b, nil
}

// HeaderLen returns the header length of objects sealed for kek with this
// key reference and name (docs/format.md section 2.2: H = 71 + R + N + W).
func HeaderLen(kek any, keyRef, name string) (int, error) {
	w, err := WrappedKeyLen(kek)
	if err != nil {
		return 0, err
	}
	return fixedHeaderSize + len(keyRef) + len(name) + w, nil
}

// CheckName reports whether name can be sealed into a header: at most
// MaxNameLen bytes of UTF-8 without control or bidirectional-override
// characters (a header with such a name would be refused by readers).
func CheckName(name string) error {
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: name longer than %d bytes", ErrMalformedHeader, MaxNameLen)
	}
	return checkText("name", name)
}
