package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/keyrelease"
)

// objectNode is one object of a dataset shown as a plaintext file.
type objectNode struct {
	fusefs.Inode
	root *Root
	ds   *DatasetSpec

	mu sync.Mutex
	// name is the logical name (the path in the dataset, sealed into the
	// header) and objName the name in the store (name + suffix). A rename
	// changes them: read them with names().
	name, objName string
	info          blob.Info // the version last seen by a listing, stat or open
	plainSize     int64
	sizeErr       error
	openedTag     string // ETag of the last open, for FOPEN_KEEP_CACHE

	listedDigest [32]byte // header digest of the manifest entry last applied

	dirty *dirtyFile // staged content while open for writing or not yet committed
}

var (
	_ = (fusefs.NodeGetattrer)((*objectNode)(nil))
	_ = (fusefs.NodeOpener)((*objectNode)(nil))
)

// setInfo records a version and computes its plaintext size without any
// key: from the upload metadata when present (no storage read), else from
// the cleartext preamble. A computation that failed (storage unavailable,
// say) is tried again at the next call, even for the same version; when
// ctx is done it records nothing. head, when not nil, holds the version's
// first bytes.
func (n *objectNode) setInfo(ctx context.Context, info blob.Info, head []byte) error {
	n.mu.Lock()
	same := n.info.ETag == info.ETag && n.info.ETag != "" && n.sizeErr == nil
	n.mu.Unlock()
	if same {
		return nil
	}
	size, err := plainSize(ctx, n.ds.Store, info, head)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// The caller was interrupted (go-fuse cancels the context; the Go
		// runtime's preemption signals interrupt FUSE requests too): say
		// so, and leave the node for the next caller to compute. Recording
		// the version would pin a size of 0 to it for good.
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.info.ETag == info.ETag && n.sizeErr == nil {
		return nil // an open established this version's size meanwhile: keep it
	}
	info.Metadata = nil // used for the size alone
	n.info, n.plainSize, n.sizeErr = info, size, err
	if err != nil {
		n.root.log().Warn().Err(err).Str("dataset", n.ds.Name).Str("object", n.name).Msg("not a valid skrfs object; shown with size 0")
	}
	return nil
}

// setSize records a version whose size the listing computed from its
// upload metadata (unauthenticated, as setInfo's; an open proves it).
func (n *objectNode) setSize(info blob.Info, size int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.info.ETag == info.ETag && info.ETag != "" && n.sizeErr == nil {
		return // keep what an open of this version proved
	}
	n.info, n.plainSize, n.sizeErr = info, size, nil
}

// setListed records the size a manifest lists for the object. An open
// proves it (the header digest pins the sealing, the final chunk the size).
func (n *objectNode) setListed(e *crypto.ManifestEntry) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.listedDigest == e.HeaderSHA256 && n.sizeErr == nil {
		return
	}
	n.listedDigest = e.HeaderSHA256
	n.info = blob.Info{Name: n.objName}
	n.plainSize, n.sizeErr = e.Size, nil
}

// stale reports whether the last size computation found the object changed
// since the listing that described it.
func (n *objectNode) stale() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return errors.Is(n.sizeErr, blob.ErrChanged) || errors.Is(n.sizeErr, blob.ErrNotFound)
}

// metadataSize computes an object's plaintext size from its upload
// metadata alone. The metadata is unauthenticated storage input: values
// that do not parse, or lie outside the format's ranges, give ok false
// (crypto.PlainSize range-checks them before any arithmetic), and the
// caller falls back to the cleartext preamble.
func metadataSize(info blob.Info) (size int64, ok bool) {
	h, hok := blob.MetadataValue(info.Metadata, "skrfs_header_len")
	c, cok := blob.MetadataValue(info.Metadata, "skrfs_chunk_size")
	if !hok || !cok || len(h) > 10 || len(c) > 10 {
		return 0, false
	}
	hl, err1 := strconv.Atoi(h)
	cs, err2 := strconv.Atoi(c)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	// Every skrfs upload writes the version. Without it the size rule is
	// unknown: a version 2 object sized by the version 1 rule would look
	// longer than it is (its nonce table counted as plaintext), and a
	// reader racing the open's size correction could see zeros past the
	// real end. Read the preamble instead.
	var version int
	switch v, _ := blob.MetadataValue(info.Metadata, "skrfs_version"); v {
	case "1":
		version = crypto.Version
	case "2":
		version = crypto.VersionV2
	default:
		return 0, false
	}
	size, err := crypto.PlainSizeOf(version, info.Size, hl, cs)
	return size, err == nil
}

