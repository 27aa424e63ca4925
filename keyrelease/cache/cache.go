// Package cache keeps released keys in memory and shares their releases; it
// decorates any keyrelease.Releaser.
//
// Concurrent requests for a key that is not cached cause one inner release,
// run on a context of its own so that one caller's interrupt does not
// cancel it for the others. A key is served for Options.TTL; a use after
// Options.RefreshAt starts one background refresh while the current key is
// still served. Transient failures are retried with jittered exponential
// backoff; permanent ones (denied, not allowed, not found, attestation
// rejected) are returned at once and remembered for Options.NegativeTTL, and
// a denial at refresh time wipes the cached key (fail closed). Cached keys
// live only in memory, their oct bytes in locked pages of their own where
// permitted, and are wiped on eviction, on expiry, on Forget and on Close.
package cache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/keyrelease"
)

// ErrClosed is returned by Release after (or during) Close.
var ErrClosed = errors.New("keyrelease/cache: closed")

// ErrRateLimited is returned by Release for a versioned reference that is
// not cached when its key's new versions are asked for faster than
// Options.VersionMissInterval allows. It wraps keyrelease.ErrUnavailable:
// the release may succeed later.
var ErrRateLimited = fmt.Errorf("%w: keyrelease/cache: too many releases of uncached versions of one key", keyrelease.ErrUnavailable)

// Cache is a keyrelease.Releaser that caches and shares the releases of
// another. It is safe for concurrent use.
type Cache struct {
	inner keyrelease.Releaser
	opts  Options
	log   zerolog.Logger

	base   context.Context // parent of every release; cancelled by Close
	cancel context.CancelFunc
	done   chan struct{} // closed by Close: wakes waiters
	wg     sync.WaitGroup

	mu      sync.Mutex
	entries map[string]*entry  // by KeyRef.String()
	buckets map[string]*bucket // version-miss tokens, by keyID
	closed  bool

	st counters

	// Test hooks, set before first use.
	onWait       func()           // a caller starts waiting for a release (c.mu held)
	onFlightDone func(*flight)    // a release finished and its result is visible
	onWipe       func(oct []byte) // a cached key's oct bytes were zeroed
	onBatchKeys  func(*batchKeys) // a cached key's batch-key store was made
}

var _ keyrelease.Releaser = (*Cache)(nil)

// entry is the state of one key reference. All fields are guarded by
// Cache.mu.
type entry struct {
	id  string
	ref keyrelease.KeyRef

	cur    *cached // the cached key; nil if none
	flight *flight // the release or refresh in progress; nil if none

	// A permanent failure, returned until negUntil.
	negErr   error
	negUntil time.Time
	// The last transient failure of a release since cur was installed: it
	// allows cur to be served past TTL, within MaxStale.
	failErr  error
	failedAt time.Time
}

// cached is the cache's own copy of a key. Fields are guarded by Cache.mu.
type cached struct {
	key       *keyrelease.Key
	mem       secmem
	batch     *batchKeys // unwrapped v2 batch keys, wiped with key
	released  time.Time
	lastUse   time.Time
	stopTimer func() bool // cancels the expiry wipe
	wiped     bool
	from      *flight // the release that produced it
}

// flight is one release (or background refresh) of a key with its retries.
// The result fields are written under Cache.mu before done is closed.
type flight struct {
	refresh bool
	done    chan struct{}
	cancel  context.CancelFunc
	waiters int // callers waiting for or not yet done with the result

	res        *cached // on success
	err        error   // on failure
	superseded bool    // abandoned by Forget: waiters start over
	attempts   int
}

// New returns a cache in front of inner. Call Close to wipe the cached keys
// when done.
func New(inner keyrelease.Releaser, opts Options) *Cache {
	opts = opts.withDefaults()
	base, cancel := context.WithCancel(context.Background())
	return &Cache{
		inner:   inner,
		opts:    opts,
		log:     opts.Logger,
		base:    base,
		cancel:  cancel,
		done:    make(chan struct{}),
		entries: map[string]*entry{},
		buckets: map[string]*bucket{},
	}
}

// maxBuckets is the number of keys with version-miss buckets above which
// full buckets are dropped.
const maxBuckets = 1024

// bucket holds the version-miss tokens of one key.
type bucket struct {
	tokens float64
	last   time.Time
}

