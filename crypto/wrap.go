package crypto

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hkdf"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/skrfs/skrfs/crypto/keywrap"
)

// Key-encryption keys are ordinary Go key values (docs/format.md section 3):
//
//	sealing (public part suffices)   opening (private key needed)
//	*rsa.PublicKey, *rsa.PrivateKey  *rsa.PrivateKey       RSA-OAEP-256, 2048-4096 bit
//	[]byte of 32 bytes               []byte of 32 bytes    A256KW
//	*ecdsa.PublicKey/PrivateKey,     *ecdsa.PrivateKey,    ECDH-ES-P256/P384+A256KW
//	*ecdh.PublicKey/PrivateKey       *ecdh.PrivateKey

const (
	ecdhInfo   = "skrfs/v1 ecdh-es a256kw"
	ecdhInfoV2 = "skrfs/v2 ecdh-es a256kw"
)

// privateKeyOps counts RSA and ECDH private-key operations made to unwrap
// keys, so that tests can guard "one private-key operation per batch" with
// a counter instead of a timer.
var privateKeyOps atomic.Int64

// PrivateKeyOps returns the number of RSA-OAEP decryptions and ECDH
// private-key operations this process has made to unwrap object keys.
func PrivateKeyOps() int64 { return privateKeyOps.Load() }

// wrapDEK wraps dek for kek (version 1) and returns the algorithm used.
func wrapDEK(rnd io.Reader, kek any, dek []byte) (WrapAlg, []byte, error) {
	return wrapKey(rnd, kek, dek, ecdhInfo)
}

// wrapKey wraps a 32-byte key for kek with the ECDH info string info.
func wrapKey(rnd io.Reader, kek any, dek []byte, info string) (WrapAlg, []byte, error) {
	switch k := kek.(type) {
	case *rsa.PrivateKey:
		return wrapKey(rnd, &k.PublicKey, dek, info)
	case *rsa.PublicKey:
		if err := checkRSASize(k.N.BitLen()); err != nil {
			return 0, nil, err
		}
		w, err := rsa.EncryptOAEP(sha256.New(), rnd, k, dek, nil)
		return WrapRSAOAEP256, w, err
	case []byte:
		if len(k) != 32 {
			return 0, nil, fmt.Errorf("%w: oct key of %d bytes, want 32 (AES-256)", ErrKeyType, len(k))
		}
		w, err := keywrap.Wrap(k, dek)
		return WrapA256KW, w, err
	case *ecdsa.PrivateKey:
		return wrapKey(rnd, &k.PublicKey, dek, info)
	case *ecdsa.PublicKey:
		pub, err := k.ECDH()
		if err != nil {
			return 0, nil, fmt.Errorf("%w: %v", ErrKeyType, err)
		}
		return wrapKey(rnd, pub, dek, info)
	case *ecdh.PrivateKey:
		return wrapKey(rnd, k.PublicKey(), dek, info)
	case *ecdh.PublicKey:
		alg, err := ecdhAlg(k.Curve())
		if err != nil {
			return 0, nil, err
		}
		eph, err := k.Curve().GenerateKey(rnd)
		if err != nil {
			return 0, nil, err
		}
		kek2, err := ecdhKEK(eph, k, eph.PublicKey().Bytes(), k.Bytes(), info)
		if err != nil {
			return 0, nil, err
		}
		defer clear(kek2)
		w, err := keywrap.Wrap(kek2, dek)
		if err != nil {
			return 0, nil, err
		}
		return alg, append(eph.PublicKey().Bytes(), w...), nil
	case nil:
		return 0, nil, fmt.Errorf("%w: no key", ErrKeyType)
	}
	return 0, nil, fmt.Errorf("%w: %T", ErrKeyType, kek)
}

// unwrapDEK recovers the data-encryption key of a version 1 header h with kek.
func unwrapDEK(h *Header, kek any) ([]byte, error) {
	return unwrapKey(h.Wrap, h.WrappedDEK, kek, ecdhInfo)
}

