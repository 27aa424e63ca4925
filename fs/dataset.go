package fs

import (
	"context"
	"errors"
	"strings"
	"sync"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/crypto"
)

// dirNode is a directory of a dataset: a prefix of its store, listed with
// the "/" delimiter. Listings are cached for Options.ListTTL.
type dirNode struct {
	fusefs.Inode
	root   *Root
	ds     *DatasetSpec
	prefix string // "" or "a/b/"

	mu      sync.Mutex
	listed  time.Time
	view    *manifestView // the manifest the entries come from, if any
	entries map[string]dirEntry
	order   []string
	mkdirs  map[string]bool // directories made by mkdir in this mount
	// direct counts the lookups answered without a listing since the last
	// one (lookupDirect); past directLookups the directory is listed.
	direct int
}

// directLookups is how many lookups of a directory without a fresh
// listing are answered by a stat of the one name before the directory is
// listed: a cold stat deep in a large tree costs a few requests, not a
// listing of every directory on its path (O(entries)), and a program that
// opens many names of one directory still lists it once.
const directLookups = 4

type dirEntry struct {
	isDir  bool
	info   blob.Info             // objects only; without metadata (see sized)
	listed *crypto.ManifestEntry // objects listed by a manifest
	// size is the plaintext size that the upload metadata gives, when
	// sized: computed when listed, so that a listing of a million objects
	// does not keep a metadata map per object.
	size  int64
	sized bool
}

// objectEntry makes the entry of a listed or stat'ed object.
func objectEntry(i blob.Info) dirEntry {
	e := dirEntry{info: i}
	e.size, e.sized = metadataSize(i)
	e.info.Metadata = nil
	return e
}

var (
	_ = (fusefs.NodeOnForgetter)((*dirNode)(nil))
	_ = (fusefs.NodeOnForgetter)((*objectNode)(nil))
	_ = (fusefs.NodeGetattrer)((*dirNode)(nil))
	_ = (fusefs.NodeLookuper)((*dirNode)(nil))
	_ = (fusefs.NodeReaddirer)((*dirNode)(nil))
)

func (d *dirNode) Getattr(ctx context.Context, fh fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.attr(&out.Attr)
	return 0
}

