package cache

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skrfs/skrfs/keyrelease"
)

func TestSingleFlight(t *testing.T) {
	const n = 100
	inner := &fakeInner{}
	gate := make(chan struct{})
	inner.setGate(gate, nil)
	h := newHarness(t, inner, Options{})

	keys := make([]*keyrelease.Key, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keys[i], errs[i] = h.c.Release(context.Background(), refA)
		}()
	}
	h.awaitWaiters(n) // every caller waits on the one release
	close(gate)
	wg.Wait()

	if got := inner.n(); got != 1 {
		t.Fatalf("%d inner releases for %d concurrent callers, want 1", got, n)
	}
	cached := h.cachedOct(refA)
	seen := map[*byte]bool{&cached[0]: true}
	for i, k := range keys {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if !bytes.Equal(k.Oct, octOf(1)) {
			t.Fatalf("caller %d got key %x, want key 1", i, k.Oct[0])
		}
		if seen[&k.Oct[0]] {
			t.Fatalf("caller %d shares key memory with another caller or the cache; each must get its own clone", i)
		}
		seen[&k.Oct[0]] = true
	}
	st := h.c.Stats()
	if st.Misses != n || st.Hits != 0 || st.Releases.Attempted != 1 || st.Releases.Succeeded != 1 || st.Keys != 1 {
		t.Fatalf("stats %+v", st)
	}

	// A caller wiping its clone leaves the cached copy intact.
	keys[0].Wipe()
	h.mustRelease(refA, 1)
	if inner.n() != 1 || h.c.Stats().Hits != 1 {
		t.Fatalf("after a caller's Wipe: %d inner calls, stats %+v", inner.n(), h.c.Stats())
	}
	// The inner releaser's copy was moved into the cache's memory and
	// cleared.
	if &inner.handed[0][0] == &h.cachedOct(refA)[0] {
		t.Fatal("the cache keeps the inner releaser's slice instead of its own copy")
	}
}

func TestCallerCancelDoesNotCancelRelease(t *testing.T) {
	for _, tc := range []struct {
		name   string
		others int // callers that keep waiting
	}{
		{name: "others keep waiting", others: 9},
		{name: "everyone gives up", others: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner := &fakeInner{}
			gate, entered := make(chan struct{}), make(chan context.Context, 1)
			inner.setGate(gate, entered)
			h := newHarness(t, inner, Options{})

			// The first caller starts the release, then is interrupted.
			ctx, cancel := context.WithCancel(context.Background())
			first := make(chan error, 1)
			go func() { _, err := h.c.Release(ctx, refA); first <- err }()
			innerCtx := <-entered
			h.awaitWaiters(1)

			var wg sync.WaitGroup
			errs := make(chan error, tc.others)
			for range tc.others {
				wg.Add(1)
				go func() {
					defer wg.Done()
					k, err := h.c.Release(context.Background(), refA)
					if err == nil && !bytes.Equal(k.Oct, octOf(1)) {
						err = fmt.Errorf("got key %x", k.Oct[0])
					}
					errs <- err
				}()
			}
			h.awaitWaiters(tc.others)

			cancel()
			if err := <-first; !errors.Is(err, context.Canceled) {
				t.Fatalf("interrupted caller: %v, want context.Canceled", err)
			}
			if err := innerCtx.Err(); err != nil {
				t.Fatalf("the inner release was cancelled with its first caller: %v", err)
			}
			close(gate)
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatalf("waiting caller: %v", err)
				}
			}
			// The release finished and was cached even with nobody waiting.
			if f := h.awaitFlight(); f.err != nil {
				t.Fatalf("release: %v", f.err)
			}
			h.mustRelease(refA, 1)
			if inner.n() != 1 {
				t.Fatalf("%d inner releases, want 1", inner.n())
			}
		})
	}
}

