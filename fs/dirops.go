package fs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/keyrelease"
)

// Directory operations of writable datasets (docs/writes.md). The store's
// namespace is flat: a directory exists while an object's name has its
// prefix; one made by mkdir lives in this mount's memory until then.

var (
	_ = (fusefs.NodeCreater)((*dirNode)(nil))
	_ = (fusefs.NodeMkdirer)((*dirNode)(nil))
	_ = (fusefs.NodeRmdirer)((*dirNode)(nil))
	_ = (fusefs.NodeUnlinker)((*dirNode)(nil))
	_ = (fusefs.NodeRenamer)((*dirNode)(nil))
	_ = (fusefs.NodeSetattrer)((*dirNode)(nil))
	_ = (fusefs.NodeLinker)((*dirNode)(nil))
	_ = (fusefs.NodeSymlinker)((*dirNode)(nil))
	_ = (fusefs.NodeMknoder)((*dirNode)(nil))
	_ = (fusefs.NodeStatfser)((*dirNode)(nil))
	_ = (fusefs.NodeFsyncer)((*dirNode)(nil))
	_ = (fusefs.NodeStatfser)((*Root)(nil))
	_ = (fusefs.NodeStatfser)((*objectNode)(nil))
	_ = (fusefs.NodeSetattrer)((*objectNode)(nil))
)

// attr fills a directory's attributes: writable datasets add the owner's
// write bit.
func (d *dirNode) attr(a *fuse.Attr) {
	d.root.dirAttr(a)
	if d.root.writable(d.ds) {
		a.Mode |= 0o200
	}
}

// setEntry records an object this mount committed in the cached listing.
func (d *dirNode) setEntry(name string, e *dirEntry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.entries == nil || d.view != nil {
		return
	}
	if _, ok := d.entries[name]; !ok {
		d.order = append(d.order, name)
	}
	d.entries[name] = *e
}

// delEntry drops name from the cached listing.
func (d *dirNode) delEntry(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.mkdirs, name)
	if d.entries == nil || d.view != nil {
		return
	}
	if _, ok := d.entries[name]; !ok {
		return
	}
	delete(d.entries, name)
	for i, n := range d.order {
		if n == name {
			d.order = append(d.order[:i:i], d.order[i+1:]...)
			break
		}
	}
}

// localChild returns a child that exists only in this mount: a file not
// committed yet, or a directory made by mkdir and still empty in storage.
func (d *dirNode) localChild(name string) *fusefs.Inode {
	ch := d.GetChild(name)
	if ch == nil {
		return nil
	}
	switch op := ch.Operations().(type) {
	case *objectNode:
		op.mu.Lock()
		defer op.mu.Unlock()
		if op.dirty.live() {
			return ch
		}
	case *dirNode:
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.mkdirs[name] {
			return ch
		}
	}
	return nil
}

// hasLocal reports whether anything under d exists only in this mount.
func (d *dirNode) hasLocal() bool {
	for name := range d.Children() {
		if ch := d.localChild(name); ch != nil {
			return true
		}
		if sub, ok := d.GetChild(name).Operations().(*dirNode); ok && sub.hasLocal() {
			return true
		}
	}
	return false
}

func (d *dirNode) newFileNode(ctx context.Context, name string) (*fusefs.Inode, *objectNode) {
	path := d.prefix + name
	n := &objectNode{root: d.root, ds: d.ds, name: path, objName: path + d.ds.Suffix}
	ch := d.NewInode(ctx, n, fusefs.StableAttr{Mode: syscall.S_IFREG, Ino: inode(d.ds.Name, path)})
	return ch, ch.Operations().(*objectNode)
}

// checkNewName refuses names that storage or the object header cannot
// carry: ENAMETOOLONG past the header's bound, EINVAL for the rest
// (control and bidirectional-override characters, invalid UTF-8, names
// that are not store names).
func checkNewName(path, suffix string) syscall.Errno {
	if len(path) > crypto.MaxNameLen {
		return syscall.ENAMETOOLONG
	}
	if blob.CheckName(path+suffix) != nil || crypto.CheckName(path) != nil {
		return syscall.EINVAL
	}
	return 0
}

