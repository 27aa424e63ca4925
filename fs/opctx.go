package fs

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// opContext bounds one FUSE operation by a deadline, like
// context.WithTimeout, but lazily. go-fuse's request context is not one of
// the standard library's, so context.WithTimeout starts a goroutine per
// call to watch it: two per small file (lookup and open), each waking a
// thread, which showed in profiles of small-file workloads. Most
// operations only ask Err (a local store, a cached listing); the real
// derived context, and its goroutine, are made only when something waits
// on Done (an HTTP request, a chunk wait).
type opContext struct {
	parent   context.Context
	deadline time.Time
	once     sync.Once // makes the derived context, or forbids it at release
	derived  atomic.Pointer[context.Context]
	cancel   context.CancelFunc
	released atomic.Bool
}

// withOpTimeout returns a context that ends at parent's end or after d,
// and a function to release it.
func withOpTimeout(parent context.Context, d time.Duration) (context.Context, func()) {
	c := &opContext{parent: parent, deadline: time.Now().Add(d)}
	if pd, ok := parent.Deadline(); ok && pd.Before(c.deadline) {
		c.deadline = pd
	}
	return c, c.release
}

func (c *opContext) release() {
	c.released.Store(true)
	c.once.Do(func() {}) // waits for a concurrent Done; none after this
	if c.cancel != nil {
		c.cancel()
	}
}

// Deadline implements context.Context.
func (c *opContext) Deadline() (time.Time, bool) { return c.deadline, true }

// Done implements context.Context; it makes the derived context.
func (c *opContext) Done() <-chan struct{} {
	c.once.Do(func() {
		ctx, cancel := context.WithDeadline(c.parent, c.deadline)
		c.cancel = cancel
		c.derived.Store(&ctx)
	})
	if d := c.derived.Load(); d != nil {
		return (*d).Done()
	}
	return closedChan // released before anything waited
}

// Err implements context.Context without making the derived context.
func (c *opContext) Err() error {
	if d := c.derived.Load(); d != nil {
		return (*d).Err()
	}
	if c.released.Load() {
		return context.Canceled
	}
	if err := c.parent.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// Value implements context.Context. Once the derived context exists it
// answers, so that contexts derived from this one recognise it as a
// standard cancellable parent (and start no goroutine of their own).
func (c *opContext) Value(key any) any {
	if d := c.derived.Load(); d != nil {
		return (*d).Value(key)
	}
	return c.parent.Value(key)
}

var closedChan = func() chan struct{} { ch := make(chan struct{}); close(ch); return ch }()
