package sgx

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skrfs/skrfs/internal/devstack/fakesgx"
	devmaa "github.com/skrfs/skrfs/internal/devstack/maa"
	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/maa"
	"github.com/skrfs/skrfs/keyrelease/wrapkey"
)

// newMAA runs the devstack MAA, trusting roots for SGX quotes.
func newMAA(t *testing.T, roots ...*x509.Certificate) *maa.Client {
	t.Helper()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "maa signer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	cert, _ := x509.ParseCertificate(der)
	ts := httptest.NewUnstartedServer(nil)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	s, err := devmaa.New(devmaa.Options{Issuer: ts.URL, Key: key, Chain: []*x509.Certificate{cert}, SGXRoots: roots})
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = s
	return &maa.Client{BaseURL: ts.URL, HTTPClient: ts.Client()}
}

func enclave(debug bool) fakesgx.Enclave {
	e := fakesgx.Enclave{ProductID: 1, SVN: 2, Debug: debug}
	copy(e.MREnclave[:], "mrenclave of the test enclave....")
	copy(e.MRSigner[:], "mrsigner of the test signer......")
	return e
}

func mountFake(t *testing.T, p *fakesgx.Platform) *fakesgx.Dev {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("FUSE mount needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	d, err := fakesgx.MountDev(filepath.Join(t.TempDir(), "dev"), p,
		map[string]fakesgx.Enclave{"attestation": enclave(false), "attestation-debug": enclave(true)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestProviderAgainstFakeEnclave: the production provider, through the
// fake Gramine /dev/attestation (FUSE) and the devstack's attest/SgxEnclave:
// the token carries the SGX claims and x-ms-runtime = {"keys":[our JWK]},
// and the decrypter is that key. A debug enclave gets a token saying so.
func TestProviderAgainstFakeEnclave(t *testing.T) {
	p, err := fakesgx.NewPlatform()
	if err != nil {
		t.Fatal(err)
	}
	d := mountFake(t, p)
	mc := newMAA(t, p.Root())
	for _, tc := range []struct {
		dir   string
		debug bool
	}{{"attestation", false}, {"attestation-debug", true}} {
		t.Run(tc.dir, func(t *testing.T) {
			prov, err := Open(Options{Dir: d.Path(tc.dir), MAA: mc})
			if err != nil {
				t.Fatal(err)
			}
			a, err := prov.Attest(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			c := a.Token.Claims
			e := enclave(tc.debug)
			if c["x-ms-attestation-type"] != "sgx" || c["x-ms-sgx-mrenclave"] != hex.EncodeToString(e.MREnclave[:]) ||
				c["x-ms-sgx-mrsigner"] != hex.EncodeToString(e.MRSigner[:]) || c["x-ms-sgx-is-debuggable"] != tc.debug ||
				c["x-ms-sgx-product-id"] != float64(1) || c["x-ms-sgx-svn"] != float64(2) {
				t.Fatalf("claims: %v", c)
			}
			if _, ok := c["x-ms-sgx-ehd"]; ok {
				t.Error("x-ms-sgx-ehd for JSON runtime data (MAA fills it only for Binary)")
			}
			keys := c["x-ms-runtime"].(map[string]any)["keys"].([]any)
			n := keys[0].(map[string]any)["n"].(string)
			pub := a.Key.Public().(*rsa.PublicKey)
			if len(keys) != 1 || n != b64(pub.N.Bytes()) {
				t.Fatalf("x-ms-runtime names another key than the decrypter's")
			}
			if a.Enc != wrapkey.EncRSAAESKeyWrap {
				t.Errorf("enc %q", a.Enc)
			}
		})
	}
}

// TestProviderMAARejectsUntrustedRoot: an MAA that does not trust the
// devstack root (as the real one does not) rejects the fake quote.
func TestProviderMAARejectsUntrustedRoot(t *testing.T) {
	p, _ := fakesgx.NewPlatform()
	d := mountFake(t, p)
	prov, err := Open(Options{Dir: d.Path("attestation"), MAA: newMAA(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := prov.Attest(context.Background()); !errors.Is(err, keyrelease.ErrAttestation) || !strings.Contains(err.Error(), "PCK certificate chain") {
		t.Fatalf("want an attestation error on the chain, got %v", err)
	}
}

// TestOpen: the directory must be Gramine's interface in DCAP mode.
func TestOpen(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(Options{Dir: filepath.Join(dir, "none")}); !errors.Is(err, ErrNoDevice) {
		t.Errorf("missing dir: %v", err)
	}
	for typ, want := range map[string]error{"epid": ErrNotDCAP, "none": ErrNotDCAP, "dcap": nil, "dcap\n": nil} {
		os.WriteFile(filepath.Join(dir, FileType), []byte(typ), 0o644)
		if _, err := Open(Options{Dir: dir}); !errors.Is(err, want) && !(want == nil && err == nil) {
			t.Errorf("attestation_type %q: %v, want %v", typ, err, want)
		}
	}
	os.WriteFile(filepath.Join(dir, FileType), []byte("dcap"), 0o644)
	if _, err := Open(Options{Dir: dir, Enc: "RSA_PKCS1"}); err == nil {
		t.Error("unknown enc accepted")
	}
}

// TestQuoteMustCarryReportData: a quote that does not carry what was
// written to user_report_data (a static file, another writer) is refused
// before anything is sent.
func TestQuoteMustCarryReportData(t *testing.T) {
	p, _ := fakesgx.NewPlatform()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, FileType), []byte("dcap"), 0o644)
	os.WriteFile(filepath.Join(dir, FileReportData), nil, 0o644)
	q, _ := p.Quote(enclave(false), [64]byte{1})
	os.WriteFile(filepath.Join(dir, FileQuote), q, 0o644)
	prov, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := prov.Quote([64]byte{1}); err != nil {
		t.Fatalf("matching report data: %v", err)
	}
	if _, err := prov.Quote([64]byte{2}); !errors.Is(err, keyrelease.ErrAttestation) || !strings.Contains(err.Error(), "does not carry") {
		t.Fatalf("stale quote: %v", err)
	}
	os.WriteFile(filepath.Join(dir, FileQuote), q[:100], 0o644)
	if _, err := prov.Quote([64]byte{1}); !errors.Is(err, keyrelease.ErrAttestation) {
		t.Fatalf("truncated quote: %v", err)
	}
}

// TestCheckRuntime: the per-provider token check.
func TestCheckRuntime(t *testing.T) {
	wk, _ := wrapkey.NewWrappingKey()
	other, _ := wrapkey.NewWrappingKey()
	good := func() map[string]any {
		var rt any
		json.Unmarshal(wk.RuntimeData, &rt)
		return map[string]any{"x-ms-attestation-type": "sgx", "x-ms-sgx-mrenclave": "aa", "x-ms-sgx-mrsigner": "bb",
			"x-ms-sgx-is-debuggable": false, "x-ms-sgx-product-id": 1.0, "x-ms-sgx-svn": 1.0, "x-ms-runtime": rt}
	}
	var otherRT any
	json.Unmarshal(other.RuntimeData, &otherRT)
	for name, tc := range map[string]struct {
		edit func(map[string]any)
		ok   bool
	}{
		"ours":             {func(map[string]any) {}, true},
		"another key":      {func(c map[string]any) { c["x-ms-runtime"] = otherRT }, false},
		"no x-ms-runtime":  {func(c map[string]any) { delete(c, "x-ms-runtime") }, false},
		"SEV-SNP token":    {func(c map[string]any) { c["x-ms-attestation-type"] = "sevsnpvm" }, false},
		"no mrsigner":      {func(c map[string]any) { delete(c, "x-ms-sgx-mrsigner") }, false},
		"no is-debuggable": {func(c map[string]any) { delete(c, "x-ms-sgx-is-debuggable") }, false},
		"key plus an extra": {func(c map[string]any) {
			c["x-ms-runtime"].(map[string]any)["keys"] = append(c["x-ms-runtime"].(map[string]any)["keys"].([]any), "x")
		}, false},
	} {
		c := good()
		tc.edit(c)
		err := CheckRuntime(c, wk.RuntimeData)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrRuntime)) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
