// Package kafkademo is what the producer and the consumer of the skrfs
// Kafka example share: each message is encrypted on its own with the RSA
// public key of a Key Vault key (RSA-OAEP with SHA-256, which Key Vault
// calls RSA-OAEP-256) and carried base64-encoded, and keys are read from
// PEM files. The consumer holds no Key Vault or attestation code: inside
// the TEE it reads the private key from skrfs's keys/ directory like any
// other file.
package kafkademo

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
)

// ErrKey is wrapped by every error about an unusable key file.
var ErrKey = errors.New("unusable key")

// ErrMessage is wrapped by every error about a message that cannot be
// encrypted or decrypted.
var ErrMessage = errors.New("bad message")

// ParsePublicKey reads an RSA public key from PEM: SubjectPublicKeyInfo
// ("PUBLIC KEY", as skrfs's keys/<name>.pub.pem and `az keyvault key
// download --encoding PEM` write it) or PKCS #1 ("RSA PUBLIC KEY").
func ParsePublicKey(b []byte) (*rsa.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%w: no PEM block", ErrKey)
	}
	switch blk.Type {
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrKey, err)
		}
		pub, ok := k.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("%w: a %T, not an RSA key", ErrKey, k)
		}
		return pub, nil
	case "RSA PUBLIC KEY":
		pub, err := x509.ParsePKCS1PublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrKey, err)
		}
		return pub, nil
	}
	return nil, fmt.Errorf("%w: PEM block %q is not a public key", ErrKey, blk.Type)
}

// ParsePrivateKey reads an RSA private key from PEM: PKCS #8 ("PRIVATE
// KEY", skrfs's keys/<name>) or PKCS #1 ("RSA PRIVATE KEY").
func ParsePrivateKey(b []byte) (*rsa.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%w: no PEM block", ErrKey)
	}
	switch blk.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrKey, err)
		}
		priv, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%w: a %T, not an RSA key", ErrKey, k)
		}
		return priv, nil
	case "RSA PRIVATE KEY":
		priv, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrKey, err)
		}
		return priv, nil
	}
	return nil, fmt.Errorf("%w: PEM block %q is not a private key", ErrKey, blk.Type)
}

// Seal encrypts one message for pub and returns the base64 text carried
// in Kafka. A message can hold at most pub.Size()-66 bytes (318 for an RSA
// 3072 key).
func Seal(pub *rsa.PublicKey, plaintext []byte) (string, error) {
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, plaintext, nil)
	if err != nil {
		return "", fmt.Errorf("%w: %d bytes: %v", ErrMessage, len(plaintext), err)
	}
	return base64.StdEncoding.EncodeToString(ct), nil
}

// Open decrypts a message written by Seal.
func Open(priv *rsa.PrivateKey, value string) ([]byte, error) {
	ct, err := base64.StdEncoding.DecodeString(value)
	if err != nil {
		return nil, fmt.Errorf("%w: not base64: %v", ErrMessage, err)
	}
	pt, err := rsa.DecryptOAEP(sha256.New(), nil, priv, ct, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMessage, err)
	}
	return pt, nil
}
