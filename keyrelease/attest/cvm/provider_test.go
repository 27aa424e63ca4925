package cvm_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/skrfs/skrfs/crypto/keywrap"
	"github.com/skrfs/skrfs/internal/devstack/fakecvm"
	devmaa "github.com/skrfs/skrfs/internal/devstack/maa"
	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/attest/cvm"
	"github.com/skrfs/skrfs/keyrelease/attest/fakesnp"
	"github.com/skrfs/skrfs/keyrelease/maa"
	"github.com/skrfs/skrfs/keyrelease/wrapkey"
)

func fakeMAA(t *testing.T, dev *fakesnp.Device) *httptest.Server {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "maa signer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	cert, _ := x509.ParseCertificate(der)
	ts := httptest.NewUnstartedServer(nil)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	s, err := devmaa.New(devmaa.Options{Issuer: ts.URL, Key: key, Chain: []*x509.Certificate{cert}, ExtraRoots: dev.Roots()})
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = s
	return ts
}

// TestProviderAttest: the whole azure-cvm attestation against a TPM
// (swtpm) and the devstack's AzureGuest endpoint: the token opens from
// the TPM-encrypted envelope, passes the AzureGuest runtime check, carries
// the nested claims, and its key decrypts Key Vault's OAEP-SHA256 wrap
// inside the TPM. Evidence from another chip is refused.
func TestProviderAttest(t *testing.T) {
	sw, err := fakecvm.StartSWTPM(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sw.Close)
	dev, _ := fakesnp.New(fakesnp.Config{})
	tpm, err := cvm.OpenTPM(sw.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fakecvm.Seed(tpm, dev, fakecvm.VMConfig{VMUniqueID: "AAAABBBB-0000-4000-8000-000000000001", SecureBoot: true}); err != nil {
		t.Fatal(err)
	}
	tpm.Close()
	ts := fakeMAA(t, dev)
	vcek, ask, ark := dev.Certs()
	certs := func(context.Context, []byte) ([]byte, []byte, error) { return vcek, append(ask, ark...), nil }
	p, err := cvm.Open(cvm.Options{TPM: sw.Addr, EventLog: "/nonexistent", MAA: &maa.Client{BaseURL: ts.URL, HTTPClient: ts.Client()}, Certs: certs})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	a, err := p.Attest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	c := a.Token.Claims
	tee, _ := c["x-ms-isolation-tee"].(map[string]any)
	if c["x-ms-attestation-type"] != "azurevm" || tee["x-ms-attestation-type"] != "sevsnpvm" || tee["x-ms-compliance-status"] != "azure-compliant-cvm" ||
		c["x-ms-azurevm-vmid"] != "AAAABBBB-0000-4000-8000-000000000001" || a.Enc != wrapkey.EncRSAAESKeyWrap256 {
		t.Fatalf("claims %v", c)
	}
	// Key Vault's wrap, unwrapped with the TPM doing the OAEP step.
	target := bytes.Repeat([]byte{0x77}, 32)
	kek := make([]byte, 32)
	rand.Read(kek)
	pub := a.Key.Public().(*rsa.PublicKey)
	c1, _ := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, kek, nil)
	c2, _ := keywrap.WrapPad(kek, target)
	got, err := wrapkey.UnwrapWith(a.Key, wrapkey.EncRSAAESKeyWrap256, append(c1, c2...))
	if err != nil || !bytes.Equal(got, target) {
		t.Fatalf("unwrap through the TPM: %v", err)
	}
	// After Close the TPM key is flushed.
	a.Close()
	if _, err := a.Key.Decrypt(nil, c1, &rsa.OAEPOptions{Hash: crypto.SHA256}); err == nil {
		t.Fatal("decrypted after Close")
	}

	// A genuine chip's certificates for the fake report: MAA refuses, classified as attestation.
	// Another client while p is open: the devstack's TPM serves many.
	ov, err1 := os.ReadFile("../../../../shared/testdata/cvm/vcek.pem")
	oa, err2 := os.ReadFile("../../../../shared/testdata/cvm/ask_ark.pem")
	if err1 != nil || err2 != nil {
		t.Fatal("genuine CVM evidence (../shared/testdata/cvm) is required")
	}
	p2, err := cvm.Open(cvm.Options{TPM: sw.Addr, EventLog: "/nonexistent", MAA: &maa.Client{BaseURL: ts.URL, HTTPClient: ts.Client()},
		Certs: func(context.Context, []byte) ([]byte, []byte, error) { return ov, oa, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	defer p.Close()
	if _, err := p2.Attest(context.Background()); !errors.Is(err, keyrelease.ErrAttestation) {
		t.Fatalf("other chip: %v", err)
	}
}

// TestMAARefusesForeignAK: a quote and certify signed by a vTPM key that
// is not the HCL report's HCLAkPub are refused by the AzureGuest endpoint,
// though each signature verifies.
func TestMAARefusesForeignAK(t *testing.T) {
	tpm, dev := seeded(t)
	old, err := cvm.ReadHCL(tpm)
	if err != nil {
		t.Fatal(err)
	}
	oldHCL, _ := cvm.ReadNV(tpm, cvm.HCLReportIndex)
	if _, err := fakecvm.Seed(tpm, dev, fakecvm.VMConfig{VMUniqueID: "x"}); err != nil { // a new AK at 0x81000003
		t.Fatal(err)
	}
	ak2, err := cvm.ReadKey(tpm, cvm.AKHandle)
	if err != nil || ak2.RSA.N.Cmp(old.AK.RSA.N) == 0 {
		t.Fatalf("new AK: %v", err)
	}
	if err := fakecvm.WriteNV(tpm, cvm.HCLReportIndex, oldHCL); err != nil {
		t.Fatal(err)
	}
	ev := &cvm.Evidence{HCL: old.HCL, Runtime: old.Runtime, AK: ak2} // what ReadHCL refuses to assemble
	nonce := "nonce-foreign-ak"
	quote, qsig, pcrs, err := cvm.Quote(tpm, ak2, []byte(nonce))
	if err != nil {
		t.Fatal(err)
	}
	key, err := cvm.CreateEncKey(tpm)
	if err != nil {
		t.Fatal(err)
	}
	defer cvm.Flush(tpm, key.Handle)
	info, csig, err := cvm.Certify(tpm, key, ak2)
	if err != nil {
		t.Fatal(err)
	}
	vcek, ask, ark := dev.Certs()
	body, err := cvm.Request(ev, cvm.RequestParts{Nonce: nonce, Quote: quote, QuoteSig: qsig, PCRs: pcrs, EncKey: key,
		CertifyInfo: info, CertifySig: csig, VCEKChainPEM: append(append(vcek, ask...), ark...)})
	if err != nil {
		t.Fatal(err)
	}
	ts := fakeMAA(t, dev)
	_, err = (&maa.Client{BaseURL: ts.URL, HTTPClient: ts.Client()}).AttestAzureGuest(context.Background(), body)
	if !errors.Is(err, keyrelease.ErrAttestation) || !strings.Contains(err.Error(), "AikPub is not the HCL report's HCLAkPub") {
		t.Fatalf("foreign AK: %v", err)
	}
}