func plainSize(ctx context.Context, st blob.Store, info blob.Info, head []byte) (int64, error) {
	if size, ok := metadataSize(info); ok {
		return size, nil
	}
	var pre [crypto.PreambleSize]byte
	if len(head) >= len(pre) || int64(len(head)) == info.Size {
		copy(pre[:], head) // an object shorter than a preamble fails to parse below
	} else if k, err := st.ReadAt(ctx, info.Ref(), pre[:], 0); err != nil && !(err == io.EOF && k > 0) {
		if err == io.EOF {
			err = crypto.ErrBadMagic
		}
		return 0, err
	}
	p, err := crypto.ParsePreamble(pre[:])
	if err != nil {
		return 0, err
	}
	return crypto.PlainSizeOf(p.Version, info.Size, p.HeaderLen, p.ChunkSize)
}

func (n *objectNode) fillAttr(a *fuse.Attr) {
	n.mu.Lock()
	defer n.mu.Unlock()
	a.Mode = syscall.S_IFREG | n.root.opts.FileMode
	a.Size = uint64(n.plainSize)
	if n.root.writable(n.ds) {
		a.Mode |= 0o200
	}
	if n.dirty.live() {
		a.Size = uint64(n.dirty.sizeA.Load())
	}
	a.Blocks = (a.Size + 511) / 512
	a.Uid, a.Gid = n.root.opts.UID, n.root.opts.GID
	a.Nlink = 1
	if !n.info.ModTime.IsZero() {
		a.SetTimes(nil, &n.info.ModTime, &n.info.ModTime)
	}
}

// Getattr reports the newest version seen (by a listing, stat or open).
// The kernel keeps one size per inode, and go-fuse passes the first open
// handle when the kernel sends none, so reporting a handle's own, possibly
// older, version would cut reads of a replaced, grown object short.
func (n *objectNode) Getattr(ctx context.Context, fh fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fillAttr(&out.Attr)
	return 0
}

// Open pins the current version, checks that its header names a key this
// dataset may use, releases that key (shared with concurrent openers by the
// Releaser), verifies the header and the final chunk, and returns a handle.
func (n *objectNode) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return n.openWrite(ctx, flags)
	}
	if n.ds.Write != nil { // read-only datasets stage nothing
		if fh, ok := n.openDirty(flags); ok {
			return fh, 0, 0 // read-your-writes: the staged state, not storage
		}
	}
	v, o, fl, errno := n.openPinned(ctx)
	if errno != 0 {
		return nil, 0, errno
	}
	return &objectHandle{node: n, v: v, o: o, ahead: -1}, fl, 0
}

// names returns the node's logical and store names.
func (n *objectNode) names() (name, objName string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.name, n.objName
}