// keyID names a key whatever its version.
func keyID(ref keyrelease.KeyRef) string {
	ref.Version = ""
	return strings.ToLower(ref.String())
}

// takeMissTokenLocked reports whether a release of the uncached versioned
// reference ref may start now, and takes a token if so.
func (c *Cache) takeMissTokenLocked(ref keyrelease.KeyRef, now time.Time) bool {
	if ref.Version == "" || c.opts.VersionMissInterval < 0 {
		return true
	}
	id := keyID(ref)
	b := c.buckets[id]
	burst := float64(c.opts.VersionMissBurst)
	if b == nil {
		if len(c.buckets) >= maxBuckets {
			// Drop the buckets that are full again: they hold no state.
			for k, o := range c.buckets {
				if o.tokens+float64(now.Sub(o.last))/float64(c.opts.VersionMissInterval) >= burst {
					delete(c.buckets, k)
				}
			}
		}
		b = &bucket{tokens: burst, last: now}
		c.buckets[id] = b
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(burst, b.tokens+float64(el)/float64(c.opts.VersionMissInterval))
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Release returns the key ref names, from the cache or, if it is not
// cached or has expired, from the inner releaser, sharing one inner release
// among all concurrent callers. The returned key is a clone that the caller
// owns and must Wipe when done with it; the cache's own copy is never
// exposed.
//
// A caller whose ctx ends stops waiting and gets ctx.Err(); the release
// goes on for the others and its result is cached. Permanent failures
// return errors wrapping their keyrelease sentinel; transient failures,
// after the retries, an error wrapping keyrelease.ErrUnavailable; after
// Close, ErrClosed.
func (c *Cache) Release(ctx context.Context, ref keyrelease.KeyRef) (*keyrelease.Key, error) {
	return c.release(ctx, ref, false)
}

// ReleaseBatchKeys is Release (same caching, sharing, expiry and fail-closed
// rules) but the key it returns holds no key material: only the reference,
// type, public part and the cached key's batch-key store (for a private
// key). Readers of version 2 objects whose batch key is cached need no
// more, and skip the clone of the private key (an RSA clone re-validates
// the key: milliseconds). The store is wiped with the key.
func (c *Cache) ReleaseBatchKeys(ctx context.Context, ref keyrelease.KeyRef) (*keyrelease.Key, error) {
	return c.release(ctx, ref, true)
}

func (c *Cache) release(ctx context.Context, ref keyrelease.KeyRef, light bool) (*keyrelease.Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	id := ref.String()
	waited := false
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		e := c.entries[id]
		if e == nil {
			e = &entry{id: id, ref: ref}
			c.entries[id] = e
		}
		now := c.opts.Now()
		if k := c.serveLocked(e, now, light); k != nil {
			c.mu.Unlock()
			if !waited {
				c.st.hits.Add(1)
			}
			return k, nil
		}
		if e.negErr != nil {
			if now.Before(e.negUntil) {
				err := e.negErr
				c.mu.Unlock()
				c.st.negativeHits.Add(1)
				return nil, err
			}
			e.negErr = nil
		}
		f := e.flight
		if f == nil {
			if !waited && !c.takeMissTokenLocked(ref, now) {
				c.gcLocked(e)
				c.mu.Unlock()
				c.st.rateLimited.Add(1)
				c.log.Warn().Str("key", id).Msg("key release refused: uncached versions of this key are asked for too fast")
				return nil, fmt.Errorf("%w: %s", ErrRateLimited, ref)
			}
			f = c.startLocked(e, false)
		}
		if !waited {
			waited = true
			c.st.misses.Add(1)
		}
		f.waiters++
		if c.onWait != nil {
			c.onWait()
		}
		c.mu.Unlock()

		select {
		case <-f.done:
		case <-ctx.Done():
			c.leave(f)
			return nil, ctx.Err()
		case <-c.done:
			return nil, ErrClosed
		}

		c.mu.Lock()
		f.waiters--
		if f.superseded || (f.err == nil && f.res.wiped) {
			// Forgotten, evicted, replaced by a newer refresh or wiped by Close
			// before this caller could copy it: look again.
			c.mu.Unlock()
			continue
		}
		if f.err == nil {
			f.res.lastUse = c.opts.Now()
			k := f.res.clone(light)
			c.mu.Unlock()
			return k, nil
		}
		// A transient failure leaves a key within MaxStale servable.
		if h := e.cur; h != nil && !Classify(f.err).Permanent() &&
			c.opts.Now().Sub(h.released) < c.opts.TTL+c.opts.MaxStale {
			h.lastUse = c.opts.Now()
			k := h.clone(light)
			c.mu.Unlock()
			c.st.staleServed.Add(1)
			return k, nil
		}
		err := f.err
		c.mu.Unlock()
		return nil, err
	}
}

// leave records that a caller stopped waiting for f.
func (c *Cache) leave(f *flight) {
	c.mu.Lock()
	f.waiters--
	c.mu.Unlock()
}

// serveLocked returns a clone of e's cached key if it may be served now,
// starting a background refresh when it is due; it wipes a key older than
// TTL+MaxStale. It returns nil when the caller must wait for a release.
func (c *Cache) serveLocked(e *entry, now time.Time, light bool) *keyrelease.Key {
	h := e.cur
	if h == nil {
		return nil
	}
	age := now.Sub(h.released)
	switch {
	case age < c.opts.TTL:
		if age >= c.opts.RefreshAt {
			c.maybeRefreshLocked(e, now)
		}
	case age < c.opts.TTL+c.opts.MaxStale && e.failErr != nil:
		// Refreshing failed transiently: serve the stale key, and try again
		// in the background.
		c.maybeRefreshLocked(e, now)
		c.st.staleServed.Add(1)
	case age < c.opts.TTL+c.opts.MaxStale:
		// Expired and not yet known to be unrefreshable: wait for a release.
		return nil
	default:
		c.evictLocked(e)
		return nil
	}
	h.lastUse = now
	return h.clone(light)
}

// clone returns a copy of h's key for a caller, sharing h's batch keys;
// light leaves out the key material.
func (h *cached) clone(light bool) *keyrelease.Key {
	if light {
		k := &keyrelease.Key{Ref: h.key.Ref, Type: h.key.Type, Public: h.key.Public}
		if h.batch != nil && h.key.IsPrivate() {
			k.Batch = h.batch
		}
		return k
	}
	k := h.key.Clone()
	if h.batch != nil && k.IsPrivate() {
		k.Batch = h.batch
	}
	return k
}

// maybeRefreshLocked starts a background refresh of e unless one is in
// progress or the last one failed less than NegativeTTL ago.
func (c *Cache) maybeRefreshLocked(e *entry, now time.Time) {
	if e.flight != nil || (e.failErr != nil && now.Before(e.failedAt.Add(c.opts.NegativeTTL))) {
		return
	}
	c.startLocked(e, true)
}

// startLocked starts a release of e in its own goroutine.
func (c *Cache) startLocked(e *entry, refresh bool) *flight {
	ctx, cancel := context.WithTimeout(c.base, c.opts.ReleaseTimeout)
	f := &flight{refresh: refresh, done: make(chan struct{}), cancel: cancel}
	e.flight = f
	if refresh {
		c.st.refreshes.Add(1)
	}
	c.wg.Add(1) // under c.mu with !c.closed, so never after Close's Wait
	go c.run(ctx, e, f)
	return f
}

// run performs flight f for e and publishes its result.
func (c *Cache) run(ctx context.Context, e *entry, f *flight) {
	defer c.wg.Done()
	defer f.cancel()
	c.log.Debug().Str("key", e.id).Bool("refresh", f.refresh).Msg("releasing key")
	k, attempts, err := c.releaseWithRetry(ctx, e.ref)
	var h *cached
	if err == nil {
		h = &cached{key: k, mem: c.protect(k), from: f, batch: newBatchKeys(c.allocLocked)}
		if c.onBatchKeys != nil {
			c.onBatchKeys(h.batch)
		}
	}

	c.mu.Lock()
	now := c.opts.Now()
	f.attempts = attempts
	class := Classify(err)
	switch {
	case c.closed:
		if h != nil {
			c.wipeLocked(h)
		}
		f.err = ErrClosed
	case e.flight != f:
		if h != nil {
			c.wipeLocked(h)
		}
		f.superseded = true
	case err == nil:
		e.flight = nil
		c.installLocked(e, h, now)
		f.res = h
	case class.Permanent():
		// Fail closed: a key whose release is now refused is not served.
		e.flight = nil
		if e.cur != nil {
			c.evictLocked(e)
		}
		if c.opts.NegativeTTL > 0 {
			e.negErr, e.negUntil = err, now.Add(c.opts.NegativeTTL)
		}
		e.failErr = nil
		f.err = err
	default:
		e.flight = nil
		e.failErr, e.failedAt = err, now
		f.err = err
	}
	var staleUntil time.Time
	if e.cur != nil && f.err != nil {
		staleUntil = e.cur.released.Add(c.opts.TTL + c.opts.MaxStale)
	}
	c.gcLocked(e)
	c.mu.Unlock()
	close(f.done)

	switch {
	case f.superseded:
		c.log.Debug().Str("key", e.id).Msg("release abandoned: key forgotten meanwhile")
	case f.err == nil:
		c.log.Info().Str("key", e.id).Bool("refresh", f.refresh).Int("attempts", attempts).Msg("key released")
	case f.err != ErrClosed:
		if f.refresh {
			c.st.refreshFailures.Add(1)
		}
		ev := c.log.Warn().Err(err).Str("key", e.id).Str("class", class.String()).Bool("refresh", f.refresh)
		if !staleUntil.IsZero() {
			ev = ev.Time("served_until", staleUntil)
		}
		ev.Msg("key release failed")
	}
	if c.onFlightDone != nil {
		c.onFlightDone(f)
	}
}

// releaseWithRetry calls the inner releaser until it succeeds, fails
// permanently, or Attempts calls or ctx run out. It returns the number of
// calls made.
func (c *Cache) releaseWithRetry(ctx context.Context, ref keyrelease.KeyRef) (*keyrelease.Key, int, error) {
	b := c.opts.Backoff
	var last error
	attempt := 0
	for attempt < b.Attempts {
		attempt++
		c.st.attempted.Add(1)
		k, err := c.inner.Release(ctx, ref)
		if err == nil && k == nil {
			err = fmt.Errorf("%w: %s: the releaser returned no key", keyrelease.ErrKeyFormat, ref)
		}
		if err == nil {
			c.st.succeeded.Add(1)
			return k, attempt, nil
		}
		class := Classify(err)
		c.st.failed[class].Add(1)
		if class.Permanent() {
			return nil, attempt, err
		}
		last = err
		if ctx.Err() != nil || attempt == b.Attempts {
			break
		}
		d := c.opts.Jitter(b.Cap(attempt))
		c.log.Debug().Err(err).Str("key", ref.String()).Int("attempt", attempt).Dur("backoff", d).Msg("retrying key release")
		if c.opts.Sleep(ctx, d) != nil {
			break
		}
	}
	if c.base.Err() != nil {
		return nil, attempt, ErrClosed
	}
	if ctx.Err() != nil {
		return nil, attempt, fmt.Errorf("%w: %s: release timeout %v reached after %d attempt(s), last error: %v",
			keyrelease.ErrUnavailable, ref, c.opts.ReleaseTimeout, attempt, last)
	}
	// The cause is kept as text: wrapping it could make a context error
	// from deep inside the releaser look like the caller's interrupt.
	return nil, attempt, fmt.Errorf("%w: %s: %d attempt(s) failed, last error: %v",
		keyrelease.ErrUnavailable, ref, attempt, last)
}

// installLocked makes h e's cached key, wiping the one it replaces.
func (c *Cache) installLocked(e *entry, h *cached, now time.Time) {
	h.released, h.lastUse = now, now
	if old := e.cur; old != nil {
		c.wipeLocked(old)
	}
	e.cur, e.failErr, e.negErr = h, nil, nil
	c.scheduleExpiryLocked(e, h, c.opts.TTL+c.opts.MaxStale)
	if c.opts.MaxKeys > 0 {
		c.enforceMaxKeysLocked(e)
	}
	if c.opts.MaxVersions > 0 && e.ref.Version != "" {
		c.enforceMaxVersionsLocked(e)
	}
}

// enforceMaxVersionsLocked evicts the least recently used versions of
// keep's key, other than keep, until at most MaxVersions are cached; as
// in enforceMaxKeysLocked, a version with callers still to serve stays.
func (c *Cache) enforceMaxVersionsLocked(keep *entry) {
	id := keyID(keep.ref)
	for {
		n := 0
		var lru *entry
		for _, e := range c.entries {
			if e.cur == nil || e.ref.Version == "" || keyID(e.ref) != id {
				continue
			}
			n++
			if e != keep && e.cur.from.waiters == 0 && (lru == nil || e.cur.lastUse.Before(lru.cur.lastUse)) {
				lru = e
			}
		}
		if n <= c.opts.MaxVersions || lru == nil {
			return
		}
		c.log.Debug().Str("key", lru.id).Int("max_versions", c.opts.MaxVersions).Msg("evicting least recently used version")
		c.evictLocked(lru)
		c.gcLocked(lru)
	}
}

// scheduleExpiryLocked arranges for h to be wiped after d unless it is
// replaced or wiped before.
func (c *Cache) scheduleExpiryLocked(e *entry, h *cached, d time.Duration) {
	h.stopTimer = c.opts.AfterFunc(d, func() { c.expire(e, h) })
}

// expire wipes h if it is still e's key and older than TTL+MaxStale.
func (c *Cache) expire(e *entry, h *cached) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || e.cur != h {
		return
	}
	limit := c.opts.TTL + c.opts.MaxStale
	if age := c.opts.Now().Sub(h.released); age < limit {
		c.scheduleExpiryLocked(e, h, limit-age)
		return
	}
	c.log.Debug().Str("key", e.id).Msg("cached key expired")
	c.evictLocked(e)
	c.gcLocked(e)
}

