package maa

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/skrfs/skrfs/keyrelease"
)

var now = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)

// fakeMAA is a minimal stand-in used only to test the client's encodings
// and checks; the protocol-faithful service is internal/devstack/maa.
type fakeMAA struct {
	srv     *httptest.Server
	key     *rsa.PrivateKey
	cert    []byte
	lastReq map[string]any
	status  int
	fetches int    // GET /certs
	kid     string // the kid published and put into tokens (default k1)
	claims  func(runtime any) map[string]any
}

func newFakeMAA(t *testing.T) *fakeMAA {
	f := &fakeMAA{status: 200, kid: "k1"}
	f.key, _ = rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "maa signing"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
	f.cert, _ = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &f.key.PublicKey, f.key)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /certs", func(w http.ResponseWriter, r *http.Request) {
		f.fetches++
		json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]any{
			{"kid": f.kid, "kty": "RSA", "x5c": []string{base64.StdEncoding.EncodeToString(f.cert)}}}})
	})
	mux.HandleFunc("POST /attest/SevSnpVm", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("api-version") == "" {
			http.Error(w, `{"error":{"code":"MissingApiVersion","message":"no api-version"}}`, 400)
			return
		}
		body, _ := io.ReadAll(r.Body)
		json.Unmarshal(body, &f.lastReq)
		if f.status != 200 {
			w.Header().Set("x-ms-request-id", "req-1")
			w.WriteHeader(f.status)
			w.Write([]byte(`{"error":{"code":"InvalidParameter","message":"report_data mismatch"}}`))
			return
		}
		rt := f.lastReq["runtimeData"].(map[string]any)
		raw, _ := base64.URLEncoding.DecodeString(rt["data"].(string))
		var runtime any
		json.Unmarshal(raw, &runtime)
		tok := jwt.New()
		for k, v := range f.claims(runtime) {
			tok.Set(k, v)
		}
		hdr := jws.NewHeaders()
		hdr.Set(jws.KeyIDKey, f.kid)
		signed, _ := jwt.Sign(tok, jwt.WithKey(jwa.RS256, f.key, jws.WithProtectedHeaders(hdr)))
		json.NewEncoder(w).Encode(map[string]string{"token": string(signed)})
	})
	f.srv = httptest.NewTLSServer(mux)
	t.Cleanup(f.srv.Close)
	f.claims = func(runtime any) map[string]any {
		return map[string]any{"iss": f.srv.URL, "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(8 * time.Hour).Unix(),
			"x-ms-attestation-type": "sevsnpvm", "x-ms-runtime": runtime}
	}
	return f
}

func decodeLayer(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.URLEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("not padded base64url: %v", err)
	}
	return b
}

func TestAttestEncodingAndVerify(t *testing.T) {
	f := newFakeMAA(t)
	c := &Client{BaseURL: f.srv.URL, HTTPClient: f.srv.Client(), Now: func() time.Time { return now }}
	runtime := []byte(`{"keys":[{"e":"AQAB","key_ops":["encrypt"],"kid":"x","kty":"RSA","n":"abc"}]}`)
	ev := Evidence{Report: make([]byte, 1184), CertChainPEM: []byte("-----BEGIN CERTIFICATE-----\n..."), Endorsements: [][]byte{{0xd2, 0x84}}}
	tok, err := c.Attest(context.Background(), ev, runtime)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Claims["x-ms-attestation-type"] != "sevsnpvm" || tok.Expires.Unix() != now.Add(8*time.Hour).Unix() {
		t.Fatalf("claims %v", tok.Claims)
	}
	// The three nested layers of protocol.md 3.2, padded base64url.
	inner := map[string]string{}
	json.Unmarshal(decodeLayer(t, f.lastReq["report"].(string)), &inner)
	if len(decodeLayer(t, inner["SnpReport"])) != 1184 || !strings.HasPrefix(string(decodeLayer(t, inner["VcekCertChain"])), "-----BEGIN") {
		t.Fatalf("inner report %v", inner)
	}
	var end map[string][]string
	json.Unmarshal(decodeLayer(t, inner["Endorsements"]), &end)
	if len(end["Uvm"]) != 1 || string(decodeLayer(t, end["Uvm"][0])) != "\xd2\x84" {
		t.Fatalf("endorsements %v", end)
	}
	rt := f.lastReq["runtimeData"].(map[string]any)
	if rt["dataType"] != "JSON" || string(decodeLayer(t, rt["data"].(string))) != string(runtime) {
		t.Fatalf("runtimeData %v", rt)
	}
	if _, ok := f.lastReq["nonce"].(float64); !ok {
		t.Fatalf("nonce is not a number: %v", f.lastReq["nonce"])
	}
	if itd := f.lastReq["initTimeData"].(map[string]any); itd["data"] != "" || itd["dataType"] != "" {
		t.Fatalf("initTimeData %v", itd)
	}
}