// openPinned opens the current version of the object for reading: the
// shared state of that version, pinned by its ETag.
func (n *objectNode) openPinned(ctx context.Context) (objectVersion, *objectState, uint32, syscall.Errno) {
	name, objName := n.names()
	// The storage steps of an open are bounded like chunk loads: storage
	// that never answers gives EIO, not an open that waits as long as the
	// storage client keeps retrying.
	ctx, cancel := withOpTimeout(ctx, n.root.opts.OpTimeout)
	defer cancel()
	var view *manifestView
	if man := n.ds.man; man != nil {
		v, fallback, err := man.current(ctx)
		if err != nil {
			n.root.log().Warn().Err(err).Str("dataset", n.ds.Name).Str("object", name).Msg("open refused")
			return objectVersion{}, nil, 0, n.root.fail("open", err)
		}
		if !fallback {
			if _, ok := v.m.Lookup(name); !ok {
				return objectVersion{}, nil, 0, n.root.fail("open", errUnlisted)
			}
			view = v
		}
	}
	// One storage request finds the current version and reads the first
	// bytes of it, which hold the header (and all of a small object).
	buf := n.root.heads.get(headBytes)
	defer n.root.heads.put(buf) // ciphertext; the header keeps copies of what it parses
	info, k, err := blob.ReadHead(ctx, n.ds.Store, objName, buf)
	if err != nil {
		if view != nil && errors.Is(err, blob.ErrNotFound) {
			err = fmt.Errorf("%w: %s/%s (manifest epoch %d): %w", ErrManifestMissing, n.ds.Name, name, view.m.Epoch, err)
			n.root.log().Warn().Str("dataset", n.ds.Name).Str("object", name).Uint64("epoch", view.m.Epoch).Msg("open refused: listed in the manifest but missing from storage")
			n.root.audit(ctx, auditObjectOpen, n.ds.Name+"/"+name, keyrelease.KeyRef{}, err)
			return objectVersion{}, nil, 0, n.root.fail("open", err)
		}
		return objectVersion{}, nil, 0, n.root.fail("open", err)
	}
	head := buf[:k]
	n.mu.Lock()
	oldSize := n.plainSize
	n.mu.Unlock()
	if err := n.setInfo(ctx, info, head); err != nil {
		return objectVersion{}, nil, 0, n.root.fail("open", err)
	}
	v := objectVersion{dataset: n.ds.Name, name: name, etag: info.ETag}
	o, err := n.root.acquire(v, func(id uint64) (*objectState, error) { return n.openVersion(ctx, name, id, info, head, view) })
	if err == nil && view != nil {
		// The version may have been opened under another manifest: check
		// it against the current one on every open.
		if err = n.ds.man.checkOpened(view, name, o.d); err != nil {
			n.root.audit(ctx, auditObjectOpen, n.ds.Name+"/"+name, keyrelease.KeyRef{}, err)
			n.root.releaseObject(v, o)
		}
	}
	if err != nil {
		n.root.log().Warn().Err(err).Str("dataset", n.ds.Name).Str("object", name).Msg("open refused")
		return objectVersion{}, nil, 0, n.root.fail("open", err)
	}
	n.mu.Lock()
	notify := o.d.PlainSize() != oldSize
	if n.info.ETag == info.ETag {
		// The size reported so far came from unauthenticated metadata or
		// preamble, or from a failed storage read (size 0); from now on it
		// is the size that the header and the final chunk prove.
		notify = notify || n.plainSize != o.d.PlainSize() || n.sizeErr != nil
		n.plainSize, n.sizeErr = o.d.PlainSize(), nil
	}
	var fl uint32
	if n.openedTag == info.ETag {
		fl = fuse.FOPEN_KEEP_CACHE // same version as before: the page cache is valid
	}
	n.openedTag = info.ETag
	n.mu.Unlock()
	if notify {
		// The kernel may still hold the old size and would cut reads of a
		// grown object short at it: have it drop its cached attributes
		// before the open returns. With a negative offset the kernel only
		// invalidates attributes under a spinlock (no page or inode locks),
		// so this is safe inside the open of the same inode.
		n.NotifyContent(-1, 0)
	}
	return v, o, fl, 0
}

