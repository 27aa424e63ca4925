// Package skr is the Azure Secure Key Release releaser: an attestation
// provider (keyrelease/attest: SEV-SNP, Azure CVM) trades TEE evidence for
// a Microsoft Azure Attestation token naming a key only this TEE can use,
// and Key Vault or Managed HSM releases the key to that token
// (protocol.md sections 1-5, 13). Wrap it in
// keyrelease/cache so concurrent opens share one release.
package skr

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/akv"
	"github.com/skrfs/skrfs/keyrelease/attest"
	"github.com/skrfs/skrfs/keyrelease/attest/snp"
	"github.com/skrfs/skrfs/keyrelease/maa"
)

// EvidenceSource produces SEV-SNP evidence whose REPORT_DATA is reportData.
type EvidenceSource = snp.EvidenceSource

// Releaser implements keyrelease.Releaser with Azure SKR.
type Releaser struct {
	// Provider attests (attest.Provider: snp, cvm, ...). When nil, the
	// SEV-SNP provider is built from Evidence and MAA.
	Provider attest.Provider
	// Evidence and MAA are the SEV-SNP provider's parts, used when
	// Provider is nil.
	Evidence EvidenceSource
	MAA      *maa.Client
	Vault    *akv.Client
	// TokenMargin: a cached MAA token is reused while it is valid for at
	// least this long (default 5 min). The token is cached only together
	// with the key its runtime claims name.
	TokenMargin time.Duration
	Logger      zerolog.Logger
	// Now is the clock (nil = time.Now).
	Now func() time.Time

	mu       sync.Mutex
	cur      *attest.Attestation
	provOnce sync.Once
	prov     attest.Provider

	attestations, attestOK, attestFailures, releases atomic.Int64
}

var _ keyrelease.Releaser = (*Releaser)(nil)

func (r *Releaser) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Releaser) provider() attest.Provider {
	r.provOnce.Do(func() {
		r.prov = r.Provider
		if r.prov == nil {
			r.prov = &snp.Provider{Evidence: r.Evidence, MAA: r.MAA}
		}
	})
	return r.prov
}

// Prepare does the provider's slow work for the next attestation (RSA key
// generation) in the background; calling it is optional.
func (r *Releaser) Prepare() { go r.PrepareNow() }

// PrepareNow is Prepare, returning when done (the daemon calls it before
// it reports readiness).
func (r *Releaser) PrepareNow() {
	if p, ok := r.provider().(attest.Preparer); ok {
		p.PrepareNow()
	}
}

// Attest attests and returns the MAA token, without releasing anything
// (`skrfs attest`). The token and its key are kept for the next release.
func (r *Releaser) Attest(ctx context.Context) (*maa.Token, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, err := r.attestLocked(ctx, true)
	if err != nil {
		return nil, err
	}
	return a.Token, nil
}

// attestLocked returns the current attestation, attesting anew when
// forced or when the token is about to expire.
func (r *Releaser) attestLocked(ctx context.Context, force bool) (*attest.Attestation, error) {
	margin := r.TokenMargin
	if margin == 0 {
		margin = 5 * time.Minute
	}
	if !force && r.cur != nil && r.cur.Token.Expires.Sub(r.now()) > margin {
		return r.cur, nil
	}
	r.attestations.Add(1)
	a, err := r.provider().Attest(ctx)
	if err != nil {
		r.attestFailures.Add(1)
		return nil, err
	}
	r.attestOK.Add(1)
	r.cur.Close()
	r.cur = a
	r.Logger.Info().Str("provider", r.provider().Name()).Time("expires", a.Token.Expires).Msg("attested")
	return a, nil
}

// Release attests if needed and releases ref. A denial with a reused token
// is retried once with a fresh attestation, since the token's claims may be
// older than the key's policy.
func (r *Releaser) Release(ctx context.Context, ref keyrelease.KeyRef) (*keyrelease.Key, error) {
	return r.ReleaseWith(ctx, ref, r.Vault)
}

// ReleaseWith is Release through another vault client: the sidecar API's
// callers may bring their own bearer token for Key Vault. The attestation
// token and wrapping key are shared with Release.
func (r *Releaser) ReleaseWith(ctx context.Context, ref keyrelease.KeyRef, vault *akv.Client) (*keyrelease.Key, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for attempt := 0; attempt < 2; attempt++ {
		prev := r.cur
		a, err := r.attestLocked(ctx, attempt > 0)
		if err != nil {
			return nil, err
		}
		reused := prev != nil && a == prev
		r.releases.Add(1)
		k, err := vault.ReleaseTo(ctx, ref, a.Token.Raw, a.Key, a.Enc)
		if err == nil {
			r.Logger.Info().Str("key", k.Ref.String()).Str("type", string(k.Type)).Msg("key released")
			return k, nil
		}
		if !errors.Is(err, keyrelease.ErrDenied) || !reused {
			return nil, err
		}
		r.Logger.Debug().Err(err).Msg("release denied with a cached token; attesting again")
	}
	return nil, errors.New("unreachable")
}

// Stats returns how many attestations and release calls were made.
func (r *Releaser) Stats() (attestations, releases int64) {
	return r.attestations.Load(), r.releases.Load()
}

// AttestationOutcomes returns how many attestations produced a token and
// how many failed (no evidence, or MAA refused or could not be reached).
func (r *Releaser) AttestationOutcomes() (ok, failed int64) {
	return r.attestOK.Load(), r.attestFailures.Load()
}

// Close wipes (or unloads) the current key and the provider's prepared
// one.
func (r *Releaser) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cur.Close()
	r.cur = nil
	if c, ok := r.provider().(interface{ Close() }); ok {
		c.Close()
	}
}