// enforceMaxKeysLocked evicts least recently used keys other than keep's
// until at most MaxKeys are cached. A key whose release still has callers
// to serve is skipped (the bound is exceeded until they are done), so that
// a working set larger than MaxKeys cannot starve them.
func (c *Cache) enforceMaxKeysLocked(keep *entry) {
	for {
		n := 0
		var lru *entry
		for _, e := range c.entries {
			if e.cur == nil {
				continue
			}
			n++
			if e != keep && e.cur.from.waiters == 0 && (lru == nil || e.cur.lastUse.Before(lru.cur.lastUse)) {
				lru = e
			}
		}
		if n <= c.opts.MaxKeys || lru == nil {
			return
		}
		c.log.Debug().Str("key", lru.id).Int("max_keys", c.opts.MaxKeys).Msg("evicting least recently used key")
		c.evictLocked(lru)
		c.gcLocked(lru)
	}
}

// evictLocked wipes and drops e's cached key.
func (c *Cache) evictLocked(e *entry) {
	c.wipeLocked(e.cur)
	e.cur, e.failErr = nil, nil
	c.st.evictions.Add(1)
}

// wipeLocked wipes a cached key once.
func (c *Cache) wipeLocked(h *cached) {
	if h.wiped {
		return
	}
	h.wiped = true
	if h.stopTimer != nil {
		h.stopTimer()
	}
	c.free(h.key, h.mem)
	if h.batch != nil {
		h.batch.wipe()
	}
}