// openVersion does the key-dependent part of an open, once per version;
// it writes the audit event of the object's first open.
func (n *objectNode) openVersion(ctx context.Context, name string, id uint64, info blob.Info, head []byte, view *manifestView) (_ *objectState, err error) {
	var ref keyrelease.KeyRef
	defer func() { n.root.audit(ctx, auditObjectOpen, n.ds.Name+"/"+name, ref, err) }()
	h, head, err := parseHeader(ctx, n.ds.Store, info, head)
	if err != nil {
		return nil, err
	}
	if view != nil {
		// Before any key release: a forged or rolled-back object costs
		// no release.
		if err := n.ds.man.check(view, name, h); err != nil {
			return nil, err
		}
	}
	ref, err = n.allowedRef(h.KeyRef)
	if err != nil {
		if r, perr := keyrelease.ParseKeyRef(h.KeyRef); perr == nil {
			ref = r // the refused key, for the audit event
		}
		return nil, err
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.root.opts.OpTimeout)
	defer cancel()
	var d *crypto.Decryptor
	var k *keyrelease.Key
	if br, ok := n.root.opts.Releaser.(batchKeyReleaser); ok && h.Version == crypto.VersionV2 {
		// A version 2 object whose batch key is cached needs the key's
		// release (its policy, TTL and fail-closed rules) but not a copy
		// of its private part.
		if k, err = br.ReleaseBatchKeys(rctx, ref); err != nil {
			return nil, err
		}
		if k.Batch == nil {
			k.Wipe() // a releaser without the light path may have handed out a full copy
			err = crypto.ErrBatchKeyNotCached
		} else {
			// openWith sets the released version on the ref it is given;
			// a miss below must release the ref as the header names it, or
			// a header without a version would be released (and its batch
			// keys cached) under a second, versioned cache entry that the
			// light release never consults: one private-key copy per open.
			lref := ref
			if d, err = n.openWith(ctx, name, &lref, k, h, info, head); err == nil {
				ref = lref
			}
		}
		if err == nil || !errors.Is(err, crypto.ErrBatchKeyNotCached) {
			if err != nil {
				return nil, err
			}
			return n.finishOpen(ctx, name, id, info, h, head, d)
		}
	}
	k, err = n.root.opts.Releaser.Release(rctx, ref)
	if err != nil {
		return nil, err
	}
	if d, err = n.openWith(ctx, name, &ref, k, h, info, head); err != nil {
		return nil, err
	}
	return n.finishOpen(ctx, name, id, info, h, head, d)
}

// batchKeyReleaser is implemented by the key cache: a release whose key
// carries only the batch-key store (keyrelease/cache.ReleaseBatchKeys).
type batchKeyReleaser interface {
	ReleaseBatchKeys(ctx context.Context, ref keyrelease.KeyRef) (*keyrelease.Key, error)
}

// openWith checks the released key k against the dataset's versions and
// opens the object with it; it wipes k. It sets ref's version to the
// released key's.
func (n *objectNode) openWith(ctx context.Context, name string, ref *keyrelease.KeyRef, k *keyrelease.Key, h *crypto.Header, info blob.Info, head []byte) (*crypto.Decryptor, error) {
	var err error
	if k.Ref.Version != "" {
		ref.Version = k.Ref.Version // also for the audit event
	}
	n.root.noteKeyType(*ref, k.Type)
	if err := n.versionAllowed(*ref, true); err != nil {
		k.Wipe() // the key's current version, released for a header without one, is not listed
		return nil, err
	}
	var opts crypto.OpenOptions
	if h.Version == crypto.VersionV2 {
		// The nonce table is fetched once per open; a small object's is
		// already in the bytes read for its header.
		if opts.Table, err = readTable(ctx, n.ds.Store, info, h, head); err != nil {
			k.Wipe()
			return nil, err
		}
		opts.Cache = k.Batch // the released key's batch keys, wiped with it
	}
	var kek any
	if k.IsPrivate() {
		kek = k.KEK()
	}
	d, err := crypto.NewDecryptorOpts(h, kek, name, info.Size, opts)
	k.Wipe()
	return d, err
}

