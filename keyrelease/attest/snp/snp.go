// Package snp is the attestation provider for SEV-SNP guests (ACI and
// Kata confidential containers, SNP VMs with /dev/sev-guest, and the
// devstack's fake device): a fresh software RSA-2048 wrapping key whose
// runtime JSON is bound into REPORT_DATA, the evidence sent to MAA's
// attest/SevSnpVm, and the token's x-ms-runtime checked to be exactly that
// JSON (protocol.md sections 1-4).
package snp

import (
	"context"
	"fmt"
	"sync"

	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/attest"
	"github.com/skrfs/skrfs/keyrelease/maa"
	"github.com/skrfs/skrfs/keyrelease/wrapkey"
)

// EvidenceSource produces SEV-SNP evidence whose REPORT_DATA is reportData.
type EvidenceSource interface {
	Evidence(ctx context.Context, reportData [64]byte) (maa.Evidence, error)
}

// Provider implements attest.Provider for SEV-SNP.
type Provider struct {
	Evidence EvidenceSource
	MAA      *maa.Client
	// Enc is the key export algorithm to request (default
	// CKM_RSA_AES_KEY_WRAP, the one every vault supports).
	Enc string
	// ProviderName is returned by Name (default "snp").
	ProviderName string

	spareOnce sync.Once
	spare     chan *wrapkey.WrappingKey // a wrapping key generated ahead of need
}

var _ attest.Provider = (*Provider)(nil)

// Name implements attest.Provider.
func (p *Provider) Name() string {
	if p.ProviderName != "" {
		return p.ProviderName
	}
	return "snp"
}

func (p *Provider) spares() chan *wrapkey.WrappingKey {
	p.spareOnce.Do(func() { p.spare = make(chan *wrapkey.WrappingKey, 1) })
	return p.spare
}

// PrepareNow generates the next wrapping key, so that an attestation does
// not wait for RSA key generation (tens of milliseconds).
func (p *Provider) PrepareNow() {
	wk, err := wrapkey.NewWrappingKey()
	if err != nil {
		return
	}
	select {
	case p.spares() <- wk:
	default:
		wk.Wipe() // one is waiting already
	}
}

// Close wipes a prepared wrapping key.
func (p *Provider) Close() {
	select {
	case wk := <-p.spares():
		wk.Wipe()
	default:
	}
}

func (p *Provider) wrappingKey() (*wrapkey.WrappingKey, error) {
	select {
	case wk := <-p.spares():
		go p.PrepareNow()
		return wk, nil
	default:
	}
	return wrapkey.NewWrappingKey()
}

// Attest implements attest.Provider: evidence binding a fresh wrapping
// key, sent to attest/SevSnpVm; the token's x-ms-runtime must be exactly
// the runtime JSON we sent.
func (p *Provider) Attest(ctx context.Context) (*attest.Attestation, error) {
	wk, err := p.wrappingKey()
	if err != nil {
		return nil, err
	}
	ev, err := p.Evidence.Evidence(ctx, wk.ReportData())
	if err != nil {
		wk.Wipe()
		return nil, fmt.Errorf("%w: evidence: %w", keyrelease.ErrAttestation, err)
	}
	tok, err := p.MAA.Attest(ctx, ev, wk.RuntimeData)
	if err != nil {
		wk.Wipe()
		return nil, err
	}
	enc := p.Enc
	if enc == "" {
		enc = wrapkey.EncRSAAESKeyWrap
	}
	return attest.NewAttestation(tok, wk.Private, enc, wk.Wipe), nil
}
