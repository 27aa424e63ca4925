package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/keyrelease"
)

// batchHarness seals a version 2 object for the fake releaser's first key
// (octOf(1)), releases it through the cache and opens the object with the
// key's batch-key store, so the store holds one batch key.
type batchHarness struct {
	*harness
	obj    []byte
	stores []*batchKeys
	wiped  [][]byte
}

func newBatchHarness(t *testing.T, inner *fakeInner, opts Options) *batchHarness {
	t.Helper()
	bh := &batchHarness{harness: newHarness(t, inner, opts)}
	bh.c.onBatchKeys = func(b *batchKeys) {
		b.onWipe = func(mem []byte) { bh.wiped = append(bh.wiped, bytes.Clone(mem)) }
		bh.stores = append(bh.stores, b)
	}
	b, err := crypto.NewBatch(octOf(1), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	bh.obj, err = crypto.SealV2([]byte("batch secret"), b, crypto.SealOptions{Name: "f"})
	if err != nil {
		t.Fatal(err)
	}
	return bh
}

// open releases refA and opens the object with the released key's store.
func (bh *batchHarness) open(t *testing.T) *keyrelease.Key {
	t.Helper()
	k, err := bh.c.Release(context.Background(), refA)
	if err != nil {
		t.Fatal(err)
	}
	if k.Batch == nil {
		t.Fatal("released key has no batch-key store")
	}
	h, err := crypto.ParseHeader(bh.obj)
	if err != nil {
		t.Fatal(err)
	}
	off, n, _ := h.TableRange(int64(len(bh.obj)))
	if _, err := crypto.NewDecryptorOpts(h, k.KEK(), "f", int64(len(bh.obj)),
		crypto.OpenOptions{Table: bh.obj[off : off+n], Cache: k.Batch}); err != nil {
		t.Fatal(err)
	}
	return k
}

// checkStoreWiped checks that the i-th store holds no key, answers no
// lookup and that its memory was zero when wiped.
func (bh *batchHarness) checkStoreWiped(t *testing.T, i int) {
	t.Helper()
	s := bh.stores[i]
	if s.len() != 0 || !s.wiped {
		t.Fatalf("store %d still holds %d batch keys", i, s.len())
	}
	if len(bh.wiped) <= i || len(bh.wiped[i]) != batchSlots*32 || !bytes.Equal(bh.wiped[i], make([]byte, batchSlots*32)) {
		t.Fatalf("store %d memory not zero at its wipe", i)
	}
	id := [32]byte{}
	h, _ := crypto.ParseHeader(bh.obj)
	id = crypto.BatchKeyID(h)
	if s.UseBatchKey(id, func([]byte) {}) {
		t.Fatal("a wiped store answered a lookup")
	}
	s.StoreBatchKey(id, make([]byte, 32))
	if s.len() != 0 {
		t.Fatal("a wiped store took a key")
	}
}

// Batch keys are wiped together with their KEK: at TTL expiry, on a denied
// re-release, at Close (unmount), on Forget; and a clone's Wipe does not
// wipe the shared store.
func TestBatchKeysWipedWithKEK(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(t *testing.T, bh *batchHarness, inner *fakeInner)
	}{
		{"TTL expiry", func(t *testing.T, bh *batchHarness, inner *fakeInner) {
			bh.clock.Advance(time.Hour)
			bh.timers.FireAll()
		}},
		{"denied re-release", func(t *testing.T, bh *batchHarness, inner *fakeInner) {
			denial := fmt.Errorf("%w: policy changed", keyrelease.ErrDenied)
			inner.setScript(denial)
			bh.clock.Advance(50 * time.Minute)
			bh.mustRelease(refA, 1) // starts the refresh
			if f := bh.awaitFlight(); !errors.Is(f.err, denial) {
				t.Fatalf("refresh: %v", f.err)
			}
		}},
		{"unmount (Close)", func(t *testing.T, bh *batchHarness, inner *fakeInner) { bh.c.Close() }},
		{"Forget", func(t *testing.T, bh *batchHarness, inner *fakeInner) { bh.c.Forget(refA) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner := &fakeInner{}
			bh := newBatchHarness(t, inner, Options{TTL: time.Hour})
			k := bh.open(t)
			bh.awaitFlight()
			if len(bh.stores) != 1 || bh.stores[0].len() != 1 {
				t.Fatalf("stores %d", len(bh.stores))
			}
			k.Wipe() // the caller's clone: the shared store stays
			if k.Batch != nil || bh.stores[0].len() != 1 || bh.stores[0].wiped {
				t.Fatal("wiping a clone wiped the shared batch keys")
			}
			// A second open is served from the store.
			k2 := bh.open(t)
			if bh.stores[0].uses != 1 {
				t.Fatalf("second open: %d store lookups answered, want 1", bh.stores[0].uses)
			}
			k2.Wipe()
			tc.end(t, bh, inner)
			bh.checkStoreWiped(t, 0)
			if len(bh.Wiped()) != 1 {
				t.Fatalf("%d KEK wipes, want 1 with the batch keys", len(bh.Wiped()))
			}
		})
	}
}

// A public key gets no batch-key store: it cannot open objects, so it must
// not read batch keys unwrapped by a private key.
func TestBatchKeysOnlyForPrivateKeys(t *testing.T) {
	c := &cached{key: &keyrelease.Key{Type: keyrelease.KeyTypeRSA, Public: "pub"}, batch: newBatchKeys(func(n int) ([]byte, func()) { return make([]byte, n), func() {} })}
	if c.clone(false).Batch != nil || c.clone(true).Batch != nil {
		t.Fatal("a public key got the batch-key store")
	}
}

// The store is bounded: the oldest batch key makes room.
func TestBatchKeysBounded(t *testing.T) {
	b := newBatchKeys(func(n int) ([]byte, func()) { return make([]byte, n), func() {} })
	for i := range batchSlots + 5 {
		b.StoreBatchKey([32]byte{byte(i), byte(i >> 8)}, bytes.Repeat([]byte{byte(i)}, 32))
	}
	if b.len() != batchSlots {
		t.Fatalf("%d keys held", b.len())
	}
	if b.UseBatchKey([32]byte{0}, func([]byte) {}) {
		t.Fatal("oldest key not evicted")
	}
	var got []byte
	if !b.UseBatchKey([32]byte{byte(batchSlots + 4)}, func(bk []byte) { got = bytes.Clone(bk) }) || got[0] != byte(batchSlots+4) {
		t.Fatal("newest key lost")
	}
}
