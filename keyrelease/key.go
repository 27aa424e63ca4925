package keyrelease

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

// KeyType is the JWK key type of a key.
type KeyType string

// Key types.
const (
	KeyTypeOct KeyType = "oct"
	KeyTypeRSA KeyType = "RSA"
	KeyTypeEC  KeyType = "EC"
)

// Key is released or loaded key material. Exactly one of the material
// fields is set: Oct for symmetric keys; Private (and its public part) for
// RSA and EC private keys; Public alone for a public key, which can seal
// objects but not open them.
type Key struct {
	Ref  KeyRef // zero if the key was loaded from a file without a reference
	Type KeyType
	// Oct is the raw bytes of a symmetric key.
	Oct []byte
	// Private is *rsa.PrivateKey or *ecdsa.PrivateKey.
	Private any
	// Public is *rsa.PublicKey or *ecdsa.PublicKey (nil for oct).
	Public any
	// Ops are the key's permitted operations (JWK key_ops: encrypt,
	// decrypt, sign, verify, wrapKey, unwrapKey, ...) as Key Vault puts them
	// into the release payload, or as a parsed JWK lists them; nil when not
	// known. The JWK view carries them.
	Ops []string
	// Batch, when set, holds the unwrapped batch keys of version 2
	// objects (docs/format.md 11.3) opened with this key. It belongs to
	// the cached copy of the key it came with and is wiped with it (at
	// TTL expiry, on a denied re-release, at Close); Wipe of a clone only
	// drops the reference. It satisfies crypto.BatchKeyCache.
	Batch BatchKeys
}

