//go:build !unix

package cache

import "github.com/skrfs/skrfs/keyrelease"

// secmem is empty where memory cannot be locked: keys stay on the Go heap.
type secmem struct {
	mem    []byte
	locked bool
}

func (c *Cache) protect(*keyrelease.Key) secmem { return secmem{} }

func (c *Cache) free(k *keyrelease.Key, _ secmem) {
	oct := k.Oct
	k.Wipe()
	if c.onWipe != nil {
		c.onWipe(oct)
	}
}

func (c *Cache) allocLocked(n int) ([]byte, func()) { return make([]byte, n), func() {} }
