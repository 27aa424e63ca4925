package crypto

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Signed dataset manifests (docs/format.md section 12): a JWS in compact
// serialization whose payload lists, for every object of a dataset, its
// logical name, plaintext size and the SHA-256 of its header.

// ManifestName is the manifest's object name relative to the dataset root.
// Object names under ManifestPrefix are reserved.
const (
	ManifestName   = ".skrfs/manifest"
	ManifestPrefix = ".skrfs/"
	// ManifestDeltaPrefix is where read-write datasets will publish deltas
	// (docs/format.md 12.5); readers of this version refuse a dataset that
	// has any.
	ManifestDeltaPrefix = ".skrfs/manifest.d/"

	// MaxManifestSize bounds the encoded manifest (12.1).
	MaxManifestSize = 256 << 20
	// MaxManifestEntries bounds the number of entries (12.1).
	MaxManifestEntries = 10_000_000
	// MaxDatasetIDLen bounds the dataset id.
	MaxDatasetIDLen = 128
	// MaxManifestEpoch is the largest epoch (2^53 - 1, exact in every JSON
	// implementation).
	MaxManifestEpoch = 1<<53 - 1

	manifestTyp     = "skrfs-manifest+jws"
	manifestVersion = 1
)

// Manifest errors (docs/format.md 12.2). ErrManifestSigner and
// ErrManifestSignature wrap ErrUnauthenticated; ErrManifestMalformed wraps
// ErrFormat.
var (
	ErrManifestMalformed = fmt.Errorf("%w: malformed manifest", ErrFormat)
	ErrManifestSigner    = fmt.Errorf("%w: manifest signed by a key that is not pinned", ErrUnauthenticated)
	ErrManifestSignature = fmt.Errorf("%w: manifest signature does not verify", ErrUnauthenticated)
)

// Manifest signature algorithms.
const (
	AlgES256 = "ES256"
	AlgES384 = "ES384"
	AlgPS256 = "PS256"
)

// ManifestEntry is one listed object.
type ManifestEntry struct {
	Name         string   // logical name (docs/format.md 6.3)
	Size         int64    // plaintext size
	HeaderSHA256 [32]byte // SHA-256 of the object's whole header
}

// Manifest is the payload of a signed manifest. Entries are sorted by Name
// in strictly increasing byte order.
type Manifest struct {
	Dataset string
	Epoch   uint64
	Created time.Time // UTC, whole seconds
	Entries []ManifestEntry

	// Set by VerifyManifest / InspectManifest from the protected header;
	// ignored by SignManifest (the signer determines them).
	Alg   string
	KeyID string
}

// Lookup finds the entry for name by binary search.
func (m *Manifest) Lookup(name string) (ManifestEntry, bool) {
	i, ok := slices.BinarySearchFunc(m.Entries, name, func(e ManifestEntry, n string) int { return strings.Compare(e.Name, n) })
	if !ok {
		return ManifestEntry{}, false
	}
	return m.Entries[i], true
}

// HeaderDigest is the digest a manifest entry holds for an object whose
// header is hdr (header[0:H], MAC included).
func HeaderDigest(hdr []byte) [32]byte { return sha256.Sum256(hdr) }

// SortEntries sorts entries by name; it reports an error on a duplicate.
func SortEntries(es []ManifestEntry) error {
	slices.SortFunc(es, func(a, b ManifestEntry) int { return strings.Compare(a.Name, b.Name) })
	for i := 1; i < len(es); i++ {
		if es[i].Name == es[i-1].Name {
			return fmt.Errorf("%w: duplicate entry %q", ErrManifestMalformed, es[i].Name)
		}
	}
	return nil
}

// CheckDatasetID validates a dataset id (1-128 of A-Z a-z 0-9 . _ -).
func CheckDatasetID(id string) error {
	if len(id) == 0 || len(id) > MaxDatasetIDLen {
		return fmt.Errorf("%w: dataset id must be 1-%d characters", ErrManifestMalformed, MaxDatasetIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: dataset id %q: only A-Z a-z 0-9 . _ - are allowed", ErrManifestMalformed, id)
		}
	}
	return nil
}