// cachedDir reports whether d's fresh listing, if it has one, shows name
// as a directory (no storage request).
func (d *dirNode) cachedDir(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.entries != nil && d.view == nil && time.Since(d.listed) < d.root.opts.ListTTL && d.entries[name].isDir
}

// Create makes a new file, or opens an existing one without O_EXCL. The
// object appears in storage at the first commit (fsync or last close).
func (d *dirNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, fusefs.FileHandle, uint32, syscall.Errno) {
	if err := d.root.writeRefused(d.ds); err != nil {
		return nil, nil, 0, d.root.fail("create", err)
	}
	path := d.prefix + name
	if errno := checkNewName(path, d.ds.Suffix); errno != 0 {
		return nil, nil, 0, errno
	}
	if ch := d.localChild(name); ch != nil {
		if _, isDir := ch.Operations().(*dirNode); isDir {
			return nil, nil, 0, syscall.EISDIR
		}
		if flags&syscall.O_EXCL != 0 {
			return nil, nil, 0, syscall.EEXIST
		}
		n := ch.Operations().(*objectNode)
		fh, fl, errno := n.openWrite(ctx, flags)
		if errno != 0 {
			return nil, nil, 0, errno
		}
		n.fillAttr(&out.Attr)
		return ch, fh, fl, 0
	}
	octx, cancel := withOpTimeout(ctx, d.root.opts.OpTimeout)
	defer cancel()
	if d.cachedDir(name) {
		return nil, nil, 0, syscall.EISDIR
	}
	info, err := d.ds.Store.Stat(octx, path+d.ds.Suffix)
	switch {
	case err == nil:
		if flags&syscall.O_EXCL != 0 {
			return nil, nil, 0, syscall.EEXIST
		}
		ch := d.GetChild(name)
		n, ok := (*objectNode)(nil), false
		if ch != nil {
			n, ok = ch.Operations().(*objectNode)
		}
		if !ok {
			ch, n = d.newFileNode(ctx, name)
		}
		n.setInfo(octx, info, nil)
		fh, fl, errno := n.openWrite(ctx, flags)
		if errno != 0 {
			return nil, nil, 0, errno
		}
		n.fillAttr(&out.Attr)
		return ch, fh, fl, 0
	case !errors.Is(err, blob.ErrNotFound):
		return nil, nil, 0, d.root.fail("create", err)
	}
	ch, n := d.newFileNode(ctx, name)
	df := newDirtyFile(d.root, n, "")
	df.dirty, df.handles, df.writers = true, 1, 1
	n.mu.Lock()
	n.dirty, n.info, n.plainSize, n.sizeErr = df, blob.Info{}, 0, nil
	n.mu.Unlock()
	n.fillAttr(&out.Attr)
	return ch, &writeHandle{node: n, d: df, writable: true}, 0, 0
}

// Mkdir makes a directory in this mount's memory; it reaches storage
// with its first object (and is gone at remount if it has none).
func (d *dirNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if err := d.root.writeRefused(d.ds); err != nil {
		return nil, d.root.fail("mkdir", err)
	}
	path := d.prefix + name
	if errno := checkNewName(path+"/x", ""); errno != 0 {
		return nil, errno
	}
	if d.localChild(name) != nil {
		return nil, syscall.EEXIST
	}
	octx, cancel := withOpTimeout(ctx, d.root.opts.OpTimeout)
	defer cancel()
	// An object or a directory of that name (without listing all of d).
	_, err := d.ds.Store.Stat(octx, path+d.ds.Suffix)
	if err == nil {
		return nil, syscall.EEXIST
	}
	if errors.Is(err, blob.ErrNotFound) {
		err = d.ds.Store.List(octx, blob.ListOptions{Prefix: path + "/", Delimiter: "/"}, func(blob.Info) error { return errFound })
		if errors.Is(err, errFound) {
			return nil, syscall.EEXIST
		}
	}
	if err != nil {
		return nil, d.root.fail("mkdir", err)
	}
	d.mu.Lock()
	if d.mkdirs == nil {
		d.mkdirs = map[string]bool{}
	}
	d.mkdirs[name] = true
	d.mu.Unlock()
	child := &dirNode{root: d.root, ds: d.ds, prefix: path + "/"}
	child.attr(&out.Attr)
	return d.NewInode(ctx, child, fusefs.StableAttr{Mode: syscall.S_IFDIR, Ino: inode(d.ds.Name, path+"/")}), 0
}

