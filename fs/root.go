package fs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/keyrelease"
)

// Root is the root directory: keys/ and one directory per dataset.
type Root struct {
	fusefs.Inode
	opts     Options
	cache    *chunkCache
	buffers  bufferPool    // ciphertext read buffers
	heads    bufferPool    // the first bytes an open reads
	loads    chan struct{} // one token per storage read in flight
	counters counters

	mu      sync.Mutex
	nextID  uint64
	objects map[objectVersion]*objectState
	started time.Time // directories carry the mount time

	bg           context.Context // background work (manifest checks); done at Wipe
	stopBg       context.CancelFunc
	warnedMu     sync.Mutex
	warnedPublic map[string]bool // datasets warned about public-key sealing

	staged      atomic.Int64 // plaintext of writes in memory (Options.StagingBytes)
	batchMu     sync.Mutex
	batches     map[string]*crypto.Batch // write key -> the mount's batch
	warnedROs   sync.Map                 // datasets told once why they refuse writes
	forgotten   atomic.Int64             // nodes the kernel forgot (OnForget)
	freeArmed   atomic.Bool              // a release of freed memory is scheduled
	freeMemory  func()                   // debug.FreeOSMemory; tests count calls
	forgetBurst int64                    // forgetBurst; tests lower it
}

// forgetBurst is how many nodes forgotten within about 2 s make the
// daemon return freed memory to the OS.
const forgetBurst = 10000

// nodeForgotten is called when the kernel forgets a node. The Go runtime
// collects garbage only as the heap grows, and an idle daemon whose kernel
// just dropped a million inodes (drop_caches, memory pressure) allocates
// nothing: without this it would keep their memory for minutes. The first
// forget arms a check 2 s later; if forgetBurst or more nodes were
// forgotten by then, the check collects and returns the freed memory, and
// forgets that keep coming arm the next one.
func (r *Root) nodeForgotten() {
	r.forgotten.Add(1)
	if r.freeArmed.CompareAndSwap(false, true) {
		time.AfterFunc(2*time.Second, func() {
			n := r.forgotten.Swap(0)
			r.freeArmed.Store(false)
			if n >= r.forgetBurst {
				r.freeMemory()
			}
		})
	}
}

// noteKeyType is told the type of every released key. The first time an
// RSA or EC key turns out to be usable by a dataset without producer
// authentication, it logs one warning for that dataset: anyone who can
// write to the dataset's storage and has the public key can seal objects,
// so the dataset can serve plaintext chosen by storage writers.
func (r *Root) noteKeyType(ref keyrelease.KeyRef, kty keyrelease.KeyType) {
	if kty == keyrelease.KeyTypeOct || kty == "" {
		return
	}
	for i := range r.opts.Datasets {
		ds := &r.opts.Datasets[i]
		if ds.ProducerAuthenticated || !slices.ContainsFunc(ds.Keys, ref.Matches) {
			continue
		}
		r.warnedMu.Lock()
		warned := r.warnedPublic[ds.Name]
		if r.warnedPublic == nil {
			r.warnedPublic = map[string]bool{}
		}
		r.warnedPublic[ds.Name] = true
		r.warnedMu.Unlock()
		if warned {
			continue
		}
		base := ref
		base.Version = ""
		r.log().Warn().Str("dataset", ds.Name).Str("key", base.String()).Str("kty", string(kty)).
			Msg("dataset accepts objects sealed with an RSA or EC key and has no producer authentication: anyone who can write to its storage can seal chosen plaintext with the public key; use oct keys where producers must be authenticated")
	}
}

type objectVersion struct{ dataset, name, etag string }

// The root builds its static children when mounted.
var _ = (fusefs.NodeOnAdder)((*Root)(nil))
var _ = (fusefs.NodeGetattrer)((*Root)(nil))

// NewRoot validates opts and returns the root of a filesystem.
func NewRoot(opts Options) (*Root, error) {
	if opts.Releaser == nil {
		return nil, errors.New("fs: Options.Releaser is required")
	}
	opts.setDefaults()
	if opts.freeMemory == nil {
		opts.freeMemory = debug.FreeOSMemory
	}
	seen := map[string]bool{"keys": true}
	for _, d := range opts.Datasets {
		if d.Store == nil || d.Name == "" || seen[d.Name] {
			return nil, errors.New("fs: each dataset needs a unique name other than keys and a store")
		}
		seen[d.Name] = true
	}
	r := &Root{opts: opts, cache: newChunkCache(opts.CacheBytes), objects: map[objectVersion]*objectState{}, started: time.Now(), freeMemory: opts.freeMemory, forgetBurst: cmp.Or(opts.forgetBurst, forgetBurst),
		loads: make(chan struct{}, opts.Parallel)}
	r.bg, r.stopBg = context.WithCancel(context.Background())
	// Every storage read is counted, for read amplification (Stats).
	r.opts.Datasets = append([]DatasetSpec(nil), opts.Datasets...)
	for i := range r.opts.Datasets {
		r.opts.Datasets[i].raw = r.opts.Datasets[i].Store
		if w := r.opts.Datasets[i].Write; w != nil {
			if fi, err := os.Stat(r.opts.SpillDir); err != nil || !fi.IsDir() {
				return nil, fmt.Errorf("fs: dataset %s is writable but the spill directory %s is not a directory: %v", r.opts.Datasets[i].Name, r.opts.SpillDir, err)
			}
			if _, ok := r.opts.Datasets[i].Store.(blob.Writer); !ok {
				return nil, fmt.Errorf("fs: dataset %s is writable but its store cannot write", r.opts.Datasets[i].Name)
			}
			if !slices.ContainsFunc(r.opts.Datasets[i].Keys, w.Key.Matches) {
				return nil, fmt.Errorf("fs: dataset %s: the write key %s is not one of its keys", r.opts.Datasets[i].Name, w.Key)
			}
		}
		r.opts.Datasets[i].Store = countingStore{Store: r.opts.Datasets[i].Store, c: &r.counters, obs: opts.Observer}
		if ms := r.opts.Datasets[i].Manifest; ms != nil && ms.Mode != ManifestOff {
			if ms.Verifier == nil {
				return nil, fmt.Errorf("fs: dataset %s: a manifest mode of %s needs pinned signer keys", r.opts.Datasets[i].Name, ms.Mode)
			}
			if w := r.opts.Datasets[i].Write; w != nil && w.Signer != nil {
				kid, err := crypto.JWKThumbprint(w.Signer.Public())
				if err != nil || !slices.Contains(ms.Verifier.KeyIDs(), kid) {
					return nil, fmt.Errorf("fs: dataset %s: the manifest signing key (kid %s) is not one of the dataset's pinned signers: readers, this mount included, would refuse what it publishes", r.opts.Datasets[i].Name, kid)
				}
			}
			r.opts.Datasets[i].man = newManifestState(r, &r.opts.Datasets[i])
			if ms.Mode == ManifestRequire {
				// Only what a pinned signer published is served.
				r.opts.Datasets[i].ProducerAuthenticated = true
			}
		}
	}
	return r, nil
}

