package maa

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/skrfs/skrfs/internal/devstack/fakesgx"
	"github.com/skrfs/skrfs/keyrelease"
	maaclient "github.com/skrfs/skrfs/keyrelease/maa"
	"github.com/skrfs/skrfs/keyrelease/wrapkey"
)

// sgxNow is within the validity of the genuine quotes' PCK certificates.
var sgxNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newSGXService(t *testing.T, now time.Time, roots ...*x509.Certificate) *maaclient.Client {
	t.Helper()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "maa signer"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	cert, _ := x509.ParseCertificate(der)
	ts := httptest.NewUnstartedServer(nil)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	s, err := New(Options{Issuer: ts.URL, Key: key, Chain: []*x509.Certificate{cert}, SGXRoots: roots, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = s
	return &maaclient.Client{BaseURL: ts.URL, HTTPClient: ts.Client(), Now: func() time.Time { return now }}
}

func readSGX(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../../../../shared/testdata/sgx/" + name)
	if err != nil {
		t.Skipf("genuine SGX test data: %v", err)
	}
	return b
}

// postSgx sends a raw attest/SgxEnclave body.
func postSgx(t *testing.T, c *maaclient.Client, body []byte) (*maaclient.Token, error) {
	t.Helper()
	resp, err := c.HTTPClient.Post(c.BaseURL+"/attest/SgxEnclave?api-version=2022-08-01", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Token string `json:"token"`
		Error struct{ Code, Message string }
	}
	json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != 200 {
		return nil, errors.New(out.Error.Code + ": " + out.Error.Message)
	}
	return c.Verify(context.Background(), out.Token, nil)
}

// TestSgxEnclaveGenuineQuotes: the genuine Azure quotes go through the
// devstack's attest/SgxEnclave with their held data as Binary runtime data
// (x-ms-sgx-ehd) and get the claims their README lists; a flipped bit and
// held data that the quote does not bind are rejected.
func TestSgxEnclaveGenuineQuotes(t *testing.T) {
	c := newSGXService(t, sgxNow)
	for _, tc := range []struct {
		name, mrenclave string
		debug           bool
	}{
		{"release", "d37d983a85d63fb49649610e2eba0930ecdbff6d113aca3ff3fc7261696c0134", false},
		{"debug", "3e2df98fc7fd042b842121cae6a8086d546e7970db55103725cc1dcbc2c48814", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			quote, held := readSGX(t, tc.name+".quote"), readSGX(t, tc.name+".held_data")
			body := func(q, data []byte, typ string) []byte {
				b, _ := json.Marshal(map[string]any{"quote": base64.RawURLEncoding.EncodeToString(q),
					"runtimeData": map[string]string{"data": base64.RawURLEncoding.EncodeToString(data), "dataType": typ}})
				return b
			}
			tok, err := postSgx(t, c, body(quote, held, "Binary"))
			if err != nil {
				t.Fatal(err)
			}
			cl := tok.Claims
			if cl["x-ms-attestation-type"] != "sgx" || cl["x-ms-sgx-mrenclave"] != tc.mrenclave ||
				cl["x-ms-sgx-mrsigner"] != "feb995eb86c349ac98e5afbbb5732ca7376ec9979002702ea17ad476e0853a04" ||
				cl["x-ms-sgx-is-debuggable"] != tc.debug || cl["x-ms-sgx-product-id"] != float64(1) || cl["x-ms-sgx-svn"] != float64(1) ||
				cl["x-ms-sgx-ehd"] != base64.RawURLEncoding.EncodeToString(held) {
				t.Fatalf("claims %v", cl)
			}
			if _, ok := cl["x-ms-runtime"]; ok {
				t.Error("x-ms-runtime for Binary runtime data")
			}
			if _, err := postSgx(t, c, body(quote, []byte(`{"keys":[]}`), "JSON")); err == nil || !strings.Contains(err.Error(), "REPORT_DATA") {
				t.Fatalf("runtime data the quote does not bind: %v", err)
			}
			bad := bytes.Clone(quote)
			bad[48+64] ^= 1 // MRENCLAVE
			if _, err := postSgx(t, c, body(bad, held, "Binary")); err == nil || !strings.Contains(err.Error(), "InvalidEvidence") {
				t.Fatalf("flipped MRENCLAVE bit: %v", err)
			}
		})
	}
}

// TestSgxEnclaveDevstackRoot: fake quotes are accepted only by a service
// configured with the devstack root; JSON runtime data appears as
// x-ms-runtime, which the client's AttestSgx returns.
func TestSgxEnclaveDevstackRoot(t *testing.T) {
	p, err := fakesgx.NewPlatform()
	if err != nil {
		t.Fatal(err)
	}
	wk, _ := wrapkey.NewWrappingKey()
	var rd [64]byte
	sum := sha256.Sum256(wk.RuntimeData)
	copy(rd[:], sum[:])
	q, err := p.Quote(fakesgx.Enclave{ProductID: 3, SVN: 4}, rd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newSGXService(t, time.Now()).AttestSgx(context.Background(), q, wk.RuntimeData); !errors.Is(err, keyrelease.ErrAttestation) {
		t.Fatalf("fake quote without the devstack root: %v", err)
	}
	tok, err := newSGXService(t, time.Now(), p.Root()).AttestSgx(context.Background(), q, wk.RuntimeData)
	if err != nil {
		t.Fatal(err)
	}
	keys := tok.Claims["x-ms-runtime"].(map[string]any)["keys"].([]any)
	if keys[0].(map[string]any)["kid"] != wk.KID || tok.Claims["x-ms-sgx-product-id"] != float64(3) {
		t.Fatalf("claims %v", tok.Claims)
	}
	other, _ := wrapkey.NewWrappingKey()
	if _, err := newSGXService(t, time.Now(), p.Root()).AttestSgx(context.Background(), q, other.RuntimeData); !errors.Is(err, keyrelease.ErrAttestation) {
		t.Fatalf("runtime data of another key: %v", err)
	}
}
