package akv

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/cert"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/skrfs/skrfs/crypto/keywrap"
	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/wrapkey"
)

const fuzzVault = "vault.fuzz.example"

var fuzzNow = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)

// world is the fixed cast of the release fuzz targets: a vault CA and its
// signer certificate, the TEE's wrapping key, and the keys being released.
// Keys come from testdata and certificates are RSA PKCS#1 v1.5 signed
// (deterministic), so every fuzz worker process builds the same world.
type world struct {
	client   *Client
	ref      keyrelease.KeyRef
	wk       *wrapkey.WrappingKey
	signer   *rsa.PrivateKey
	chain    []*x509.Certificate // signer, CA
	oct      []byte
	ec       *ecdsa.PrivateKey
	ecPKCS8  []byte
	rsaPKCS8 []byte
}

func readKey(f testing.TB, name string) any {
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		f.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		f.Fatalf("testdata/%s: no PEM block", name)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		f.Fatal(err)
	}
	return k
}

func newWorld(f testing.TB) *world {
	w := &world{oct: bytes.Repeat([]byte{0x5a, 0xa5}, 16)}
	ca := readKey(f, "ca-key.pem").(*rsa.PrivateKey)
	w.signer = readKey(f, "signer-key.pem").(*rsa.PrivateKey)
	w.ec = readKey(f, "released-ec-key.pem").(*ecdsa.PrivateKey)
	wrapPriv := readKey(f, "wrap-key.pem").(*rsa.PrivateKey)
	w.wk = &wrapkey.WrappingKey{Private: wrapPriv, KID: "fuzz-wrapping-key"}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fuzz vault CA"},
		NotBefore: fuzzNow.Add(-time.Hour), NotAfter: fuzzNow.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &ca.PublicKey, ca)
	if err != nil {
		f.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: fuzzVault},
		DNSNames: []string{fuzzVault}, NotBefore: fuzzNow.Add(-time.Hour), NotAfter: fuzzNow.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &w.signer.PublicKey, ca)
	if err != nil {
		f.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(leafDER)
	w.chain = []*x509.Certificate{leaf, caCert}
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	w.client = &Client{Roots: roots, Now: func() time.Time { return fuzzNow }}
	w.ref, err = keyrelease.ParseKeyRef("https://" + fuzzVault + "/keys/k1")
	if err != nil {
		f.Fatal(err)
	}
	w.ecPKCS8, _ = x509.MarshalPKCS8PrivateKey(w.ec)
	w.rsaPKCS8, _ = x509.MarshalPKCS8PrivateKey(w.signer)
	return w
}

// payload builds a release payload as Key Vault does (protocol.md 5.4):
// the target wrapped to the wrapping key with CKM_RSA_AES_KEY_WRAP.
func (w *world) payload(f testing.TB, kty string, target []byte) []byte {
	return w.payloadWith(f, kty, target, "https://"+fuzzVault+"/keys/k1/0123456789abcdef", nil)
}

// payloadWith is payload with the released key's kid and key_ops.
func (w *world) payloadWith(f testing.TB, kty string, target []byte, kid string, ops []string) []byte {
	aesKey := make([]byte, 32)
	rand.Read(aesKey)
	c1, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, &w.wk.Private.PublicKey, aesKey, nil)
	if err != nil {
		f.Fatal(err)
	}
	c2, err := keywrap.WrapPad(aesKey, target)
	if err != nil {
		f.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	hsm, _ := json.Marshal(map[string]any{"schema_version": "1.0",
		"header": map[string]string{"kid": w.wk.KID, "alg": "dir", "enc": wrapkey.EncRSAAESKeyWrap}, "ciphertext": b64(append(c1, c2...))})
	p, _ := json.Marshal(map[string]any{
		"request":  map[string]string{"enc": wrapkey.EncRSAAESKeyWrap, "kid": "https://" + fuzzVault + "/keys/k1"},
		"response": map[string]any{"key": map[string]any{"key": map[string]any{"kid": kid, "kty": kty, "key_hsm": b64(hsm), "key_ops": ops}}},
	})
	return p
}