// CheckEntryName validates a listed name (docs/format.md 12.1).
func CheckEntryName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("%w: entry name must be 1-%d bytes", ErrManifestMalformed, MaxNameLen)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%w: entry name is not UTF-8", ErrManifestMalformed)
	}
	for _, c := range name {
		if forbiddenRune(c) {
			return fmt.Errorf("%w: entry name %q has a forbidden character %U", ErrManifestMalformed, name, c)
		}
	}
	if strings.HasPrefix(name, ManifestPrefix) {
		return fmt.Errorf("%w: entry name %q is under the reserved %s", ErrManifestMalformed, name, ManifestPrefix)
	}
	for seg := range strings.SplitSeq(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: entry name %q has an empty, . or .. segment", ErrManifestMalformed, name)
		}
	}
	return nil
}

// ---------------------------------------------------------------- keys

// JWKThumbprint is the RFC 7638 SHA-256 thumbprint (base64url) of an RSA,
// P-256 or P-384 public key: the manifest's kid.
func JWKThumbprint(pub crypto.PublicKey) (string, error) {
	var canon string
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		crv, size := curveName(k.Curve)
		if crv == "" {
			return "", fmt.Errorf("%w: EC curve %s", ErrKeyType, k.Curve.Params().Name)
		}
		pt, err := k.Bytes()
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrKeyType, err)
		}
		x, y := pt[1:1+size], pt[1+size:]
		canon = `{"crv":"` + crv + `","kty":"EC","x":"` + b64(x) + `","y":"` + b64(y) + `"}`
	case *rsa.PublicKey:
		e := big.NewInt(int64(k.E)).Bytes()
		canon = `{"e":"` + b64(e) + `","kty":"RSA","n":"` + b64(k.N.Bytes()) + `"}`
	default:
		return "", fmt.Errorf("%w: %T cannot sign manifests", ErrKeyType, pub)
	}
	sum := sha256.Sum256([]byte(canon))
	return b64(sum[:]), nil
}

func curveName(c elliptic.Curve) (string, int) {
	switch c {
	case elliptic.P256():
		return "P-256", 32
	case elliptic.P384():
		return "P-384", 48
	}
	return "", 0
}

// AlgForKey is the manifest signature algorithm for a public key: ES256 for
// P-256, ES384 for P-384, PS256 for RSA 2048-4096 bits.
func AlgForKey(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return AlgES256, nil
		case elliptic.P384():
			return AlgES384, nil
		}
		return "", fmt.Errorf("%w: EC curve %s cannot sign manifests", ErrKeyType, k.Curve.Params().Name)
	case *rsa.PublicKey:
		if b := k.N.BitLen(); b < 2048 || b > 4096 {
			return "", fmt.Errorf("%w: RSA-%d (2048-4096 bits can sign manifests)", ErrKeyType, b)
		}
		return AlgPS256, nil
	}
	return "", fmt.Errorf("%w: %T cannot sign manifests", ErrKeyType, pub)
}

func algHash(alg string) crypto.Hash {
	if alg == AlgES384 {
		return crypto.SHA384
	}
	return crypto.SHA256
}

// ManifestDigest hashes a JWS signing input with alg's hash.
func ManifestDigest(alg string, signingInput []byte) []byte {
	if alg == AlgES384 {
		d := sha512.Sum384(signingInput)
		return d[:]
	}
	d := sha256.Sum256(signingInput)
	return d[:]
}

// ManifestSigner produces JWS signatures. SignDigest receives the digest of
// the signing input (ManifestDigest) and returns the signature in JWS form:
// R || S for ES256/ES384, the RSASSA-PSS signature (salt length 32) for
// PS256. A Key Vault key's Sign operation returns exactly that.
type ManifestSigner interface {
	Alg() string
	Public() crypto.PublicKey
	SignDigest(digest []byte) ([]byte, error)
}

// LocalSigner signs with a private key held in process memory.
type LocalSigner struct {
	key crypto.Signer
	alg string
}

// NewLocalSigner wraps an *ecdsa.PrivateKey (P-256, P-384) or
// *rsa.PrivateKey (2048-4096 bits).
func NewLocalSigner(key crypto.Signer) (*LocalSigner, error) {
	alg, err := AlgForKey(key.Public())
	if err != nil {
		return nil, err
	}
	return &LocalSigner{key: key, alg: alg}, nil
}

func (s *LocalSigner) Alg() string              { return s.alg }
func (s *LocalSigner) Public() crypto.PublicKey { return s.key.Public() }

