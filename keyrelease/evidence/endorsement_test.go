package evidence

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	cosepkg "github.com/veraison/go-cose"
)

func TestGenuineEndorsement(t *testing.T) {
	report, chain := aciEvidence(t)
	cose := readFile(t, aciDir+"uvm_reference_info.cose")
	e, err := VerifyEndorsement(cose, []Endorser{MicrosoftUVM})
	if err != nil {
		t.Fatal(err)
	}
	if e.Feed != "ContainerPlat-AMD-UVM" || e.GuestSVN != "22" || !strings.HasPrefix(e.LaunchMeasurement, "51068107cdc7") {
		t.Fatalf("endorsement %+v", e)
	}
	claims, err := Verify(report, chain, Options{Now: aciNow, Endorsements: [][]byte{cose}})
	if err != nil {
		t.Fatal(err)
	}
	if claims["x-ms-compliance-status"] != "azure-compliant-uvm" {
		t.Fatalf("compliance status %v", claims["x-ms-compliance-status"])
	}
	// Without the endorsement, no compliance claim.
	if claims, _ := Verify(report, chain, Options{Now: aciNow}); claims["x-ms-compliance-status"] != nil {
		t.Fatal("compliance claimed without an endorsement")
	}
	// Not trusted when the endorser is not configured.
	if _, err := VerifyEndorsement(cose, []Endorser{{Issuer: "did:x509:0:sha256:other::eku:1.2.3", Feed: "x"}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("untrusted endorser: %v", err)
	}
	// Any change to what the signature covers fails: every byte of the
	// payload, bytes across the signature, and the protected header.
	var msg cosepkg.Sign1Message
	if err := msg.UnmarshalCBOR(cose); err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(m *cosepkg.Sign1Message)) []byte {
		var m cosepkg.Sign1Message
		m.UnmarshalCBOR(cose)
		f(&m)
		b, err := m.MarshalCBOR()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var cases [][]byte
	for i := range msg.Payload {
		cases = append(cases, mutate(func(m *cosepkg.Sign1Message) { m.Payload[i] ^= 1 }))
	}
	for i := 0; i < len(msg.Signature); i += 13 {
		cases = append(cases, mutate(func(m *cosepkg.Sign1Message) { m.Signature[i] ^= 1 }))
	}
	cases = append(cases, mutate(func(m *cosepkg.Sign1Message) {
		m.Headers.Protected["signingtime"] = time.Now()
		m.Headers.RawProtected = nil // re-encode the changed protected header
	}))
	for n, bad := range cases {
		if c, err := Verify(report, chain, Options{Now: aciNow, Endorsements: [][]byte{bad}}); err == nil {
			t.Fatalf("modified endorsement %d accepted (compliance %v)", n, c["x-ms-compliance-status"])
		}
	}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignedEndorsementRoundTrip(t *testing.T) {
	caKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	now := time.Now()
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fake UVM CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
	caDER, _ := x509.CreateCertificate(rand.Reader, caT, caT, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	leafT := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "fake UVM signer"},
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{UVMEndorserOID}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
	leafDER, _ := x509.CreateCertificate(rand.Reader, leafT, ca, &leafKey.PublicKey, caKey)
	leaf, _ := x509.ParseCertificate(leafDER)
	m := bytes.Repeat([]byte{0xab}, 48)
	b, err := SignEndorsement(leafKey, []*x509.Certificate{leaf, ca}, "fake-UVM", m, 1)
	if err != nil {
		t.Fatal(err)
	}
	trusted := []Endorser{{Issuer: DID(ca), Feed: "fake-UVM"}}
	e, err := VerifyEndorsement(b, trusted)
	if err != nil || e.LaunchMeasurement != strings.Repeat("ab", 48) {
		t.Fatalf("%+v %v", e, err)
	}
	// A signer without the EKU is refused.
	leafT.UnknownExtKeyUsage = nil
	leafDER2, _ := x509.CreateCertificate(rand.Reader, leafT, ca, &leafKey.PublicKey, caKey)
	leaf2, _ := x509.ParseCertificate(leafDER2)
	b2, _ := SignEndorsement(leafKey, []*x509.Certificate{leaf2, ca}, "fake-UVM", m, 1)
	if _, err := VerifyEndorsement(b2, trusted); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "EKU") {
		t.Fatalf("no EKU: %v", err)
	}
}
