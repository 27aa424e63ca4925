// Package cache keeps released keys in memory and shares releases: N
// concurrent requests for a key that is not cached cause one release; a key
// is refreshed in the background before its TTL ends; transient failures
// are retried with jittered exponential backoff a bounded number of times;
// a denial is returned at once and remembered briefly so a storm of opens
// does not hammer Key Vault; and every cached key is wiped on eviction and
// Close.
package cache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/skrfs/skrfs/keyrelease"
)

// ErrClosed is returned after Close.
var ErrClosed = errors.New("keyrelease/cache: closed")

// Backoff configures retries of transient failures.
type Backoff struct {
	Initial  time.Duration // first delay cap (default 500ms)
	Max      time.Duration // largest delay cap (default 30s)
	Attempts int           // attempts in all (default 5)
}

// Options configure a Cache.
type Options struct {
	// TTL is how long a released key is used before it is released again
	// (default 1h).
	TTL time.Duration
	// RefreshAt is the fraction of TTL after which a use starts a background
	// refresh (default 0.8).
	RefreshAt float64
	// MaxStale is how long past its TTL a key is still served while
	// refreshes fail with transient errors (default 0: fail closed at TTL).
	MaxStale time.Duration
	// NegativeTTL is how long a permanent failure is remembered (default 10s).
	NegativeTTL time.Duration
	// ReleaseTimeout bounds one release including its retries (default 2 min).
	ReleaseTimeout time.Duration
	Backoff        Backoff
	Logger         zerolog.Logger
	// Now and Sleep are injectable for tests (nil = time.Now and a
	// context-aware sleep).
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
}

// Stats are the cache's counters.
type Stats struct {
	Hits, Misses, Releases, Failures, Refreshes, Evictions int64
}

// Cache is a keyrelease.Releaser that caches another.
type Cache struct {
	inner keyrelease.Releaser
	opts  Options

	mu      sync.Mutex
	entries map[string]*entry
	closed  bool

	hits, misses, releases, failures, refreshes, evictions atomic.Int64
}

type entry struct {
	key        *keyrelease.Key // nil until released
	released   time.Time
	negErr     error // permanent failure, remembered until negUntil
	negUntil   time.Time
	flight     *flight // release in progress
	refreshing bool
}

type flight struct {
	done chan struct{}
	key  *keyrelease.Key
	err  error
}

var _ keyrelease.Releaser = (*Cache)(nil)

