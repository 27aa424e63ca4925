package fs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/blob/memblob"
	"github.com/skrfs/skrfs/crypto"
)

var errInjected = errors.New("injected storage failure")

// preambleFailStore fails the next `fail` preamble reads (the one storage
// read that computes a size without metadata), as storage that is briefly
// unavailable does.
type preambleFailStore struct {
	*memblob.Store
	fail *atomic.Int64
}

func (s preambleFailStore) ReadAt(ctx context.Context, ref blob.Ref, p []byte, off int64) (int, error) {
	if off == 0 && len(p) == crypto.PreambleSize && s.fail.Add(-1) >= 0 {
		return 0, errInjected
	}
	return s.Store.ReadAt(ctx, ref, p, off)
}

// TestTransientSizeFailure: a storage failure while computing an object's
// size at lookup (shown as size 0) must not make the file look short:
//   - the open proves the size (header and final chunk), so the whole file
//     reads right and stat then reports the right size (it used to stay 0
//     for that version, and reads ended at 0: a silently empty file);
//   - a later lookup that fails the same way must not shrink a file that
//     is open (go-fuse makes a fresh node per lookup, and the attributes
//     of the fresh node, size 0, replaced those of the open file).
func TestTransientSizeFailure(t *testing.T) {
	fail := &atomic.Int64{}
	w := newWorld(t, func(w *world) {
		w.tune = func(o *Options) { o.Datasets[0].Store = preambleFailStore{w.store, fail} }
	})
	want := w.plain["big.bin"]

	t.Run("failed at lookup, proved at open", func(t *testing.T) {
		fail.Store(1)
		st, err := os.Stat(w.path("data/big.bin"))
		if err != nil || st.Size() != 0 || fail.Load() > 0 {
			t.Fatalf("stat with the preamble read failing: %v, size %v (failures left %d); want size 0", err, st, fail.Load())
		}
		got, err := os.ReadFile(w.path("data/big.bin"))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read after a failed size computation: %d bytes, %v; want %d bytes", len(got), err, len(want))
		}
		if st, err := os.Stat(w.path("data/big.bin")); err != nil || st.Size() != int64(len(want)) {
			t.Fatalf("stat after the open: %v, %v; want size %d", st, err, len(want))
		}
	})

	t.Run("failed lookup while open", func(t *testing.T) {
		f, err := os.OpenFile(w.path("data/hello.txt"), os.O_RDONLY|syscall.O_DIRECT, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		// Drop the kernel's entry so that the next path walk looks the
		// name up again, and fail that lookup's size computation.
		dir := w.root.GetChild("data")
		if errno := dir.NotifyEntry("hello.txt"); errno != 0 {
			t.Fatalf("NotifyEntry: %v", errno)
		}
		fail.Store(1)
		if _, err := os.Stat(w.path("data/hello.txt")); err != nil {
			t.Fatal(err)
		}
		fail.Store(0)
		got, err := io.ReadAll(f)
		if err != nil || !bytes.Equal(got, w.plain["hello.txt"]) {
			t.Fatalf("open file after a failed lookup: %q, %v; want %q", got, err, w.plain["hello.txt"])
		}
	})
}

// stallStore never answers the operations named in stall (until the
// request's context ends or the test does), as storage that accepts
// connections and then says nothing.
type stallStore struct {
	*memblob.Store
	stall   *atomic.Value // string: "stat", "read", "list" or ""
	release chan struct{}
}

func (s stallStore) wait(ctx context.Context, op string) error {
	if v, _ := s.stall.Load().(string); v != op {
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-s.release:
		return errInjected
	}
}

func (s stallStore) Stat(ctx context.Context, name string) (blob.Info, error) {
	if err := s.wait(ctx, "stat"); err != nil {
		return blob.Info{}, err
	}
	return s.Store.Stat(ctx, name)
}

func (s stallStore) ReadAt(ctx context.Context, ref blob.Ref, p []byte, off int64) (int, error) {
	if err := s.wait(ctx, "read"); err != nil {
		return 0, err
	}
	return s.Store.ReadAt(ctx, ref, p, off)
}

func (s stallStore) List(ctx context.Context, opts blob.ListOptions, fn func(blob.Info) error) error {
	if err := s.wait(ctx, "list"); err != nil {
		return err
	}
	return s.Store.List(ctx, opts, fn)
}

// TestStalledStorageIsBounded: storage that never answers makes lookups,
// listings and opens fail with EIO after Options.OpTimeout, as chunk
// loads do; it does not hang them (they used to wait as long as the
// storage client's own retry policy allowed, forever here).
func TestStalledStorageIsBounded(t *testing.T) {
	stall := &atomic.Value{}
	stall.Store("")
	release := make(chan struct{})
	w := newWorld(t, func(w *world) {
		w.tune = func(o *Options) {
			o.Datasets[0].Store = stallStore{w.store, stall, release}
			o.OpTimeout = 300 * time.Millisecond
			o.ListTTL = time.Millisecond
		}
	})
	// Registered after the mount's cleanup, so it runs first: a stalled
	// request must end before the unmount can.
	t.Cleanup(func() { close(release) })
	tests := []struct {
		name, stall string
		op          func() error
	}{
		// First: nothing is looked up or listed yet.
		{"listing at lookup", "list", func() error { _, err := os.Stat(w.path("data/dir/sub/nested.txt")); return err }},
		{"listing at readdir", "list", func() error { _, err := os.ReadDir(w.path("data")); return err }},
		{"stat at open", "stat", func() error { _, err := os.ReadFile(w.path("data/hello.txt")); return err }},
		{"header read at open", "read", func() error { _, err := os.ReadFile(w.path("data/big.bin")); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stall.Store(tc.stall)
			defer stall.Store("")
			done := make(chan error, 1)
			go func() { done <- tc.op() }()
			select {
			case err := <-done:
				if errnoOf(err) != syscall.EIO {
					t.Fatalf("%v, want EIO", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no answer in 10s: the operation hangs on stalled storage (hang guard)")
			}
		})
	}
}