func TestCancelledContextIsRefusedAtOnce(t *testing.T) {
	inner := &fakeInner{}
	h := newHarness(t, inner, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.c.Release(ctx, refA); !errors.Is(err, context.Canceled) || inner.n() != 0 {
		t.Fatalf("Release with a cancelled context: %v after %d inner calls", err, inner.n())
	}
}

func TestTTL(t *testing.T) {
	for _, tc := range []struct {
		name      string
		opts      Options
		age       time.Duration // between the first and second use
		wantKey   int           // key served at the second use
		wantCalls int           // inner calls after the second use (and any refresh)
	}{
		{name: "fresh", age: 30 * time.Minute, wantKey: 1, wantCalls: 1},
		{name: "just before refresh", age: 48*time.Minute - 1, wantKey: 1, wantCalls: 1},
		{name: "due for refresh: served, refreshed", age: 48 * time.Minute, wantKey: 1, wantCalls: 2},
		{name: "just before TTL", age: time.Hour - 1, wantKey: 1, wantCalls: 2},
		{name: "expired: released again", age: time.Hour, wantKey: 2, wantCalls: 2},
		{name: "long expired", age: 24 * time.Hour, wantKey: 2, wantCalls: 2},
		{name: "custom RefreshAt", opts: Options{TTL: 10 * time.Minute, RefreshAt: 5 * time.Minute}, age: 5 * time.Minute, wantKey: 1, wantCalls: 2},
		{name: "RefreshAt beyond TTL: no refresh", opts: Options{TTL: 10 * time.Minute, RefreshAt: time.Hour}, age: 10*time.Minute - 1, wantKey: 1, wantCalls: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner := &fakeInner{}
			h := newHarness(t, inner, tc.opts)
			h.mustRelease(refA, 1)
			h.awaitFlight()
			h.clock.Advance(tc.age)
			h.mustRelease(refA, tc.wantKey)
			if tc.wantCalls > 1 {
				h.awaitFlight()
			}
			if got := inner.n(); got != tc.wantCalls {
				t.Fatalf("%d inner calls, want %d", got, tc.wantCalls)
			}
			if tc.wantCalls > 1 {
				// The replaced copy was wiped, the new one is served.
				h.checkWipedZero(1)
				h.mustRelease(refA, 2)
			}
		})
	}
}

func TestProactiveRefresh(t *testing.T) {
	inner := &fakeInner{}
	h := newHarness(t, inner, Options{TTL: time.Hour})
	h.mustRelease(refA, 1)
	h.awaitFlight()

	gate, entered := make(chan struct{}), make(chan context.Context, 1)
	inner.setGate(gate, entered)
	h.clock.Advance(50 * time.Minute)
	h.mustRelease(refA, 1) // served at once; starts the refresh
	<-entered
	// While the refresh is blocked, every use is served the current key
	// and no second refresh starts.
	for range 20 {
		h.mustRelease(refA, 1)
	}
	h.clock.Advance(5 * time.Minute)
	h.mustRelease(refA, 1)
	if st := h.c.Stats(); inner.n() != 2 || st.Refreshes != 1 || st.Hits != 22 || st.Misses != 1 {
		t.Fatalf("during the refresh: %d inner calls, stats %+v", inner.n(), st)
	}
	close(gate)
	if f := h.awaitFlight(); f.err != nil || !f.refresh {
		t.Fatalf("refresh: %+v", f)
	}
	h.mustRelease(refA, 2)
	h.checkWipedZero(1) // the old copy
	// The new key has a full TTL of its own.
	h.clock.Advance(47 * time.Minute)
	h.mustRelease(refA, 2)
	if inner.n() != 2 {
		t.Fatalf("%d inner calls, want 2", inner.n())
	}
}

func TestPermanentFailures(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		sentinel error
		class    Class
	}{
		{"denied", fmt.Errorf("%w: HTTP 403: claim x-ms-sevsnpvm-hostdata", keyrelease.ErrDenied), keyrelease.ErrDenied, ClassDenied},
		{"not allowed", fmt.Errorf("%w: k", keyrelease.ErrNotAllowed), keyrelease.ErrNotAllowed, ClassNotAllowed},
		{"not found", fmt.Errorf("%w: k", keyrelease.ErrNotFound), keyrelease.ErrNotFound, ClassNotFound},
		{"attestation rejected", fmt.Errorf("%w: token rejected", keyrelease.ErrAttestation), keyrelease.ErrAttestation, ClassAttestation},
		{"bad key material", fmt.Errorf("%w: JWK", keyrelease.ErrKeyFormat), keyrelease.ErrKeyFormat, ClassInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner := &fakeInner{script: []error{tc.err}}
			h := newHarness(t, inner, Options{NegativeTTL: 10 * time.Second})
			for i := range 20 {
				if _, err := h.c.Release(context.Background(), refA); !errors.Is(err, tc.sentinel) {
					t.Fatalf("Release %d: %v, want %v", i, err, tc.sentinel)
				}
			}
			st := h.c.Stats()
			if inner.n() != 1 || len(h.Sleeps()) != 0 {
				t.Fatalf("%d inner calls and %d sleeps; want 1 call, no retry", inner.n(), len(h.Sleeps()))
			}
			if st.NegativeHits != 19 || st.Releases.Failed[tc.class] != 1 || st.Keys != 0 {
				t.Fatalf("stats %+v", st)
			}
			h.clock.Advance(10*time.Second - 1)
			if _, err := h.c.Release(context.Background(), refA); !errors.Is(err, tc.sentinel) || inner.n() != 1 {
				t.Fatalf("within the negative TTL: %v after %d calls", err, inner.n())
			}
			h.clock.Advance(1)
			h.mustRelease(refA, 2)
		})
	}
}