// errStop ends a listing early.
var errStop = errors.New("stop")

// Rmdir removes an empty directory: nothing in storage under its prefix
// and nothing staged in this mount.
func (d *dirNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	if err := d.root.writeRefused(d.ds); err != nil {
		return d.root.fail("rmdir", err)
	}
	octx, cancel := withOpTimeout(ctx, d.root.opts.OpTimeout)
	defer cancel()
	ch := d.GetChild(name)
	if ch != nil {
		if _, ok := ch.Operations().(*dirNode); !ok {
			return syscall.ENOTDIR
		}
	}
	entries, _, err := d.list(octx)
	if err != nil {
		return d.root.fail("rmdir", err)
	}
	e, listed := entries[name]
	if listed && !e.isDir {
		return syscall.ENOTDIR
	}
	d.mu.Lock()
	made := d.mkdirs[name]
	d.mu.Unlock()
	if !listed && !made && ch == nil {
		return syscall.ENOENT
	}
	if ch != nil && ch.Operations().(*dirNode).hasLocal() {
		return syscall.ENOTEMPTY
	}
	err = d.ds.Store.List(octx, blob.ListOptions{Prefix: d.prefix + name + "/"}, func(blob.Info) error { return errStop })
	if errors.Is(err, errStop) {
		return syscall.ENOTEMPTY
	}
	if err != nil {
		return d.root.fail("rmdir", err)
	}
	d.delEntry(name)
	return 0
}

// Unlink removes an object: conditionally on the version it has now, so a
// commit racing the unlink is not removed unseen. A file not committed yet
// is dropped; its open handles keep their staged content until closed.
func (d *dirNode) Unlink(ctx context.Context, name string) syscall.Errno {
	if err := d.root.writeRefused(d.ds); err != nil {
		return d.root.fail("unlink", err)
	}
	path := d.prefix + name
	var df *dirtyFile
	if ch := d.GetChild(name); ch != nil {
		n, ok := ch.Operations().(*objectNode)
		if !ok {
			return syscall.EISDIR
		}
		n.mu.Lock()
		df = n.dirty
		n.mu.Unlock()
	}
	if df != nil {
		df.mu.Lock()
		defer df.mu.Unlock()
		df.deleted.Store(true)
	}
	octx, cancel := withOpTimeout(ctx, d.root.opts.OpTimeout)
	defer cancel()
	st := d.ds.raw.(blob.Writer)
	info, err := d.ds.Store.Stat(octx, path+d.ds.Suffix)
	if err == nil {
		err = st.Remove(octx, path+d.ds.Suffix, blob.Condition{IfMatch: info.ETag})
	}
	if errors.Is(err, blob.ErrNotFound) && (df != nil || d.ds.listed(path)) {
		err = nil // never committed, or listed but gone: unlisted below
	}
	d.root.audit(ctx, auditObjectUnlink, d.ds.Name+"/"+path, keyrelease.KeyRef{}, err)
	if err != nil {
		if df != nil {
			df.deleted.Store(false)
		}
		if errors.Is(err, blob.ErrConditionNotMet) {
			d.root.log().Warn().Str("dataset", d.ds.Name).Str("object", path).Msg("unlink lost to a concurrent writer")
		}
		return d.root.fail("unlink", err)
	}
	d.delEntry(name)
	if err := d.root.publishRemove(d.ds, path); err != nil {
		return d.root.fail("unlink", err)
	}
	return 0
}

