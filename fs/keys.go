package fs

import (
	"context"
	"sync/atomic"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// keyFile is one view of a key under keys/. Its size is 0 until the key has
// been released once (stat must not attest); an open handle reports the
// real size.
type keyFile struct {
	fusefs.Inode
	root *Root
	key  KeySpec
	view ViewSpec
	size atomic.Int64
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
		f.root.log().Warn().Err(err).Str("key", f.key.Name).Str("ref", f.key.Ref.String()).Msg("key release failed")
		f.root.audit(ctx, auditKeyOpen, path, f.key.Ref, err)
		return nil, 0, f.root.fail("open", err)
	}
	ref := k.Ref
	if ref.Vault == "" {
		ref = f.key.Ref
	}
	f.root.noteKeyType(ref, k.Type)
	data, err := k.Marshal(f.view.Format)
	k.Wipe()
	f.root.audit(ctx, auditKeyOpen, path, ref, err)
	if err != nil {
		f.root.log().Warn().Err(err).Str("key", f.key.Name).Str("view", f.view.File).Msg("cannot render key view")
		return nil, 0, f.root.fail("open", err)
	}
	f.size.Store(int64(len(data)))
	return &keyHandle{data: data}, fuse.FOPEN_DIRECT_IO, 0
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