func (s *LocalSigner) SignDigest(digest []byte) ([]byte, error) {
	switch k := s.key.(type) {
	case *ecdsa.PrivateKey:
		r, ss, err := ecdsa.Sign(rand.Reader, k, digest)
		if err != nil {
			return nil, err
		}
		_, size := curveName(k.Curve)
		out := make([]byte, 2*size)
		r.FillBytes(out[:size])
		ss.FillBytes(out[size:])
		return out, nil
	case *rsa.PrivateKey:
		return rsa.SignPSS(rand.Reader, k, crypto.SHA256, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	}
	return nil, fmt.Errorf("%w: %T", ErrKeyType, s.key)
}

// ManifestVerifier holds the pinned signer public keys of a dataset.
type ManifestVerifier struct {
	keys map[string]crypto.PublicKey // by thumbprint
}

// NewManifestVerifier pins keys (RSA 2048-4096, P-256, P-384 public keys).
func NewManifestVerifier(keys ...crypto.PublicKey) (*ManifestVerifier, error) {
	v := &ManifestVerifier{keys: make(map[string]crypto.PublicKey, len(keys))}
	for _, k := range keys {
		if _, err := AlgForKey(k); err != nil {
			return nil, err
		}
		kid, err := JWKThumbprint(k)
		if err != nil {
			return nil, err
		}
		v.keys[kid] = k
	}
	return v, nil
}

// KeyIDs lists the pinned keys' thumbprints, sorted.
func (v *ManifestVerifier) KeyIDs() []string {
	ids := make([]string, 0, len(v.keys))
	for id := range v.keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// ---------------------------------------------------------------- encoding

// b64e is strict: padding bits must be zero, so each part has one encoding.
var b64e = base64.RawURLEncoding.Strict()

func b64(b []byte) string { return b64e.EncodeToString(b) }

// EncodeManifestPayload is the canonical JSON payload of m (12.1). It checks
// every rule a reader checks.
func EncodeManifestPayload(m *Manifest) ([]byte, error) {
	if err := checkManifest(m); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Grow(96 + len(m.Entries)*(100))
	buf.WriteString(`{"v":1,"dataset":`)
	writeJSONString(&buf, m.Dataset)
	buf.WriteString(`,"epoch":`)
	buf.WriteString(strconv.FormatUint(m.Epoch, 10))
	buf.WriteString(`,"created":"`)
	buf.WriteString(m.Created.UTC().Format(time.RFC3339))
	buf.WriteString(`","entries":[`)
	var hx [64]byte
	for i, e := range m.Entries {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString(`{"name":`)
		writeJSONString(&buf, e.Name)
		buf.WriteString(`,"size":`)
		buf.WriteString(strconv.FormatInt(e.Size, 10))
		buf.WriteString(`,"sha256":"`)
		hex.Encode(hx[:], e.HeaderSHA256[:])
		buf.Write(hx[:])
		buf.WriteString(`"}`)
	}
	buf.WriteString("]}")
	return buf.Bytes(), nil
}

func writeJSONString(buf *bytes.Buffer, s string) {
	simple := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' || c >= 0x80 {
			simple = false
			break
		}
	}
	if simple {
		buf.WriteByte('"')
		buf.WriteString(s)
		buf.WriteByte('"')
		return
	}
	b, _ := json.Marshal(s)
	buf.Write(b)
}

func checkManifest(m *Manifest) error {
	if err := CheckDatasetID(m.Dataset); err != nil {
		return err
	}
	if m.Epoch < 1 || m.Epoch > MaxManifestEpoch {
		return fmt.Errorf("%w: epoch %d out of range", ErrManifestMalformed, m.Epoch)
	}
	if m.Created.IsZero() || m.Created.Nanosecond() != 0 || m.Created.Year() < 1 || m.Created.Year() > 9999 {
		return fmt.Errorf("%w: creation time must be set, in whole seconds", ErrManifestMalformed)
	}
	if len(m.Entries) > MaxManifestEntries {
		return fmt.Errorf("%w: %d entries (at most %d)", ErrManifestMalformed, len(m.Entries), MaxManifestEntries)
	}
	for i, e := range m.Entries {
		if err := CheckEntryName(e.Name); err != nil {
			return err
		}
		if i > 0 && m.Entries[i-1].Name >= e.Name {
			return fmt.Errorf("%w: entries not in strictly increasing name order at %q", ErrManifestMalformed, e.Name)
		}
		if e.Size < 0 || e.Size > MaxManifestEpoch {
			return fmt.Errorf("%w: entry %q: size %d out of range", ErrManifestMalformed, e.Name, e.Size)
		}
	}
	return nil
}