// Rename within a dataset re-seals the object under its new name (the
// name is in the header): it needs the key, so a write-only mount answers
// EXDEV and mv copies instead. Directories are not renamed (EXDEV).
func (d *dirNode) Rename(ctx context.Context, name string, newParent fusefs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if flags&fusefs.RENAME_EXCHANGE != 0 {
		return syscall.EINVAL
	}
	nd, ok := newParent.(*dirNode)
	if !ok || nd.ds != d.ds {
		return syscall.EXDEV
	}
	if err := d.root.writeRefused(d.ds); err != nil {
		return d.root.fail("rename", err)
	}
	ch := d.GetChild(name)
	if ch == nil {
		return syscall.ENOENT
	}
	n, ok := ch.Operations().(*objectNode)
	if !ok {
		return syscall.EXDEV
	}
	to := nd.prefix + newName
	if errno := checkNewName(to, d.ds.Suffix); errno != 0 {
		return errno
	}
	if from, _ := n.names(); from == to {
		return 0
	}

	if tch := nd.GetChild(newName); tch != nil {
		if _, isDir := tch.Operations().(*dirNode); isDir {
			return syscall.EISDIR
		}
	}
	from, _ := n.names()
	err := n.renameTo(ctx, d, nd, name, newName, flags)
	if !errors.Is(err, syscall.EXDEV) && !errors.Is(err, syscall.EEXIST) {
		d.root.audit(ctx, auditObjectRename, d.ds.Name+"/"+from+" -> "+d.ds.Name+"/"+to, keyrelease.KeyRef{}, err)
	}
	return d.root.fail("rename", err)
}

func (n *objectNode) renameTo(ctx context.Context, from, to *dirNode, name, newName string, flags uint32) error {
	ctx, cancel := withOpTimeout(ctx, n.root.opts.OpTimeout)
	defer cancel()
	n.mu.Lock()
	df := n.dirty
	n.mu.Unlock()
	if df != nil {
		df.mu.Lock()
		defer df.mu.Unlock()
		if err := df.commit(ctx); err != nil {
			return err
		}
	}
	v, o, _, errno := n.openPinned(ctx)
	if errno != 0 {
		if keyErrno(errno) == syscall.EACCES {
			return syscall.EXDEV // a write-only mount: mv copies
		}
		return errno
	}
	defer n.root.releaseObject(v, o)
	toPath := to.prefix + newName
	toObj := toPath + n.ds.Suffix
	var tdf *dirtyFile
	if tch := to.GetChild(newName); tch != nil {
		if tn, ok := tch.Operations().(*objectNode); ok {
			tn.mu.Lock()
			if tn.dirty.live() {
				tdf = tn.dirty
			}
			tn.mu.Unlock()
		}
	}
	cond := blob.Condition{IfNoneMatch: true}
	tinfo, err := n.ds.Store.Stat(ctx, toObj)
	switch {
	case err == nil:
		if flags&unix.RENAME_NOREPLACE != 0 {
			return syscall.EEXIST
		}
		cond = blob.Condition{IfMatch: tinfo.ETag}
	case !errors.Is(err, blob.ErrNotFound):
		return err
	case tdf != nil && flags&unix.RENAME_NOREPLACE != 0:
		return syscall.EEXIST
	}
	size := o.d.PlainSize()
	var info blob.Info
	var digest [32]byte
	if o.d.Header().Version == crypto.VersionV2 {
		// A new header only (docs/format.md 11.4): the body is copied as
		// it is, without decrypting it.
		info, digest, err = n.renameHeader(ctx, o, toPath, toObj, cond)
	} else {
		// Version 1 binds the name into every chunk: decrypt and re-seal
		// (as version 2).
		info, digest, err = n.root.seal(ctx, n.ds, toPath, toObj, size, func(dst []byte, off int64) error {
			return readPlain(ctx, o, dst, off)
		}, cond)
	}
	if err != nil {
		return err
	}
	oldName, oldObj := n.names()
	if err := n.ds.raw.(blob.Writer).Remove(ctx, oldObj, blob.Condition{IfMatch: v.etag}); err != nil && !errors.Is(err, blob.ErrNotFound) {
		n.root.log().Warn().Err(err).Str("dataset", n.ds.Name).Str("from", name).Str("to", toPath).
			Msg("rename: the new object is committed but the old one could not be removed")
		return err
	}
	if tdf != nil && tdf != df {
		tdf.mu.Lock()
		tdf.deleted.Store(true)
		tdf.mu.Unlock()
	}
	n.mu.Lock()
	n.name, n.objName = toPath, toObj
	n.info, n.plainSize, n.sizeErr = info, size, nil
	n.listedDigest = digest
	n.mu.Unlock()
	if df != nil {
		df.etag = info.ETag
		df.releaseBase() // reopened from the new name when needed
	}
	from.delEntry(name)
	e := objectEntry(info)
	to.setEntry(newName, &e)
	return n.root.publishCommit(n.ds, toPath, info, digest, size, oldName)
}

