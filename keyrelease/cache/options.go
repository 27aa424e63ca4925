package cache

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/rs/zerolog"
)

// Backoff configures the retries of transient failures: before retry n
// (n = 1 after the first failed attempt) the cache sleeps a uniformly random
// delay in [0, min(Max, Initial·2^(n-1))] ("full jitter"), so that many
// daemons that lost Key Vault at the same moment do not retry in step.
type Backoff struct {
	// Initial caps the first delay (zero = 500ms).
	Initial time.Duration
	// Max caps every delay (zero = 30s).
	Max time.Duration
	// Attempts is the number of inner Release calls for one release, the
	// first included (zero = 5; 1 = no retry).
	Attempts int
}

// Cap returns the upper bound of the delay before retry n (n >= 1).
func (b Backoff) Cap(n int) time.Duration {
	d := b.Initial
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// Options configure a Cache. The zero value of every field selects its
// default (see DefaultOptions).
type Options struct {
	// TTL is how long a released key is served (zero = 1h). A key older
	// than TTL is released again before it is served, unless a refresh has
	// failed transiently and the key is within MaxStale.
	TTL time.Duration
	// RefreshAt is the key age after which a use starts one background
	// refresh while the current key goes on being served (zero = 80% of
	// TTL; values at or above TTL disable proactive refresh).
	RefreshAt time.Duration
	// MaxStale is how long past its TTL a key may still be served while
	// its refreshes fail transiently (zero = fail closed at TTL). A key is
	// wiped once it is older than TTL+MaxStale, used or not.
	MaxStale time.Duration
	// NegativeTTL is how long a permanent failure (Class.Permanent) is
	// remembered and returned without asking the inner releaser again
	// (zero = 10s; negative = not remembered). It is also the pause after
	// a failed background refresh before a use starts the next one.
	NegativeTTL time.Duration
	// ReleaseTimeout bounds one release, all attempts and backoff delays
	// included (zero = 60s). The release runs on a context of its own,
	// detached from the callers that wait for it and cancelled by Close.
	ReleaseTimeout time.Duration
	// MaxKeys bounds the number of cached keys; beyond it the least
	// recently used key is evicted and wiped (zero = no bound).
	MaxKeys int
	// MaxVersions bounds the versions of one key (same vault and name,
	// references that name a version) cached at once; beyond it the least
	// recently used of them is evicted and wiped (zero = 8; negative = no
	// bound). When the configured reference has no version, an object's
	// header names the version to release, so storage picks versions: the
	// bound keeps it from filling memory with one key's old versions.
	MaxVersions int
	// VersionMissBurst and VersionMissInterval rate-limit the releases
	// started for versioned references that are not cached, per key: a
	// token bucket of VersionMissBurst tokens (zero = 8) that regains one
	// token every VersionMissInterval (zero = 10s; negative = no limit).
	// A miss without a token fails at once with ErrRateLimited, without
	// calling the inner releaser, so objects naming ever new versions
	// cannot turn into a stream of releases.
	VersionMissBurst    int
	VersionMissInterval time.Duration
	// Backoff configures retries of transient failures.
	Backoff Backoff
	// Logger receives debug, info and warning events; key material is never
	// logged, only key references and errors (zero value = no logging).
	Logger zerolog.Logger

	// Now returns the current time (nil = time.Now).
	Now func() time.Time
	// Sleep waits d or until ctx ends, returning ctx.Err() in that case; it
	// is used between retries (nil = a timer).
	Sleep func(ctx context.Context, d time.Duration) error
	// AfterFunc calls f in its own goroutine once d has passed and returns
	// a function that cancels the call, like time.AfterFunc(d, f).Stop; it
	// must not call f before returning. The cache uses it to wipe keys
	// that expire while unused (nil = time.AfterFunc).
	AfterFunc func(d time.Duration, f func()) (stop func() bool)
	// Jitter returns a delay in [0, limit] (nil = uniformly random).
	Jitter func(limit time.Duration) time.Duration
}

// DefaultOptions returns the options New uses for zero fields.
func DefaultOptions() Options {
	return Options{
		TTL:                 time.Hour,
		RefreshAt:           48 * time.Minute,
		NegativeTTL:         10 * time.Second,
		ReleaseTimeout:      60 * time.Second,
		MaxVersions:         8,
		VersionMissBurst:    8,
		VersionMissInterval: 10 * time.Second,
		Backoff:             Backoff{Initial: 500 * time.Millisecond, Max: 30 * time.Second, Attempts: 5},
		Now:                 time.Now,
		Sleep:               sleep,
		AfterFunc:           afterFunc,
		Jitter:              jitter,
	}
}

// withDefaults fills the zero fields of o.
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.TTL <= 0 {
		o.TTL = d.TTL
	}
	if o.RefreshAt <= 0 {
		o.RefreshAt = o.TTL / 5 * 4
	}
	o.RefreshAt = min(o.RefreshAt, o.TTL)
	o.MaxStale = max(o.MaxStale, 0)
	if o.NegativeTTL == 0 {
		o.NegativeTTL = d.NegativeTTL
	}
	o.NegativeTTL = max(o.NegativeTTL, 0)
	if o.ReleaseTimeout <= 0 {
		o.ReleaseTimeout = d.ReleaseTimeout
	}
	o.MaxKeys = max(o.MaxKeys, 0)
	if o.MaxVersions == 0 {
		o.MaxVersions = d.MaxVersions
	}
	if o.VersionMissBurst <= 0 {
		o.VersionMissBurst = d.VersionMissBurst
	}
	if o.VersionMissInterval == 0 {
		o.VersionMissInterval = d.VersionMissInterval
	}
	if o.Backoff.Initial <= 0 {
		o.Backoff.Initial = d.Backoff.Initial
	}
	if o.Backoff.Max <= 0 {
		o.Backoff.Max = d.Backoff.Max
	}
	if o.Backoff.Attempts <= 0 {
		o.Backoff.Attempts = d.Backoff.Attempts
	}
	if o.Now == nil {
		o.Now = d.Now
	}
	if o.Sleep == nil {
		o.Sleep = d.Sleep
	}
	if o.AfterFunc == nil {
		o.AfterFunc = d.AfterFunc
	}
	if o.Jitter == nil {
		o.Jitter = d.Jitter
	}
	return o
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func afterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

func jitter(limit time.Duration) time.Duration {
	if limit <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(limit) + 1))
}
