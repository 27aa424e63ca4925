package fs

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/skrfs/skrfs/keyrelease"
)

// keyFile is one view of a key under keys/. Its size is 0 until the key has
// been released once (stat must not attest); from the first open on, stat
// reports the size of the rendering.
type keyFile struct {
	fusefs.Inode
	root  *Root
	dir   *fusefs.Inode // keys/
	key   KeySpec
	view  ViewSpec
	state *keyState // shared by the views of one key
	size  atomic.Int64
}

// keyState is what the views of one key learn from its releases.
type keyState struct {
	// pubGone: a release showed an oct key, which has no public part, so
	// its pub.pem views were removed from keys/ (once, logged once).
	pubGone atomic.Bool
}

var (
	_ = (fusefs.NodeGetattrer)((*keyFile)(nil))
	_ = (fusefs.NodeOpener)((*keyFile)(nil))
)

func (f *keyFile) attr(a *fuse.Attr, size int64) {
	a.Mode = syscall.S_IFREG | f.view.Mode
	a.Size = uint64(size)
	a.Uid, a.Gid = f.root.opts.UID, f.root.opts.GID
	a.Nlink = 1
	a.SetTimes(&f.root.started, &f.root.started, &f.root.started)
}

// Getattr never releases anything. After an open the size is the real one,
// so fstat on an open file is right.
func (f *keyFile) Getattr(ctx context.Context, fh fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.attr(&out.Attr, f.size.Load())
	out.SetTimeout(0)
	return 0
}

// Open releases the key (through the Releaser, normally a cache that shares
// one release among concurrent openers) and renders the view into a
// per-open buffer, served with direct I/O so the kernel caches nothing.
func (f *keyFile) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, 0, syscall.EROFS
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.root.opts.OpTimeout)
	defer cancel()
	k, err := f.root.opts.Releaser.Release(rctx, f.key.Ref)
	path := "keys/" + f.view.File
	if err != nil {
		// The releaser (the key cache) has logged the failure and its
		// class once; this only ties it to the file.
		f.root.log().Debug().Err(err).Str("key", f.key.Name).Str("file", path).Msg("key file open refused")
		f.root.audit(ctx, auditKeyOpen, path, f.key.Ref, err)
		return nil, 0, f.root.fail("open", err)
	}
	ref := k.Ref
	if ref.Vault == "" {
		ref = f.key.Ref
	}
	f.root.noteKeyType(ref, k.Type)
	if k.Type == keyrelease.KeyTypeOct {
		f.dropPublicViews()
	}
	data, err := k.Marshal(f.view.Format)
	k.Wipe()
	if errors.Is(err, keyrelease.ErrNoPublicKey) {
		// The file is gone now; dropPublicViews said why, once.
		err = fmt.Errorf("%w: %w", syscall.ENOENT, err)
	} else if err != nil {
		f.root.log().Warn().Err(err).Str("key", f.key.Name).Str("view", f.view.File).Msg("cannot render key view")
	}
	f.root.audit(ctx, auditKeyOpen, path, ref, err)
	if err != nil {
		return nil, 0, f.root.fail("open", err)
	}
	if n := int64(len(data)); f.size.Swap(n) != n {
		// The kernel cached the attributes of the lookup (size 0 before
		// the first release): drop them, so that a stat right after this
		// open shows the size of what is read (FUSE_NOTIFY_INVAL_INODE,
		// attributes only; the page cache is unused with direct I/O).
		f.NotifyContent(-1, 0)
	}
	return &keyHandle{data: data}, fuse.FOPEN_DIRECT_IO, 0
}

// dropPublicViews removes the pub.pem views of an oct key from keys/ once
// a release has shown that the key is symmetric: the configuration lists
// them before anything is released (listing never attests), but they can
// never be read. Later lookups get ENOENT and listings omit them.
func (f *keyFile) dropPublicViews() {
	if f.dir == nil || f.state == nil || !f.state.pubGone.CompareAndSwap(false, true) {
		return
	}
	var gone []string
	for _, v := range f.key.Views {
		if v.Format != keyrelease.FormatPubPEM {
			continue
		}
		f.dir.RmChild(v.File)
		// Drop the kernel's cached entry too. The kernel locks keys/ for
		// this, which no open of one of its files holds.
		f.dir.NotifyEntry(v.File)
		gone = append(gone, "keys/"+v.File)
	}
	if len(gone) > 0 {
		f.root.log().Info().Str("key", f.key.Name).Strs("removed", gone).
			Msg("oct key: it has no public part, so its pub.pem views are removed (list views without pub.pem in keys[] to hide them from the start)")
	}
}

// keyHandle holds one rendering of a key; Release wipes it.
type keyHandle struct {
	data []byte
}

var (
	_ = (fusefs.FileReader)((*keyHandle)(nil))
	_ = (fusefs.FileReleaser)((*keyHandle)(nil))
)

// Read replies from the rendering itself, never from a copy in go-fuse's
// reusable buffers, which nothing would wipe. The kernel sends no release
// while a read of the handle is in flight, so the bytes outlive the reply.
func (h *keyHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= int64(len(h.data)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData(h.data[off:min(int64(len(h.data)), off+int64(len(dest)))]), 0
}

func (h *keyHandle) Release(ctx context.Context) syscall.Errno {
	clear(h.data)
	h.data = nil
	return 0
}
