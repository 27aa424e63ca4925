package keyrelease

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

// Key file formats (the views under keys/ in the filesystem).
const (
	// FormatDefault is PKCS#8 PEM for RSA and EC private keys and the raw
	// bytes for oct keys: what TLS servers and most tools read.
	FormatDefault = "default"
	// FormatJWK is the JSON Web Key, private members included.
	FormatJWK = "jwk"
	// FormatPubPEM is the PKIX public key in PEM (RSA and EC only).
	FormatPubPEM = "pub.pem"
)

// ErrNoPublicKey: a public view was asked of an oct key.
var ErrNoPublicKey = errors.New("keyrelease: oct keys have no public part")

// Marshal encodes the key in format. The result holds key material: the
// caller wipes it after use.
func (k *Key) Marshal(format string) ([]byte, error) {
	switch format {
	case FormatDefault:
		if k.Oct != nil {
			return append([]byte(nil), k.Oct...), nil
		}
		if k.Private == nil {
			return nil, fmt.Errorf("%w: no private key", ErrKeyFormat)
		}
		der, err := x509.MarshalPKCS8PrivateKey(k.Private)
		if err != nil {
			return nil, err
		}
		defer clear(der)
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
	case FormatPubPEM:
		if k.Public == nil {
			return nil, ErrNoPublicKey
		}
		der, err := x509.MarshalPKIXPublicKey(k.Public)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
	case FormatJWK:
		if k.Oct != nil {
			// By hand: jwk.FromRaw would keep a copy of the raw bytes in
			// a key object that nothing wipes.
			return octJWK(k)
		}
		jk, err := jwk.FromRaw(k.KEK())
		if err != nil {
			return nil, err
		}
		if k.Ref != (KeyRef{}) {
			_ = jk.Set(jwk.KeyIDKey, k.Ref.String())
		}
		b, err := json.Marshal(jk)
		if err != nil {
			return nil, err
		}
		return appendOps(b, k.Ops)
	}
	return nil, fmt.Errorf("%w: unknown view format %q", ErrKeyFormat, format)
}

// octJWK renders a symmetric key as a JWK ({"k","kid","kty"}, as jwx
// writes it) without any raw copy of the key outside the result.
func octJWK(k *Key) ([]byte, error) {
	v := struct {
		K      string   `json:"k"`
		KeyOps []string `json:"key_ops,omitempty"`
		Kid    string   `json:"kid,omitempty"`
		Kty    string   `json:"kty"`
	}{K: base64.RawURLEncoding.EncodeToString(k.Oct), KeyOps: k.Ops, Kty: "oct"}
	if k.Ref != (KeyRef{}) {
		v.Kid = k.Ref.String()
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// appendOps adds "key_ops" to the JSON object b (which holds key material:
// it is extended in place where it can be, and wiped when it is copied) and
// a trailing newline. jwx cannot carry Key Vault's operations (import,
// export), so they are added to its output.
func appendOps(b []byte, ops []string) ([]byte, error) {
	if len(ops) == 0 {
		return append(b, '\n'), nil
	}
	end := bytes.LastIndexByte(b, '}')
	if end < 0 {
		return nil, fmt.Errorf("%w: JWK is not a JSON object", ErrKeyFormat)
	}
	list, err := json.Marshal(ops)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(b)+len(list)+16)
	out = append(out, b[:end]...)
	out = append(out, `,"key_ops":`...)
	out = append(out, list...)
	out = append(out, b[end:]...)
	clear(b)
	return append(out, '\n'), nil
}
