package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"syscall"
	"time"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/keyrelease"
)

// Encrypted writes (docs/writes.md): a writable dataset stages what apps
// write in memory (spilling sealed chunks past Options.StagingBytes) and
// commits each file as a new format version 2 object, atomically and
// conditionally, on fsync and when its last writer closes.

// Upload metadata, as internal/upload writes it, so listings show sizes.
const (
	metaHeaderLen = "skrfs_header_len"
	metaChunkSize = "skrfs_chunk_size"
	metaVersion   = "skrfs_version"
	metaKeyRef    = "skrfs_keyref"
)

// tempCleaner is implemented by stores whose commits leave temporary files
// behind when the process dies (blob/localdir).
type tempCleaner interface {
	CleanTemp(ctx context.Context, olderThan time.Duration) (int, error)
}

// cleanTemp removes what interrupted commits left in a writable dataset's
// store, in the background.
func (r *Root) cleanTemp(ds *DatasetSpec) {
	c, ok := ds.raw.(tempCleaner)
	if !ok {
		return
	}
	go func() {
		n, err := c.CleanTemp(r.bg, time.Minute)
		if err != nil {
			r.log().Warn().Err(err).Str("dataset", ds.Name).Msg("cannot clean up temporary files of interrupted commits")
		} else if n > 0 {
			r.log().Info().Str("dataset", ds.Name).Int("removed", n).Msg("removed temporary files of interrupted commits")
		}
	}()
}

// writeRefused returns EROFS when ds takes no writes: not writable, or its
// manifest is enforced and the mount holds no key to sign new ones.
func (r *Root) writeRefused(ds *DatasetSpec) error {
	if ds.Write == nil {
		return syscall.EROFS
	}
	if ds.man != nil && ds.Write.Signer == nil {
		if _, told := r.warnedROs.LoadOrStore(ds.Name, true); !told {
			r.log().Warn().Str("dataset", ds.Name).
				Msg("writes refused (EROFS): the dataset's manifest is enforced and this mount holds no manifest signing key (datasets[].sign_key)")
		}
		return syscall.EROFS
	}
	return nil
}

// writable reports whether files of ds take writes (for their modes).
func (r *Root) writable(ds *DatasetSpec) bool {
	return ds.Write != nil && (ds.man == nil || ds.Write.Signer != nil)
}

// batchFor returns the mount's batch for ds's write key, making it at the
// first write: with the public key when the dataset has a source for it
// (no release), else with the released key (its public part, or the oct
// bytes, which the batch does not keep).
func (r *Root) batchFor(ctx context.Context, ds *DatasetSpec) (*crypto.Batch, error) {
	ref := ds.Write.Key
	r.batchMu.Lock()
	defer r.batchMu.Unlock()
	if b := r.batches[ref.String()]; b != nil {
		return b, nil
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.OpTimeout)
	defer cancel()
	var b *crypto.Batch
	var err error
	if ds.Write.PublicKey != nil {
		var pub any
		var version string
		if pub, version, err = ds.Write.PublicKey(rctx); err == nil {
			hr := ref
			if hr.Version == "" {
				hr.Version = version
			}
			b, err = crypto.NewBatch(pub, hr.String(), nil)
		}
		if err != nil {
			r.log().Info().Err(err).Str("dataset", ds.Name).Msg("no public write key; releasing the key to seal writes")
		}
	}
	if b == nil {
		k, rerr := r.opts.Releaser.Release(rctx, ref)
		if rerr != nil {
			return nil, rerr
		}
		kek := k.Public
		if k.Type == keyrelease.KeyTypeOct || kek == nil {
			kek = k.KEK()
		}
		hr := ref
		if hr.Version == "" {
			hr.Version = k.Ref.Version
		}
		b, err = crypto.NewBatch(kek, hr.String(), nil)
		k.Wipe()
		if err != nil {
			return nil, err
		}
	}
	if r.batches == nil {
		r.batches = map[string]*crypto.Batch{}
	}
	r.batches[ref.String()] = b
	return b, nil
}

// headerBuffer receives what a sized sealer writes while it is made (the
// header), then passes everything on to w.
type headerBuffer struct {
	buf bytes.Buffer
	w   io.Writer
}

