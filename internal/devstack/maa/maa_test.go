package maa

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/attest/fakesnp"
	maaclient "github.com/skrfs/skrfs/keyrelease/maa"
	"github.com/skrfs/skrfs/keyrelease/wrapkey"
)

func newService(t *testing.T, extraRoots bool) (*Server, *httptest.Server, *fakesnp.Device) {
	t.Helper()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0x1234567890), Subject: pkix.Name{CommonName: "maa signer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	cert, _ := x509.ParseCertificate(der)
	dev, err := fakesnp.New(fakesnp.Config{HostData: fakesnp.HostDataFromPolicy([]byte("cce policy"))})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(nil)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	opts := Options{Issuer: ts.URL, Key: key, Chain: []*x509.Certificate{cert}}
	if extraRoots {
		opts.ExtraRoots = dev.Roots()
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = s
	return s, ts, dev
}

func attest(t *testing.T, ts *httptest.Server, dev *fakesnp.Device, tamper func(rd *[64]byte)) (*maaclient.Token, *wrapkey.WrappingKey, error) {
	t.Helper()
	wk, _ := wrapkey.NewWrappingKey()
	rd := wk.ReportData()
	if tamper != nil {
		tamper(&rd)
	}
	report, err := dev.Report(rd)
	if err != nil {
		t.Fatal(err)
	}
	c := &maaclient.Client{BaseURL: ts.URL, HTTPClient: ts.Client()}
	tok, err := c.Attest(context.Background(), maaclient.Evidence{Report: report, CertChainPEM: dev.CertChainPEM()}, wk.RuntimeData)
	return tok, wk, err
}

func TestAttestEndToEnd(t *testing.T) {
	s, ts, dev := newService(t, true)
	tok, wk, err := attest(t, ts, dev, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := fakesnp.HostDataFromPolicy([]byte("cce policy"))
	if tok.Claims["x-ms-attestation-type"] != "sevsnpvm" || !strings.HasPrefix(tok.Claims["x-ms-sevsnpvm-hostdata"].(string), "") ||
		tok.Claims["iss"] != ts.URL || tok.Claims["x-ms-sevsnpvm-is-debuggable"] != false {
		t.Fatalf("claims %v", tok.Claims)
	}
	if got := tok.Claims["x-ms-sevsnpvm-hostdata"]; got != hexOf(want[:]) {
		t.Fatalf("hostdata %v", got)
	}
	keys := tok.Claims["x-ms-runtime"].(map[string]any)["keys"].([]any)
	if keys[0].(map[string]any)["kid"] != wk.KID {
		t.Fatal("x-ms-runtime does not carry the wrapping key")
	}
	if d := time.Until(tok.Expires); d < 7*time.Hour || d > 9*time.Hour {
		t.Fatalf("token lifetime %v", d)
	}
	if ok, _ := s.Stats(); ok != 1 {
		t.Fatalf("stats ok=%d", ok)
	}
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 2*len(b))
	for i, c := range b {
		out[2*i], out[2*i+1] = digits[c>>4], digits[c&15]
	}
	return string(out)
}

func TestAttestRejects(t *testing.T) {
	t.Run("report data not bound to runtime data", func(t *testing.T) {
		_, ts, dev := newService(t, true)
		_, _, err := attest(t, ts, dev, func(rd *[64]byte) { rd[0] ^= 1 })
		if !errors.Is(err, keyrelease.ErrAttestation) || !strings.Contains(err.Error(), "report_data does not match") {
			t.Fatalf("%v", err)
		}
	})
	t.Run("fake chip not trusted", func(t *testing.T) {
		_, ts, dev := newService(t, false)
		_, _, err := attest(t, ts, dev, nil)
		if !errors.Is(err, keyrelease.ErrAttestation) || !strings.Contains(err.Error(), "AMD certificate chain") {
			t.Fatalf("%v", err)
		}
	})
	t.Run("missing api-version", func(t *testing.T) {
		_, ts, dev := newService(t, true)
		c := &maaclient.Client{BaseURL: ts.URL, HTTPClient: ts.Client(), APIVersion: "1999-01-01"}
		wk, _ := wrapkey.NewWrappingKey()
		report, _ := dev.Report(wk.ReportData())
		_, err := c.Attest(context.Background(), maaclient.Evidence{Report: report, CertChainPEM: dev.CertChainPEM()}, wk.RuntimeData)
		if !errors.Is(err, keyrelease.ErrAttestation) || !strings.Contains(err.Error(), "api-version") {
			t.Fatalf("%v", err)
		}
	})
}
