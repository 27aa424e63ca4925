package fakesgx

import (
	"bytes"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/skrfs/skrfs/keyrelease/evidence/sgxquote"
)

func testEnclave(debug bool) Enclave {
	e := Enclave{ProductID: 7, SVN: 3, Debug: debug}
	e.MREnclave[0], e.MRSigner[0] = 0xe1, 0x51
	return e
}

// TestFakeQuoteVerifiesOnlyWithDevstackRoot: the fake quotes are real
// quote-v3 structures that sgxquote verifies with the devstack root given
// explicitly, and rejects by default (Intel SGX Root CA only).
func TestFakeQuoteVerifiesOnlyWithDevstackRoot(t *testing.T) {
	p, err := NewPlatform()
	if err != nil {
		t.Fatal(err)
	}
	var rd [64]byte
	copy(rd[:], "report data")
	q, err := p.Quote(testEnclave(true), rd)
	if err != nil {
		t.Fatal(err)
	}
	res, err := sgxquote.Verify(q, sgxquote.Options{Roots: []*x509.Certificate{p.Root()}})
	if err != nil {
		t.Fatalf("fake quote with the devstack root: %v", err)
	}
	r := res.Quote.Report
	if r.ReportData != rd || r.ISVProdID != 7 || r.ISVSVN != 3 || !r.Debuggable() || r.MREnclave[0] != 0xe1 || r.MRSigner[0] != 0x51 {
		t.Fatalf("report body: %+v", r)
	}
	if !bytes.Equal([]byte(res.FMSPC), []byte("00906ed50000")) {
		t.Errorf("FMSPC %q", res.FMSPC)
	}
	if _, err := sgxquote.Verify(q, sgxquote.Options{}); !errors.Is(err, sgxquote.ErrInvalid) {
		t.Fatalf("fake quote accepted under the default (Intel) root: %v", err)
	}
	// Any flipped bit of the signed part fails.
	for _, off := range []int{5, 48 + 64, 48 + 320, sgxquote.SignedSize + 4 + 10} {
		bad := bytes.Clone(q)
		bad[off] ^= 1
		if _, err := sgxquote.Verify(bad, sgxquote.Options{Roots: []*x509.Certificate{p.Root()}}); err == nil {
			t.Errorf("flipped bit at %d verified", off)
		}
	}
}

// TestDevAttestation: the FUSE pseudo-files behave like Gramine's: the
// quote read after writing user_report_data carries it; a write of other
// than 64 bytes fails; attestation_type reads dcap.
func TestDevAttestation(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("FUSE mount needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	p, err := NewPlatform()
	if err != nil {
		t.Fatal(err)
	}
	d, err := MountDev(filepath.Join(t.TempDir(), "dev"), p, map[string]Enclave{"attestation": testEnclave(false)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	dir := d.Path("attestation")
	typ, err := os.ReadFile(filepath.Join(dir, "attestation_type"))
	if err != nil || string(typ) != "dcap" {
		t.Fatalf("attestation_type %q %v", typ, err)
	}
	for i := 0; i < 2; i++ {
		rd := bytes.Repeat([]byte{byte(0x40 + i)}, 64)
		if err := os.WriteFile(filepath.Join(dir, "user_report_data"), rd, 0); err != nil {
			t.Fatal(err)
		}
		q, err := os.ReadFile(filepath.Join(dir, "quote"))
		if err != nil {
			t.Fatal(err)
		}
		res, err := sgxquote.Verify(q, sgxquote.Options{Roots: []*x509.Certificate{p.Root()}})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(res.Quote.Report.ReportData[:], rd) {
			t.Fatalf("quote %d carries report data %x", i, res.Quote.Report.ReportData)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "user_report_data"), []byte("short"), 0); err == nil {
		t.Fatal("a 5-byte user_report_data was accepted")
	}
	if err := os.WriteFile(filepath.Join(dir, "quote"), []byte("x"), 0); err == nil {
		t.Fatal("quote is writable")
	}
}