func TestNegativeCacheDisabled(t *testing.T) {
	inner := &fakeInner{script: []error{keyrelease.ErrDenied, keyrelease.ErrDenied}}
	h := newHarness(t, inner, Options{NegativeTTL: -1})
	for range 2 {
		if _, err := h.c.Release(context.Background(), refA); !errors.Is(err, keyrelease.ErrDenied) {
			t.Fatal(err)
		}
	}
	h.mustRelease(refA, 3)
}

func TestTransientRetries(t *testing.T) {
	unavailable := fmt.Errorf("%w: HTTP 503", keyrelease.ErrUnavailable)
	for _, tc := range []struct {
		name     string
		err      error
		backoff  Backoff
		wantCaps []time.Duration
	}{
		{"unavailable, default backoff", unavailable, Backoff{},
			[]time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second}},
		{"deadline exceeded", fmt.Errorf("POST: %w", context.DeadlineExceeded), Backoff{},
			[]time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second}},
		{"canceled inside the releaser", context.Canceled, Backoff{Attempts: 2},
			[]time.Duration{500 * time.Millisecond}},
		{"unclassified error", errors.New("connection reset by peer"), Backoff{Initial: time.Second, Max: 3 * time.Second, Attempts: 6},
			[]time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second, 3 * time.Second}},
		{"single attempt", unavailable, Backoff{Attempts: 1}, nil},
	} {
		for _, exact := range []bool{false, true} {
			name := tc.name + map[bool]string{false: ", random jitter", true: ", jitter at cap"}[exact]
			t.Run(name, func(t *testing.T) {
				attempts := len(tc.wantCaps) + 1
				script := make([]error, attempts)
				for i := range script {
					script[i] = tc.err
				}
				inner := &fakeInner{script: script}
				opts := Options{Backoff: tc.backoff}
				if exact {
					opts.Jitter = func(limit time.Duration) time.Duration { return limit }
				}
				h := newHarness(t, inner, opts)
				_, err := h.c.Release(context.Background(), refA)
				if !errors.Is(err, keyrelease.ErrUnavailable) {
					t.Fatalf("after retries: %v, want ErrUnavailable", err)
				}
				if errors.Is(err, context.Canceled) {
					t.Fatalf("%v must not look like the caller's interrupt", err)
				}
				if want := fmt.Sprintf("%d attempt(s) failed", attempts); !strings.Contains(err.Error(), want) {
					t.Fatalf("error %q does not say %q", err, want)
				}
				if inner.n() != attempts {
					t.Fatalf("%d inner calls, want %d", inner.n(), attempts)
				}
				sleeps := h.Sleeps()
				if len(sleeps) != len(tc.wantCaps) {
					t.Fatalf("sleeps %v, want %d", sleeps, len(tc.wantCaps))
				}
				for i, d := range sleeps {
					if d < 0 || d > tc.wantCaps[i] || (exact && d != tc.wantCaps[i]) {
						t.Fatalf("sleep %d = %v, want within [0, %v]", i, d, tc.wantCaps[i])
					}
				}
				st := h.c.Stats()
				if st.Releases.Attempted != uint64(attempts) || st.Releases.Failed[ClassTransient] != uint64(attempts) {
					t.Fatalf("stats %+v", st)
				}
				// Transient failures are not remembered: the next call tries again.
				h.mustRelease(refA, attempts+1)
			})
		}
	}
}