// New wraps inner.
func New(inner keyrelease.Releaser, opts Options) *Cache {
	if opts.TTL == 0 {
		opts.TTL = time.Hour
	}
	if opts.RefreshAt == 0 {
		opts.RefreshAt = 0.8
	}
	if opts.NegativeTTL == 0 {
		opts.NegativeTTL = 10 * time.Second
	}
	if opts.ReleaseTimeout == 0 {
		opts.ReleaseTimeout = 2 * time.Minute
	}
	if opts.Backoff.Initial == 0 {
		opts.Backoff.Initial = 500 * time.Millisecond
	}
	if opts.Backoff.Max == 0 {
		opts.Backoff.Max = 30 * time.Second
	}
	if opts.Backoff.Attempts == 0 {
		opts.Backoff.Attempts = 5
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Sleep == nil {
		opts.Sleep = func(ctx context.Context, d time.Duration) error {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return &Cache{inner: inner, opts: opts, entries: map[string]*entry{}}
}

// Permanent reports whether err should not be retried: a denial, a key
// that is not allowed or not found, or rejected evidence.
func Permanent(err error) bool {
	return errors.Is(err, keyrelease.ErrDenied) || errors.Is(err, keyrelease.ErrNotAllowed) ||
		errors.Is(err, keyrelease.ErrNotFound) || errors.Is(err, keyrelease.ErrAttestation) ||
		errors.Is(err, keyrelease.ErrKeyFormat)
}

// Release returns a clone of the cached key for ref, releasing it first
// when needed. The caller owns the clone and must Wipe it.
func (c *Cache) Release(ctx context.Context, ref keyrelease.KeyRef) (*keyrelease.Key, error) {
	id := ref.String()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	e := c.entries[id]
	if e == nil {
		e = &entry{}
		c.entries[id] = e
	}
	now := c.opts.Now()
	if e.negErr != nil && now.Before(e.negUntil) {
		err := e.negErr
		c.mu.Unlock()
		return nil, err
	}
	if e.key != nil {
		age := now.Sub(e.released)
		fresh := age < c.opts.TTL
		if fresh || (age < c.opts.TTL+c.opts.MaxStale && e.flight != nil) {
			if age >= time.Duration(float64(c.opts.TTL)*c.opts.RefreshAt) && e.flight == nil {
				c.startLocked(id, ref, e, true)
			}
			k := e.key.Clone()
			c.mu.Unlock()
			c.hits.Add(1)
			return k, nil
		}
	}
	c.misses.Add(1)
	f := e.flight
	if f == nil {
		f = c.startLocked(id, ref, e, false)
	}
	c.mu.Unlock()
	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if f.err != nil {
		// A failed refresh of a key within MaxStale keeps serving it.
		c.mu.Lock()
		defer c.mu.Unlock()
		if !Permanent(f.err) && e.key != nil && c.opts.Now().Sub(e.released) < c.opts.TTL+c.opts.MaxStale {
			return e.key.Clone(), nil
		}
		return nil, f.err
	}
	return f.key.Clone(), nil
}

// startLocked begins a release (or refresh) of ref; c.mu is held.
func (c *Cache) startLocked(id string, ref keyrelease.KeyRef, e *entry, refresh bool) *flight {
	f := &flight{done: make(chan struct{})}
	e.flight = f
	if refresh {
		c.refreshes.Add(1)
	}
	go func() {
		k, err := c.releaseWithRetry(ref)
		c.mu.Lock()
		e.flight = nil
		switch {
		case err == nil:
			if c.closed {
				k.Wipe()
				err = ErrClosed
				break
			}
			if e.key != nil {
				wipe(e.key)
			}
			lock(k)
			e.key, e.released, e.negErr = k, c.opts.Now(), nil
			f.key = k
		case Permanent(err):
			// Fail closed: a denied refresh removes the key at once.
			if e.key != nil {
				wipe(e.key)
				e.key = nil
				c.evictions.Add(1)
			}
			e.negErr, e.negUntil = err, c.opts.Now().Add(c.opts.NegativeTTL)
		default:
			if e.key != nil && c.opts.Now().Sub(e.released) >= c.opts.TTL+c.opts.MaxStale {
				wipe(e.key)
				e.key = nil
				c.evictions.Add(1)
			}
		}
		f.err = err
		c.mu.Unlock()
		if err != nil {
			c.failures.Add(1)
			c.opts.Logger.Warn().Err(err).Str("key", id).Bool("refresh", refresh).Msg("key release failed")
		}
		close(f.done)
	}()
	return f
}

// releaseWithRetry calls the inner releaser, retrying transient failures
// with full-jitter exponential backoff.
func (c *Cache) releaseWithRetry(ref keyrelease.KeyRef) (*keyrelease.Key, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.ReleaseTimeout)
	defer cancel()
	b := c.opts.Backoff
	var err error
	for attempt := 1; attempt <= b.Attempts; attempt++ {
		c.releases.Add(1)
		var k *keyrelease.Key
		k, err = c.inner.Release(ctx, ref)
		if err == nil {
			return k, nil
		}
		if Permanent(err) || attempt == b.Attempts {
			break
		}
		limit := min(b.Max, b.Initial<<(attempt-1))
		d := time.Duration(rand.Int64N(int64(limit) + 1))
		c.opts.Logger.Debug().Err(err).Int("attempt", attempt).Dur("backoff", d).Str("key", ref.String()).Msg("retrying release")
		if serr := c.opts.Sleep(ctx, d); serr != nil {
			err = fmt.Errorf("%w (gave up: %v)", err, serr)
			break
		}
	}
	if Permanent(err) {
		return nil, err
	}
	return nil, fmt.Errorf("%w: %d attempts: %w", keyrelease.ErrUnavailable, b.Attempts, err)
}

// Forget wipes and drops the cached key for ref.
func (c *Cache) Forget(ref keyrelease.KeyRef) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[ref.String()]; e != nil && e.key != nil {
		wipe(e.key)
		e.key = nil
		c.evictions.Add(1)
	}
}

// Close wipes every cached key; later releases fail with ErrClosed.
func (c *Cache) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, e := range c.entries {
		if e.key != nil {
			wipe(e.key)
			e.key = nil
		}
	}
}

// Stats returns the counters.
func (c *Cache) Stats() Stats {
	return Stats{Hits: c.hits.Load(), Misses: c.misses.Load(), Releases: c.releases.Load(), Failures: c.failures.Load(),
		Refreshes: c.refreshes.Load(), Evictions: c.evictions.Load()}
}

// lock keeps oct key bytes out of swap where permitted (the daemon also
// locks all its memory when it can; see internal/harden).
func lock(k *keyrelease.Key) {
	if len(k.Oct) > 0 {
		_ = unix.Mlock(k.Oct)
	}
}

func wipe(k *keyrelease.Key) {
	if len(k.Oct) > 0 {
		oct := k.Oct
		k.Wipe()
		_ = unix.Munlock(oct)
		return
	}
	k.Wipe()
}
