// Package attest gathers SEV-SNP evidence inside the TEE: the 1184-byte
// attestation report from the kernel (configfs-tsm, then /dev/sev-guest,
// through go-sev-guest) with REPORT_DATA chosen by the caller, the AMD
// VCEK/ASK/ARK certificates (from the ACI security-context directory, else
// THIM on IMDS), and the UVM endorsements MAA uses to recognise Azure's
// utility VM (protocol.md sections 1 and 2).
package attest

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/client"
	"github.com/google/go-sev-guest/kds"
	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/keyrelease"
)

// Evidence is what MAA needs for one report.
type Evidence struct {
	Report       []byte // exactly abi.ReportSize (1184) bytes
	VCEK         []byte // PEM
	Chain        []byte // PEM: ASK then ARK
	Endorsements [][]byte
	Source       string // where the report and certificates came from
}

// CertChainPEM returns "VCEK||ASK||ARK" as MAA wants it.
func (e *Evidence) CertChainPEM() []byte { return append(append([]byte(nil), e.VCEK...), e.Chain...) }

// Reporter produces raw reports; go-sev-guest's QuoteProvider satisfies it.
type Reporter interface {
	GetRawQuote(reportData [64]byte) ([]byte, error)
}

// Certs is the THIM / ACI host-amd-cert JSON.
type Certs struct {
	VcekCert         string `json:"vcekCert"`
	CertificateChain string `json:"certificateChain"`
	Tcbm             string `json:"tcbm"`
	CacheControl     string `json:"cacheControl"`
}

// Options configure a SEV-SNP provider.
type Options struct {
	// SecurityContextDir is ACI's UVM security context ("" =
	// $UVM_SECURITY_CONTEXT_DIR, else a /security-context-* directory).
	SecurityContextDir string
	// THIMURL is the THIM endpoint (default IMDS's).
	THIMURL string
	// KDSURL is AMD's Key Distribution Service, the last certificate source
	// (default https://kdsintf.amd.com).
	KDSURL     string
	HTTPClient *http.Client
	Logger     zerolog.Logger
}

// DefaultTHIMURL is THIM on IMDS.
const DefaultTHIMURL = "http://169.254.169.254/metadata/THIM/amd/certification"

// DefaultKDSURL is AMD's Key Distribution Service.
const DefaultKDSURL = "https://kdsintf.amd.com"

// SNP is the provider for real SEV-SNP guests.
type SNP struct {
	reporter Reporter
	opts     Options
	ctxCerts *Certs // from the security context, if any
	endorse  [][]byte
}

// ErrNoDevice: no SEV-SNP guest interface on this machine.
var ErrNoDevice = errors.New("attest: no SEV-SNP guest device (configfs-tsm or /dev/sev-guest)")

// Detect finds the SEV-SNP interface with go-sev-guest (configfs-tsm
// first, then /dev/sev-guest) and the certificate sources, and logs what
// it chose. It never returns a fake provider.
func Detect(opts Options) (*SNP, error) {
	qp, err := client.GetQuoteProvider()
	if err != nil || qp == nil || !qp.IsSupported() {
		if _, serr := os.Stat("/dev/sev"); serr == nil {
			return nil, fmt.Errorf("%w: found /dev/sev, the legacy interface of old ACI utility VMs, which go-sev-guest does not support", ErrNoDevice)
		}
		return nil, ErrNoDevice
	}
	return NewSNP(qp, opts)
}