// OnAdd builds keys/ and the dataset directories.
func (r *Root) OnAdd(ctx context.Context) {
	keys := r.NewPersistentInode(ctx, &dirAttr{root: r}, fusefs.StableAttr{Mode: syscall.S_IFDIR, Ino: inode("keys", "")})
	r.AddChild("keys", keys, false)
	for _, k := range r.opts.Keys {
		st := &keyState{}
		for _, v := range k.Views {
			f := &keyFile{root: r, dir: keys, key: k, view: v, state: st}
			keys.AddChild(v.File, keys.NewPersistentInode(ctx, f, fusefs.StableAttr{Mode: syscall.S_IFREG, Ino: inode("keys/", v.File)}), false)
		}
	}
	for i := range r.opts.Datasets {
		ds := &r.opts.Datasets[i]
		d := &dirNode{root: r, ds: ds}
		if ds.Write != nil {
			r.cleanTemp(ds)
		}
		r.AddChild(ds.Name, r.NewPersistentInode(ctx, d, fusefs.StableAttr{Mode: syscall.S_IFDIR, Ino: inode(ds.Name, "")}), false)
	}
}

// Getattr reports the root directory's attributes.
func (r *Root) Getattr(ctx context.Context, fh fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	r.dirAttr(&out.Attr)
	return 0
}

func (r *Root) dirAttr(a *fuse.Attr) {
	a.Mode = syscall.S_IFDIR | r.opts.DirMode
	a.Uid, a.Gid = r.opts.UID, r.opts.GID
	a.Nlink = 2
	a.SetTimes(&r.started, &r.started, &r.started)
}

// Wipe zeroes every cached plaintext chunk. Call it at unmount.
func (r *Root) Wipe() {
	r.stopBg()
	r.cache.clear()
	r.batchMu.Lock()
	for _, b := range r.batches {
		b.Destroy()
	}
	r.batches = nil
	r.batchMu.Unlock()
}

// CachedBytes returns how much plaintext the chunk cache holds.
func (r *Root) CachedBytes() int64 { return r.cache.bytes() }

// acquire returns the shared state of one object version, creating it with
// mk when it is not open yet.
func (r *Root) acquire(v objectVersion, mk func(id uint64) (*objectState, error)) (*objectState, error) {
	r.mu.Lock()
	if o := r.objects[v]; o != nil {
		o.refs++
		r.mu.Unlock()
		return o, nil
	}
	r.nextID++
	id := r.nextID
	r.mu.Unlock()
	o, err := mk(id)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if existing := r.objects[v]; existing != nil { // lost a race: use the winner
		existing.refs++
		r.cache.dropObject(id, o.d.NumChunks())
		return existing, nil
	}
	o.refs = 1
	r.objects[v] = o
	return o, nil
}

// openObjects returns how many object versions are open.
func (r *Root) openObjects() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.objects)
}

// releaseObject drops a handle's reference; the last one frees the state
// and zeroes its cached chunks (the kernel's page cache keeps serving
// warm reads of unchanged objects).
func (r *Root) releaseObject(v objectVersion, o *objectState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	o.refs--
	if o.refs == 0 && r.objects[v] == o {
		delete(r.objects, v)
		r.cache.dropObject(o.id, o.d.NumChunks())
	}
}

// dirAttr is a static directory (keys/).
type dirAttr struct {
	fusefs.Inode
	root *Root
}

var _ = (fusefs.NodeGetattrer)((*dirAttr)(nil))

func (d *dirAttr) Getattr(ctx context.Context, fh fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.root.dirAttr(&out.Attr)
	return 0
}

// inode returns a stable inode number for a path, so concurrent lookups of
// one name share an inode.
func inode(parent, name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(parent))
	h.Write([]byte{0})
	h.Write([]byte(name))
	return h.Sum64() | 1<<63 // stay clear of go-fuse's automatic numbers
}

// bufferPool recycles the ciphertext buffers of storage reads (a few MiB
// each) instead of leaving them to the garbage collector.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) get(n int) []byte {
	if v, ok := b.p.Get().(*[]byte); ok && cap(*v) >= n {
		return (*v)[:n]
	}
	return make([]byte, n)
}

// put returns a buffer. It holds only ciphertext, which is not secret, so
// it is not cleared (clearing 8 MiB per read showed up in profiles).
func (b *bufferPool) put(buf []byte) { b.p.Put(&buf) }