// keyOpRE is what a key operation looks like (Key Vault's and RFC 7517's
// are short camelCase words); maxKeyOps bounds how many a key may carry.
var keyOpRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]{0,31}$`)

const maxKeyOps = 16

// CheckOps reports whether ops is a plausible key_ops list: at most 16
// short words.
func CheckOps(ops []string) error {
	if len(ops) > maxKeyOps {
		return fmt.Errorf("%w: %d key_ops (at most %d)", ErrKeyFormat, len(ops), maxKeyOps)
	}
	for _, op := range ops {
		if !keyOpRE.MatchString(op) {
			return fmt.Errorf("%w: key_ops member %q is not an operation name", ErrKeyFormat, op)
		}
	}
	return nil
}

// privateClones counts clones of RSA and EC private keys (an RSA clone
// re-validates the key, which costs milliseconds), so that tests can guard
// the open path's cost with a counter.
var privateClones atomic.Int64

// PrivateKeyClones returns the number of private-key clones made so far.
func PrivateKeyClones() int64 { return privateClones.Load() }

// BatchKeys is a store of unwrapped batch keys tied to one released key
// (the method set of crypto.BatchKeyCache).
type BatchKeys interface {
	// UseBatchKey calls use with the batch key cached under id and
	// reports true, or reports false when none is cached.
	UseBatchKey(id [32]byte, use func(bk []byte)) bool
	// StoreBatchKey copies bk into the store under id.
	StoreBatchKey(id [32]byte, bk []byte)
}

// KEK returns the value the object format uses as key-encryption key: the
// private key (or oct bytes) when present, else the public key.
func (k *Key) KEK() any {
	switch {
	case k.Oct != nil:
		return k.Oct
	case k.Private != nil:
		return k.Private
	}
	return k.Public
}

// IsPrivate reports whether the key can open objects.
func (k *Key) IsPrivate() bool { return k.Oct != nil || k.Private != nil }

// Bits returns the key size in bits.
func (k *Key) Bits() int {
	switch pub := k.Public.(type) {
	case *rsa.PublicKey:
		return pub.N.BitLen()
	case *ecdsa.PublicKey:
		return pub.Curve.Params().BitSize
	}
	return 8 * len(k.Oct)
}

// Wipe zeroes the key material held by k as far as Go allows: oct bytes,
// and the big integers of RSA and EC private keys (the standard library
// may keep precomputed copies that cannot be reached).
func (k *Key) Wipe() {
	clear(k.Oct)
	switch p := k.Private.(type) {
	case *rsa.PrivateKey:
		wipeInt(p.D)
		for _, q := range p.Primes {
			wipeInt(q)
		}
		wipeInt(p.Precomputed.Dp)
		wipeInt(p.Precomputed.Dq)
		wipeInt(p.Precomputed.Qinv)
	case *ecdsa.PrivateKey:
		// Zeroing the scalar needs the deprecated raw field: there is no
		// other way to reach it (the library's internal copy stays).
		//lint:ignore SA1019 wiping requires the raw scalar
		wipeInt(p.D)
	}
	k.Oct, k.Private, k.Batch = nil, nil, nil
}

func wipeInt(i *big.Int) {
	if i != nil {
		clear(i.Bits())
		i.SetInt64(0)
	}
}

// ParseKey parses key material in any of the forms skrfs accepts:
//   - PEM: PKCS#8 "PRIVATE KEY", PKCS#1 "RSA PRIVATE KEY", SEC 1
//     "EC PRIVATE KEY", PKIX "PUBLIC KEY", PKCS#1 "RSA PUBLIC KEY";
//   - a JWK (kty oct, RSA, EC, and Key Vault's -HSM variants), a JWK Set
//     holding exactly one key, or Key Vault's key bundle {"key": {...}};
//   - exactly 32 raw bytes: an AES-256 oct key.
//
// A JWK "kid" that is a Key Vault key URL becomes the key's Ref.
func ParseKey(data []byte) (*Key, error) {
	trimmed := bytes.TrimSpace(data)
	switch {
	case bytes.HasPrefix(trimmed, []byte("-----BEGIN ")):
		return parsePEM(trimmed)
	case len(data) == 32:
		return &Key{Type: KeyTypeOct, Oct: bytes.Clone(data)}, nil
	case bytes.HasPrefix(trimmed, []byte("{")):
		return parseJWK(trimmed)
	}
	return nil, fmt.Errorf("%w: %d bytes that are neither PEM, JWK, nor a raw 32-byte AES key", ErrKeyFormat, len(data))
}

func parsePEM(data []byte) (*Key, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%w: invalid PEM", ErrKeyFormat)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: more than one PEM block", ErrKeyFormat)
	}
	var parsed any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		parsed, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		parsed, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		parsed, err = x509.ParseECPrivateKey(block.Bytes)
	case "PUBLIC KEY":
		parsed, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		parsed, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%w: PEM block %q", ErrKeyFormat, block.Type)
	}
	clear(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeyFormat, err)
	}
	return FromCrypto(parsed)
}

// FromCrypto wraps a standard library key value in a Key.
func FromCrypto(v any) (*Key, error) {
	switch k := v.(type) {
	case *rsa.PrivateKey:
		return &Key{Type: KeyTypeRSA, Private: k, Public: &k.PublicKey}, nil
	case *rsa.PublicKey:
		return &Key{Type: KeyTypeRSA, Public: k}, nil
	case *ecdsa.PrivateKey:
		if err := checkPoint(&k.PublicKey); err != nil {
			return nil, err
		}
		return &Key{Type: KeyTypeEC, Private: k, Public: &k.PublicKey}, nil
	case *ecdsa.PublicKey:
		if err := checkPoint(k); err != nil {
			return nil, err
		}
		return &Key{Type: KeyTypeEC, Public: k}, nil
	case *ecdh.PublicKey, *ecdh.PrivateKey:
		return nil, fmt.Errorf("%w: X25519/ECDH-only keys are not supported; use EC P-256 or P-384", ErrKeyFormat)
	case []byte:
		return &Key{Type: KeyTypeOct, Oct: k}, nil
	}
	return nil, fmt.Errorf("%w: unsupported key type %T", ErrKeyFormat, v)
}

// checkPoint refuses an EC key on another curve, or whose public point is
// not on its curve (a coordinate out of range, say: renderers such as jwx
// panic on those).
func checkPoint(pub *ecdsa.PublicKey) error {
	if err := checkCurve(pub.Curve); err != nil {
		return err
	}
	if pub.X == nil || pub.Y == nil {
		return fmt.Errorf("%w: EC key without a public point", ErrKeyFormat)
	}
	if _, err := pub.ECDH(); err != nil {
		return fmt.Errorf("%w: EC public point: %v", ErrKeyFormat, err)
	}
	return nil
}

func checkCurve(c elliptic.Curve) error {
	if c != elliptic.P256() && c != elliptic.P384() {
		return fmt.Errorf("%w: EC curve %s (want P-256 or P-384)", ErrKeyFormat, c.Params().Name)
	}
	return nil
}

func parseJWK(data []byte) (*Key, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("%w: JSON: %v", ErrKeyFormat, err)
	}
	switch {
	case probe["keys"] != nil: // JWK Set
		var set struct{ Keys []json.RawMessage }
		if err := json.Unmarshal(data, &set); err != nil || len(set.Keys) != 1 {
			return nil, fmt.Errorf("%w: a JWK Set must hold exactly one key", ErrKeyFormat)
		}
		return parseJWK(set.Keys[0])
	case probe["key"] != nil && probe["kty"] == nil: // Key Vault key bundle
		return parseJWK(probe["key"])
	}
	// key_ops are kept on the Key; jwx refuses operations outside RFC
	// 7517's list, and Key Vault has more (import, export).
	var ops []string
	if raw, ok := probe["key_ops"]; ok {
		if err := json.Unmarshal(raw, &ops); err != nil {
			return nil, fmt.Errorf("%w: JWK key_ops: %v", ErrKeyFormat, err)
		}
		if err := CheckOps(ops); err != nil {
			return nil, err
		}
		delete(probe, "key_ops")
		data, _ = json.Marshal(probe)
	}
	// Key Vault reports HSM-backed keys as "RSA-HSM", "EC-HSM", "oct-HSM".
	var kty string
	_ = json.Unmarshal(probe["kty"], &kty)
	if base, ok := strings.CutSuffix(kty, "-HSM"); ok {
		probe["kty"], _ = json.Marshal(base)
		data, _ = json.Marshal(probe)
	}
	jk, err := jwk.ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("%w: JWK: %v", ErrKeyFormat, err)
	}
	var raw any
	if err := jk.Raw(&raw); err != nil {
		return nil, fmt.Errorf("%w: JWK: %v", ErrKeyFormat, err)
	}
	k, err := FromCrypto(raw)
	if err != nil {
		return nil, err
	}
	if ref, err := ParseKeyRef(jk.KeyID()); err == nil {
		k.Ref = ref
	}
	k.Ops = ops
	return k, nil
}

// Clone returns a deep copy of k that the caller owns and must Wipe. The
// key cache hands out clones so that evicting (and wiping) its own copy
// never pulls key material from under a reader.
func (k *Key) Clone() *Key {
	if k.Private != nil {
		privateClones.Add(1)
	}
	c := &Key{Ref: k.Ref, Type: k.Type, Public: k.Public, Ops: slices.Clone(k.Ops)}
	if k.Oct != nil {
		c.Oct = bytes.Clone(k.Oct)
	}
	switch p := k.Private.(type) {
	case *rsa.PrivateKey:
		q := &rsa.PrivateKey{PublicKey: p.PublicKey, D: new(big.Int).Set(p.D)}
		for _, pr := range p.Primes {
			q.Primes = append(q.Primes, new(big.Int).Set(pr))
		}
		q.Precompute()
		c.Private, c.Public = q, &q.PublicKey
	case *ecdsa.PrivateKey:
		if b, err := p.Bytes(); err == nil {
			if q, err := ecdsa.ParseRawPrivateKey(p.Curve, b); err == nil {
				c.Private, c.Public = q, &q.PublicKey
			}
			clear(b)
		}
	}
	return c
}
