package fakesnp

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/verify"
)

func attestation(t *testing.T, d *Device, rd [64]byte) *spb.Attestation {
	t.Helper()
	raw, err := d.Report(rd)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != abi.ReportSize {
		t.Fatalf("report of %d bytes", len(raw))
	}
	rep, err := abi.ReportToProto(raw)
	if err != nil {
		t.Fatal(err)
	}
	return &spb.Attestation{Report: rep, CertificateChain: &spb.CertificateChain{
		VcekCert: d.signer.Vcek.Raw, AskCert: d.signer.Ask.Raw, ArkCert: d.signer.Ark.Raw}}
}

func TestReportsVerifyOnlyAgainstFakeRoots(t *testing.T) {
	cfg := Config{HostData: HostDataFromPolicy([]byte("package policy")), VMPL: 0, GuestSVN: 2}
	copy(cfg.Measurement[:], bytes.Repeat([]byte{0xab}, 48))
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var rd [64]byte
	copy(rd[:], "any report data the caller chooses")
	att := attestation(t, d, rd)
	now := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	if err := verify.SnpAttestation(att, &verify.Options{DisableCertFetching: true, TrustedRoots: d.Roots(), Now: now,
		Product: abi.DefaultSevProduct()}); err != nil {
		t.Fatalf("verify with fake roots: %v", err)
	}
	if err := verify.SnpAttestation(att, &verify.Options{DisableCertFetching: true, Now: now, Product: abi.DefaultSevProduct()}); err == nil {
		t.Fatal("a fake report verified against AMD's genuine roots")
	}
	r := att.Report
	pol, _ := abi.ParseSnpPolicy(r.Policy)
	if !bytes.Equal(r.ReportData, rd[:]) || !bytes.Equal(r.Measurement, cfg.Measurement[:]) || !bytes.Equal(r.HostData, cfg.HostData[:]) ||
		pol.Debug || r.Vmpl != 0 || r.GuestSvn != 2 {
		t.Fatalf("report fields: %+v", r)
	}
	// A second device (another process) builds a chain that verifies the
	// first one's reports.
	d2, _ := New(Config{})
	if err := verify.SnpAttestation(att, &verify.Options{DisableCertFetching: true, TrustedRoots: d2.Roots(), Now: now,
		Product: abi.DefaultSevProduct()}); err != nil {
		t.Fatalf("verify with another instance's roots: %v", err)
	}
	// A flipped bit fails.
	raw, _ := d.Report(rd)
	raw[0xC0] ^= 1
	bad, _ := abi.ReportToProto(raw)
	att.Report = bad
	if err := verify.SnpAttestation(att, &verify.Options{DisableCertFetching: true, TrustedRoots: d.Roots(), Now: now,
		Product: abi.DefaultSevProduct()}); err == nil {
		t.Fatal("tampered report verified")
	}
	if d.TCB() != "7308000000000003" && len(d.TCB()) != 16 {
		t.Fatalf("tcbm %s", d.TCB())
	}
}