// gcLocked drops e from the map when it holds nothing worth keeping.
func (c *Cache) gcLocked(e *entry) {
	if e.cur == nil && e.flight == nil && e.negErr == nil && c.entries[e.id] == e {
		delete(c.entries, e.id)
	}
}

// Forget wipes the cached copy of ref's key and drops any remembered
// failure, so that the next Release releases it again; use it when the key
// is known to have changed. A release of ref in progress is cancelled and
// its waiters start a new one.
func (c *Cache) Forget(ref keyrelease.KeyRef) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[ref.String()]
	if e == nil {
		return
	}
	if e.cur != nil {
		c.evictLocked(e)
	}
	e.negErr, e.failErr = nil, nil
	if f := e.flight; f != nil {
		e.flight = nil
		f.cancel()
	}
	c.gcLocked(e)
}

// Close wipes every cached key, cancels the releases in progress and waits
// for them to end (the inner releaser must honour its context); callers
// still waiting get ErrClosed, and so does every later Release. Close may
// be called more than once.
func (c *Cache) Close() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		c.cancel()
		close(c.done)
		for id, e := range c.entries {
			if e.cur != nil {
				c.wipeLocked(e.cur)
				e.cur = nil
			}
			delete(c.entries, id)
		}
	}
	c.mu.Unlock()
	c.wg.Wait()
}
