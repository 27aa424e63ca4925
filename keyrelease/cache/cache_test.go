package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/skrfs/skrfs/keyrelease"
)

var ref = keyrelease.KeyRef{Vault: "v.vault.azure.net", Name: "k"}

// fakeInner counts calls; each call takes the next scripted error (nil =
// success) and may block on gate.
type fakeInner struct {
	mu     sync.Mutex
	calls  int
	script []error
	gate   chan struct{}
	keys   []*keyrelease.Key
}

func (f *fakeInner) Release(ctx context.Context, r keyrelease.KeyRef) (*keyrelease.Key, error) {
	f.mu.Lock()
	f.calls++
	n := f.calls
	var err error
	if len(f.script) > 0 {
		err, f.script = f.script[0], f.script[1:]
	}
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if err != nil {
		return nil, err
	}
	k := &keyrelease.Key{Ref: r, Type: keyrelease.KeyTypeOct, Oct: bytes.Repeat([]byte{byte(n)}, 32)}
	f.mu.Lock()
	f.keys = append(f.keys, k)
	f.mu.Unlock()
	return k, nil
}

func (f *fakeInner) n() int { f.mu.Lock(); defer f.mu.Unlock(); return f.calls }

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newCache(inner *fakeInner, o Options) (*Cache, *clock, *[]time.Duration) {
	clk := &clock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	var sleeps []time.Duration
	var mu sync.Mutex
	o.Now = clk.now
	o.Sleep = func(_ context.Context, d time.Duration) error { mu.Lock(); sleeps = append(sleeps, d); mu.Unlock(); return nil }
	return New(inner, o), clk, &sleeps
}

func TestSingleFlight(t *testing.T) {
	inner := &fakeInner{gate: make(chan struct{})}
	c, _, _ := newCache(inner, Options{})
	var wg sync.WaitGroup
	keys := make([]*keyrelease.Key, 100)
	errs := make([]error, 100)
	for i := range keys {
		wg.Add(1)
		go func(i int) { defer wg.Done(); keys[i], errs[i] = c.Release(context.Background(), ref) }(i)
	}
	// One caller gives up; the release goes on for the others.
	ctx, cancel := context.WithCancel(context.Background())
	cancelled := make(chan error)
	go func() { _, err := c.Release(ctx, ref); cancelled <- err }()
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: %v", err)
	}
	close(inner.gate)
	wg.Wait()
	if inner.n() != 1 {
		t.Fatalf("%d inner releases, want 1", inner.n())
	}
	for i, k := range keys {
		if errs[i] != nil || !bytes.Equal(k.Oct, bytes.Repeat([]byte{1}, 32)) {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if i > 0 && &k.Oct[0] == &keys[0].Oct[0] {
			t.Fatal("callers share key memory; each must get its own clone")
		}
	}
	keys[0].Wipe() // a caller wiping its clone does not affect the cache
	if k, _ := c.Release(context.Background(), ref); !bytes.Equal(k.Oct, bytes.Repeat([]byte{1}, 32)) || inner.n() != 1 {
		t.Fatal("cached key damaged by a caller's Wipe")
	}
}

