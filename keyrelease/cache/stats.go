package cache

import "sync/atomic"

// Stats is a snapshot of the cache's counters, for export as metrics.
// Every counter only grows, except Keys.
type Stats struct {
	// Hits counts Release calls served from a cached key without waiting.
	Hits uint64
	// Misses counts Release calls that waited for a release: the key was
	// not cached, had expired, or had been evicted.
	Misses uint64
	// NegativeHits counts Release calls answered with a remembered
	// permanent failure.
	NegativeHits uint64
	// StaleServed counts keys served past their TTL (within MaxStale)
	// because refreshing failed; they are also counted as hits or misses.
	StaleServed uint64
	// Refreshes counts background refreshes started.
	Refreshes uint64
	// RefreshFailures counts background refreshes that failed.
	RefreshFailures uint64
	// Evictions counts cached keys wiped because they expired beyond
	// MaxStale, were denied at refresh, exceeded MaxKeys, or were
	// forgotten. Keys replaced by a refresh and keys wiped by Close are not
	// counted.
	Evictions uint64
	// RateLimited counts Release calls refused because a key's new
	// versions were being asked for too fast (ErrRateLimited).
	RateLimited uint64
	// Keys is the number of keys cached now.
	Keys int
	// Releases counts calls of the inner releaser.
	Releases ReleaseStats
}

// ReleaseStats counts calls of the inner releaser, retries included:
// Attempted = Succeeded + the sum of Failed.
type ReleaseStats struct {
	Attempted uint64
	Succeeded uint64
	// Failed is indexed by Class; Failed[ClassNone] is always zero.
	Failed [numClasses]uint64
}

// counters are the live counters behind Stats.
type counters struct {
	hits, misses, negativeHits, staleServed atomic.Uint64
	refreshes, refreshFailures, evictions   atomic.Uint64
	rateLimited                             atomic.Uint64
	attempted, succeeded                    atomic.Uint64
	failed                                  [numClasses]atomic.Uint64
}

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats {
	s := Stats{
		Hits:            c.st.hits.Load(),
		Misses:          c.st.misses.Load(),
		NegativeHits:    c.st.negativeHits.Load(),
		StaleServed:     c.st.staleServed.Load(),
		Refreshes:       c.st.refreshes.Load(),
		RefreshFailures: c.st.refreshFailures.Load(),
		Evictions:       c.st.evictions.Load(),
		RateLimited:     c.st.rateLimited.Load(),
		Releases: ReleaseStats{
			Attempted: c.st.attempted.Load(),
			Succeeded: c.st.succeeded.Load(),
		},
	}
	for i := range s.Releases.Failed {
		s.Releases.Failed[i] = c.st.failed[i].Load()
	}
	c.mu.Lock()
	for _, e := range c.entries {
		if e.cur != nil {
			s.Keys++
		}
	}
	c.mu.Unlock()
	return s
}
