// Package keywrap implements the AES Key Wrap algorithm of RFC 3394 and its
// padded variant of RFC 5649 (PKCS#11 CKM_AES_KEY_WRAP_PAD), used by the
// object format (A256KW) and by Secure Key Release (CKM_RSA_AES_KEY_WRAP).
package keywrap

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
)

// ErrUnwrap is returned when the integrity check of an unwrap fails: the
// wrong key, or tampered data.
var ErrUnwrap = errors.New("keywrap: integrity check failed")

// ErrLength is returned for inputs whose length the algorithm does not allow.
var ErrLength = errors.New("keywrap: invalid input length")

var defaultIV = [8]byte{0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6}

// aivPrefix is the high half of RFC 5649's alternative initial value.
var aivPrefix = [4]byte{0xA6, 0x59, 0x59, 0xA6}

// Wrap wraps plaintext (a multiple of 8 bytes, at least 16) with the AES key
// kek per RFC 3394 section 2.2.1. The result is 8 bytes longer.
func Wrap(kek, plaintext []byte) ([]byte, error) {
	if len(plaintext) < 16 || len(plaintext)%8 != 0 {
		return nil, ErrLength
	}
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	return wrap(b, defaultIV, plaintext), nil
}

// Unwrap reverses Wrap, checking the default integrity value in constant time.
func Unwrap(kek, ciphertext []byte) ([]byte, error) {
	if len(ciphertext) < 24 || len(ciphertext)%8 != 0 {
		return nil, ErrLength
	}
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	a, p := unwrap(b, ciphertext)
	if subtle.ConstantTimeCompare(a[:], defaultIV[:]) != 1 {
		clear(p)
		return nil, ErrUnwrap
	}
	return p, nil
}

// WrapPad wraps plaintext of any length from 1 byte per RFC 5649.
func WrapPad(kek, plaintext []byte) ([]byte, error) {
	if len(plaintext) == 0 || uint64(len(plaintext)) > 0xFFFFFFFF {
		return nil, ErrLength
	}
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	var aiv [8]byte
	copy(aiv[:4], aivPrefix[:])
	binary.BigEndian.PutUint32(aiv[4:], uint32(len(plaintext)))
	padded := make([]byte, (len(plaintext)+7)/8*8)
	copy(padded, plaintext)
	defer clear(padded)
	if len(padded) == 8 {
		// One semiblock: a single AES block encryption of AIV || P.
		out := make([]byte, 16)
		copy(out, aiv[:])
		copy(out[8:], padded)
		b.Encrypt(out, out)
		return out, nil
	}
	return wrap(b, aiv, padded), nil
}

// UnwrapPad reverses WrapPad, checking the alternative initial value, the
// message length indicator and the zero padding.
func UnwrapPad(kek, ciphertext []byte) ([]byte, error) {
	if len(ciphertext) < 16 || len(ciphertext)%8 != 0 {
		return nil, ErrLength
	}
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	var a [8]byte
	var p []byte
	if len(ciphertext) == 16 {
		out := make([]byte, 16)
		b.Decrypt(out, ciphertext)
		copy(a[:], out[:8])
		p = out[8:]
	} else {
		a, p = unwrap(b, ciphertext)
	}
	mli := binary.BigEndian.Uint32(a[4:])
	n := uint64(len(p))
	ok := subtle.ConstantTimeCompare(a[:4], aivPrefix[:])
	// 8(n-1) < MLI <= 8n, with n the number of semiblocks.
	if uint64(mli) > n || uint64(mli) <= n-8 {
		ok = 0
	}
	if ok == 1 {
		var pad byte
		for _, c := range p[mli:] {
			pad |= c
		}
		ok &= subtle.ConstantTimeByteEq(pad, 0)
	}
	if ok != 1 {
		clear(p)
		return nil, ErrUnwrap
	}
	return p[:mli], nil
}

// wrap is RFC 3394 section 2.2.1 (index-based form) with initial value iv.
func wrap(b cipher.Block, iv [8]byte, plaintext []byte) []byte {
	n := len(plaintext) / 8
	out := make([]byte, 8+len(plaintext))
	copy(out[8:], plaintext)
	a := iv
	var buf [16]byte
	for j := 0; j < 6; j++ {
		for i := 1; i <= n; i++ {
			copy(buf[:8], a[:])
			copy(buf[8:], out[8*i:8*i+8])
			b.Encrypt(buf[:], buf[:])
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(a[:], binary.BigEndian.Uint64(buf[:8])^t)
			copy(out[8*i:8*i+8], buf[8:])
		}
	}
	copy(out[:8], a[:])
	clear(buf[:])
	return out
}

// unwrap is RFC 3394 section 2.2.2; it returns the recovered initial value
// and the plaintext for the caller to check.
func unwrap(b cipher.Block, ciphertext []byte) ([8]byte, []byte) {
	n := len(ciphertext)/8 - 1
	var a [8]byte
	copy(a[:], ciphertext[:8])
	p := make([]byte, 8*n)
	copy(p, ciphertext[8:])
	var buf [16]byte
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(buf[:8], binary.BigEndian.Uint64(a[:])^t)
			copy(buf[8:], p[8*(i-1):8*i])
			b.Decrypt(buf[:], buf[:])
			copy(a[:], buf[:8])
			copy(p[8*(i-1):8*i], buf[8:])
		}
	}
	clear(buf[:])
	return a, p
}
