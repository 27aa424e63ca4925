package crypto

import (
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// A strict, allocation-light reader of the manifest payload (docs/format.md
// 12.1). encoding/json took most of the 0.6-0.75 s that a 100,000-entry
// manifest cost to verify; this reader takes a fraction of that. It is also
// stricter: member names match exactly (encoding/json folds case), a
// duplicate member is refused, and null is never a value.

type jreader struct {
	b   []byte
	pos int
}

func (r *jreader) errf(format string, a ...any) error {
	return fmt.Errorf("%w: payload at byte %d: %s", ErrManifestMalformed, r.pos, fmt.Sprintf(format, a...))
}

func (r *jreader) ws() {
	for r.pos < len(r.b) {
		switch r.b[r.pos] {
		case ' ', '\t', '\n', '\r':
			r.pos++
		default:
			return
		}
	}
}

// expect consumes c after optional whitespace.
func (r *jreader) expect(c byte) error {
	r.ws()
	if r.pos >= len(r.b) || r.b[r.pos] != c {
		return r.errf("expected %q", c)
	}
	r.pos++
	return nil
}

// peek returns the next non-space byte (0 at the end).
func (r *jreader) peek() byte {
	r.ws()
	if r.pos >= len(r.b) {
		return 0
	}
	return r.b[r.pos]
}

func (r *jreader) str() (string, error) {
	if err := r.expect('"'); err != nil {
		return "", err
	}
	start := r.pos
	for r.pos < len(r.b) {
		c := r.b[r.pos]
		switch {
		case c == '"':
			s := string(r.b[start:r.pos])
			r.pos++
			return s, nil
		case c == '\\':
			return r.strSlow(start)
		case c < 0x20:
			return "", r.errf("control character in a string")
		}
		r.pos++
	}
	return "", r.errf("unterminated string")
}

func (r *jreader) strSlow(start int) (string, error) {
	out := append([]byte(nil), r.b[start:r.pos]...)
	for r.pos < len(r.b) {
		c := r.b[r.pos]
		switch {
		case c == '"':
			r.pos++
			return string(out), nil
		case c < 0x20:
			return "", r.errf("control character in a string")
		case c != '\\':
			out = append(out, c)
			r.pos++
			continue
		}
		if r.pos+1 >= len(r.b) {
			break
		}
		e := r.b[r.pos+1]
		r.pos += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			c1, err := r.hex4()
			if err != nil {
				return "", err
			}
			ru := rune(c1)
			if utf16.IsSurrogate(ru) {
				if c1 >= 0xdc00 || r.pos+1 >= len(r.b) || r.b[r.pos] != '\\' || r.b[r.pos+1] != 'u' {
					return "", r.errf("lone surrogate")
				}
				r.pos += 2
				c2, err := r.hex4()
				if err != nil {
					return "", err
				}
				ru = utf16.DecodeRune(ru, rune(c2))
				if ru == utf8.RuneError {
					return "", r.errf("invalid surrogate pair")
				}
			}
			out = utf8.AppendRune(out, ru)
		default:
			return "", r.errf("invalid escape")
		}
	}
	return "", r.errf("unterminated string")
}

func (r *jreader) hex4() (uint16, error) {
	if r.pos+4 > len(r.b) {
		return 0, r.errf("short \\u escape")
	}
	v, err := strconv.ParseUint(string(r.b[r.pos:r.pos+4]), 16, 16)
	if err != nil {
		return 0, r.errf("invalid \\u escape")
	}
	r.pos += 4
	return uint16(v), nil
}

// uint reads an unsigned integer (parseJSONUint's rules).
func (r *jreader) uint() (uint64, error) {
	r.ws()
	start := r.pos
	for r.pos < len(r.b) {
		c := r.b[r.pos]
		if c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' {
			r.pos++
			continue
		}
		break
	}
	v, err := parseJSONUint(r.b[start:r.pos])
	if err != nil {
		r.pos = start
		return 0, r.errf("expected an integer 0 to 2^53-1")
	}
	return v, nil
}