func (h *headerBuffer) Write(p []byte) (int, error) {
	if h.w == nil {
		return h.buf.Write(p)
	}
	return h.w.Write(p)
}

// seal streams size bytes of plaintext, read by fill, into a new object
// name (objName in the store) sealed with ds's batch, committed under cond.
func (r *Root) seal(ctx context.Context, ds *DatasetSpec, name, objName string, size int64,
	fill func(dst []byte, off int64) error, cond blob.Condition) (blob.Info, [32]byte, error) {
	var digest [32]byte
	b, err := r.batchFor(ctx, ds)
	if err != nil {
		return blob.Info{}, digest, err
	}
	if size <= smallSeal {
		return r.sealSmall(ctx, ds, b, name, objName, size, fill, cond)
	}
	hb := &headerBuffer{}
	w, err := crypto.NewWriterV2Sized(hb, b, crypto.SealOptions{Name: name, ChunkSize: crypto.DefaultChunkSize}, size)
	if err != nil {
		return blob.Info{}, digest, err
	}
	digest = crypto.HeaderDigest(hb.buf.Bytes()) // the header, whole: its manifest entry
	pr, pw := io.Pipe()
	hb.w = pw
	go func() {
		pb := stageBuffers.Get().(*[stageChunk]byte)
		buf := pb[:]
		defer func() { clear(buf); stageBuffers.Put(pb) }()
		var err error
		for off := int64(0); off < size && err == nil; off += stageChunk {
			seg := buf[:min(stageChunk, size-off)]
			if err = fill(seg, off); err == nil {
				_, err = w.Write(seg)
			}
		}
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		pw.CloseWithError(err)
	}()
	info, err := r.commitSealed(ctx, ds, objName, io.MultiReader(&hb.buf, pr), w.HeaderLen(), b, cond)
	pr.CloseWithError(errors.New("commit ended")) // stops the sealer if Commit returned early
	return info, digest, err
}

// commitSealed commits a sealed version 2 object, read from body, with its
// upload metadata.
func (r *Root) commitSealed(ctx context.Context, ds *DatasetSpec, objName string, body io.Reader, headerLen int, b *crypto.Batch, cond blob.Condition) (blob.Info, error) {
	md := sealMetadata(headerLen, b)
	info, err := ds.raw.(blob.Writer).Commit(ctx, objName, body, md, cond)
	if err != nil {
		return blob.Info{}, err
	}
	if info.Metadata == nil {
		info.Metadata = md
	}
	r.counters.commits.Add(1)
	return info, nil
}

// smallSeal: objects up to this size are sealed in memory before the
// commit, without the pipe and goroutine of a streamed seal (creates of
// many small files).
const smallSeal = stageChunk

// sealMetadata is the upload metadata of a version 2 object sealed with b.
func sealMetadata(headerLen int, b *crypto.Batch) map[string]string {
	return map[string]string{
		metaHeaderLen: strconv.Itoa(headerLen),
		metaChunkSize: strconv.Itoa(crypto.DefaultChunkSize),
		metaVersion:   "2",
		metaKeyRef:    b.KeyRef(),
	}
}

// sealSmall is seal for an object of at most smallSeal bytes: plaintext
// in a pooled staging buffer (wiped after), the sealed object in memory.
func (r *Root) sealSmall(ctx context.Context, ds *DatasetSpec, b *crypto.Batch, name, objName string, size int64,
	fill func(dst []byte, off int64) error, cond blob.Condition) (blob.Info, [32]byte, error) {
	var digest [32]byte
	pb := stageBuffers.Get().(*[stageChunk]byte)
	plain := pb[:size]
	defer func() { clear(plain); stageBuffers.Put(pb) }()
	if err := fill(plain, 0); err != nil {
		return blob.Info{}, digest, err
	}
	var out bytes.Buffer
	out.Grow(int(size) + 4096)
	w, err := crypto.NewWriterV2Sized(&out, b, crypto.SealOptions{Name: name, ChunkSize: crypto.DefaultChunkSize}, size)
	if err != nil {
		return blob.Info{}, digest, err
	}
	if _, err := w.Write(plain); err != nil {
		return blob.Info{}, digest, err
	}
	if err := w.Close(); err != nil {
		return blob.Info{}, digest, err
	}
	digest = crypto.HeaderDigest(out.Bytes()[:w.HeaderLen()])
	info, err := r.commitSealed(ctx, ds, objName, bytes.NewReader(out.Bytes()), w.HeaderLen(), b, cond)
	return info, digest, err
}