// finishOpen makes the object state of an opened version and authenticates
// its final chunk.
func (n *objectNode) finishOpen(ctx context.Context, name string, id uint64, info blob.Info, h *crypto.Header, head []byte, d *crypto.Decryptor) (*objectState, error) {
	o := &objectState{id: id, name: n.ds.Name + "/" + name, ref: info.Ref(), store: n.ds.Store, d: d,
		fs: n.root, sem: n.root.loads, inflight: map[int64]*flight{}}
	// Authenticate the final chunk now: it proves the size, so a truncated
	// object fails at open instead of looking shorter. A small object is
	// already whole in the bytes read for its header.
	last := d.NumChunks() - 1
	if off, size := d.CipherRange(last, last); off+size <= int64(len(head)) {
		pt, err := d.DecryptChunks(n.root.cache.newChunk(h.ChunkSize), head[off:off+size], last)
		if err != nil {
			n.root.cache.recycle(pt)
			return nil, fmt.Errorf("%s: %w", o.name, err)
		}
		n.root.cache.put(o.key(last), pt)
	} else if err := o.ensure(ctx, last, last); err != nil {
		n.root.cache.dropObject(id, d.NumChunks())
		return nil, err
	}
	return o, nil
}

// allowedRef parses the header's key reference and returns the reference
// to release if the dataset may use that key. A configured reference
// without a version accepts any version; the header's version is kept so
// the key that sealed the object is the one released.
func (n *objectNode) allowedRef(s string) (keyrelease.KeyRef, error) {
	hdr, err := keyrelease.ParseKeyRef(s)
	if err != nil {
		return keyrelease.KeyRef{}, fmt.Errorf("%w: header key reference %q: %v", errObjectKeyNotAllowed, s, err)
	}
	for _, allowed := range n.ds.Keys {
		if allowed.Matches(hdr) {
			r := allowed
			if r.Version == "" {
				r.Version = hdr.Version
			}
			if err := n.versionAllowed(r, false); err != nil {
				return keyrelease.KeyRef{}, err
			}
			return r, nil
		}
	}
	return keyrelease.KeyRef{}, fmt.Errorf("%w: %s", errObjectKeyNotAllowed, hdr)
}

// versionAllowed checks ref's version against the dataset's version
// allow-list of its key, if any. Before the release (released false) a
// reference without a version passes: the released key's version is
// checked once known, and a released key of unknown version fails.
func (n *objectNode) versionAllowed(ref keyrelease.KeyRef, released bool) error {
	if len(n.ds.Versions) == 0 || (ref.Version == "" && !released) {
		return nil
	}
	base := ref
	base.Version = ""
	for allowed, versions := range n.ds.Versions {
		if !allowed.Matches(base) || allowed.Version != "" {
			continue
		}
		for _, v := range versions {
			if strings.EqualFold(v, ref.Version) {
				return nil
			}
		}
		return fmt.Errorf("%w: version %s of %s is not in the dataset's allowed versions", errObjectKeyNotAllowed, ref.Version, base)
	}
	return nil
}

// headBytes is how much of an object an open reads in its first storage
// request: enough for any header with a short key reference and wrapped
// key, and all of an object of up to about 8 KiB of plaintext.
const headBytes = 8192

// parseHeader parses an object's header from head, the first bytes of the
// pinned version, reading the rest of a header longer than head. It
// returns the bytes it parsed from: for small objects, the whole object.
func parseHeader(ctx context.Context, st blob.Store, info blob.Info, head []byte) (*crypto.Header, []byte, error) {
	p, err := crypto.ParsePreamble(head)
	if err != nil {
		return nil, nil, err
	}
	if p.HeaderLen > len(head) && int64(p.HeaderLen) <= info.Size {
		head = make([]byte, p.HeaderLen)
		if _, err := st.ReadAt(ctx, info.Ref(), head, 0); err != nil && err != io.EOF {
			return nil, nil, err
		}
	}
	h, err := crypto.ParseHeader(head)
	return h, head, err
}

// readTable is crypto.ReadTable over the dataset's store.
func readTable(ctx context.Context, st blob.Store, info blob.Info, h *crypto.Header, head []byte) ([]byte, error) {
	return crypto.ReadTable(blob.ReaderAt(ctx, st, info.Ref()), info.Size, h, head)
}