// list returns the directory's entries, from cache when fresh. With a
// verified manifest they come from it, without any storage request.
func (d *dirNode) list(ctx context.Context) (map[string]dirEntry, []string, error) {
	if d.ds.man != nil {
		v, fallback, err := d.ds.man.current(ctx)
		if err != nil {
			return nil, nil, err
		}
		if !fallback {
			return d.listView(v)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.entries != nil && d.view == nil && time.Since(d.listed) < d.root.opts.ListTTL {
		return d.entries, d.order, nil
	}
	entries := map[string]dirEntry{}
	var order []string
	err := d.ds.Store.List(ctx, blob.ListOptions{Prefix: d.prefix, Delimiter: "/", WithMetadata: true}, func(i blob.Info) error {
		rest := strings.TrimPrefix(i.Name, d.prefix)
		if i.IsPrefix {
			name := strings.TrimSuffix(rest, "/")
			if d.prefix == "" && name+"/" == crypto.ManifestPrefix {
				return nil // the manifest's directory is not data
			}
			if name != "" && !strings.Contains(name, "/") {
				entries[name] = dirEntry{isDir: true}
				order = append(order, name)
			}
			return nil
		}
		name, ok := strings.CutSuffix(rest, d.ds.Suffix)
		if !ok || name == "" || strings.Contains(name, "/") {
			return nil // not an object of this dataset
		}
		if _, dup := entries[name]; !dup {
			order = append(order, name)
		}
		entries[name] = objectEntry(i)
		return nil
	})
	if err != nil {
		d.root.log().Warn().Err(err).Str("dataset", d.ds.Name).Str("prefix", d.prefix).Msg("listing failed")
		return nil, nil, err
	}
	d.entries, d.order, d.listed, d.view, d.direct = entries, order, time.Now(), nil, 0
	return entries, order, nil
}

// listView returns the directory's entries in manifest view v, built once
// per view and directory.
func (d *dirNode) listView(v *manifestView) (map[string]dirEntry, []string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.view == v && d.entries != nil {
		return d.entries, d.order, nil
	}
	children := v.dirs[d.prefix]
	entries := make(map[string]dirEntry, len(children))
	order := make([]string, 0, len(children))
	for _, c := range children {
		if c.entry < 0 {
			entries[c.name] = dirEntry{isDir: true}
		} else {
			entries[c.name] = dirEntry{listed: &v.m.Entries[c.entry]}
		}
		order = append(order, c.name)
	}
	d.entries, d.order, d.view = entries, order, v
	return entries, order, nil
}

// errFound stops a listing at its first entry.
var errFound = errors.New("found")

// lookupDirect finds one name of a directory that has no fresh listing
// (and no manifest) with a stat of the object, or, if there is none, a
// listing of its prefix cut at the first entry. It reports whether it
// answered; false means: list the directory instead.
func (d *dirNode) lookupDirect(ctx context.Context, name string) (e dirEntry, found, answered bool, err error) {
	if d.ds.man != nil {
		return dirEntry{}, false, false, nil
	}
	d.mu.Lock()
	fresh := d.entries != nil && d.view == nil && time.Since(d.listed) < d.root.opts.ListTTL
	if fresh || d.direct >= directLookups {
		d.mu.Unlock()
		return dirEntry{}, false, false, nil
	}
	d.direct++
	d.mu.Unlock()
	path := d.prefix + name
	if d.prefix == "" && name+"/" == crypto.ManifestPrefix {
		return dirEntry{}, false, true, nil // the manifest's directory is not data
	}
	info, err := d.ds.Store.Stat(ctx, path+d.ds.Suffix)
	if err == nil {
		return objectEntry(info), true, true, nil
	}
	if !errors.Is(err, blob.ErrNotFound) {
		return dirEntry{}, false, true, err
	}
	err = d.ds.Store.List(ctx, blob.ListOptions{Prefix: path + "/", Delimiter: "/"}, func(blob.Info) error { return errFound })
	switch {
	case errors.Is(err, errFound):
		return dirEntry{isDir: true}, true, true, nil
	case err != nil:
		return dirEntry{}, false, true, err
	}
	return dirEntry{}, false, true, nil
}

// Lookup finds a child without releasing any key: an object's size comes
// from its upload metadata or from its cleartext header.
func (d *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	ctx, cancel := withOpTimeout(ctx, d.root.opts.OpTimeout) // bounded, as opens are
	defer cancel()
	if d.ds.Write != nil { // read-only datasets have no local children
		if ch := d.localChild(name); ch != nil {
			switch op := ch.Operations().(type) {
			case *objectNode:
				op.fillAttr(&out.Attr)
			case *dirNode:
				op.attr(&out.Attr)
			}
			return ch, 0
		}
	}
	e, ok, answered, err := d.lookupDirect(ctx, name)
	if err != nil {
		return nil, d.root.fail("lookup", err)
	}
	if !answered {
		var entries map[string]dirEntry
		if entries, _, err = d.list(ctx); err != nil {
			return nil, d.root.fail("lookup", err)
		}
		e, ok = entries[name]
	}
	if !ok {
		return nil, syscall.ENOENT
	}
	path := d.prefix + name
	if e.isDir {
		child := &dirNode{root: d.root, ds: d.ds, prefix: path + "/"}
		d.attr(&out.Attr)
		return d.NewInode(ctx, child, fusefs.StableAttr{Mode: syscall.S_IFDIR, Ino: inode(d.ds.Name, path+"/")}), 0
	}
	// Update the node the kernel already knows, if any: go-fuse makes a
	// new node on every NewInode and keeps the old one for the same
	// StableAttr only after Lookup returns, but it sends the attributes
	// filled here. Those of a fresh node would replace the size of an
	// open file with whatever a fresh size computation gives (0 when the
	// storage read failed), and open handles would see a short file.
	ch := d.GetChild(name)
	obj, ok := (*objectNode)(nil), false
	if ch != nil {
		obj, ok = ch.Operations().(*objectNode)
	}
	if !ok {
		child := &objectNode{root: d.root, ds: d.ds, name: path, objName: path + d.ds.Suffix}
		ch = d.NewInode(ctx, child, fusefs.StableAttr{Mode: syscall.S_IFREG, Ino: inode(d.ds.Name, path)})
		obj = ch.Operations().(*objectNode)
	}
	if e.listed != nil {
		// The signed size; no storage request.
		obj.setListed(e.listed)
		obj.fillAttr(&out.Attr)
		return ch, 0
	}
	if e.sized {
		obj.setSize(e.info, e.size)
	} else if err := obj.setInfo(ctx, e.info, nil); err != nil {
		return nil, d.root.fail("lookup", err)
	}
	if obj.stale() {
		// The cached listing is older than the object: stat it afresh.
		if info, err := d.ds.Store.Stat(ctx, obj.objName); err == nil {
			obj.setInfo(ctx, info, nil)
		}
	}
	obj.fillAttr(&out.Attr)
	return ch, 0
}

func (d *dirNode) Readdir(ctx context.Context) (fusefs.DirStream, syscall.Errno) {
	ctx, cancel := withOpTimeout(ctx, d.root.opts.OpTimeout)
	defer cancel()
	entries, order, err := d.list(ctx)
	if err != nil {
		return nil, d.root.fail("readdir", err)
	}
	out := make([]fuse.DirEntry, 0, len(order))
	for _, name := range order {
		e := entries[name]
		mode := uint32(syscall.S_IFREG)
		ino := inode(d.ds.Name, d.prefix+name)
		if e.isDir {
			mode = syscall.S_IFDIR
			ino = inode(d.ds.Name, d.prefix+name+"/")
		}
		out = append(out, fuse.DirEntry{Name: name, Mode: mode, Ino: ino})
	}
	if d.ds.Write != nil {
		// Files not committed yet and directories made by mkdir.
		for name, ch := range d.Children() {
			if _, listed := entries[name]; listed || d.localChild(name) == nil {
				continue
			}
			out = append(out, fuse.DirEntry{Name: name, Mode: ch.Mode(), Ino: ch.StableAttr().Ino})
		}
	}
	return fusefs.NewListDirStream(out), 0
}

func (d *dirNode) OnForget()    { d.root.nodeForgotten() }
func (n *objectNode) OnForget() { n.root.nodeForgotten() }
