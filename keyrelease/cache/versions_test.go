package cache

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/skrfs/skrfs/keyrelease"
)

func version(name string, i int) keyrelease.KeyRef {
	return keyrelease.KeyRef{Vault: "v.vault.azure.net", Name: name, Version: fmt.Sprintf("%032x", i)}
}

// Storage picks the version of a key configured without one: at most
// MaxVersions versions of one key stay cached (least recently used go
// first, wiped), and other keys are not affected.
func TestMaxVersionsPerKey(t *testing.T) {
	h := newHarness(t, &fakeInner{}, Options{VersionMissBurst: 1000})
	h.mustRelease(refA, 1)
	h.mustRelease(version("other", 1), 2)
	for i := 1; i <= 12; i++ {
		h.mustRelease(version("k", i), i+2)
		h.clock.Advance(time.Second)
	}
	cached := 0
	for i := 1; i <= 12; i++ {
		if h.cachedOct(version("k", i)) != nil {
			cached++
			if i <= 4 {
				t.Errorf("version %d (least recently used) still cached", i)
			}
		}
	}
	if cached != 8 {
		t.Fatalf("%d versions of one key cached, want 8 (the default MaxVersions)", cached)
	}
	if h.cachedOct(refA) == nil || h.cachedOct(version("other", 1)) == nil {
		t.Fatal("another key was evicted")
	}
	if got := len(h.Wiped()); got != 4 {
		t.Fatalf("%d evicted versions wiped, want 4", got)
	}
	calls := h.inner.n()
	h.mustRelease(version("k", 12), 14) // cached: no release
	if h.inner.n() != calls {
		t.Fatal("a cached version was released again")
	}
}

// Releases of versions that are not cached are rate-limited per key: a
// burst, then one per interval; the refused call fails at once with
// ErrRateLimited (an ErrUnavailable) and calls no releaser. Cached
// versions, unversioned references and other keys are unaffected.
func TestVersionMissRateLimit(t *testing.T) {
	h := newHarness(t, &fakeInner{}, Options{VersionMissBurst: 3, VersionMissInterval: 10 * time.Second, MaxVersions: -1})
	ctx := context.Background()
	for i := 1; i <= 3; i++ {
		h.mustRelease(version("k", i), i)
	}
	calls := h.inner.n()
	_, err := h.c.Release(ctx, version("k", 4))
	if !errors.Is(err, ErrRateLimited) || !errors.Is(err, keyrelease.ErrUnavailable) {
		t.Fatalf("4th new version at once: %v, want ErrRateLimited", err)
	}
	if h.inner.n() != calls {
		t.Fatal("a rate-limited release called the releaser")
	}
	if s := h.c.Stats(); s.RateLimited != 1 {
		t.Fatalf("RateLimited = %d", s.RateLimited)
	}
	h.mustRelease(version("k", 2), 2)     // cached
	h.mustRelease(refA, 4)                // unversioned
	h.mustRelease(version("other", 1), 5) // another key
	h.clock.Advance(5 * time.Second)
	if _, err := h.c.Release(ctx, version("k", 4)); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("after half an interval: %v", err)
	}
	h.clock.Advance(5 * time.Second)
	h.mustRelease(version("k", 4), 6)
	if _, err := h.c.Release(ctx, version("k", 5)); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("after one token was used: %v", err)
	}
	// No limit when asked for.
	h2 := newHarness(t, &fakeInner{}, Options{VersionMissInterval: -1})
	for i := 1; i <= 20; i++ {
		h2.mustRelease(version("k", i), i)
	}
}