func TestVerifyRejects(t *testing.T) {
	runtime := []byte(`{"keys":[{"kid":"mine"}]}`)
	for _, tc := range []struct {
		name    string
		mutate  func(f *fakeMAA, c *Client)
		wantErr error
		inErr   string
	}{
		{"expired", func(f *fakeMAA, c *Client) { c.Now = func() time.Time { return now.Add(9 * time.Hour) } }, keyrelease.ErrAttestation, "exp"},
		{"wrong issuer", func(f *fakeMAA, c *Client) {
			old := f.claims
			f.claims = func(r any) map[string]any { m := old(r); m["iss"] = "https://evil.attest.azure.net"; return m }
		}, keyrelease.ErrAttestation, "iss"},
		{"runtime key missing", func(f *fakeMAA, c *Client) {
			old := f.claims
			f.claims = func(r any) map[string]any { m := old(r); delete(m, "x-ms-runtime"); return m }
		}, keyrelease.ErrAttestation, "no x-ms-runtime"},
		{"other runtime key", func(f *fakeMAA, c *Client) {
			old := f.claims
			f.claims = func(r any) map[string]any { m := old(r); m["x-ms-runtime"] = map[string]any{"keys": []any{}}; return m }
		}, keyrelease.ErrAttestation, "does not carry our wrapping key"},
		{"no exp", func(f *fakeMAA, c *Client) {
			old := f.claims
			f.claims = func(r any) map[string]any { m := old(r); delete(m, "exp"); return m }
		}, keyrelease.ErrAttestation, "no exp claim"},
		{"wrong signer", func(f *fakeMAA, c *Client) { f.key, _ = rsa.GenerateKey(rand.Reader, 2048) }, keyrelease.ErrAttestation, "token rejected"},
		{"evidence rejected", func(f *fakeMAA, c *Client) { f.status = 400 }, keyrelease.ErrAttestation, "report_data mismatch"},
		{"throttled", func(f *fakeMAA, c *Client) { f.status = 429 }, keyrelease.ErrUnavailable, "429"},
		{"down", func(f *fakeMAA, c *Client) { f.srv.Close() }, keyrelease.ErrUnavailable, "MAA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeMAA(t)
			c := &Client{BaseURL: f.srv.URL, HTTPClient: f.srv.Client(), Now: func() time.Time { return now }}
			tc.mutate(f, c)
			_, err := c.Attest(context.Background(), Evidence{Report: make([]byte, 1184)}, runtime)
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.inErr) {
				t.Fatalf("Attest = %v, want %v containing %q", err, tc.wantErr, tc.inErr)
			}
		})
	}
}

// TestSigningKeysRefreshedDaily: the instance's signing keys are fetched
// again once they are a day old, so a key MAA no longer publishes stops
// being trusted; within the day they are not refetched.
func TestSigningKeysRefreshedDaily(t *testing.T) {
	f := newFakeMAA(t)
	clock := now
	c := &Client{BaseURL: f.srv.URL, HTTPClient: f.srv.Client(), Now: func() time.Time { return clock }}
	old := f.claims
	f.claims = func(r any) map[string]any { m := old(r); m["exp"] = now.Add(72 * time.Hour).Unix(); return m }
	runtime := []byte(`{"keys":[]}`)
	tok, err := c.Attest(context.Background(), Evidence{Report: make([]byte, 1184)}, runtime)
	if err != nil {
		t.Fatal(err)
	}
	clock = now.Add(23 * time.Hour)
	if _, err := c.Verify(context.Background(), tok.Raw, runtime); err != nil || f.fetches != 1 {
		t.Fatalf("within a day: %v, %d fetches of the keys", err, f.fetches)
	}
	clock = now.Add(25 * time.Hour)
	if _, err := c.Verify(context.Background(), tok.Raw, runtime); err != nil || f.fetches != 2 {
		t.Fatalf("after a day: %v, %d fetches of the keys (want 2)", err, f.fetches)
	}
	// MAA stops publishing k1: once the keys are a day old again, tokens
	// signed with it are refused.
	f.kid = "k2"
	clock = now.Add(50 * time.Hour)
	if _, err := c.Verify(context.Background(), tok.Raw, runtime); !errors.Is(err, keyrelease.ErrAttestation) || !strings.Contains(err.Error(), "unknown key") {
		t.Fatalf("token of a withdrawn key: %v", err)
	}
}
