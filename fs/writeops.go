package fs

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/crypto"
)

// writeHandle is an open file of an object with staged content: every
// open for writing, and opens for reading while content is staged.
type writeHandle struct {
	node     *objectNode
	d        *dirtyFile
	writable bool

	closing bool // flushed (closed) and not written since; guarded by d.mu
}

var (
	_ = (fusefs.FileReader)((*writeHandle)(nil))
	_ = (fusefs.FileWriter)((*writeHandle)(nil))
	_ = (fusefs.FileFlusher)((*writeHandle)(nil))
	_ = (fusefs.FileFsyncer)((*writeHandle)(nil))
	_ = (fusefs.FileReleaser)((*writeHandle)(nil))
	_ = (fusefs.FileGetattrer)((*writeHandle)(nil))
)

// maxPlain bounds a written file: the largest plaintext a version 2
// object of default chunks holds.
const maxPlain = crypto.MaxObjectSize / 2

// openDirty returns a read handle on the staged content, if there is any.
func (n *objectNode) openDirty(flags uint32) (fusefs.FileHandle, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	d := n.dirty
	if !d.live() {
		return nil, false
	}
	d.handles++
	return &writeHandle{node: n, d: d}, true
}

// attach returns the node's staged state, making one with mk when there
// is none, and counts a handle on it.
func (n *objectNode) attach(mk func() (*dirtyFile, error)) (*dirtyFile, error) {
	n.mu.Lock()
	if d := n.dirty; d.live() {
		d.handles++
		n.mu.Unlock()
		return d, nil
	}
	n.mu.Unlock()
	d, err := mk()
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if cur := n.dirty; cur.live() { // lost a race
		d.mu.Lock()
		d.wipe()
		d.mu.Unlock()
		cur.handles++
		return cur, nil
	}
	d.handles = 1
	n.dirty = d
	return d, nil
}

// openWrite opens the object for writing; every handle of the inode shares
// one staged state. The old content is read lazily (staging.go), so the
// open itself needs no key: a write-only mount gets EACCES only from a
// read, write or commit that needs old plaintext.
func (n *objectNode) openWrite(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if err := n.root.writeRefused(n.ds); err != nil {
		return nil, 0, n.root.fail("open", err)
	}
	trunc := flags&syscall.O_TRUNC != 0
	d, err := n.attach(func() (*dirtyFile, error) {
		ctx, cancel := withOpTimeout(ctx, n.root.opts.OpTimeout)
		defer cancel()
		_, objName := n.names()
		info, err := n.ds.Store.Stat(ctx, objName)
		if errors.Is(err, blob.ErrNotFound) {
			// Gone from storage meanwhile: this open makes it anew.
			d := newDirtyFile(n.root, n, "")
			d.dirty = true
			return d, nil
		}
		if err != nil {
			return nil, err
		}
		d := newDirtyFile(n.root, n, info.ETag)
		if trunc {
			d.dirty = true
			return d, nil
		}
		// The old content is read lazily, chunk by chunk, when a write
		// or read needs it: an open followed by a truncation to 0 (how
		// the kernel sends O_TRUNC) never needs the key. Its size here
		// comes from the listing's metadata or the cleartext preamble,
		// and is checked against the authenticated size when the old
		// version is opened.
		size, err := plainSize(ctx, n.ds.Store, info, nil)
		if err != nil {
			return nil, err
		}
		d.setSize(size)
		d.baseValid, d.baseSize = size, size
		return d, nil
	})
	if err != nil {
		return nil, 0, n.root.fail("open", err)
	}
	h := &writeHandle{node: n, d: d, writable: flags&syscall.O_ACCMODE != syscall.O_RDONLY}
	d.mu.Lock()
	if h.writable {
		d.writers++
	}
	d.mu.Unlock()
	if trunc {
		d.mu.Lock()
		err := d.truncateChecked(ctx, 0)
		d.mu.Unlock()
		if err != nil {
			h.Release(ctx)
			return nil, 0, n.root.fail("open", err)
		}
	}
	n.NotifyContent(-1, 0)
	return h, 0, 0
}

// keyErrno: an operation that needs the old plaintext of an object whose
// key this mount cannot get (a write-only mount) gets EACCES.
func keyErrno(e syscall.Errno) error {
	if e == syscall.ENOKEY || e == syscall.EPERM {
		return syscall.EACCES
	}
	return e
}

