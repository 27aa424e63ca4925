package devstack

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/skrfs/skrfs/keyrelease/evidence"
)

// pki is the devstack's private CA and the keys it issues: TLS for every
// service, the Key Vault release-response signer, the MAA token signer and
// the Entra/IMDS token signer. Everything is kept in DIR/pki so a restart
// keeps the same trust roots (clients keep DIR/ca.pem).
type pki struct {
	caCert   *x509.Certificate
	caKey    crypto.Signer
	tls      tls.Certificate
	vaultKey *rsa.PrivateKey
	vault    []*x509.Certificate // leaf, CA
	maaKey   *rsa.PrivateKey
	maa      []*x509.Certificate
	tokenKey *rsa.PrivateKey
	// fedKey signs the service-account tokens of workload identity.
	fedKey *rsa.PrivateKey
	// uvmKey signs UVM endorsements of the fake TEE; uvm is its chain
	// (signer, CA), the CA being what the did:x509 issuer names.
	uvmKey *rsa.PrivateKey
	uvm    []*x509.Certificate
}

// loadPKI loads the PKI from dir, creating what is missing.
func loadPKI(dir string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &pki{}
	caKey, err := loadOrCreateKey(filepath.Join(dir, "ca-key.pem"), func() (crypto.Signer, error) {
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	})
	if err != nil {
		return nil, err
	}
	p.caKey = caKey
	p.caCert, err = loadOrCreateCert(filepath.Join(dir, "ca.pem"), func() (*x509.Certificate, error) {
		return issue(&x509.Certificate{Subject: pkix.Name{CommonName: "skrfs devstack CA"}, IsCA: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, MaxPathLen: 1},
			caKey.Public(), nil, caKey)
	})
	if err != nil {
		return nil, err
	}
	leaf := func(name string, key crypto.Signer, usage []x509.ExtKeyUsage) (*x509.Certificate, error) {
		return loadOrCreateCert(filepath.Join(dir, name+".pem"), func() (*x509.Certificate, error) {
			return issue(&x509.Certificate{Subject: pkix.Name{CommonName: "skrfs devstack " + name},
				DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
				KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: usage},
				key.Public(), p.caCert, caKey)
		})
	}
	tlsKey, err := loadOrCreateKey(filepath.Join(dir, "tls-key.pem"), func() (crypto.Signer, error) {
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	})
	if err != nil {
		return nil, err
	}
	tlsCert, err := leaf("tls", tlsKey, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth})
	if err != nil {
		return nil, err
	}
	p.tls = tls.Certificate{Certificate: [][]byte{tlsCert.Raw, p.caCert.Raw}, PrivateKey: tlsKey, Leaf: tlsCert}
	rsaKey := func(name string) (*rsa.PrivateKey, error) {
		k, err := loadOrCreateKey(filepath.Join(dir, name+"-key.pem"), func() (crypto.Signer, error) {
			return rsa.GenerateKey(rand.Reader, 2048)
		})
		if err != nil {
			return nil, err
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s key is not RSA", name)
		}
		return rk, nil
	}
	if p.vaultKey, err = rsaKey("vault-signer"); err != nil {
		return nil, err
	}
	vc, err := leaf("vault-signer", p.vaultKey, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth})
	if err != nil {
		return nil, err
	}
	p.vault = []*x509.Certificate{vc, p.caCert}
	if p.maaKey, err = rsaKey("maa-signer"); err != nil {
		return nil, err
	}
	mc, err := leaf("maa-signer", p.maaKey, nil)
	if err != nil {
		return nil, err
	}
	p.maa = []*x509.Certificate{mc, p.caCert}
	if p.tokenKey, err = rsaKey("token-signer"); err != nil {
		return nil, err
	}
	if p.fedKey, err = rsaKey("federation"); err != nil {
		return nil, err
	}
	// A separate CA for UVM endorsements, as Microsoft's supply-chain CA is
	// separate from its TLS CAs.
	uvmCAKey, err := rsaKey("uvm-ca")
	if err != nil {
		return nil, err
	}
	uvmCA, err := loadOrCreateCert(filepath.Join(dir, "uvm-ca.pem"), func() (*x509.Certificate, error) {
		return issue(&x509.Certificate{Subject: pkix.Name{CommonName: "skrfs devstack fake UVM endorsement CA"}, IsCA: true,
			KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}, &uvmCAKey.PublicKey, nil, uvmCAKey)
	})
	if err != nil {
		return nil, err
	}
	if p.uvmKey, err = rsaKey("uvm-signer"); err != nil {
		return nil, err
	}
	uvmLeaf, err := loadOrCreateCert(filepath.Join(dir, "uvm-signer.pem"), func() (*x509.Certificate, error) {
		return issue(&x509.Certificate{Subject: pkix.Name{CommonName: "skrfs devstack fake ContainerPlat"},
			KeyUsage: x509.KeyUsageDigitalSignature, UnknownExtKeyUsage: []asn1.ObjectIdentifier{evidence.UVMEndorserOID}},
			&p.uvmKey.PublicKey, uvmCA, uvmCAKey)
	})
	if err != nil {
		return nil, err
	}
	p.uvm = []*x509.Certificate{uvmLeaf, uvmCA}
	return p, nil
}

// caPEM returns the CA certificate in PEM.
func (p *pki) caPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.caCert.Raw})
}

// pool returns a pool trusting the devstack CA.
func (p *pki) pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.caCert)
	return pool
}

func issue(tmpl *x509.Certificate, pub crypto.PublicKey, parent *x509.Certificate, signer crypto.Signer) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().AddDate(5, 0, 0)
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func loadOrCreateKey(path string, gen func() (crypto.Signer, error)) (crypto.Signer, error) {
	if b, err := os.ReadFile(path); err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("%s: not PEM", path)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%s: not a signing key", path)
		}
		return s, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	k, err := gen()
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return k, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

func loadOrCreateCert(path string, gen func() (*x509.Certificate, error)) (*x509.Certificate, error) {
	if b, err := os.ReadFile(path); err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("%s: not PEM", path)
		}
		return x509.ParseCertificate(blk.Bytes)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	c, err := gen()
	if err != nil {
		return nil, err
	}
	return c, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o644)
}