// NewSNP returns a provider using reporter for reports.
func NewSNP(reporter Reporter, opts Options) (*SNP, error) {
	if opts.THIMURL == "" {
		opts.THIMURL = DefaultTHIMURL
	}
	if opts.KDSURL == "" {
		opts.KDSURL = DefaultKDSURL
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	s := &SNP{reporter: reporter, opts: opts}
	dir := securityContextDir(opts.SecurityContextDir)
	if dir != "" {
		if b, err := readB64(filepath.Join(dir, "host-amd-cert-base64")); err == nil {
			var c Certs
			if err := json.Unmarshal(b, &c); err == nil {
				s.ctxCerts = &c
			}
		}
		if b, err := readB64(filepath.Join(dir, "reference-info-base64")); err == nil {
			s.endorse = [][]byte{b}
		}
	}
	src := "THIM " + opts.THIMURL
	if s.ctxCerts != nil {
		src = "ACI security context " + dir
	}
	opts.Logger.Info().Str("report", fmt.Sprintf("%T", reporter)).Str("certificates", src).Int("uvm_endorsements", len(s.endorse)).
		Msg("SEV-SNP attestation provider selected")
	return s, nil
}

func securityContextDir(explicit string) string {
	if explicit != "" {
		return explicit
	}
	if d := os.Getenv("UVM_SECURITY_CONTEXT_DIR"); d != "" {
		return d
	}
	if m, _ := filepath.Glob("/security-context-*"); len(m) > 0 {
		return m[0]
	}
	return ""
}

// UVMEndorsements returns the UVM endorsement of a security-context
// directory ("" = the detected one), or nil when there is none.
func UVMEndorsements(dir string) [][]byte {
	dir = securityContextDir(dir)
	if dir == "" {
		return nil
	}
	b, err := readB64(filepath.Join(dir, "reference-info-base64"))
	if err != nil {
		return nil
	}
	return [][]byte{b}
}

func readB64(p string) ([]byte, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	return base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
}

// Evidence returns a report for reportData with matching certificates.
func (s *SNP) Evidence(ctx context.Context, reportData [64]byte) (*Evidence, error) {
	raw, err := s.reporter.GetRawQuote(reportData)
	if err != nil {
		return nil, fmt.Errorf("%w: SEV-SNP report: %v", keyrelease.ErrAttestation, err)
	}
	if len(raw) < abi.ReportSize {
		return nil, fmt.Errorf("%w: SEV-SNP report of %d bytes", keyrelease.ErrAttestation, len(raw))
	}
	report := raw[:abi.ReportSize]
	rep, err := abi.ReportToProto(report)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", keyrelease.ErrAttestation, err)
	}
	want := fmt.Sprintf("%016x", rep.ReportedTcb)
	certs, src := s.ctxCerts, "ACI security context"
	// Certificates must certify the TCB the report claims; refetch from
	// THIM, then AMD KDS, when they do not (protocol.md 2.4).
	if certs == nil || !strings.EqualFold(certs.Tcbm, want) {
		thimCerts, thimErr := s.thim(ctx)
		certs, src = thimCerts, "THIM"
		if thimErr == nil && !strings.EqualFold(thimCerts.Tcbm, want) {
			thimErr = fmt.Errorf("THIM certifies TCB %s", thimCerts.Tcbm)
		}
		if thimErr != nil {
			var kdsErr error
			certs, kdsErr = s.kds(ctx, rep.ChipId, rep.ReportedTcb, rep.Cpuid1EaxFms)
			src = "AMD KDS"
			if kdsErr != nil {
				return nil, fmt.Errorf("%w: SNP reported TCB %s does not match the certificate TCB: THIM: %v; AMD KDS: %v",
					keyrelease.ErrAttestation, want, thimErr, kdsErr)
			}
		}
	}
	return &Evidence{Report: bytes.Clone(report), VCEK: []byte(certs.VcekCert), Chain: []byte(certs.CertificateChain),
		Endorsements: s.endorse, Source: src}, nil
}

func (s *SNP) thim(ctx context.Context) (*Certs, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.opts.THIMURL, nil)
		req.Header.Set("Metadata", "true")
		resp, err := s.opts.HTTPClient.Do(req)
		if err == nil {
			b, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == 200 {
				var c Certs
				if err := json.Unmarshal(b, &c); err != nil {
					return nil, fmt.Errorf("%w: THIM answer: %v", keyrelease.ErrAttestation, err)
				}
				return &c, nil
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
			if resp.StatusCode != 429 && resp.StatusCode < 500 {
				return nil, fmt.Errorf("%w: THIM %s: %v", keyrelease.ErrAttestation, s.opts.THIMURL, err)
			}
		}
		lastErr = err
		select {
		case <-time.After(time.Duration(attempt+1) * 500 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return nil, fmt.Errorf("%w: THIM %s: %v", keyrelease.ErrUnavailable, s.opts.THIMURL, lastErr)
}

// kds fetches the VCEK for the chip and TCB, and the ASK/ARK chain, from
// AMD KDS. The product line comes from the report's CPUID (version 3
// reports); older reports try every product line KDS serves, never a
// hard-coded Milan only.
func (s *SNP) kds(ctx context.Context, chipID []byte, tcb uint64, fms uint32) (*Certs, error) {
	lines := []string{"Milan", "Genoa", "Turin"}
	if fms != 0 {
		lines = []string{kds.ProductLineFromFms(fms)}
	}
	var errs []error
	for _, line := range lines {
		vcekURL := strings.Replace(kds.VCEKCertURL(line, chipID, kds.TCBVersion(tcb)), DefaultKDSURL, s.opts.KDSURL, 1)
		der, err := s.get(ctx, vcekURL)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", line, err))
			continue
		}
		if _, err := x509.ParseCertificate(der); err != nil {
			return nil, fmt.Errorf("KDS VCEK for %s: %w", line, err)
		}
		chainURL := strings.Replace(kds.ProductCertChainURL(abi.VcekReportSigner, line), DefaultKDSURL, s.opts.KDSURL, 1)
		chain, err := s.get(ctx, chainURL)
		if err != nil {
			return nil, fmt.Errorf("KDS chain for %s: %w", line, err)
		}
		return &Certs{VcekCert: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
			CertificateChain: string(chain), Tcbm: fmt.Sprintf("%016x", tcb)}, nil
	}
	return nil, errors.Join(errs...)
}

func (s *SNP) get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.opts.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
}