func (d *dirtyFile) usable() error {
	if d.failed != nil {
		return d.failed
	}
	return nil
}

func (d *dirtyFile) truncateChecked(ctx context.Context, size int64) error {
	if err := d.usable(); err != nil {
		return err
	}
	if size < 0 || size > maxPlain {
		return syscall.EFBIG
	}
	return d.truncate(ctx, size)
}

func (h *writeHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	if err := h.d.usable(); err != nil {
		return nil, h.node.root.fail("read", err)
	}
	n, err := h.d.readAt(ctx, dest, off)
	if err != nil {
		clear(dest)
		return nil, h.node.root.fail("read", err)
	}
	return &readResult{vecs: [][]byte{dest[:n]}, wipe: dest[:n], n: n, copying: true}, 0
}

func (h *writeHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if !h.writable {
		return 0, syscall.EBADF
	}
	d := h.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.usable(); err != nil {
		return 0, h.node.root.fail("write", err)
	}
	if off < 0 || off+int64(len(data)) > maxPlain {
		return 0, syscall.EFBIG
	}
	if h.closing {
		h.closing = false
		d.writers++
	}
	n, err := d.writeAt(ctx, data, off)
	clear(data) // plaintext in go-fuse's request buffer, which it reuses
	if err != nil && n == 0 {
		return 0, h.node.root.fail("write", err)
	}
	return uint32(n), 0 // short: the application retries the rest and gets the error
}

// Flush (each close) commits when no other handle of the file is still
// open for writing: the last writer's close returns the commit's result.
func (h *writeHandle) Flush(ctx context.Context) syscall.Errno {
	d := h.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if !h.writable {
		return 0
	}
	if !h.closing {
		h.closing = true
		d.writers--
	}
	if d.writers > 0 {
		return 0
	}
	err := d.commit(ctx)
	if err != nil && d.failed == nil {
		// The close reports the failure: the changes are dropped, not
		// committed later behind the application's back (at release).
		d.fail(fmt.Errorf("%w: the commit at close failed: %w", syscall.EIO, err))
	}
	return h.node.root.fail("close", err)
}

func (h *writeHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	d := h.d
	d.mu.Lock()
	defer d.mu.Unlock()
	return h.node.root.fail("fsync", d.commit(ctx))
}

// Release drops the handle; the last one commits what is still staged
// (a close whose flush did not, e.g. after a failed flush) and wipes it.
func (h *writeHandle) Release(ctx context.Context) syscall.Errno {
	n, d := h.node, h.d
	n.mu.Lock()
	d.handles--
	last := d.handles == 0
	if last && n.dirty == d {
		n.dirty = nil
	}
	n.mu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	if h.writable && !h.closing {
		d.writers--
	}
	if !last {
		return 0
	}
	if err := d.commit(ctx); err != nil && d.failed == nil {
		n.root.log().Error().Err(err).Str("object", n.logName()).Msg("changes lost: the commit at the last close failed")
	}
	d.wipe()
	return 0
}

func (h *writeHandle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return h.node.Getattr(ctx, h, out)
}

// Setattr: a size change truncates (through the handle, or by opening the
// file for writing); mode, owner and times are accepted and ignored.
func (n *objectNode) Setattr(ctx context.Context, fh fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if size, ok := in.GetSize(); ok {
		if err := n.root.writeRefused(n.ds); err != nil {
			return n.root.fail("setattr", err)
		}
		h, _ := fh.(*writeHandle)
		temp := h == nil || !h.writable
		if temp {
			flags := uint32(syscall.O_WRONLY)
			if size == 0 {
				flags |= syscall.O_TRUNC
			}
			fh, _, errno := n.openWrite(ctx, flags)
			if errno != 0 {
				return errno
			}
			h = fh.(*writeHandle)
			defer h.Release(ctx)
		}
		h.d.mu.Lock()
		err := h.d.truncateChecked(ctx, int64(size))
		h.d.mu.Unlock()
		if err != nil {
			return n.root.fail("truncate", err)
		}
		if temp {
			if errno := h.Flush(ctx); errno != 0 {
				return errno
			}
		}
	} else if n.root.writeRefused(n.ds) != nil {
		return syscall.EROFS
	}
	n.fillAttr(&out.Attr)
	return 0
}