func TestTTLAndRefresh(t *testing.T) {
	inner := &fakeInner{}
	c, clk, _ := newCache(inner, Options{TTL: time.Hour})
	ctx := context.Background()
	c.Release(ctx, ref)
	clk.advance(30 * time.Minute)
	c.Release(ctx, ref)
	if inner.n() != 1 {
		t.Fatalf("release within TTL: %d calls", inner.n())
	}
	// Past 80 %: served at once, refreshed in the background, once.
	clk.advance(20 * time.Minute)
	k, err := c.Release(ctx, ref)
	if err != nil || k.Oct[0] != 1 {
		t.Fatalf("during refresh: %v", err)
	}
	waitFor(t, func() bool { return inner.n() == 2 && c.Stats().Refreshes == 1 })
	waitFor(t, func() bool { k, _ := c.Release(ctx, ref); return k.Oct[0] == 2 })
	// Expired without use: a blocking release.
	clk.advance(2 * time.Hour)
	if k, _ := c.Release(ctx, ref); k.Oct[0] != 3 {
		t.Fatalf("after expiry got key %d", k.Oct[0])
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestDeniedIsNotRetried(t *testing.T) {
	denied := fmt.Errorf("%w: claim x-ms-sevsnpvm-hostdata", keyrelease.ErrDenied)
	inner := &fakeInner{script: []error{denied}}
	c, clk, sleeps := newCache(inner, Options{NegativeTTL: 10 * time.Second})
	for i := 0; i < 20; i++ {
		if _, err := c.Release(context.Background(), ref); !errors.Is(err, keyrelease.ErrDenied) {
			t.Fatalf("denied: %v", err)
		}
	}
	if inner.n() != 1 || len(*sleeps) != 0 {
		t.Fatalf("denial: %d calls, %d sleeps; want 1 call, no retry", inner.n(), len(*sleeps))
	}
	clk.advance(11 * time.Second)
	if _, err := c.Release(context.Background(), ref); err != nil || inner.n() != 2 {
		t.Fatalf("after the negative TTL: %v, %d calls", err, inner.n())
	}
}

func TestTransientRetries(t *testing.T) {
	down := fmt.Errorf("%w: 503", keyrelease.ErrUnavailable)
	inner := &fakeInner{script: []error{down, down, down, down, down, down}}
	c, _, sleeps := newCache(inner, Options{Backoff: Backoff{Initial: 100 * time.Millisecond, Max: time.Second, Attempts: 4}})
	_, err := c.Release(context.Background(), ref)
	if !errors.Is(err, keyrelease.ErrUnavailable) || inner.n() != 4 || len(*sleeps) != 3 {
		t.Fatalf("%v after %d calls and %d sleeps; want ErrUnavailable after 4 calls, 3 sleeps", err, inner.n(), len(*sleeps))
	}
	for i, d := range *sleeps {
		if limit := min(time.Second, 100*time.Millisecond<<i); d < 0 || d > limit {
			t.Fatalf("sleep %d = %v, want within [0, %v]", i, d, limit)
		}
	}
	// Recovers on a later attempt.
	inner2 := &fakeInner{script: []error{down, nil}}
	c2, _, _ := newCache(inner2, Options{})
	if _, err := c2.Release(context.Background(), ref); err != nil || inner2.n() != 2 {
		t.Fatalf("recovery: %v, %d calls", err, inner2.n())
	}
}

func TestStaleAndFailClosed(t *testing.T) {
	down := fmt.Errorf("%w: 503", keyrelease.ErrUnavailable)
	inner := &fakeInner{}
	c, clk, _ := newCache(inner, Options{TTL: time.Hour, MaxStale: 30 * time.Minute, Backoff: Backoff{Attempts: 1}})
	ctx := context.Background()
	c.Release(ctx, ref)
	inner.script = []error{down, down, down}
	clk.advance(70 * time.Minute) // past TTL, within MaxStale: refresh fails, key still served
	if k, err := c.Release(ctx, ref); err != nil || k.Oct[0] != 1 {
		t.Fatalf("stale key: %v", err)
	}
	clk.advance(30 * time.Minute) // beyond MaxStale: fail closed
	if _, err := c.Release(ctx, ref); !errors.Is(err, keyrelease.ErrUnavailable) {
		t.Fatalf("beyond MaxStale: %v", err)
	}

	// A denial at refresh time removes the key at once.
	inner2 := &fakeInner{}
	c2, clk2, _ := newCache(inner2, Options{TTL: time.Hour})
	c2.Release(ctx, ref)
	cachedOct := inner2.keys[0].Oct
	inner2.script = []error{keyrelease.ErrDenied}
	clk2.advance(50 * time.Minute)
	c2.Release(ctx, ref) // starts the refresh, still served
	waitFor(t, func() bool { _, err := c2.Release(ctx, ref); return errors.Is(err, keyrelease.ErrDenied) })
	if !bytes.Equal(cachedOct, make([]byte, 32)) {
		t.Fatal("the denied key was not wiped")
	}
}

func TestCloseWipes(t *testing.T) {
	inner := &fakeInner{}
	c, _, _ := newCache(inner, Options{})
	c.Release(context.Background(), ref)
	cached := inner.keys[0]
	oct := cached.Oct
	c.Close()
	if !bytes.Equal(oct, make([]byte, 32)) {
		t.Fatal("Close did not wipe the cached key")
	}
	if _, err := c.Release(context.Background(), ref); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}
