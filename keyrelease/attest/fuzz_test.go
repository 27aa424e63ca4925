package attest

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/skrfs/skrfs/keyrelease"
)

// notFound answers every request with 404 at once, so that a report whose
// TCB the security context does not certify fails over THIM and AMD KDS
// without a network and without retry delays.
type notFound struct{}

func (notFound) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusNotFound, Body: http.NoBody, Header: http.Header{}, Request: r}, nil
}

// fuzzed returns whatever the fuzzer gives as the raw report.
type fuzzed struct{ raw []byte }

func (f fuzzed) GetRawQuote([64]byte) ([]byte, error) { return f.raw, nil }

// FuzzEvidence: whatever the SEV-SNP device returns (short, long, garbage
// reports), gathering evidence never panics; it fails with
// keyrelease.ErrAttestation, or returns exactly the first 1184 bytes with
// certificates certifying the TCB the report claims.
func FuzzEvidence(f *testing.F) {
	report := readACI(f, "snp_report.bin")
	thim := readACI(f, "uvm_host_amd_certificate.json")
	f.Add(report)
	f.Add(report[:100])
	f.Add(append(bytes.Clone(report), 0xff, 0xff))
	other := bytes.Clone(report)
	other[0x180] ^= 1 // reported TCB
	f.Add(other)
	dir := securityContext(f, thim)
	p, err := NewSNP(fuzzed{}, Options{SecurityContextDir: dir, THIMURL: "https://thim.invalid/", KDSURL: "https://kds.invalid",
		HTTPClient: &http.Client{Transport: notFound{}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		s := *p
		s.reporter = fuzzed{raw}
		ev, err := s.Evidence(context.Background(), [64]byte{})
		if err != nil {
			if !errors.Is(err, keyrelease.ErrAttestation) {
				t.Fatalf("unclassified failure: %v", err)
			}
			return
		}
		if len(raw) < 1184 || !bytes.Equal(ev.Report, raw[:1184]) || ev.Source != "ACI security context" ||
			!strings.Contains(string(ev.CertChainPEM()), "BEGIN CERTIFICATE") {
			t.Fatalf("evidence of %d bytes from %s for a raw report of %d bytes", len(ev.Report), ev.Source, len(raw))
		}
	})
}