// unwrapKey recovers a 32-byte key wrapped with alg for kek.
func unwrapKey(alg WrapAlg, wrapped []byte, kek any, info string) ([]byte, error) {
	var dek []byte
	var err error
	switch k := kek.(type) {
	case *rsa.PrivateKey:
		if alg != WrapRSAOAEP256 {
			return nil, mismatch(alg, "an RSA key")
		}
		if len(wrapped) != k.Size() {
			return nil, fmt.Errorf("%w: wrapped key of %d bytes for a %d-bit RSA key", ErrWrongKey, len(wrapped), k.N.BitLen())
		}
		privateKeyOps.Add(1)
		dek, err = rsa.DecryptOAEP(sha256.New(), nil, k, wrapped, nil)
	case []byte:
		if alg != WrapA256KW {
			return nil, mismatch(alg, "an oct key")
		}
		if len(k) != 32 {
			return nil, fmt.Errorf("%w: oct key of %d bytes, want 32 (AES-256)", ErrKeyType, len(k))
		}
		dek, err = keywrap.Unwrap(k, wrapped)
	case *ecdsa.PrivateKey:
		priv, cerr := k.ECDH()
		if cerr != nil {
			return nil, fmt.Errorf("%w: %v", ErrKeyType, cerr)
		}
		return unwrapKey(alg, wrapped, priv, info)
	case *ecdh.PrivateKey:
		want, aerr := ecdhAlg(k.Curve())
		if aerr != nil {
			return nil, aerr
		}
		if alg != want {
			return nil, mismatch(alg, "a key on curve "+fmt.Sprint(k.Curve()))
		}
		epkLen := len(wrapped) - (DEKSize + 8)
		if epkLen <= 0 {
			return nil, fmt.Errorf("%w: wrapped key of %d bytes", ErrWrongKey, len(wrapped))
		}
		epk, perr := k.Curve().NewPublicKey(wrapped[:epkLen])
		if perr != nil {
			return nil, fmt.Errorf("%w: ephemeral public key: %v", ErrWrongKey, perr)
		}
		privateKeyOps.Add(1)
		kek2, kerr := ecdhKEK(k, epk, epk.Bytes(), k.PublicKey().Bytes(), info)
		if kerr != nil {
			return nil, fmt.Errorf("%w: %v", ErrWrongKey, kerr)
		}
		defer clear(kek2)
		dek, err = keywrap.Unwrap(kek2, wrapped[epkLen:])
	case nil:
		return nil, fmt.Errorf("%w: no key", ErrKeyType)
	default:
		return nil, fmt.Errorf("%w: %T cannot open objects (a private key is needed)", ErrKeyType, kek)
	}
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", ErrWrongKey, err)
	}
	if len(dek) != DEKSize {
		clear(dek)
		return nil, fmt.Errorf("%w: unwrapped %d bytes, want %d", ErrWrongKey, len(dek), DEKSize)
	}
	return dek, nil
}

func mismatch(alg WrapAlg, have string) error {
	return fmt.Errorf("%w: object is wrapped with %v, have %s", ErrKeyType, alg, have)
}

func checkRSASize(bits int) error {
	if bits < 2048 || bits > 4096 {
		return fmt.Errorf("%w: RSA key of %d bits, want 2048 to 4096", ErrKeyType, bits)
	}
	return nil
}

func ecdhAlg(c ecdh.Curve) (WrapAlg, error) {
	switch c {
	case ecdh.P256():
		return WrapECDHESP256KW, nil
	case ecdh.P384():
		return WrapECDHESP384KW, nil
	}
	return 0, fmt.Errorf("%w: curve %v (want P-256 or P-384)", ErrKeyType, c)
}

// ecdhKEK derives the A256KW key from the ECDH shared secret of priv and
// pub (docs/format.md section 3). The salt is always EPK || recipient
// public key, whichever side computes it.
func ecdhKEK(priv *ecdh.PrivateKey, pub *ecdh.PublicKey, epk, recipient []byte, info string) ([]byte, error) {
	z, err := priv.ECDH(pub)
	if err != nil {
		return nil, err
	}
	defer clear(z)
	salt := append(append([]byte(nil), epk...), recipient...)
	return hkdf.Key(sha256.New, z, salt, info, 32)
}

// WrappedKeyLen returns the length of the wrapped DEK that kek produces.
func WrappedKeyLen(kek any) (int, error) {
	switch k := kek.(type) {
	case *rsa.PrivateKey:
		return WrappedKeyLen(&k.PublicKey)
	case *rsa.PublicKey:
		if err := checkRSASize(k.N.BitLen()); err != nil {
			return 0, err
		}
		return k.Size(), nil
	case []byte:
		if len(k) != 32 {
			return 0, fmt.Errorf("%w: oct key of %d bytes, want 32 (AES-256)", ErrKeyType, len(k))
		}
		return DEKSize + 8, nil
	case *ecdsa.PrivateKey:
		return WrappedKeyLen(&k.PublicKey)
	case *ecdsa.PublicKey:
		pub, err := k.ECDH()
		if err != nil {
			return 0, fmt.Errorf("%w: %v", ErrKeyType, err)
		}
		return WrappedKeyLen(pub)
	case *ecdh.PrivateKey:
		return WrappedKeyLen(k.PublicKey())
	case *ecdh.PublicKey:
		if _, err := ecdhAlg(k.Curve()); err != nil {
			return 0, err
		}
		return len(k.Bytes()) + DEKSize + 8, nil
	}
	return 0, fmt.Errorf("%w: %T", ErrKeyType, kek)
}
