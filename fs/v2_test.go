package fs

import (
	"bytes"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/cache"
)

// putV2 seals pt as a version 2 object of batch b.
func (w *world) putV2(name string, pt []byte, b *crypto.Batch, sealedFor string, chunk int) []byte {
	w.t.Helper()
	obj, err := crypto.SealV2(pt, b, crypto.SealOptions{Name: sealedFor, ChunkSize: chunk})
	if err != nil {
		w.t.Fatal(err)
	}
	if err := w.store.Put(name, obj); err != nil {
		w.t.Fatal(err)
	}
	w.plain[name] = pt
	return obj
}

// TestV2OnePrivateKeyOpPerBatch is the regression guard of issue 20, by
// counters: opening 1,000 small version 2 objects of one batch sealed for
// an RSA key costs exactly one RSA private-key operation and one storage
// request per open (the nonce table comes in the header's read); a large
// object adds one read for its table.
func TestV2OnePrivateKeyOpPerBatch(t *testing.T) {
	const n = 1000
	var stats, readAts, heads, ranges atomic.Int64
	var rel *cache.Cache
	w := newWorld(t, func(w *world) {
		b, err := crypto.NewBatch(&w.rk.PublicKey, refRSA.String(), nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			name := fmt.Sprintf("v2/f%04d", i)
			w.putV2(name, pseudo(uint64(100+i), 4096), b, name, 0)
		}
		w.putV2("v2/big.bin", pseudo(9, 3<<20+5), b, "v2/big.bin", 0)
		w.tune = func(o *Options) {
			rel = cache.New(o.Releaser, cache.Options{})
			o.Releaser = rel
			o.Datasets[0].Store = callStore{w.store, &stats, &readAts, &heads, &ranges}
			// Room for every object's chunk: the kernel sends RELEASE in
			// the background, so under load many closed objects are still
			// open here, and a small cache would evict a chunk between an
			// open and its read (a ReadAt this test would count).
			o.CacheBytes = 16 << 20
		}
	})
	defer rel.Close()
	// The objects name the key without a version and the released key names
	// its version, as with Key Vault: the opens must all use the cache entry
	// of the ref as the header names it (a second, versioned entry never saw
	// the batch key: one private-key copy per open).
	version := "0123456789abcdef0123456789abcdef"
	w.rel.version.Store(&version)
	// Both directories listed (a re-lookup of v2 after its entry timeout
	// then needs no stat).
	for _, dir := range []string{"data", "data/v2"} {
		if _, err := os.ReadDir(w.path(dir)); err != nil {
			t.Fatal(err)
		}
	}
	ops := crypto.PrivateKeyOps()
	clones := keyrelease.PrivateKeyClones()
	h0, r0, s0 := heads.Load(), readAts.Load(), stats.Load()
	for i := range n {
		name := fmt.Sprintf("v2/f%04d", i)
		got, err := os.ReadFile(w.path("data/" + name))
		if err != nil || !bytes.Equal(got, w.plain[name]) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if d := crypto.PrivateKeyOps() - ops; d != 1 {
		t.Fatalf("%d private-key operations for %d objects of one batch, want 1", d, n)
	}
	if c := w.rel.calls.Load(); c != 1 {
		t.Fatalf("%d key releases for %d opens, want 1", c, n)
	}
	// Two copies of the private key in all: the release itself (the
	// static releaser hands out a clone) and the open that unwraps the
	// batch key; the other 999 opens use the cached batch key alone
	// (before the light release: one clone per open).
	if c := keyrelease.PrivateKeyClones() - clones; c != 2 {
		t.Fatalf("%d private-key clones for %d opens of one batch, want 2", c, n)
	}
	if h, r, s := heads.Load()-h0, readAts.Load()-r0, stats.Load()-s0; h != n || r != 0 || s != 0 {
		t.Fatalf("%d opens: ReadHead %d, ReadAt %d, Stat %d; want %d, 0, 0", n, h, r, s, n)
	}
	// A large object: the table is one more read, the batch key is cached.
	ops = crypto.PrivateKeyOps()
	r0 = readAts.Load()
	got, err := os.ReadFile(w.path("data/v2/big.bin"))
	if err != nil || !bytes.Equal(got, w.plain["v2/big.bin"]) {
		t.Fatalf("big: %v", err)
	}
	if d := crypto.PrivateKeyOps() - ops; d != 0 {
		t.Fatalf("big object of a cached batch: %d private-key operations", d)
	}
	if r := readAts.Load() - r0; r != 1 {
		t.Fatalf("big object: %d ReadAt (the nonce table), want 1", r)
	}
}

// Tampered, swapped and truncated version 2 objects give EIO, a foreign
// batch for the same name included; the good ones read.
func TestV2TamperGivesEIO(t *testing.T) {
	w := newWorld(t, func(w *world) {
		b, _ := crypto.NewBatch(w.oct.Oct, refOct.String(), nil)
		w.putV2("v2/good", pseudo(1, 9000), b, "v2/good", 4096)
		obj := w.putV2("v2/table", pseudo(2, 9000), b, "v2/table", 4096)
		obj = bytes.Clone(obj)
		obj[len(obj)-1] ^= 1
		w.store.Put("v2/table", obj)
		w.putV2("v2/swapped", pseudo(3, 100), b, "v2/other", 4096)
		obj = w.putV2("v2/chunk", pseudo(4, 9000), b, "v2/chunk", 4096)
		obj = bytes.Clone(obj)
		h, _ := crypto.ParseHeader(obj)
		obj[h.Len()+5] ^= 1
		w.store.Put("v2/chunk", obj)
	})
	if got, err := os.ReadFile(w.path("data/v2/good")); err != nil || !bytes.Equal(got, w.plain["v2/good"]) {
		t.Fatalf("good: %v", err)
	}
	for _, name := range []string{"v2/table", "v2/swapped", "v2/chunk"} {
		_, err := os.ReadFile(w.path("data/" + name))
		if errnoOf(err) != syscall.EIO {
			t.Errorf("%s: %v, want EIO", name, err)
		}
	}
}
