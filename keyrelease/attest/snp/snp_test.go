package snp_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"math/big"
	"net/http/httptest"
	"testing"
	"time"

	devmaa "github.com/skrfs/skrfs/internal/devstack/maa"
	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/attest"
	"github.com/skrfs/skrfs/keyrelease/attest/fakesnp"
	"github.com/skrfs/skrfs/keyrelease/attest/snp"
	"github.com/skrfs/skrfs/keyrelease/maa"
	"github.com/skrfs/skrfs/keyrelease/wrapkey"
)

type fakeEvidence struct {
	f      *attest.Fake
	tamper bool
}

func (e fakeEvidence) Evidence(ctx context.Context, rd [64]byte) (maa.Evidence, error) {
	if e.tamper {
		rd[0] ^= 1 // REPORT_DATA no longer binds the runtime JSON
	}
	ev, err := e.f.Evidence(ctx, rd)
	if err != nil {
		return maa.Evidence{}, err
	}
	return maa.Evidence{Report: ev.Report, CertChainPEM: ev.CertChainPEM()}, nil
}

// TestProvider: the SEV-SNP provider behind the seam: the token's
// x-ms-runtime names the wrapping key, which is the Attestation's
// decrypter, requested with CKM_RSA_AES_KEY_WRAP by default; Close wipes
// it; evidence that does not bind the key is refused.
func TestProvider(t *testing.T) {
	dev, err := fakesnp.New(fakesnp.Config{})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "maa"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	cert, _ := x509.ParseCertificate(der)
	ts := httptest.NewUnstartedServer(nil)
	ts.StartTLS()
	defer ts.Close()
	s, err := devmaa.New(devmaa.Options{Issuer: ts.URL, Key: key, Chain: []*x509.Certificate{cert}, ExtraRoots: dev.Roots()})
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = s
	mc := &maa.Client{BaseURL: ts.URL, HTTPClient: ts.Client()}
	p := &snp.Provider{Evidence: fakeEvidence{f: &attest.Fake{Device: dev}}, MAA: mc}
	var _ attest.Provider = p
	p.PrepareNow()
	a, err := p.Attest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != "snp" || a.Enc != wrapkey.EncRSAAESKeyWrap {
		t.Fatalf("name %s enc %s", p.Name(), a.Enc)
	}
	priv, ok := a.Key.(*rsa.PrivateKey)
	keys, _ := a.Token.Claims["x-ms-runtime"].(map[string]any)["keys"].([]any)
	if !ok || len(keys) != 1 {
		t.Fatalf("key %T, runtime keys %v", a.Key, keys)
	}
	n := keys[0].(map[string]any)["n"].(string)
	if want := base64.RawURLEncoding.EncodeToString(priv.PublicKey.N.Bytes()); n != want {
		t.Fatal("the token names another key than the Attestation's")
	}
	a.Close()
	if priv.D.Sign() != 0 {
		t.Fatal("Close did not wipe the wrapping key")
	}
	p.Close()

	bad := &snp.Provider{Evidence: fakeEvidence{f: &attest.Fake{Device: dev}, tamper: true}, MAA: mc}
	if _, err := bad.Attest(context.Background()); !errors.Is(err, keyrelease.ErrAttestation) {
		t.Fatalf("unbound evidence: %v", err)
	}
}