func (w *world) sign(f testing.TB, payload []byte, chain []*x509.Certificate) string {
	hdr := jws.NewHeaders()
	c := &cert.Chain{}
	for _, x := range chain {
		c.AddString(base64.StdEncoding.EncodeToString(x.Raw))
	}
	hdr.Set(jws.X509CertChainKey, c)
	sig, err := jws.Sign(payload, jws.WithKey(jwa.RS256, w.signer, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		f.Fatal(err)
	}
	return string(sig)
}

// released checks that a key that came out of decode is exactly one of the
// keys the world released, never other material.
func (w *world) released(t *testing.T, k *keyrelease.Key) {
	switch k.Type {
	case keyrelease.KeyTypeOct:
		if !bytes.Equal(k.Oct, w.oct) {
			t.Fatalf("released oct key is not the one the vault wrapped")
		}
	default:
		der, err := x509.MarshalPKCS8PrivateKey(k.Private)
		if err != nil || (!bytes.Equal(der, w.ecPKCS8) && !bytes.Equal(der, w.rsaPKCS8)) {
			t.Fatalf("released %v key is not one the vault wrapped", k.Type)
		}
	}
	if k.Ref.Name != w.ref.Name || k.Ref.Vault != w.ref.Vault {
		t.Fatalf("released key has reference %v, want %v", k.Ref, w.ref)
	}
}

// classified: every failure of a release response is ErrBadResponse, a
// failed unwrap, or an unrecognised key (all EIO to the filesystem).
func classified(err error) bool {
	return errors.Is(err, ErrBadResponse) || errors.Is(err, wrapkey.ErrUnwrap) || errors.Is(err, keyrelease.ErrKeyFormat)
}

// FuzzReleaseResponse feeds arbitrary compact JWS strings to the release
// response verification and decoding. Properties: no panic; failures are
// classified; whatever verifies was signed by the vault's certified
// signer, and whatever decodes is exactly a key the vault released.
func FuzzReleaseResponse(f *testing.F) {
	w := newWorld(f)
	f.Add(w.sign(f, w.payload(f, "oct-HSM", w.oct), w.chain))
	f.Add(w.sign(f, w.payload(f, "EC", w.ecPKCS8), w.chain))
	f.Add(w.sign(f, w.payload(f, "RSA-HSM", w.rsaPKCS8), w.chain[:1]))
	f.Add(w.sign(f, w.payload(f, "oct", w.oct), w.chain[1:])) // signed by the leaf, presented as the CA
	f.Add(w.sign(f, []byte("{}"), nil))
	f.Fuzz(func(t *testing.T, compact string) {
		payload, err := w.client.verify(compact, fuzzVault)
		if err != nil {
			if !classified(err) {
				t.Fatalf("unclassified failure: %v", err)
			}
			return
		}
		if _, err := jws.Verify([]byte(compact), jws.WithKey(jwa.RS256, &w.signer.PublicKey)); err != nil {
			// The only other key the roots certify is the CA's.
			if _, err := jws.Verify([]byte(compact), jws.WithKey(jwa.RS256, w.chain[1].PublicKey)); err != nil {
				t.Fatalf("verified a response no certified key signed")
			}
		}
		k, err := decode(w.ref, payload, w.wk.Private, "")
		if err != nil {
			if !classified(err) {
				t.Fatalf("unclassified failure: %v", err)
			}
			return
		}
		w.released(t, k)
	})
}

// FuzzReleasePayload feeds arbitrary (already verified) payloads and enc
// values to decode, which parses key_hsm and performs the
// CKM_RSA_AES_KEY_WRAP unwrap. Properties: no panic; failures are
// classified; whatever decodes is exactly a key the vault wrapped: a
// mutated ciphertext never unwraps to other key material.
func FuzzReleasePayload(f *testing.F) {
	w := newWorld(f)
	f.Add(w.payload(f, "oct-HSM", w.oct), "")
	f.Add(w.payload(f, "EC-HSM", w.ecPKCS8), wrapkey.EncRSAAESKeyWrap)
	f.Add(w.payload(f, "RSA", w.rsaPKCS8), wrapkey.EncRSAAESKeyWrap256)
	f.Add(w.payload(f, "EC", []byte("not PKCS#8")), "")
	f.Fuzz(func(t *testing.T, payload []byte, enc string) {
		k, err := decode(w.ref, payload, w.wk.Private, enc)
		if err != nil {
			if !classified(err) {
				t.Fatalf("unclassified failure: %v", err)
			}
			return
		}
		w.released(t, k)
	})
}
