package kafkademo

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
)

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestKeysAndMessages(t *testing.T) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(priv)
	spki, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	ecPKCS8, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecSPKI, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)

	for _, tc := range []struct {
		name string
		pem  []byte
		ok   bool
	}{
		{"SubjectPublicKeyInfo", pemOf("PUBLIC KEY", spki), true},
		{"PKCS1 public", pemOf("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&priv.PublicKey)), true},
		{"EC public", pemOf("PUBLIC KEY", ecSPKI), false},
		{"private key given as public", pemOf("PRIVATE KEY", pkcs8), false},
		{"not PEM", []byte("hello"), false},
	} {
		t.Run("public/"+tc.name, func(t *testing.T) {
			pub, err := ParsePublicKey(tc.pem)
			if (err == nil) != tc.ok || (!tc.ok && !errors.Is(err, ErrKey)) {
				t.Fatalf("err %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && !pub.Equal(&priv.PublicKey) {
				t.Fatal("wrong key")
			}
		})
	}
	for _, tc := range []struct {
		name string
		pem  []byte
		ok   bool
	}{
		{"PKCS8", pemOf("PRIVATE KEY", pkcs8), true},
		{"PKCS1", pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(priv)), true},
		{"EC PKCS8", pemOf("PRIVATE KEY", ecPKCS8), false},
		{"public key given as private", pemOf("PUBLIC KEY", spki), false},
		{"garbage in PEM", pemOf("PRIVATE KEY", []byte{1, 2, 3}), false},
		{"empty file", nil, false},
	} {
		t.Run("private/"+tc.name, func(t *testing.T) {
			k, err := ParsePrivateKey(tc.pem)
			if (err == nil) != tc.ok || (!tc.ok && !errors.Is(err, ErrKey)) {
				t.Fatalf("err %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && !k.Equal(priv) {
				t.Fatal("wrong key")
			}
		})
	}

	value, err := Seal(&priv.PublicKey, []byte("Azure Confidential Computing #1"))
	if err != nil {
		t.Fatal(err)
	}
	ct, _ := base64.StdEncoding.DecodeString(value)
	tampered := append([]byte(nil), ct...)
	tampered[10] ^= 1
	for _, tc := range []struct {
		name  string
		key   *rsa.PrivateKey
		value string
		want  string // "" = an ErrMessage error
	}{
		{"right key", priv, value, "Azure Confidential Computing #1"},
		{"another key", other, value, ""},
		{"tampered", priv, base64.StdEncoding.EncodeToString(tampered), ""},
		{"not base64", priv, "%%%", ""},
	} {
		t.Run("open/"+tc.name, func(t *testing.T) {
			pt, err := Open(tc.key, tc.value)
			if tc.want == "" {
				if !errors.Is(err, ErrMessage) {
					t.Fatalf("err %v, want ErrMessage", err)
				}
				return
			}
			if err != nil || string(pt) != tc.want {
				t.Fatalf("%q, %v", pt, err)
			}
		})
	}
	if _, err := Seal(&priv.PublicKey, []byte(strings.Repeat("x", 2048/8-66+1))); !errors.Is(err, ErrMessage) {
		t.Fatalf("an over-long message: %v", err)
	}
}