// object reads {"name": value, ...}, calling member for each name; a name
// seen twice is refused.
func (r *jreader) object(member func(name string) error) error {
	if err := r.expect('{'); err != nil {
		return err
	}
	if r.peek() == '}' {
		r.pos++
		return nil
	}
	var seenArr [8]string
	seen := seenArr[:0]
	for {
		name, err := r.str()
		if err != nil {
			return err
		}
		for _, s := range seen {
			if s == name {
				return r.errf("duplicate member %q", name)
			}
		}
		seen = append(seen, name)
		if err := r.expect(':'); err != nil {
			return err
		}
		if err := member(name); err != nil {
			return err
		}
		switch r.peek() {
		case ',':
			r.pos++
		case '}':
			r.pos++
			return nil
		default:
			return r.errf("expected , or }")
		}
	}
}

func decodePayloadJSON(raw []byte) (*Manifest, error) {
	r := &jreader{b: raw}
	m := &Manifest{}
	var haveV, haveDataset, haveEpoch, haveCreated, haveEntries bool
	err := r.object(func(name string) error {
		var err error
		switch name {
		case "v":
			var v uint64
			if v, err = r.uint(); err == nil && v != manifestVersion {
				err = fmt.Errorf("%w: payload version %d (want %d)", ErrManifestMalformed, v, manifestVersion)
			}
			haveV = true
		case "dataset":
			m.Dataset, err = r.str()
			haveDataset = true
		case "epoch":
			m.Epoch, err = r.uint()
			haveEpoch = true
		case "created":
			var s string
			if s, err = r.str(); err == nil {
				m.Created, err = parseCreated(s)
			}
			haveCreated = true
		case "entries":
			err = r.entries(m)
			haveEntries = true
		default:
			err = r.errf("unknown member %q", name)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if r.peek() != 0 {
		return nil, r.errf("data after the payload object")
	}
	if !haveV || !haveDataset || !haveEpoch || !haveCreated || !haveEntries {
		return nil, fmt.Errorf("%w: payload needs v, dataset, epoch, created and entries", ErrManifestMalformed)
	}
	return m, nil
}

func (r *jreader) entries(m *Manifest) error {
	if err := r.expect('['); err != nil {
		return err
	}
	// Size the slice from a cheap estimate (an entry is at least 60 bytes
	// of JSON), capped, so a huge count cannot be claimed for free.
	m.Entries = make([]ManifestEntry, 0, min((len(r.b)-r.pos)/60+1, MaxManifestEntries))
	if r.peek() == ']' {
		r.pos++
		return nil
	}
	for {
		if len(m.Entries) == MaxManifestEntries {
			return r.errf("more than %d entries", MaxManifestEntries)
		}
		var e ManifestEntry
		var haveName, haveSize, haveHash bool
		err := r.object(func(name string) error {
			var err error
			switch name {
			case "name":
				e.Name, err = r.str()
				haveName = true
			case "size":
				var v uint64
				v, err = r.uint()
				e.Size = int64(v)
				haveSize = true
			case "sha256":
				err = r.hexDigest(&e.HeaderSHA256)
				haveHash = true
			default:
				err = r.errf("unknown entry member %q", name)
			}
			return err
		})
		if err != nil {
			return err
		}
		if !haveName || !haveSize || !haveHash {
			return fmt.Errorf("%w: entry %d needs name, size and sha256", ErrManifestMalformed, len(m.Entries))
		}
		m.Entries = append(m.Entries, e)
		switch r.peek() {
		case ',':
			r.pos++
		case ']':
			r.pos++
			return nil
		default:
			return r.errf("expected , or ]")
		}
	}
}

// hexDigest reads a string of 64 lower-case hex digits.
func (r *jreader) hexDigest(d *[32]byte) error {
	if err := r.expect('"'); err != nil {
		return err
	}
	if r.pos+65 > len(r.b) || r.b[r.pos+64] != '"' {
		return r.errf("sha256 must be 64 lower-case hex digits")
	}
	for i := range 32 {
		hi, ok1 := lowerHex(r.b[r.pos+2*i])
		lo, ok2 := lowerHex(r.b[r.pos+2*i+1])
		if !ok1 || !ok2 {
			return r.errf("sha256 must be 64 lower-case hex digits")
		}
		d[i] = hi<<4 | lo
	}
	r.pos += 65
	return nil
}

func lowerHex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
