package deliver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/crypto"
)

// Manifest enforces a dataset's signed manifest (docs/format.md section
// 12) as the mount does: only listed objects are delivered, each only if
// the SHA-256 of its header and its size match its entry; a listed object
// that storage lacks fails the fetch. A fetch is one-shot, so freshness
// comes from MinEpoch, MaxAge and the Anchor (nothing is remembered between
// fetches).
type Manifest struct {
	// Require: no verified manifest, no delivery. Otherwise (prefer) a
	// dataset without a manifest is delivered unsigned; one that exists is
	// always enforced.
	Require  bool
	Verifier *crypto.ManifestVerifier
	ID       string
	MinEpoch uint64
	MaxAge   time.Duration
	Anchor   interface {
		Epoch(ctx context.Context) (uint64, error)
	}
}

// Errors of manifest enforcement.
var (
	ErrManifestPolicy   = errors.New("manifest refused by policy")
	ErrManifestMismatch = errors.New("object does not match its manifest entry (forged or rolled back)")
	ErrManifestMissing  = errors.New("object listed in the manifest is missing from storage")
)

// loadManifest returns the dataset's verified manifest, or nil when it has
// none and may be delivered unsigned.
func loadManifest(ctx context.Context, d *Dataset) (*crypto.Manifest, error) {
	p := d.Manifest
	info, err := d.Store.Stat(ctx, crypto.ManifestName)
	if errors.Is(err, blob.ErrNotFound) && !p.Require {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", crypto.ManifestName, err)
	}
	if info.Size > crypto.MaxManifestSize {
		return nil, fmt.Errorf("%w: %d bytes", crypto.ErrManifestMalformed, info.Size)
	}
	stop := errors.New("stop")
	if err := d.Store.List(ctx, blob.ListOptions{Prefix: crypto.ManifestDeltaPrefix}, func(blob.Info) error { return stop }); errors.Is(err, stop) {
		return nil, fmt.Errorf("%w: the dataset has manifest deltas, which this version cannot apply", ErrManifestPolicy)
	} else if err != nil && !errors.Is(err, blob.ErrNotFound) {
		return nil, err
	}
	buf := make([]byte, info.Size)
	if n, err := d.Store.ReadAt(ctx, info.Ref(), buf, 0); err != nil && !(errors.Is(err, io.EOF) && int64(n) == info.Size) {
		return nil, fmt.Errorf("reading %s: %w", crypto.ManifestName, err)
	}
	m, err := crypto.VerifyManifest(buf, p.Verifier)
	if err != nil {
		return nil, err
	}
	if p.ID != "" && m.Dataset != p.ID {
		return nil, fmt.Errorf("%w: dataset id %q, expected %q", ErrManifestPolicy, m.Dataset, p.ID)
	}
	floor := p.MinEpoch
	if p.Anchor != nil {
		a, err := p.Anchor.Epoch(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading the epoch anchor: %w", err)
		}
		floor = max(floor, a)
	}
	if m.Epoch < floor {
		return nil, fmt.Errorf("%w: epoch %d is below %d (rollback)", ErrManifestPolicy, m.Epoch, floor)
	}
	if p.MaxAge > 0 && time.Since(m.Created) > p.MaxAge {
		return nil, fmt.Errorf("%w: created %s, older than max_age %s", ErrManifestPolicy, m.Created.Format(time.RFC3339), p.MaxAge)
	}
	return m, nil
}