func TestTransientThenSuccess(t *testing.T) {
	down := fmt.Errorf("%w: 429", keyrelease.ErrUnavailable)
	inner := &fakeInner{script: []error{down, down}}
	h := newHarness(t, inner, Options{})
	h.mustRelease(refA, 3)
	if st := h.c.Stats(); inner.n() != 3 || len(h.Sleeps()) != 2 || st.Releases.Succeeded != 1 || st.Releases.Failed[ClassTransient] != 2 {
		t.Fatalf("%d calls, %d sleeps, stats %+v", inner.n(), len(h.Sleeps()), st)
	}
}

func TestPermanentAfterTransientStopsRetrying(t *testing.T) {
	inner := &fakeInner{script: []error{keyrelease.ErrUnavailable, keyrelease.ErrDenied}}
	h := newHarness(t, inner, Options{})
	if _, err := h.c.Release(context.Background(), refA); !errors.Is(err, keyrelease.ErrDenied) || errors.Is(err, keyrelease.ErrUnavailable) {
		t.Fatalf("%v, want the denial", err)
	}
	if inner.n() != 2 || len(h.Sleeps()) != 1 {
		t.Fatalf("%d calls, %d sleeps; want 2, 1", inner.n(), len(h.Sleeps()))
	}
}

func TestReleaseTimeout(t *testing.T) {
	// The injected sleep stands for a backoff delay that outlasts the
	// release's deadline.
	inner := &fakeInner{script: []error{keyrelease.ErrUnavailable}}
	h := newHarness(t, inner, Options{
		ReleaseTimeout: 60 * time.Second,
		Sleep:          func(context.Context, time.Duration) error { return context.DeadlineExceeded },
	})
	_, err := h.c.Release(context.Background(), refA)
	if !errors.Is(err, keyrelease.ErrUnavailable) || !strings.Contains(err.Error(), "1 attempt(s)") || inner.n() != 1 {
		t.Fatalf("%v after %d calls", err, inner.n())
	}
}