// objectHandle is one open file of an object version.
type objectHandle struct {
	node *objectNode
	v    objectVersion
	o    *objectState

	mu      sync.Mutex
	nextOff int64 // where a sequential reader would read next
	window  int64 // current read-ahead window in bytes
	ahead   int64 // last chunk read-ahead has covered (cached or loading)
}

var (
	_ = (fusefs.FileReader)((*objectHandle)(nil))
	_ = (fusefs.FileReleaser)((*objectHandle)(nil))
	_ = (fusefs.FileGetattrer)((*objectHandle)(nil))
)

func (h *objectHandle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return h.node.Getattr(ctx, h, out)
}

// Read serves plaintext. Sequential readers get an adaptive read-ahead
// window that doubles up to Options.MaxReadAhead; random readers fetch only
// the chunks they touch.
func (h *objectHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	r, err := h.o.read(ctx, dest, off)
	if errors.Is(err, blob.ErrNotFound) {
		// The version this handle pinned was deleted: the handle is stale
		// (as on NFS), the path is not what is missing. read(2) callers
		// do not expect ENOENT.
		err = fmt.Errorf("%w: the open version was deleted: %w", syscall.ESTALE, err)
	}
	if err != nil {
		return nil, h.node.root.fail("read", err)
	}
	n := r.Size()
	h.node.root.counters.reads.Add(1)
	h.node.root.counters.bytesServed.Add(int64(n))
	h.readAhead(off, int64(n))
	return r, 0
}

// seqSlack is how far from the expected offset a read may land and still
// count as sequential: a few of the kernel's 1 MiB read-ahead requests.
const seqSlack = 4 << 20

func (h *objectHandle) readAhead(off, n int64) {
	if n == 0 {
		return
	}
	opts := h.node.root.opts
	// Concurrent streams share the chunk cache: each gets at most a fair
	// share of it, so read-ahead never evicts what another stream is about
	// to read.
	maxWin := min(opts.MaxReadAhead, opts.CacheBytes/(2*int64(max(1, h.node.root.openObjects()))))
	h.mu.Lock()
	// A read at 0 counts as sequential: most files are read from the start.
	// The kernel sends its read-ahead requests concurrently, so they may
	// arrive a little out of order: reads near the expected offset count.
	if d := off - h.nextOff; d >= -seqSlack && d <= seqSlack {
		h.window = min(max(2*h.window, min(opts.RangeSize, maxWin)), maxWin)
	} else {
		h.window = 0
	}
	h.nextOff = max(h.nextOff, off+n)
	if h.window == 0 {
		h.nextOff = off + n
	}
	end, window := h.nextOff, h.window
	h.mu.Unlock()
	if window == 0 {
		return
	}
	// Read ahead in whole storage ranges: wait until a full range is due
	// (or the object's end is in the window), rather than fetching the
	// sliver each read uncovers. Many small requests would cost round
	// trips and billed transactions on Azure (and an MD5 each on Azurite).
	c := int64(h.o.d.Header().ChunkSize)
	lastChunk := h.o.d.NumChunks() - 1
	want := min((end+window-1)/c, lastChunk)
	h.mu.Lock()
	from := max(end/c, h.ahead+1)
	h.mu.Unlock()
	// With many streams the window (a fair share of the cache) may be
	// smaller than a range: then it is fetched a whole window at a time.
	if unit := min(h.o.perRange(), max(1, window/c)); want < lastChunk {
		want = from + (want-from+1)/unit*unit - 1 // whole units only
	}
	if from > want {
		return
	}
	covered := h.o.prefetch(from, want)
	h.mu.Lock()
	h.ahead = max(h.ahead, covered)
	h.mu.Unlock()
}

func (h *objectHandle) Release(ctx context.Context) syscall.Errno {
	h.node.root.releaseObject(h.v, h.o)
	return 0
}
