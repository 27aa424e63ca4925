// Package sgx is the attestation provider for Intel SGX enclaves running
// under Gramine (protocol.md section 14): a fresh software RSA-2048
// wrapping key whose runtime JSON {"keys":[JWK]} is bound into the quote
// (REPORT_DATA = SHA-256(runtime JSON) then 32 zero bytes) through
// Gramine's /dev/attestation pseudo-files, the quote sent to MAA's
// attest/SgxEnclave with the runtime data as JSON, and the token checked
// to be an SGX token whose x-ms-runtime is exactly that JSON: the claim Key
// Vault takes the wrapping key from.
//
// The wrapping key lives in this process, that is in enclave memory; the
// quote comes from Intel's quoting enclave through Gramine (with the AKS
// confcom add-on, AESM at /var/run/aesmd and SGX_AESM_ADDR=1).
package sgx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/attest"
	"github.com/skrfs/skrfs/keyrelease/evidence/sgxquote"
	"github.com/skrfs/skrfs/keyrelease/maa"
	"github.com/skrfs/skrfs/keyrelease/wrapkey"
)

// DefaultDir is Gramine's attestation pseudo-filesystem.
const DefaultDir = "/dev/attestation"

// Gramine's pseudo-files.
const (
	FileType       = "attestation_type"
	FileReportData = "user_report_data"
	FileQuote      = "quote"
)

var (
	// ErrNoDevice: no Gramine /dev/attestation (not inside a Gramine SGX
	// enclave, or the manifest does not enable remote attestation).
	ErrNoDevice = errors.New("sgx: no Gramine attestation interface")
	// ErrNotDCAP: Gramine attests with something other than DCAP (EPID,
	// or "none" when sgx.remote_attestation is off); MAA's attest/SgxEnclave
	// takes DCAP quotes.
	ErrNotDCAP = errors.New("sgx: Gramine's attestation type is not dcap")
	// ErrRuntime: the token does not carry our wrapping key as x-ms-runtime,
	// or is not an SGX token.
	ErrRuntime = errors.New("sgx: token runtime claims")
)

// Options configure the provider.
type Options struct {
	// Dir is Gramine's attestation directory (default /dev/attestation;
	// the devstack points it at its fake).
	Dir string
	MAA *maa.Client
	// Enc is the key export algorithm to request (default
	// CKM_RSA_AES_KEY_WRAP, the one every vault supports).
	Enc    string
	Logger zerolog.Logger
}

// Provider implements attest.Provider for SGX enclaves under Gramine.
type Provider struct {
	opts Options
	// mu serialises write(user_report_data) + read(quote): Gramine keeps one
	// user_report_data per enclave.
	mu sync.Mutex
}

var _ attest.Provider = (*Provider)(nil)

// Open checks that dir (default /dev/attestation) is Gramine's attestation
// interface in DCAP mode, and logs its choice.
func Open(opts Options) (*Provider, error) {
	if opts.Dir == "" {
		opts.Dir = DefaultDir
	}
	if opts.Enc == "" {
		opts.Enc = wrapkey.EncRSAAESKeyWrap
	}
	if _, err := wrapkey.OAEPHash(opts.Enc); err != nil {
		return nil, err
	}
	typ, err := os.ReadFile(filepath.Join(opts.Dir, FileType))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrNoDevice, opts.Dir, err)
	}
	if t := strings.TrimSpace(strings.TrimRight(string(typ), "\x00")); t != "dcap" {
		return nil, fmt.Errorf("%w: %s reads %q (set sgx.remote_attestation = \"dcap\" in the Gramine manifest)", ErrNotDCAP, filepath.Join(opts.Dir, FileType), t)
	}
	opts.Logger.Info().Str("dir", opts.Dir).Str("attestation_type", "dcap").
		Msg("SGX attestation provider selected (Gramine /dev/attestation, MAA attest/SgxEnclave)")
	return &Provider{opts: opts}, nil
}

// Name implements attest.Provider.
func (p *Provider) Name() string { return "sgx" }

