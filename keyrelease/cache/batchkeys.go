package cache

import (
	"sync"
)

// batchSlots is how many unwrapped batch keys one cached key holds (one
// page of 32-byte keys). A dataset's upload runs each add one; beyond this
// the oldest is overwritten and costs one private-key operation again.
const batchSlots = 128

// batchKeys holds the unwrapped batch keys of version 2 objects opened
// with one cached key (docs/format.md 11.3), in locked memory of their own
// beside the key. It is wiped when its key is wiped: at TTL expiry, on a
// denied re-release, on eviction, Forget and Close. After the wipe it
// answers nothing and stores nothing, so a reader that still holds it
// unwraps again with the key it holds (and a reader without a key has
// none to use).
type batchKeys struct {
	mu     sync.Mutex
	mem    []byte // batchSlots × 32 bytes, locked where permitted
	free   func() // unlocks and unmaps mem
	ids    map[[32]byte]int
	slotID [batchSlots][32]byte
	used   [batchSlots]bool
	next   int
	wiped  bool
	onWipe func(mem []byte) // test hook: the zeroed memory
	uses   int              // lookups answered (for tests)
}

func newBatchKeys(alloc func(n int) ([]byte, func())) *batchKeys {
	mem, free := alloc(batchSlots * 32)
	return &batchKeys{mem: mem, free: free, ids: map[[32]byte]int{}}
}

// UseBatchKey implements crypto.BatchKeyCache.
func (b *batchKeys) UseBatchKey(id [32]byte, use func(bk []byte)) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	i, ok := b.ids[id]
	if !ok || b.wiped {
		return false
	}
	b.uses++
	use(b.mem[i*32 : (i+1)*32 : (i+1)*32])
	return true
}

// StoreBatchKey implements crypto.BatchKeyCache.
func (b *batchKeys) StoreBatchKey(id [32]byte, bk []byte) {
	if len(bk) != 32 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.wiped {
		return
	}
	if i, ok := b.ids[id]; ok {
		copy(b.mem[i*32:], bk)
		return
	}
	i := b.next
	b.next = (b.next + 1) % batchSlots
	if b.used[i] {
		delete(b.ids, b.slotID[i])
	}
	b.used[i], b.slotID[i] = true, id
	b.ids[id] = i
	copy(b.mem[i*32:], bk)
}

// len returns the number of batch keys held.
func (b *batchKeys) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.ids)
}

// wipe zeroes every batch key and releases the memory.
func (b *batchKeys) wipe() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.wiped {
		return
	}
	b.wiped = true
	clear(b.mem)
	if b.onWipe != nil {
		b.onWipe(b.mem)
	}
	clear(b.ids)
	b.used = [batchSlots]bool{}
	if b.free != nil {
		b.free()
	}
	b.mem = nil
}
