package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/skrfs/skrfs/internal/config"
)

// testCA writes a CA certificate to dir/name.pem and returns a leaf for
// host that it issued.
func testCA(t *testing.T, dir, name, host string) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: host},
		DNSNames: []string{host}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature}, ca, &leafKey.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(leafDER)
	return leaf
}

// TestReleaseRootsExcludeTransportCAs: a CA trusted for transport
// (tls.ca_files, e.g. a TLS-inspecting proxy's) cannot sign key releases;
// one in tls.release_ca_files can. The releaser may talk only to the
// configured keys' vaults outside Azure's vault domains.
func TestReleaseRootsExcludeTransportCAs(t *testing.T) {
	dir := t.TempDir()
	const host = "myvault.vault.azure.net"
	proxyLeaf := testCA(t, dir, "proxy-ca", host)
	vaultLeaf := testCA(t, dir, "vault-ca", host)
	os.WriteFile(filepath.Join(dir, "token"), []byte("t"), 0o600)
	cfgFile := filepath.Join(dir, "skrfs.yaml")
	os.WriteFile(cfgFile, []byte(`
attestation:
  maa: https://sharedeus.eus.attest.azure.net
identity:
  kind: token
  token_file: token
tls:
  ca_files: [proxy-ca.pem]
  release_ca_files: [vault-ca.pem]
`), 0o600)
	cfg, err := config.Load(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := newRuntimeFor(context.Background(), cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.close()
	if _, err := proxyLeaf.Verify(x509.VerifyOptions{Roots: rt.roots, DNSName: host}); err == nil {
		t.Fatal("a certificate of the transport CA (tls.ca_files) is trusted to sign key releases")
	}
	if _, err := vaultLeaf.Verify(x509.VerifyOptions{Roots: rt.roots, DNSName: host}); err != nil {
		t.Fatalf("a certificate of tls.release_ca_files is not trusted: %v", err)
	}
	// The transport itself still trusts the proxy's CA.
	if _, err := proxyLeaf.Verify(x509.VerifyOptions{Roots: rt.http.Transport.(*http.Transport).TLSClientConfig.RootCAs, DNSName: host}); err != nil {
		t.Fatalf("the transport does not trust tls.ca_files: %v", err)
	}
}

func TestVaultHosts(t *testing.T) {
	cfg, err := config.Parse([]byte(`
attestation:
  maa: https://127.0.0.1:8443
keys:
  - {name: a, ref: "https://127.0.0.1:8444/keys/a"}
  - {name: b, ref: "https://MyVault.vault.azure.net/keys/b/0123abcd"}
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := vaultHosts(cfg); !slices.Equal(got, []string{"127.0.0.1:8444", "myvault.vault.azure.net"}) {
		t.Fatalf("vaultHosts = %v", got)
	}
}
