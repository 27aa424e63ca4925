//go:build unix

package cache

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"

	"github.com/skrfs/skrfs/keyrelease"
)

// secmem is the memory that holds the oct bytes of a cached key: pages of
// their own, mapped anonymously, so that locking and unlocking them never
// touches other data. (mlock does not stack: munlock of a heap page would
// also unlock every other object on it, including pages that
// internal/harden's mlockall has locked.)
type secmem struct {
	mem    []byte // the whole mapping; nil when the bytes stayed on the Go heap
	locked bool
}

// protect moves k's oct bytes into a locked private mapping where the
// system permits, and clears the bytes it moved them from. RSA and EC
// private keys live in big.Int values that cannot be moved; the daemon's
// mlockall covers them.
func (c *Cache) protect(k *keyrelease.Key) secmem {
	n := len(k.Oct)
	if n == 0 {
		return secmem{}
	}
	page := os.Getpagesize()
	mem, err := unix.Mmap(-1, 0, (n+page-1)/page*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		c.log.Debug().Err(err).Str("key", k.Ref.String()).Msg("no private mapping for key bytes; they stay on the Go heap, unlocked")
		return secmem{}
	}
	s := secmem{mem: mem}
	// Lock before copying, so the key never sits in swappable memory.
	switch err := unix.Mlock(mem); {
	case err == nil:
		s.locked = true
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.ENOMEM):
		c.log.Debug().Err(err).Msg("mlock of key bytes not permitted; key memory may be swapped")
	default:
		c.log.Warn().Err(err).Msg("mlock of key bytes failed; key memory may be swapped")
	}
	copy(mem, k.Oct)
	clear(k.Oct)
	k.Oct = mem[:n:n]
	return s
}

// free wipes k, then unlocks and unmaps its memory. The bytes are zeroed
// while still locked, so no copy can reach swap after the unlock.
func (c *Cache) free(k *keyrelease.Key, s secmem) {
	oct := k.Oct
	k.Wipe()
	if s.mem == nil {
		if c.onWipe != nil {
			c.onWipe(oct)
		}
		return
	}
	clear(s.mem)
	if c.onWipe != nil {
		c.onWipe(s.mem)
	}
	if s.locked {
		if err := unix.Munlock(s.mem); err != nil {
			c.log.Debug().Err(err).Msg("munlock of wiped key memory")
		}
	}
	if err := unix.Munmap(s.mem); err != nil {
		c.log.Warn().Err(err).Msg("munmap of wiped key memory")
	}
}

// allocLocked returns n bytes of private anonymous memory, locked where
// permitted (else on the Go heap), and the function that unlocks and
// unmaps it; the caller zeroes the bytes before calling it.
func (c *Cache) allocLocked(n int) ([]byte, func()) {
	page := os.Getpagesize()
	mem, err := unix.Mmap(-1, 0, (n+page-1)/page*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		return make([]byte, n), func() {}
	}
	locked := unix.Mlock(mem) == nil
	return mem[:n:n], func() {
		if locked {
			_ = unix.Munlock(mem)
		}
		if err := unix.Munmap(mem); err != nil {
			c.log.Warn().Err(err).Msg("munmap of wiped batch-key memory")
		}
	}
}
