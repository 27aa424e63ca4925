// Package skr is the Azure Secure Key Release releaser: it binds a fresh
// wrapping key into SEV-SNP evidence, trades the evidence for a Microsoft
// Azure Attestation token, and asks Key Vault or Managed HSM to release the
// key to that token (protocol.md sections 1-5). Wrap it in
// keyrelease/cache so concurrent opens share one release.
package skr

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/akv"
	"github.com/skrfs/skrfs/keyrelease/maa"
	"github.com/skrfs/skrfs/keyrelease/wrapkey"
)

// EvidenceSource produces SEV-SNP evidence whose REPORT_DATA is reportData.
type EvidenceSource interface {
	Evidence(ctx context.Context, reportData [64]byte) (maa.Evidence, error)
}

// Releaser implements keyrelease.Releaser with Azure SKR.
type Releaser struct {
	Evidence EvidenceSource
	MAA      *maa.Client
	Vault    *akv.Client
	// TokenMargin: a cached MAA token is reused while it is valid for at
	// least this long (default 5 min). The token is cached only together
	// with the wrapping key its runtime data names.
	TokenMargin time.Duration
	Logger      zerolog.Logger
	// Now is the clock (nil = time.Now).
	Now func() time.Time

	mu        sync.Mutex
	wk        *wrapkey.WrappingKey
	token     *maa.Token
	spareOnce sync.Once
	spare     chan *wrapkey.WrappingKey // a wrapping key generated ahead of need

	attestations, attestOK, attestFailures, releases atomic.Int64
}

var _ keyrelease.Releaser = (*Releaser)(nil)

func (r *Releaser) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Prepare generates the next wrapping key in the background, so that an
// attestation does not wait for RSA key generation (tens of milliseconds).
// It is called again after every attestation; calling it is optional.
func (r *Releaser) Prepare() { go r.PrepareNow() }

// PrepareNow generates the next wrapping key and returns when it is ready
// (the daemon calls it before it reports readiness).
func (r *Releaser) PrepareNow() {
	wk, err := wrapkey.NewWrappingKey()
	if err != nil {
		return
	}
	select {
	case r.spares() <- wk:
	default:
		wk.Wipe() // one is waiting already
	}
}

func (r *Releaser) spares() chan *wrapkey.WrappingKey {
	r.spareOnce.Do(func() { r.spare = make(chan *wrapkey.WrappingKey, 1) })
	return r.spare
}

// wrappingKey takes the prepared key when there is one (and prepares the
// next), else makes one now.
func (r *Releaser) wrappingKey() (*wrapkey.WrappingKey, error) {
	select {
	case wk := <-r.spares():
		r.Prepare()
		return wk, nil
	default:
	}
	return wrapkey.NewWrappingKey()
}

// Attest produces evidence for a fresh wrapping key and returns the MAA
// token, without releasing anything (`skrfs attest`). The token and key are
// kept for the next release.
func (r *Releaser) Attest(ctx context.Context) (*maa.Token, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, tok, err := r.attestLocked(ctx, true)
	return tok, err
}

// attestLocked returns the current wrapping key and token, attesting anew
// when forced or when the token is about to expire.
func (r *Releaser) attestLocked(ctx context.Context, force bool) (*wrapkey.WrappingKey, *maa.Token, error) {
	margin := r.TokenMargin
	if margin == 0 {
		margin = 5 * time.Minute
	}
	if !force && r.token != nil && r.token.Expires.Sub(r.now()) > margin {
		return r.wk, r.token, nil
	}
	wk, err := r.wrappingKey()
	if err != nil {
		return nil, nil, err
	}
	ev, err := r.Evidence.Evidence(ctx, wk.ReportData())
	if err != nil {
		wk.Wipe()
		r.attestFailures.Add(1)
		return nil, nil, fmt.Errorf("%w: evidence: %w", keyrelease.ErrAttestation, err)
	}
	r.attestations.Add(1)
	tok, err := r.MAA.Attest(ctx, ev, wk.RuntimeData)
	if err != nil {
		wk.Wipe()
		r.attestFailures.Add(1)
		return nil, nil, err
	}
	r.attestOK.Add(1)
	if r.wk != nil {
		r.wk.Wipe()
	}
	r.wk, r.token = wk, tok
	r.Logger.Info().Time("expires", tok.Expires).Msg("attested")
	return wk, tok, nil
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
		prev := r.token
		wk, tok, err := r.attestLocked(ctx, attempt > 0)
		if err != nil {
			return nil, err
		}
		reused := prev != nil && tok == prev
		r.releases.Add(1)
		k, err := vault.Release(ctx, ref, tok.Raw, wk)
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

// Close wipes the wrapping key.
func (r *Releaser) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.wk != nil {
		r.wk.Wipe()
	}
	r.wk, r.token = nil, nil
	select {
	case wk := <-r.spares():
		wk.Wipe()
	default:
	}
}
