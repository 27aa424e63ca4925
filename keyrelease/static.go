package keyrelease

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
)

// Static releases keys it already holds: keys loaded from files for local
// use and tests. It performs no attestation. Release returns a clone the
// caller must Wipe.
type Static struct {
	mu    sync.RWMutex
	keys  map[KeyRef]*Key
	calls atomic.Int64
}

var _ Releaser = (*Static)(nil)

// NewStatic returns a releaser holding keys, indexed by their Ref.
func NewStatic(keys ...*Key) *Static {
	s := &Static{keys: map[KeyRef]*Key{}}
	for _, k := range keys {
		s.Add(k)
	}
	return s
}

// Add adds or replaces a key; it takes ownership of k.
func (s *Static) Add(k *Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.keys[k.Ref]; old != nil && old != k {
		old.Wipe()
	}
	s.keys[k.Ref] = k
}

// Release returns a clone of the key whose reference matches ref.
func (s *Static) Release(ctx context.Context, ref KeyRef) (*Key, error) {
	s.calls.Add(1)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if k, ok := s.keys[ref]; ok && k.IsPrivate() {
		return k.Clone(), nil
	}
	for r, k := range s.keys {
		if r.Matches(ref) && k.IsPrivate() {
			return k.Clone(), nil
		}
	}
	return nil, fmt.Errorf("%w: %s", ErrNotFound, ref)
}

// Calls returns how many times Release was called.
func (s *Static) Calls() int64 { return s.calls.Load() }

// Wipe wipes every key held.
func (s *Static) Wipe() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range s.keys {
		k.Wipe()
	}
	s.keys = map[KeyRef]*Key{}
}