type jwsHeader struct {
	Alg string `json:"alg"`
	Typ string `json:"typ"`
	Kid string `json:"kid"`
}

// SignManifest encodes and signs m. m.Alg and m.KeyID are set from the
// signer.
func SignManifest(m *Manifest, s ManifestSigner) ([]byte, error) {
	payload, err := EncodeManifestPayload(m)
	if err != nil {
		return nil, err
	}
	alg := s.Alg()
	pub := s.Public()
	if want, err := AlgForKey(pub); err != nil {
		return nil, err
	} else if want != alg {
		return nil, fmt.Errorf("%w: signer algorithm %s does not fit its key (%s)", ErrKeyType, alg, want)
	}
	kid, err := JWKThumbprint(pub)
	if err != nil {
		return nil, err
	}
	hdr, _ := json.Marshal(jwsHeader{Alg: alg, Typ: manifestTyp, Kid: kid})
	out := make([]byte, 0, b64e.EncodedLen(len(hdr))+b64e.EncodedLen(len(payload))+2+b64e.EncodedLen(512))
	out = b64e.AppendEncode(out, hdr)
	out = append(out, '.')
	out = b64e.AppendEncode(out, payload)
	sig, err := s.SignDigest(ManifestDigest(alg, out))
	if err != nil {
		return nil, fmt.Errorf("signing the manifest: %w", err)
	}
	// Check the signature before anything is published: a remote signer
	// (Key Vault) that signs with another key or hash is caught here.
	if err := verifySig(alg, pub, out, sig); err != nil {
		return nil, fmt.Errorf("the signer's signature does not verify with its own public key: %w", err)
	}
	out = append(out, '.')
	out = b64e.AppendEncode(out, sig)
	m.Alg, m.KeyID = alg, kid
	return out, nil
}

func verifySig(alg string, pub crypto.PublicKey, signingInput, sig []byte) error {
	digest := ManifestDigest(alg, signingInput)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		_, size := curveName(k.Curve)
		if len(sig) != 2*size {
			return ErrManifestSignature
		}
		r := new(big.Int).SetBytes(sig[:size])
		s := new(big.Int).SetBytes(sig[size:])
		if !ecdsa.Verify(k, digest, r, s) {
			return ErrManifestSignature
		}
		return nil
	case *rsa.PublicKey:
		if err := rsa.VerifyPSS(k, algHash(alg), digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}); err != nil {
			return ErrManifestSignature
		}
		return nil
	}
	return ErrManifestSigner
}

