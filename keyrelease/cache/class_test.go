package cache

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/skrfs/skrfs/keyrelease"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err       error
		want      Class
		permanent bool
	}{
		{nil, ClassNone, false},
		{fmt.Errorf("x: %w", keyrelease.ErrUnavailable), ClassTransient, false},
		{context.DeadlineExceeded, ClassTransient, false},
		{fmt.Errorf("POST: %w", context.Canceled), ClassTransient, false},
		{errors.New("connection reset by peer"), ClassTransient, false},
		{fmt.Errorf("%w: 403", keyrelease.ErrDenied), ClassDenied, true},
		{keyrelease.ErrNotAllowed, ClassNotAllowed, true},
		{keyrelease.ErrNotFound, ClassNotFound, true},
		{fmt.Errorf("%w: evidence: %w", keyrelease.ErrAttestation, errors.New("tsm")), ClassAttestation, true},
		{keyrelease.ErrKeyFormat, ClassInvalid, true},
		{keyrelease.ErrInvalidKeyRef, ClassInvalid, true},
		{fmt.Errorf("%w and %w", keyrelease.ErrUnavailable, keyrelease.ErrDenied), ClassDenied, true},
	} {
		got := Classify(tc.err)
		if got != tc.want || got.Permanent() != tc.permanent {
			t.Errorf("Classify(%v) = %v (permanent %v), want %v (permanent %v)", tc.err, got, got.Permanent(), tc.want, tc.permanent)
		}
	}
	if s := Class(200).String(); s != "unknown" {
		t.Errorf("String of an unknown class = %q", s)
	}
}

func TestBackoffCap(t *testing.T) {
	b := DefaultOptions().Backoff
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{
		{1, 500 * time.Millisecond}, {2, time.Second}, {3, 2 * time.Second}, {4, 4 * time.Second},
		{7, 30 * time.Second}, {8, 30 * time.Second}, {200, 30 * time.Second},
	} {
		if got := b.Cap(tc.n); got != tc.want {
			t.Errorf("Cap(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
}

func TestDefaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Options
		chk  func(Options) bool
	}{
		{"zero", Options{}, func(o Options) bool {
			return o.TTL == time.Hour && o.RefreshAt == 48*time.Minute && o.MaxStale == 0 &&
				o.NegativeTTL == 10*time.Second && o.ReleaseTimeout == 60*time.Second &&
				o.Backoff == Backoff{500 * time.Millisecond, 30 * time.Second, 5} &&
				o.Now != nil && o.Sleep != nil && o.AfterFunc != nil && o.Jitter != nil
		}},
		{"RefreshAt follows TTL", Options{TTL: 10 * time.Minute}, func(o Options) bool { return o.RefreshAt == 8*time.Minute }},
		{"RefreshAt clamped to TTL", Options{TTL: time.Minute, RefreshAt: time.Hour}, func(o Options) bool { return o.RefreshAt == time.Minute }},
		{"negative NegativeTTL disables", Options{NegativeTTL: -1}, func(o Options) bool { return o.NegativeTTL == 0 }},
	} {
		if got := tc.in.withDefaults(); !tc.chk(got) {
			t.Errorf("%s: %+v", tc.name, got)
		}
	}
}

func TestJitterAndSleep(t *testing.T) {
	for range 1000 {
		if d := jitter(time.Second); d < 0 || d > time.Second {
			t.Fatalf("jitter %v out of [0, 1s]", d)
		}
	}
	if jitter(0) != 0 {
		t.Fatal("jitter(0) != 0")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("sleep with a cancelled context: %v", err)
	}
	if err := sleep(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
}
