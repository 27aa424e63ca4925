package fs

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// TestOpContext: the lazy operation context ends like context.WithTimeout
// would (parent cancelled, deadline passed, released), and asking only
// Err starts no goroutine.
func TestOpContext(t *testing.T) {
	fuseCtx := func() (context.Context, chan struct{}) {
		ch := make(chan struct{})
		return &fuse.Context{Cancel: ch}, ch
	}
	t.Run("deadline", func(t *testing.T) {
		p, _ := fuseCtx()
		ctx, release := withOpTimeout(p, 20*time.Millisecond)
		defer release()
		if ctx.Err() != nil {
			t.Fatal("ended early")
		}
		if d, ok := ctx.Deadline(); !ok || time.Until(d) > 20*time.Millisecond {
			t.Fatalf("deadline %v %v", d, ok)
		}
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("Done never closed")
		}
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Fatalf("Err = %v", ctx.Err())
		}
	})
	t.Run("deadline without Done", func(t *testing.T) {
		p, _ := fuseCtx()
		ctx, release := withOpTimeout(p, time.Millisecond)
		defer release()
		time.Sleep(5 * time.Millisecond)
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Fatalf("Err = %v", ctx.Err())
		}
	})
	for _, waited := range []bool{false, true} {
		p, cancel := fuseCtx()
		ctx, release := withOpTimeout(p, time.Hour)
		if waited {
			_ = ctx.Done()
		}
		close(cancel) // the kernel interrupted the request
		if waited {
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("interrupt not propagated to Done")
			}
		}
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Fatalf("interrupted (waited %v): Err = %v", waited, ctx.Err())
		}
		release()
	}
	t.Run("released", func(t *testing.T) {
		p, _ := fuseCtx()
		ctx, release := withOpTimeout(p, time.Hour)
		release()
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Fatalf("Err after release = %v", ctx.Err())
		}
		select {
		case <-ctx.Done():
		default:
			t.Fatal("Done open after release")
		}
	})
	t.Run("child contexts", func(t *testing.T) {
		p, cancel := fuseCtx()
		ctx, release := withOpTimeout(p, time.Hour)
		defer release()
		child, stop := context.WithTimeout(ctx, time.Hour)
		defer stop()
		close(cancel)
		select {
		case <-child.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("a child of the operation context missed the interrupt")
		}
	})
	t.Run("no goroutine for Err", func(t *testing.T) {
		p, _ := fuseCtx()
		before := runtime.NumGoroutine()
		var releases []func()
		for i := 0; i < 100; i++ {
			ctx, release := withOpTimeout(p, time.Hour)
			_ = ctx.Err()
			releases = append(releases, release)
		}
		if n := runtime.NumGoroutine() - before; n > 10 {
			t.Errorf("%d goroutines for 100 operations that only asked Err", n)
		}
		for _, r := range releases {
			r()
		}
	})
}