// splitJWS checks step 1 of 12.2 and returns the three parts (still encoded)
// and the decoded protected header.
func splitJWS(b []byte) (hdr jwsHeader, signingInput, payloadB64, sigB64 []byte, err error) {
	if len(b) > MaxManifestSize {
		return hdr, nil, nil, nil, fmt.Errorf("%w: %d bytes (at most %d)", ErrManifestMalformed, len(b), MaxManifestSize)
	}
	d1 := bytes.IndexByte(b, '.')
	if d1 <= 0 {
		return hdr, nil, nil, nil, fmt.Errorf("%w: not a compact JWS", ErrManifestMalformed)
	}
	d2 := bytes.IndexByte(b[d1+1:], '.')
	if d2 <= 0 {
		return hdr, nil, nil, nil, fmt.Errorf("%w: not a compact JWS", ErrManifestMalformed)
	}
	d2 += d1 + 1
	if d2+1 >= len(b) || bytes.IndexByte(b[d2+1:], '.') >= 0 {
		return hdr, nil, nil, nil, fmt.Errorf("%w: not a compact JWS", ErrManifestMalformed)
	}
	hraw, err := b64e.DecodeString(string(b[:d1]))
	if err != nil || len(hraw) > 4096 {
		return hdr, nil, nil, nil, fmt.Errorf("%w: protected header is not base64url", ErrManifestMalformed)
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(hraw, &members); err != nil || members == nil {
		return hdr, nil, nil, nil, fmt.Errorf("%w: protected header is not a JSON object", ErrManifestMalformed)
	}
	for _, refused := range []string{"crit", "jku", "jwk", "x5u", "x5c", "b64"} {
		if _, ok := members[refused]; ok {
			return hdr, nil, nil, nil, fmt.Errorf("%w: protected header member %q is refused", ErrManifestMalformed, refused)
		}
	}
	for name, dst := range map[string]*string{"alg": &hdr.Alg, "typ": &hdr.Typ, "kid": &hdr.Kid} {
		raw, ok := members[name]
		if !ok || json.Unmarshal(raw, dst) != nil {
			return hdr, nil, nil, nil, fmt.Errorf("%w: protected header needs a string %q", ErrManifestMalformed, name)
		}
	}
	switch hdr.Alg {
	case AlgES256, AlgES384, AlgPS256:
	default:
		return hdr, nil, nil, nil, fmt.Errorf("%w: algorithm %q (ES256, ES384 or PS256)", ErrManifestMalformed, hdr.Alg)
	}
	if hdr.Typ != manifestTyp {
		return hdr, nil, nil, nil, fmt.Errorf("%w: typ %q, want %q", ErrManifestMalformed, hdr.Typ, manifestTyp)
	}
	if hdr.Kid == "" {
		return hdr, nil, nil, nil, fmt.Errorf("%w: empty kid", ErrManifestMalformed)
	}
	return hdr, b[:d2], b[d1+1 : d2], b[d2+1:], nil
}

// VerifyManifest checks a manifest in the order of docs/format.md 12.2 and
// returns its payload. It applies no reader policy (dataset id, epoch,
// age): that is the caller's.
func VerifyManifest(b []byte, v *ManifestVerifier) (*Manifest, error) {
	hdr, signingInput, payloadB64, sigB64, err := splitJWS(b)
	if err != nil {
		return nil, err
	}
	pub, ok := v.keys[hdr.Kid]
	if !ok {
		return nil, fmt.Errorf("%w (kid %s)", ErrManifestSigner, hdr.Kid)
	}
	if want, _ := AlgForKey(pub); want != hdr.Alg {
		return nil, fmt.Errorf("%w: kid %s is a %s key, the manifest says %s", ErrManifestSigner, hdr.Kid, want, hdr.Alg)
	}
	sig, err := b64e.DecodeString(string(sigB64))
	if err != nil {
		return nil, fmt.Errorf("%w: signature is not base64url", ErrManifestSignature)
	}
	if err := verifySig(hdr.Alg, pub, signingInput, sig); err != nil {
		return nil, fmt.Errorf("%w (kid %s)", err, hdr.Kid)
	}
	m, err := decodePayload(payloadB64)
	if err != nil {
		return nil, err
	}
	m.Alg, m.KeyID = hdr.Alg, hdr.Kid
	return m, nil
}

// InspectManifest decodes a manifest WITHOUT verifying its signature, for
// display (`skrfs manifest show`). Its content is a claim, not a fact.
func InspectManifest(b []byte) (*Manifest, error) {
	hdr, _, payloadB64, _, err := splitJWS(b)
	if err != nil {
		return nil, err
	}
	m, err := decodePayload(payloadB64)
	if err != nil {
		return nil, err
	}
	m.Alg, m.KeyID = hdr.Alg, hdr.Kid
	return m, nil
}

func decodePayload(payloadB64 []byte) (*Manifest, error) {
	raw := make([]byte, b64e.DecodedLen(len(payloadB64)))
	n, err := b64e.Decode(raw, payloadB64)
	if err != nil {
		return nil, fmt.Errorf("%w: payload is not base64url", ErrManifestMalformed)
	}
	m, err := decodePayloadJSON(raw[:n])
	if err != nil {
		return nil, err
	}
	if err := checkManifest(m); err != nil {
		return nil, err
	}
	return m, nil
}

// parseJSONUint accepts a JSON integer 0 <= x <= 2^53-1 written in plain
// decimal (no sign, fraction, exponent or leading zero).
func parseJSONUint(s []byte) (uint64, error) {
	if len(s) == 0 || len(s) > 16 || (len(s) > 1 && s[0] == '0') {
		return 0, ErrManifestMalformed
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, ErrManifestMalformed
		}
	}
	v, err := strconv.ParseUint(string(s), 10, 64)
	if err != nil || v > MaxManifestEpoch {
		return 0, ErrManifestMalformed
	}
	return v, nil
}

func parseCreated(s string) (time.Time, error) {
	// 2006-01-02T15:04:05Z exactly: 20 bytes, UTC, whole seconds.
	t, err := time.Parse(time.RFC3339, s)
	if err != nil || len(s) != 20 || s[19] != 'Z' || t.Format(time.RFC3339) != s {
		return time.Time{}, fmt.Errorf("%w: created %q must be an RFC 3339 UTC time in whole seconds", ErrManifestMalformed, s)
	}
	return t.UTC(), nil
}
