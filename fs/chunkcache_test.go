package fs

import (
	"bytes"
	"testing"
)

// TestChunkCacheZeroes: plaintext leaving the cache, by eviction, by an
// object being dropped, by replacement, by recycling or by Wipe at unmount,
// is zeroed in place (the buffers are kept for reuse, so a missed clear
// would leave plaintext in locked memory until overwritten).
func TestChunkCacheZeroes(t *testing.T) {
	const size = 1024
	fill := func(c *chunkCache, b byte) []byte {
		d := c.newChunk(size)[:size]
		for i := range d {
			d[i] = b
		}
		return d
	}
	tests := []struct {
		name string
		// act fills the cache and returns the buffers that must now be
		// zero and those that must still hold their bytes.
		act func(c *chunkCache) (gone, kept [][]byte)
	}{
		{"eviction by size", func(c *chunkCache) (gone, kept [][]byte) {
			a, b, d := fill(c, 1), fill(c, 2), fill(c, 3)
			c.put(chunkKey{1, 0}, a)
			c.put(chunkKey{1, 1}, b)
			c.put(chunkKey{1, 2}, d) // max 2 chunks: a, the oldest, goes
			return [][]byte{a}, [][]byte{b, d}
		}},
		{"object dropped, walking the cache", func(c *chunkCache) (gone, kept [][]byte) {
			a, b := fill(c, 4), fill(c, 5)
			c.put(chunkKey{1, 0}, a)
			c.put(chunkKey{2, 0}, b)
			c.dropObject(1, 100)
			return [][]byte{a}, [][]byte{b}
		}},
		{"object dropped, chunk by chunk", func(c *chunkCache) (gone, kept [][]byte) {
			a, b := fill(c, 4), fill(c, 5)
			c.put(chunkKey{1, 0}, a)
			c.put(chunkKey{2, 0}, b)
			c.dropObject(1, 1)
			return [][]byte{a}, [][]byte{b}
		}},
		{"replaced", func(c *chunkCache) (gone, kept [][]byte) {
			a, b := fill(c, 6), fill(c, 7)
			c.put(chunkKey{1, 0}, a)
			c.put(chunkKey{1, 0}, b)
			return [][]byte{a}, [][]byte{b}
		}},
		{"recycled without entering", func(c *chunkCache) (gone, kept [][]byte) {
			a := fill(c, 8)
			c.recycle(a[:10]) // the whole capacity, not only the length
			return [][]byte{a}, nil
		}},
		{"pinned while evicted: kept until unpinned", func(c *chunkCache) (gone, kept [][]byte) {
			a, b, d := fill(c, 11), fill(c, 12), fill(c, 13)
			c.put(chunkKey{1, 0}, a)
			r := &readResult{cache: c}
			if !r.add(chunkKey{1, 0}, make([]byte, size), 0) {
				t.Fatal("pin failed")
			}
			c.put(chunkKey{1, 1}, b)
			c.put(chunkKey{1, 2}, d) // evicts a while a reply holds it
			c.put(chunkKey{1, 1}, fill(c, 14))
			if c.has(chunkKey{1, 0}) || a[0] != 11 || b[0] != 0 {
				t.Fatalf("evicted pinned chunk: cached %v, first byte %d (want 11); replaced unpinned chunk first byte %d (want 0)",
					c.has(chunkKey{1, 0}), a[0], b[0])
			}
			if vecs, _ := r.Slices(); len(vecs) != 1 || !bytes.Equal(vecs[0], a) {
				t.Fatal("the reply does not hold the pinned chunk")
			}
			r.Done()
			r.Done() // harmless
			return [][]byte{a, b}, [][]byte{d}
		}},
		{"replaced while pinned", func(c *chunkCache) (gone, kept [][]byte) {
			a, b := fill(c, 15), fill(c, 16)
			c.put(chunkKey{1, 0}, a)
			ce, _ := c.pin(chunkKey{1, 0})
			c.put(chunkKey{1, 0}, b)
			if a[0] != 15 {
				t.Fatal("a pinned chunk was zeroed while a reply held it")
			}
			c.unpin(ce)
			return [][]byte{a}, [][]byte{b}
		}},
		{"copied reply zeroed when sent", func(c *chunkCache) (gone, kept [][]byte) {
			a := fill(c, 17)
			c.put(chunkKey{1, 0}, a)
			dst := make([]byte, size)
			r := &readResult{cache: c, copying: true}
			if !r.add(chunkKey{1, 0}, dst, 0) || r.Size() != size || dst[0] != 17 {
				t.Fatal("copy failed")
			}
			r.Done()
			return [][]byte{dst}, [][]byte{a}
		}},
		{"wiped at unmount", func(c *chunkCache) (gone, kept [][]byte) {
			a, b := fill(c, 9), fill(c, 10)
			c.put(chunkKey{1, 0}, a)
			c.put(chunkKey{2, 5}, b)
			c.clear()
			if c.bytes() != 0 || c.has(chunkKey{1, 0}) {
				t.Error("clear left chunks behind")
			}
			return [][]byte{a, b}, nil
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newChunkCache(2 * size)
			gone, kept := tc.act(c)
			zero := make([]byte, size)
			for i, g := range gone {
				if !bytes.Equal(g[:size], zero) {
					t.Errorf("buffer %d left the cache with plaintext in it", i)
				}
			}
			for i, k := range kept {
				if bytes.Equal(k, zero) {
					t.Errorf("buffer %d still cached but zeroed", i)
				}
			}
			// A reused buffer starts empty and zeroed.
			if n := c.newChunk(size); len(n) != 0 || !bytes.Equal(n[:size], zero) {
				t.Error("newChunk returned a buffer with old bytes")
			}
		})
	}
}