func TestStale(t *testing.T) {
	down := fmt.Errorf("%w: HTTP 503", keyrelease.ErrUnavailable)
	type step struct {
		advance  time.Duration // from the first release
		wantKey  int           // 0 = want ErrUnavailable
		wantStal bool          // served past TTL
	}
	for _, tc := range []struct {
		name     string
		maxStale time.Duration
		steps    []step
		wipes    int // cached copies wiped at the end
	}{
		{
			name: "refresh fails before TTL: stale within MaxStale, then closed", maxStale: 30 * time.Minute,
			steps: []step{{50 * time.Minute, 1, false}, {55 * time.Minute, 1, false}, {65 * time.Minute, 1, true},
				{90*time.Minute - 1, 1, true}, {90 * time.Minute, 0, false}},
			wipes: 1,
		},
		{
			name: "first use after TTL waits, fails, gets the stale key", maxStale: 30 * time.Minute,
			steps: []step{{70 * time.Minute, 1, true}, {80 * time.Minute, 1, true}, {2 * time.Hour, 0, false}},
			wipes: 1,
		},
		{
			name: "MaxStale 0 fails closed at TTL", maxStale: 0,
			steps: []step{{50 * time.Minute, 1, false}, {59 * time.Minute, 1, false}, {time.Hour, 0, false}},
			wipes: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner := &fakeInner{}
			h := newHarness(t, inner, Options{TTL: time.Hour, MaxStale: tc.maxStale, Backoff: Backoff{Attempts: 1}})
			h.mustRelease(refA, 1)
			h.awaitFlight()
			inner.setScript(down, down, down, down, down, down, down, down)
			var at time.Duration
			for _, s := range tc.steps {
				h.clock.Advance(s.advance - at)
				at = s.advance
				calls := inner.n()
				before := h.c.Stats().StaleServed
				k, err := h.c.Release(context.Background(), refA)
				switch {
				case s.wantKey == 0 && !errors.Is(err, keyrelease.ErrUnavailable):
					t.Fatalf("at %v: %v, want ErrUnavailable", at, err)
				case s.wantKey != 0 && (err != nil || !bytes.Equal(k.Oct, octOf(s.wantKey))):
					t.Fatalf("at %v: %v, want key %d", at, err, s.wantKey)
				}
				if stale := h.c.Stats().StaleServed > before; stale != s.wantStal {
					t.Fatalf("at %v: served stale = %v, want %v", at, stale, s.wantStal)
				}
				if inner.n() > calls { // a background refresh or a blocking release ran
					if f := h.awaitFlight(); !errors.Is(f.err, keyrelease.ErrUnavailable) {
						t.Fatalf("at %v: release %v", at, f.err)
					}
				}
			}
			h.checkWipedZero(tc.wipes) // (the bytes themselves are unmapped now)
			if st := h.c.Stats(); st.Keys != 0 || st.Evictions != 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestRefreshCooldown(t *testing.T) {
	inner := &fakeInner{}
	h := newHarness(t, inner, Options{TTL: time.Hour, NegativeTTL: 10 * time.Second, Backoff: Backoff{Attempts: 1}})
	h.mustRelease(refA, 1)
	h.awaitFlight()
	inner.setScript(keyrelease.ErrUnavailable, keyrelease.ErrUnavailable)
	h.clock.Advance(50 * time.Minute)
	h.mustRelease(refA, 1) // refresh 1 starts
	h.awaitFlight()
	h.clock.Advance(10*time.Second - 1)
	h.mustRelease(refA, 1) // within the pause: no refresh
	if inner.n() != 2 {
		t.Fatalf("%d calls, want 2", inner.n())
	}
	h.clock.Advance(1)
	h.mustRelease(refA, 1) // refresh 2 starts
	h.awaitFlight()
	h.clock.Advance(10 * time.Second)
	h.mustRelease(refA, 1) // refresh 3 starts and succeeds
	h.awaitFlight()
	h.mustRelease(refA, 4)
	if st := h.c.Stats(); st.Refreshes != 3 || st.RefreshFailures != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestRefreshDeniedFailsClosed(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"denied", fmt.Errorf("%w: policy now requires a different hostdata", keyrelease.ErrDenied)},
		{"attestation rejected", fmt.Errorf("%w: token rejected", keyrelease.ErrAttestation)},
		{"key deleted", fmt.Errorf("%w: k", keyrelease.ErrNotFound)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner := &fakeInner{}
			// MaxStale must not keep a denied key alive.
			h := newHarness(t, inner, Options{TTL: time.Hour, MaxStale: 24 * time.Hour})
			h.mustRelease(refA, 1)
			h.awaitFlight()
			inner.setScript(tc.err)
			h.clock.Advance(50 * time.Minute)
			h.mustRelease(refA, 1) // refresh starts; the key is still served meanwhile
			if f := h.awaitFlight(); !errors.Is(f.err, tc.err) {
				t.Fatalf("refresh: %v", f.err)
			}
			h.checkWipedZero(1)
			if _, err := h.c.Release(context.Background(), refA); !errors.Is(err, tc.err) {
				t.Fatalf("after the denied refresh: %v, want the denial", err)
			}
			if st := h.c.Stats(); inner.n() != 2 || len(h.Sleeps()) != 0 || st.Keys != 0 || st.Evictions != 1 || st.RefreshFailures != 1 {
				t.Fatalf("%d calls, %d sleeps, stats %+v", inner.n(), len(h.Sleeps()), st)
			}
		})
	}
}

func TestExpiryTimerWipesUnusedKeys(t *testing.T) {
	for _, tc := range []struct {
		name     string
		maxStale time.Duration
	}{
		{"fail closed at TTL", 0},
		{"with MaxStale", 30 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner := &fakeInner{}
			h := newHarness(t, inner, Options{TTL: time.Hour, MaxStale: tc.maxStale})
			h.mustRelease(refA, 1)
			h.awaitFlight()
			limit := time.Hour + tc.maxStale
			if p := h.timers.Pending(); len(p) != 1 || p[0] != limit {
				t.Fatalf("pending timers %v, want [%v]", p, limit)
			}
			// A timer that fires early reschedules for the rest.
			h.clock.Advance(limit - time.Minute)
			h.timers.FireAll()
			if p := h.timers.Pending(); len(p) != 1 || p[0] != time.Minute || h.cachedOct(refA) == nil {
				t.Fatalf("early fire: pending %v", p)
			}
			h.clock.Advance(time.Minute)
			h.timers.FireAll()
			h.checkWipedZero(1)
			if st := h.c.Stats(); st.Keys != 0 || st.Evictions != 1 || len(h.timers.Pending()) != 0 {
				t.Fatalf("stats %+v, pending %v", st, h.timers.Pending())
			}
			h.mustRelease(refA, 2)
		})
	}
}

func TestReplacedKeyStopsItsTimer(t *testing.T) {
	inner := &fakeInner{}
	h := newHarness(t, inner, Options{TTL: time.Hour})
	h.mustRelease(refA, 1)
	h.awaitFlight()
	h.clock.Advance(50 * time.Minute)
	h.mustRelease(refA, 1)
	h.awaitFlight()
	if p := h.timers.Pending(); len(p) != 1 {
		t.Fatalf("pending timers %v, want only the new key's", p)
	}
}

