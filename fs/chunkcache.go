package fs

import (
	"container/list"
	"sync"
)

// chunkCache is a byte-bounded LRU of decrypted chunks shared by all open
// objects. Evicted and cleared chunks are zeroed: plaintext lives only here
// and in the kernel's page cache.
type chunkCache struct {
	mu    sync.Mutex
	max   int64
	size  int64
	lru   *list.List // front = most recent; values are *chunkEntry
	items map[chunkKey]*list.Element
	free  [][]byte // zeroed chunk buffers for reuse (bounded)
}

// newChunk returns an empty buffer with capacity for one chunk, reusing an
// evicted one when possible: steady-state reading allocates nothing, which
// keeps the heap (locked in memory by mlockall) small.
func (c *chunkCache) newChunk(capacity int) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.free) > 0 {
		b := c.free[len(c.free)-1]
		c.free = c.free[:len(c.free)-1]
		if cap(b) >= capacity {
			return b[:0]
		}
	}
	return make([]byte, 0, capacity)
}

// recycle zeroes a buffer that never entered the cache and keeps it.
func (c *chunkCache) recycle(b []byte) {
	clear(b[:cap(b)])
	c.mu.Lock()
	defer c.mu.Unlock()
	c.keepLocked(b)
}

// keepLocked keeps a zeroed buffer for reuse, up to a quarter of the
// cache's bound: with 64 concurrent streams, each with chunks in flight
// before the puts that evict, a sixteenth (64 buffers of 64 KiB) ran dry,
// and the fresh 64 KiB allocations (zeroed by the runtime, then cleared
// again at eviction) were 14% of the daemon's CPU.
func (c *chunkCache) keepLocked(b []byte) {
	if int64(len(c.free)+1)*int64(cap(b)) <= c.max/4 {
		c.free = append(c.free, b[:0])
	}
}

type chunkKey struct {
	obj   uint64 // objectState.id
	index int64
}

type chunkEntry struct {
	key  chunkKey
	data []byte
	// pins counts the replies being written to the kernel straight from
	// data (readResult); an entry removed while pinned is dead: it is
	// zeroed and recycled when the last pin goes.
	pins int
	dead bool
}

func newChunkCache(max int64) *chunkCache {
	return &chunkCache{max: max, lru: list.New(), items: map[chunkKey]*list.Element{}}
}

// get copies chunk k's plaintext from offset off into dst and reports
// whether it was cached. Copying under the lock means an eviction can never
// zero bytes while they are being read.
func (c *chunkCache) get(k chunkKey, dst []byte, off int) (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if !ok {
		return 0, false
	}
	c.lru.MoveToFront(e)
	return copy(dst, e.Value.(*chunkEntry).data[off:]), true
}

// pin returns chunk k's entry, if cached, with its data held: neither
// eviction nor replacement zeroes or reuses it until unpin.
func (c *chunkCache) pin(k chunkKey) (*chunkEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if !ok {
		return nil, false
	}
	c.lru.MoveToFront(e)
	ce := e.Value.(*chunkEntry)
	ce.pins++
	return ce, true
}

// unpin releases pins (one lock for a whole reply); the last pin of a
// removed entry zeroes its data.
func (c *chunkCache) unpin(entries ...*chunkEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ce := range entries {
		ce.pins--
		if ce.pins == 0 && ce.dead {
			clear(ce.data)
			c.keepLocked(ce.data)
			ce.data = nil
		}
	}
}

func (c *chunkCache) has(k chunkKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.items[k]
	return ok
}

// put inserts a chunk; the cache takes ownership of data.
func (c *chunkCache) put(k chunkKey, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[k]; ok {
		c.removeLocked(e) // a pinned old copy stays until its reply is sent
	}
	c.items[k] = c.lru.PushFront(&chunkEntry{key: k, data: data})
	c.size += int64(len(data))
	for c.size > c.max && c.lru.Len() > 1 {
		c.removeLocked(c.lru.Back())
	}
}

func (c *chunkCache) removeLocked(e *list.Element) {
	ce := e.Value.(*chunkEntry)
	c.size -= int64(len(ce.data))
	delete(c.items, ce.key)
	c.lru.Remove(e)
	if ce.pins > 0 {
		ce.dead = true
		return
	}
	clear(ce.data)
	c.keepLocked(ce.data)
	ce.data = nil
}

// dropObject removes every chunk of one object, which has the given
// number of chunks: looked up one by one when that is fewer than the cached
// entries (closing a small file must not walk the whole cache), else by a
// walk of the cache.
func (c *chunkCache) dropObject(obj uint64, chunks int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if chunks < int64(c.lru.Len()) {
		for i := int64(0); i < chunks; i++ {
			if e, ok := c.items[chunkKey{obj, i}]; ok {
				c.removeLocked(e)
			}
		}
		return
	}
	for e := c.lru.Front(); e != nil; {
		next := e.Next()
		if e.Value.(*chunkEntry).key.obj == obj {
			c.removeLocked(e)
		}
		e = next
	}
}

// clear zeroes and drops everything, pinned chunks included (at unmount
// no reply is being written any more).
func (c *chunkCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := c.lru.Front(); e != nil; e = e.Next() {
		clear(e.Value.(*chunkEntry).data)
	}
	c.lru.Init()
	c.items = map[chunkKey]*list.Element{}
	c.size = 0
	c.free = nil
}

// bytes returns the cached plaintext size.
func (c *chunkCache) bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}
