package attest

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/attest/fakesnp"
	"github.com/skrfs/skrfs/keyrelease/evidence"
)

const aci = "../../../shared/testdata/aci/"

// genuine returns the captured ACI report whatever REPORT_DATA is asked
// (real hardware would embed it; the captured report has its own).
type genuine struct{ report []byte }

func (g genuine) GetRawQuote([64]byte) ([]byte, error) { return g.report, nil }

func readACI(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(aci + name)
	if err != nil {
		t.Fatalf("genuine ACI evidence (../shared/testdata/aci) is required: %v", err)
	}
	return b
}

// securityContext builds an ACI security-context directory from the
// genuine files of the captured group.
func securityContext(t testing.TB, certs []byte) string {
	dir := t.TempDir()
	b64 := base64.StdEncoding.EncodeToString
	os.WriteFile(filepath.Join(dir, "host-amd-cert-base64"), []byte(b64(certs)), 0o644)
	os.WriteFile(filepath.Join(dir, "reference-info-base64"), []byte(b64(readACI(t, "uvm_reference_info.cose"))), 0o644)
	os.WriteFile(filepath.Join(dir, "security-policy-base64"), readACI(t, "uvm_security_policy.base64"), 0o644)
	return dir
}

func TestACISecurityContext(t *testing.T) {
	thimJSON := readACI(t, "uvm_host_amd_certificate.json")
	p, err := NewSNP(genuine{readACI(t, "snp_report.bin")}, Options{SecurityContextDir: securityContext(t, thimJSON), THIMURL: "http://127.0.0.1:1/unused"})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := p.Evidence(context.Background(), [64]byte{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Report) != 1184 || len(ev.Endorsements) != 1 || ev.Source != "ACI security context" {
		t.Fatalf("evidence %d bytes, %d endorsements, from %s", len(ev.Report), len(ev.Endorsements), ev.Source)
	}
	chain, err := evidence.ParseChainPEM(ev.CertChainPEM())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := evidence.Verify(ev.Report, chain, evidence.Options{Now: time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatalf("the evidence gathered does not verify: %v", err)
	}
}

func TestTCBMismatchRefetchesFromTHIM(t *testing.T) {
	thimJSON := readACI(t, "uvm_host_amd_certificate.json")
	stale := strings.Replace(string(thimJSON), "7308000000000003", "0000000000000001", 1)
	var hits atomic.Int64
	var serve string
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.Header.Get("Metadata") != "true" {
			http.Error(w, "no Metadata header", 400)
			return
		}
		if hits.Load() == 1 {
			http.Error(w, "busy", http.StatusServiceUnavailable) // retried
			return
		}
		w.Write([]byte(serve))
	}))
	defer ts.Close()
	p, _ := NewSNP(genuine{readACI(t, "snp_report.bin")}, Options{SecurityContextDir: securityContext(t, []byte(stale)), THIMURL: ts.URL})
	serve = string(thimJSON)
	ev, err := p.Evidence(context.Background(), [64]byte{})
	if err != nil || ev.Source != "THIM" || hits.Load() != 2 {
		t.Fatalf("refetch: %v, source %q, %d THIM requests", err, ev.Source, hits.Load())
	}
	serve = stale
	hits.Store(1)
	if _, err := p.Evidence(context.Background(), [64]byte{}); !errors.Is(err, keyrelease.ErrAttestation) ||
		!strings.Contains(err.Error(), "does not match the certificate TCB") {
		t.Fatalf("mismatch: %v", err)
	}
}

func TestDetectWithoutHardware(t *testing.T) {
	if _, err := os.Stat("/dev/sev-guest"); err == nil {
		t.Skip("this machine has a SEV-SNP guest device")
	}
	if _, err := Detect(Options{}); !errors.Is(err, ErrNoDevice) {
		t.Fatalf("Detect = %v, want ErrNoDevice", err)
	}
}

// deviceReporter adapts the fake device to Reporter.
type deviceReporter struct{ d *fakesnp.Device }

func (r deviceReporter) GetRawQuote(rd [64]byte) ([]byte, error) { return r.d.Report(rd) }

func TestAMDKDSFallback(t *testing.T) {
	dev, err := fakesnp.New(fakesnp.Config{})
	if err != nil {
		t.Fatal(err)
	}
	vcekPEM, ask, ark := dev.Certs()
	blk, _ := pem.Decode(vcekPEM)
	var paths []string
	kdsSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.Path)
		switch {
		case strings.HasSuffix(r.URL.Path, "/Milan/cert_chain"):
			w.Write(append(ask, ark...))
		case strings.HasPrefix(r.URL.Path, "/vcek/v1/Milan/") && r.URL.Query().Get("blSPL") != "":
			w.Write(blk.Bytes)
		default:
			http.NotFound(w, r)
		}
	}))
	defer kdsSrv.Close()
	thim := httptest.NewServer(http.NotFoundHandler())
	defer thim.Close()
	p, err := NewSNP(deviceReporter{dev}, Options{SecurityContextDir: t.TempDir(), THIMURL: thim.URL, KDSURL: kdsSrv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := p.Evidence(context.Background(), [64]byte{1})
	if err != nil {
		t.Fatal(err)
	}
	if ev.Source != "AMD KDS" || len(paths) != 2 || !strings.Contains(paths[0], "/Milan/") {
		t.Fatalf("source %q, KDS paths %v (product must come from the report)", ev.Source, paths)
	}
	chain, err := evidence.ParseChainPEM(ev.CertChainPEM())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := evidence.Verify(ev.Report, chain, evidence.Options{ExtraRoots: dev.Roots()}); err != nil {
		t.Fatalf("evidence from KDS does not verify: %v", err)
	}
}
