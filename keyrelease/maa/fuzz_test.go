package maa

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/skrfs/skrfs/keyrelease"
)

// canned answers POST /attest/SevSnpVm and GET /certs from memory.
type canned struct {
	status      int
	attest      []byte
	certs       []byte
	attestCalls int
}

func (c *canned) RoundTrip(r *http.Request) (*http.Response, error) {
	resp := &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Request: r}
	switch r.URL.Path {
	case "/attest/SevSnpVm":
		c.attestCalls++
		resp.StatusCode = c.status
		resp.Body = io.NopCloser(bytes.NewReader(c.attest))
	case "/certs":
		resp.Body = io.NopCloser(bytes.NewReader(c.certs))
	default:
		resp.StatusCode, resp.Body = http.StatusNotFound, http.NoBody
	}
	return resp, nil
}

// testKey reads the test-only MAA signing key of testdata.
func testKey(f *testing.F) *rsa.PrivateKey {
	b, err := os.ReadFile("testdata/signing-key.pem")
	if err != nil {
		f.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		f.Fatal("testdata/signing-key.pem: no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		f.Fatal(err)
	}
	return k.(*rsa.PrivateKey)
}

const fuzzBase = "https://fuzz.attest.example"

// FuzzAttestResponse feeds arbitrary MAA answers (status, attest body,
// signing-key set) to the client. Properties: no panic; every failure is
// classified as keyrelease.ErrAttestation or keyrelease.ErrUnavailable (the
// two the filesystem maps to EACCES and EIO); an accepted token is signed
// by the genuine MAA key, was issued by this instance, and carries exactly
// the runtime data sent.
func FuzzAttestResponse(f *testing.F) {
	// A fixed key: fuzz workers are separate processes and must agree on
	// the genuine key with the coordinator that generated the seeds.
	key := testKey(f)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "maa signing"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		f.Fatal(err)
	}
	runtime := []byte(`{"keys":[{"e":"AQAB","key_ops":["encrypt"],"kid":"w","kty":"RSA","n":"AQAB"}]}`)
	var rt any
	json.Unmarshal(runtime, &rt)
	sign := func(claims map[string]any, kid string, alg jwa.SignatureAlgorithm) []byte {
		tok := jwt.New()
		for k, v := range claims {
			tok.Set(k, v)
		}
		hdr := jws.NewHeaders()
		hdr.Set(jws.KeyIDKey, kid)
		signed, err := jwt.Sign(tok, jwt.WithKey(alg, key, jws.WithProtectedHeaders(hdr)))
		if err != nil {
			f.Fatal(err)
		}
		b, _ := json.Marshal(map[string]string{"token": string(signed)})
		return b
	}
	claims := func() map[string]any {
		return map[string]any{"iss": fuzzBase, "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(8 * time.Hour).Unix(),
			"x-ms-attestation-type": "sevsnpvm", "x-ms-runtime": rt}
	}
	x5c, _ := json.Marshal(map[string]any{"keys": []map[string]any{{"kid": "k1", "kty": "RSA", "x5c": []string{base64.StdEncoding.EncodeToString(certDER)}}}})
	b64 := base64.RawURLEncoding.EncodeToString
	ne, _ := json.Marshal(map[string]any{"keys": []map[string]any{{"kid": "k1", "kty": "RSA", "n": b64(key.N.Bytes()), "e": "AQAB"}}})
	f.Add(200, sign(claims(), "k1", jwa.RS256), x5c)
	f.Add(200, sign(claims(), "k1", jwa.RS256), ne)
	f.Add(200, sign(claims(), "k1", jwa.PS256), x5c)
	expired := claims()
	expired["exp"] = now.Add(-time.Hour).Unix()
	f.Add(200, sign(expired, "k1", jwa.RS256), x5c)
	other := claims()
	other["x-ms-runtime"] = map[string]any{"keys": []any{}}
	f.Add(200, sign(other, "k2", jwa.RS256), x5c)
	f.Add(429, []byte(`{"error":{"code":"TooManyRequests","message":"slow down"}}`), x5c)
	f.Add(400, []byte(`{"error":{"code":"InvalidParameter","message":"report_data mismatch"}}`), []byte(`{"keys":[]}`))
	f.Fuzz(func(t *testing.T, status int, attest, certs []byte) {
		if status < 100 || status > 999 {
			status = 200
		}
		stand := &canned{status: status, attest: attest, certs: certs}
		c := &Client{BaseURL: fuzzBase, HTTPClient: &http.Client{Transport: stand}, Now: func() time.Time { return now }}
		tok, err := c.Attest(context.Background(), Evidence{Report: make([]byte, 1184)}, runtime)
		if stand.attestCalls != 1 {
			t.Fatalf("%d attestation requests, want 1", stand.attestCalls)
		}
		if err != nil {
			if !errors.Is(err, keyrelease.ErrAttestation) && !errors.Is(err, keyrelease.ErrUnavailable) {
				t.Fatalf("unclassified failure: %v", err)
			}
			return
		}
		if _, err := jws.Verify([]byte(tok.Raw), jws.WithKey(jwa.RS256, &key.PublicKey)); err != nil {
			t.Fatalf("accepted a token the genuine key did not sign:: %v", err)
		}
		if iss, _ := tok.Claims["iss"].(string); iss != fuzzBase && iss != fuzzBase+"/" {
			t.Fatalf("accepted a token of issuer %q", iss)
		}
		if checkRuntime(tok.Claims, runtime) != nil {
			t.Fatal("accepted a token without our runtime data")
		}
		if tok.Expires.Before(now.Add(-2 * time.Minute)) {
			t.Fatalf("accepted a token that expired at %v", tok.Expires)
		}
	})
}