func TestForget(t *testing.T) {
	t.Run("cached key", func(t *testing.T) {
		inner := &fakeInner{}
		h := newHarness(t, inner, Options{})
		h.mustRelease(refA, 1)
		h.c.Forget(refA)
		h.c.Forget(refB) // unknown: no-op
		h.checkWipedZero(1)
		h.mustRelease(refA, 2)
		if st := h.c.Stats(); st.Evictions != 1 || st.Misses != 2 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("remembered denial", func(t *testing.T) {
		inner := &fakeInner{script: []error{keyrelease.ErrDenied}}
		h := newHarness(t, inner, Options{})
		if _, err := h.c.Release(context.Background(), refA); !errors.Is(err, keyrelease.ErrDenied) {
			t.Fatal(err)
		}
		h.c.Forget(refA)
		h.mustRelease(refA, 2)
	})
	t.Run("release in progress", func(t *testing.T) {
		inner := &fakeInner{}
		gate, entered := make(chan struct{}), make(chan context.Context, 2)
		inner.setGate(gate, entered)
		h := newHarness(t, inner, Options{})
		got := make(chan error, 1)
		go func() {
			k, err := h.c.Release(context.Background(), refA)
			if err == nil && !bytes.Equal(k.Oct, octOf(2)) {
				err = fmt.Errorf("got key %x, want the one released after Forget", k.Oct[0])
			}
			got <- err
		}()
		first := <-entered
		h.awaitWaiters(1)
		h.c.Forget(refA)
		if first.Err() == nil {
			t.Fatal("Forget did not cancel the release in progress")
		}
		if f := h.awaitFlight(); !f.superseded {
			t.Fatalf("abandoned release: %+v", f)
		}
		<-entered // the waiter started a new release
		close(gate)
		if err := <-got; err != nil {
			t.Fatal(err)
		}
		if inner.n() != 2 || len(h.Wiped()) != 0 {
			t.Fatalf("%d calls, %d wipes", inner.n(), len(h.Wiped()))
		}
	})
}

func TestMaxKeys(t *testing.T) {
	inner := &fakeInner{}
	h := newHarness(t, inner, Options{MaxKeys: 2})
	h.mustRelease(refA, 1)
	h.clock.Advance(time.Second)
	h.mustRelease(refB, 2)
	h.clock.Advance(time.Second)
	h.mustRelease(refA, 1) // a is now more recently used than b
	h.clock.Advance(time.Second)
	h.mustRelease(refC, 3) // evicts b
	h.checkWipedZero(1)
	if st := h.c.Stats(); st.Keys != 2 || st.Evictions != 1 {
		t.Fatalf("stats %+v", st)
	}
	h.mustRelease(refA, 1)
	h.mustRelease(refC, 3)
	h.mustRelease(refB, 4)
}

func TestMaxKeysSparesUncollectedKeys(t *testing.T) {
	inner := &fakeInner{}
	h := newHarness(t, inner, Options{MaxKeys: 1})
	h.mustRelease(refA, 1)
	// Pretend a caller has not yet copied a's key out of its release.
	setWaiters := func(n int) {
		h.c.mu.Lock()
		h.c.entries[refA.String()].cur.from.waiters = n
		h.c.mu.Unlock()
	}
	setWaiters(1)
	h.clock.Advance(time.Second)
	h.mustRelease(refB, 2)
	if st := h.c.Stats(); st.Keys != 2 || st.Evictions != 0 {
		t.Fatalf("a key with a pending caller was evicted: stats %+v", st)
	}
	setWaiters(0)
	h.clock.Advance(time.Second)
	h.mustRelease(refC, 3) // back within the bound: a and b go
	h.checkWipedZero(2)
	if st := h.c.Stats(); st.Keys != 1 || st.Evictions != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestClose(t *testing.T) {
	inner := &fakeInner{}
	h := newHarness(t, inner, Options{})
	for i, ref := range []keyrelease.KeyRef{refA, refB, refC} {
		h.mustRelease(ref, i+1)
	}
	held, err := h.c.Release(context.Background(), refA)
	if err != nil {
		t.Fatal(err)
	}

	// A release in progress when the cache closes.
	gate, entered := make(chan struct{}), make(chan context.Context, 1)
	inner.setGate(gate, entered)
	ref := keyrelease.KeyRef{Vault: "v.vault.azure.net", Name: "late"}
	waiting := make(chan error, 1)
	go func() { _, err := h.c.Release(context.Background(), ref); waiting <- err }()
	innerCtx := <-entered
	h.awaitWaiters(1)

	h.c.Close()
	if err := <-waiting; !errors.Is(err, ErrClosed) {
		t.Fatalf("caller waiting during Close: %v, want ErrClosed", err)
	}
	if innerCtx.Err() == nil {
		t.Fatal("Close did not cancel the release in progress")
	}
	h.checkWipedZero(3)
	for _, e := range h.c.entries {
		if e.cur != nil {
			t.Fatal("Close left a cached key")
		}
	}
	if !bytes.Equal(held.Oct, octOf(1)) {
		t.Fatal("Close wiped a clone owned by a caller")
	}
	if _, err := h.c.Release(context.Background(), refA); !errors.Is(err, ErrClosed) {
		t.Fatalf("Release after Close: %v, want ErrClosed", err)
	}
	if st := h.c.Stats(); st.Keys != 0 || inner.n() != 4 {
		t.Fatalf("%d calls, stats %+v", inner.n(), st)
	}
	h.c.Close() // idempotent
}

func TestCachedCopyIsInPrivateMemory(t *testing.T) {
	inner := &fakeInner{}
	h := newHarness(t, inner, Options{})
	h.mustRelease(refA, 1)
	if !bytes.Equal(inner.handed[0], make([]byte, 32)) {
		t.Fatal("the inner releaser's copy of the bytes was not cleared")
	}
	h.c.mu.Lock()
	mem := h.c.entries[refA.String()].cur.mem
	h.c.mu.Unlock()
	if mem.mem != nil {
		if len(mem.mem) != os.Getpagesize() {
			t.Fatalf("key mapping of %d bytes, want one page", len(mem.mem))
		}
		t.Logf("key bytes in a private mapping, locked=%v", mem.locked)
	}
}

func TestPrivateKeysAreClonedAndWiped(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := keyrelease.FromCrypto(priv)
	key.Ref = refA
	c := New(keyrelease.NewStatic(key), Options{})
	got, err := c.Release(context.Background(), refA)
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	cachedKey := c.entries[refA.String()].cur.key
	cachedPriv := cachedKey.Private.(*ecdsa.PrivateKey)
	c.mu.Unlock()
	gotPriv := got.Private.(*ecdsa.PrivateKey)
	if gotPriv == cachedPriv || gotPriv == priv || !gotPriv.Equal(priv) {
		t.Fatal("the caller did not get an equal, distinct clone")
	}
	c.Close()
	if cachedKey.Private != nil {
		t.Fatal("Close did not wipe the cached private key")
	}
	if !gotPriv.Equal(priv) {
		t.Fatal("Close wiped the caller's clone")
	}
}

// TestConcurrentReaders runs 64 readers over three keys while time passes
// through refreshes and expiries; no reader may see an error or a wiped
// key, and every inner release is accounted for.
func TestConcurrentReaders(t *testing.T) {
	const readers, rounds = 64, 200
	inner := &fakeInner{}
	h := newHarness(t, inner, Options{TTL: time.Hour, MaxStale: 10 * time.Minute})
	go func() { // drain completions; nobody waits on them here
		for range h.flights {
		}
	}()
	refs := []keyrelease.KeyRef{refA, refB, refC}
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				if r == 0 && i%10 == 0 {
					h.clock.Advance(7 * time.Minute)
					h.timers.FireAll()
				}
				k, err := h.c.Release(context.Background(), refs[(r+i)%len(refs)])
				if err != nil {
					errs <- err
					return
				}
				if len(k.Oct) != 32 || k.Oct[0] == 0 || !bytes.Equal(k.Oct, bytes.Repeat(k.Oct[:1], 32)) {
					errs <- fmt.Errorf("reader %d got a damaged key %x", r, k.Oct)
					return
				}
				k.Wipe()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	h.c.Close()
	close(h.flights)
	st := h.c.Stats()
	if st.Hits+st.Misses != readers*rounds || st.Releases.Attempted != uint64(inner.n()) {
		t.Fatalf("stats %+v after %d inner calls", st, inner.n())
	}
	t.Logf("stats %+v, %d inner calls", st, inner.n())
}
