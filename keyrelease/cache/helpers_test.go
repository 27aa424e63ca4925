package cache

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/skrfs/skrfs/keyrelease"
)

var (
	refA = keyrelease.KeyRef{Vault: "v.vault.azure.net", Name: "a"}
	refB = keyrelease.KeyRef{Vault: "v.vault.azure.net", Name: "b"}
	refC = keyrelease.KeyRef{Vault: "v.vault.azure.net", Name: "c", Version: "0123abcd"}
)

// t0 is the fake clock's start.
var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// octOf is the key material the fake releaser returns on its n-th call.
func octOf(n int) []byte { return bytes.Repeat([]byte{byte(n)}, 32) }

// fakeInner is a keyrelease.Releaser that counts its calls. Call n (from 1)
// returns script[n-1] as its error when the script is that long, else a
// fresh oct key filled with byte n. While gated, calls block until a value
// is sent on the gate, the gate is closed, or their context ends.
type fakeInner struct {
	mu      sync.Mutex
	calls   int
	script  []error
	gate    chan struct{}
	entered chan context.Context // if set, receives every call's context
	handed  [][]byte             // the oct bytes of every key returned
}

func (f *fakeInner) Release(ctx context.Context, ref keyrelease.KeyRef) (*keyrelease.Key, error) {
	f.mu.Lock()
	f.calls++
	n := f.calls
	var err error
	if n <= len(f.script) {
		err = f.script[n-1]
	}
	gate, entered := f.gate, f.entered
	f.mu.Unlock()
	if entered != nil {
		entered <- ctx
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, err
	}
	k := &keyrelease.Key{Ref: ref, Type: keyrelease.KeyTypeOct, Oct: octOf(n)}
	f.mu.Lock()
	f.handed = append(f.handed, k.Oct)
	f.mu.Unlock()
	return k, nil
}

func (f *fakeInner) n() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// setScript replaces the errors of calls from the next one on: errs[i] is
// the result of the (n+i+1)-th call.
func (f *fakeInner) setScript(errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script = append(make([]error, f.calls), errs...)
}

func (f *fakeInner) setGate(gate chan struct{}, entered chan context.Context) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gate, f.entered = gate, entered
}

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fakeTimers records AfterFunc calls; the test fires them.
type fakeTimers struct {
	mu     sync.Mutex
	timers []*fakeTimer
}

type fakeTimer struct {
	d    time.Duration
	f    func()
	dead bool // stopped or fired
}

func (ft *fakeTimers) AfterFunc(d time.Duration, f func()) func() bool {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	t := &fakeTimer{d: d, f: f}
	ft.timers = append(ft.timers, t)
	return func() bool {
		ft.mu.Lock()
		defer ft.mu.Unlock()
		was := !t.dead
		t.dead = true
		return was
	}
}

// FireAll runs every pending timer, whatever its delay, and returns how
// many ran. Timers they schedule stay pending.
func (ft *fakeTimers) FireAll() int {
	ft.mu.Lock()
	var run []func()
	for _, t := range ft.timers {
		if !t.dead {
			t.dead = true
			run = append(run, t.f)
		}
	}
	ft.mu.Unlock()
	for _, f := range run {
		f()
	}
	return len(run)
}

// Pending returns the delays of the timers not yet stopped or fired.
func (ft *fakeTimers) Pending() []time.Duration {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	var ds []time.Duration
	for _, t := range ft.timers {
		if !t.dead {
			ds = append(ds, t.d)
		}
	}
	return ds
}

// harness is a Cache over a fakeInner with a fake clock, fake timers,
// recorded sleeps and the test hooks wired to channels.
type harness struct {
	tb     testing.TB
	c      *Cache
	inner  *fakeInner
	clock  *fakeClock
	timers *fakeTimers

	waits   chan struct{} // one value per caller that starts waiting
	flights chan *flight  // one value per finished release

	mu     sync.Mutex
	sleeps []time.Duration
	wiped  [][]byte // copies of cached keys' bytes right after their wipe
}

func newHarness(tb testing.TB, inner *fakeInner, opts Options) *harness {
	tb.Helper()
	h := &harness{
		tb:      tb,
		inner:   inner,
		clock:   &fakeClock{t: t0},
		timers:  &fakeTimers{},
		waits:   make(chan struct{}, 10000),
		flights: make(chan *flight, 10000),
	}
	opts.Now = h.clock.Now
	opts.AfterFunc = h.timers.AfterFunc
	if opts.Sleep == nil {
		opts.Sleep = func(ctx context.Context, d time.Duration) error {
			h.mu.Lock()
			h.sleeps = append(h.sleeps, d)
			h.mu.Unlock()
			return ctx.Err()
		}
	}
	h.c = New(inner, opts)
	h.c.onWait = func() { h.waits <- struct{}{} }
	h.c.onFlightDone = func(f *flight) { h.flights <- f }
	h.c.onWipe = func(oct []byte) {
		h.mu.Lock()
		h.wiped = append(h.wiped, bytes.Clone(oct))
		h.mu.Unlock()
	}
	tb.Cleanup(h.c.Close)
	return h
}

// awaitWaiters blocks until n more callers have started waiting.
func (h *harness) awaitWaiters(n int) {
	h.tb.Helper()
	for range n {
		<-h.waits
	}
}

// awaitFlight blocks until the next release finishes and returns it.
func (h *harness) awaitFlight() *flight {
	h.tb.Helper()
	return <-h.flights
}

func (h *harness) Sleeps() []time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]time.Duration(nil), h.sleeps...)
}

// Wiped returns the bytes of the cached copies wiped so far, as seen right
// after their wipe.
func (h *harness) Wiped() [][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([][]byte(nil), h.wiped...)
}

// mustRelease releases ref and checks that the key holds octOf(want).
func (h *harness) mustRelease(ref keyrelease.KeyRef, want int) {
	h.tb.Helper()
	k, err := h.c.Release(context.Background(), ref)
	if err != nil {
		h.tb.Fatalf("Release(%s): %v; want key %d", ref.Name, err, want)
	}
	if !bytes.Equal(k.Oct, octOf(want)) {
		h.tb.Fatalf("Release(%s) = key %d, want key %d", ref.Name, k.Oct[0], want)
	}
	k.Wipe()
}

// cachedOct returns the cache's own copy of ref's oct bytes (nil if none).
func (h *harness) cachedOct(ref keyrelease.KeyRef) []byte {
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	if e := h.c.entries[ref.String()]; e != nil && e.cur != nil {
		return e.cur.key.Oct
	}
	return nil
}

// checkWipedZero fails unless n cached copies were wiped, each to zeros.
func (h *harness) checkWipedZero(n int) {
	h.tb.Helper()
	w := h.Wiped()
	if len(w) != n {
		h.tb.Fatalf("%d cached copies wiped, want %d", len(w), n)
	}
	for i, b := range w {
		if len(b) == 0 || !bytes.Equal(b, make([]byte, len(b))) {
			h.tb.Fatalf("wiped copy %d is not all zeros (%d bytes)", i, len(b))
		}
	}
}