// commit seals the staged content and replaces the stored object with it.
// The caller holds d.mu. A lost condition (another writer committed first)
// drops the staged data for good: every later operation of the file gets
// EIO.
func (d *dirtyFile) commit(ctx context.Context) error {
	if d.failed != nil {
		return d.failed
	}
	if !d.dirty || d.deleted.Load() {
		return nil
	}
	n := d.node
	name, objName := n.names()
	cond := blob.Condition{IfNoneMatch: d.etag == ""}
	if d.etag != "" {
		cond.IfMatch = d.etag
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.root.opts.OpTimeout)
	defer cancel()
	info, digest, err := n.root.seal(ctx, n.ds, name, objName, d.size, func(dst []byte, off int64) error {
		_, err := d.readAt(ctx, dst, off)
		return err
	}, cond)
	n.root.audit(ctx, auditObjectCommit, n.ds.Name+"/"+name, n.ds.Write.Key, err)
	if errors.Is(err, blob.ErrConditionNotMet) {
		now := "(none)"
		if cur, serr := n.ds.Store.Stat(ctx, objName); serr == nil {
			now = cur.ETag
		}
		opened := d.etag
		if opened == "" {
			opened = "(none: created by this mount)"
		}
		n.root.counters.conflicts.Add(1)
		n.root.log().Error().Str("dataset", n.ds.Name).Str("object", name).Str("opened_version", opened).Str("current_version", now).
			Msg("commit lost: another writer replaced the object first; this mount's changes are dropped (EIO)")
		return d.fail(fmt.Errorf("%w: commit of %s lost to another writer: %w", syscall.EIO, name, err))
	}
	if err != nil {
		n.root.log().Warn().Err(err).Str("dataset", n.ds.Name).Str("object", name).Msg("commit failed")
		return commitErr(name, err)
	}
	d.etag, d.dirty = info.ETag, false
	if d.base != nil {
		// The unstaged bytes now come from the new version, whose first
		// read opens it: drop the staged copy and the old version (which
		// storage no longer serves).
		d.releaseBase()
		for i, c := range d.chunks {
			d.drop(i, c)
			delete(d.chunks, i)
		}
		d.baseValid = d.size
	}
	d.baseSize = d.size // what the committed version, if reopened as the base, must show
	n.committed(info, d.size)
	n.mu.Lock()
	n.listedDigest = digest
	n.mu.Unlock()
	// With an enforced manifest the version is served once a manifest
	// lists it: publish before the close or fsync returns.
	return n.root.publishCommit(n.ds, name, info, digest, d.size)
}

// commitErr is what a failed commit returns to the app: EIO (write(2) and
// close(2) callers expect it for data that did not reach storage), whatever
// errno the transport failure carried (a reset connection is ECONNRESET
// deep in the chain); a key that cannot be had keeps its own errno (EACCES
// for a denied release, ENOKEY for a missing key).
func commitErr(name string, err error) error {
	switch e := toErrno(err); e {
	case syscall.EACCES, syscall.ENOKEY, syscall.EIO:
		return err
	}
	return fmt.Errorf("%w: commit of %s failed: %w", syscall.EIO, name, err)
}

// committed records a version this mount wrote: node attributes, the
// parent's listing, and the kernel's cached attributes.
func (n *objectNode) committed(info blob.Info, size int64) {
	n.mu.Lock()
	n.info, n.plainSize, n.sizeErr = info, size, nil
	n.info.Metadata = nil // the size is known; nodes keep no metadata maps
	name := n.name
	n.mu.Unlock()
	if _, p := n.Parent(); p != nil {
		if d, ok := p.Operations().(*dirNode); ok {
			e := objectEntry(info)
			d.setEntry(baseName(name), &e)
		}
	}
	n.NotifyContent(-1, 0)
}

func baseName(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[i+1:]
		}
	}
	return p
}

// logName is the node's dataset path, for logs.
func (n *objectNode) logName() string {
	name, _ := n.names()
	return n.ds.Name + "/" + name
}