// renameHeader commits version 2 object o under a new name: a new header
// (same object ID, keys, seal count and table digest; the new name and
// MAC) before the old body, streamed from storage pinned to o's version.
// The new MAC needs the data key: the batch key cached by o's open, or the
// released key.
func (n *objectNode) renameHeader(ctx context.Context, o *objectState, toPath, toObj string, cond blob.Condition) (blob.Info, [32]byte, error) {
	h := o.d.Header()
	ref, err := n.allowedRef(h.KeyRef)
	if err != nil {
		return blob.Info{}, [32]byte{}, err
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.root.opts.OpTimeout)
	defer cancel()
	var hdr []byte
	if br, ok := n.root.opts.Releaser.(batchKeyReleaser); ok {
		if k, err := br.ReleaseBatchKeys(rctx, ref); err == nil {
			if k.Batch != nil {
				hdr, err = crypto.RenameHeaderV2(h, nil, k.Batch, toPath)
			}
			k.Wipe()
			if err != nil && !errors.Is(err, crypto.ErrBatchKeyNotCached) {
				return blob.Info{}, [32]byte{}, err
			}
		}
	}
	if hdr == nil {
		k, err := n.root.opts.Releaser.Release(rctx, ref)
		if err != nil {
			return blob.Info{}, [32]byte{}, err
		}
		if !k.IsPrivate() {
			k.Wipe()
			return blob.Info{}, [32]byte{}, syscall.EXDEV
		}
		hdr, err = crypto.RenameHeaderV2(h, k.KEK(), k.Batch, toPath)
		k.Wipe()
		if err != nil {
			return blob.Info{}, [32]byte{}, err
		}
	}
	body, err := blob.OpenRange(ctx, n.ds.Store, o.ref, int64(h.Len()), crypto.CipherSizeV2(o.d.PlainSize(), h.Len(), h.ChunkSize)-int64(h.Len()))
	if err != nil {
		return blob.Info{}, [32]byte{}, err
	}
	defer body.Close()
	md := map[string]string{
		metaHeaderLen: strconv.Itoa(len(hdr)),
		metaChunkSize: strconv.Itoa(h.ChunkSize),
		metaVersion:   "2",
		metaKeyRef:    h.KeyRef,
	}
	info, err := n.ds.raw.(blob.Writer).Commit(ctx, toObj, io.MultiReader(bytes.NewReader(hdr), body), md, cond)
	if err != nil {
		return blob.Info{}, [32]byte{}, err
	}
	if info.Metadata == nil {
		info.Metadata = md
	}
	n.root.counters.commits.Add(1)
	return info, crypto.HeaderDigest(hdr), nil
}

// Setattr on a directory: mode, owner and times are accepted and ignored.
func (d *dirNode) Setattr(ctx context.Context, fh fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if err := d.root.writeRefused(d.ds); err != nil {
		return syscall.EROFS
	}
	d.attr(&out.Attr)
	return 0
}

// Fsync of a directory: entries reach storage with their objects' commits.
func (d *dirNode) Fsync(ctx context.Context, f fusefs.FileHandle, flags uint32) syscall.Errno {
	return 0
}

func (d *dirNode) Link(ctx context.Context, target fusefs.InodeEmbedder, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, d.refuse()
}

func (d *dirNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, d.refuse()
}

func (d *dirNode) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, d.refuse()
}

// refuse: links and special files have no place in an object store (EPERM
// on writable datasets, EROFS on the others).
func (d *dirNode) refuse() syscall.Errno {
	if err := d.root.writeRefused(d.ds); err != nil {
		return syscall.EROFS
	}
	return syscall.EPERM
}

// statfs reports plenty of room: storage has no meaningful bound.
func statfs(out *fuse.StatfsOut) {
	const bsize = 4096
	out.Bsize, out.Frsize = bsize, bsize
	out.Blocks = 1 << 40 / bsize * 1024 // 1 PiB
	out.Bfree, out.Bavail = out.Blocks, out.Blocks
	out.Files, out.Ffree = 1<<40, 1<<40
	out.NameLen = 255
}

func (d *dirNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	statfs(out)
	return 0
}

func (r *Root) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	statfs(out)
	return 0
}

func (n *objectNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	statfs(out)
	return 0
}