// Quote writes reportData to user_report_data and reads the quote, which
// must carry exactly that REPORT_DATA.
func (p *Provider) Quote(reportData [64]byte) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := writeFull(filepath.Join(p.opts.Dir, FileReportData), reportData[:]); err != nil {
		return nil, fmt.Errorf("%w: write %s: %v", keyrelease.ErrAttestation, FileReportData, err)
	}
	q, err := os.ReadFile(filepath.Join(p.opts.Dir, FileQuote))
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %v", keyrelease.ErrAttestation, FileQuote, err)
	}
	parsed, err := sgxquote.Parse(q)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", keyrelease.ErrAttestation, err)
	}
	if parsed.Report.ReportData != reportData {
		return nil, fmt.Errorf("%w: the quote does not carry the user_report_data written (another writer of %s?)", keyrelease.ErrAttestation, p.opts.Dir)
	}
	return q, nil
}

// writeFull writes b in one write(2) at offset 0, as Gramine wants.
func writeFull(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	n, err := f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != len(b) {
		err = fmt.Errorf("short write (%d of %d bytes)", n, len(b))
	}
	return err
}

// Attest implements attest.Provider: a fresh wrapping key bound into a
// quote, attest/SgxEnclave, and the runtime check.
func (p *Provider) Attest(ctx context.Context) (*attest.Attestation, error) {
	if p.opts.MAA == nil {
		return nil, fmt.Errorf("%w: sgx provider without an MAA client", keyrelease.ErrAttestation)
	}
	wk, err := wrapkey.NewWrappingKey()
	if err != nil {
		return nil, err
	}
	q, err := p.Quote(wk.ReportData())
	if err != nil {
		wk.Wipe()
		return nil, err
	}
	tok, err := p.opts.MAA.AttestSgx(ctx, q, wk.RuntimeData)
	if err != nil {
		wk.Wipe()
		return nil, err
	}
	if err := CheckRuntime(tok.Claims, wk.RuntimeData); err != nil {
		wk.Wipe()
		return nil, fmt.Errorf("%w: %w", keyrelease.ErrAttestation, err)
	}
	return attest.NewAttestation(tok, wk.Private, p.opts.Enc, wk.Wipe), nil
}

// SGXClaims are the attest/SgxEnclave claims an SGX token must carry.
var SGXClaims = []string{"x-ms-sgx-mrenclave", "x-ms-sgx-mrsigner", "x-ms-sgx-is-debuggable", "x-ms-sgx-product-id", "x-ms-sgx-svn"}

// CheckRuntime is the sgx provider's token check: an SGX token
// (x-ms-attestation-type sgx, with the enclave identity claims) whose
// x-ms-runtime is exactly the runtime JSON we sent, {"keys":[our JWK]}.
// Key Vault wraps the released key to the key in x-ms-runtime, so a token
// naming any other key must not be used.
func CheckRuntime(claims map[string]any, runtimeData []byte) error {
	if t, _ := claims["x-ms-attestation-type"].(string); t != "sgx" {
		return fmt.Errorf("%w: x-ms-attestation-type %q, want sgx", ErrRuntime, claims["x-ms-attestation-type"])
	}
	for _, c := range SGXClaims {
		if _, ok := claims[c]; !ok {
			return fmt.Errorf("%w: no %s claim", ErrRuntime, c)
		}
	}
	rt, ok := claims["x-ms-runtime"]
	if !ok {
		return fmt.Errorf("%w: no x-ms-runtime claim (was the runtime data sent as JSON?)", ErrRuntime)
	}
	var want any
	if err := json.Unmarshal(runtimeData, &want); err != nil {
		return err
	}
	gb, err1 := json.Marshal(rt)
	wb, err2 := json.Marshal(want)
	if err1 != nil || err2 != nil || !bytes.Equal(gb, wb) {
		return fmt.Errorf("%w: x-ms-runtime does not carry our wrapping key", ErrRuntime)
	}
	return nil
}
