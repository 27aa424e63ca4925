// Command loopback mounts a plain go-fuse loopback of a directory with the
// same FUSE settings as skrfs (1 MiB requests, no splice, kernel passthrough
// off): the no-crypto ceiling that `make bench` compares skrfs with.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	skrfs "github.com/skrfs/skrfs/fs"
)

func main() {
	// Same argument shape as `skrfs mount ... --ready-file F MOUNTPOINT`.
	if len(os.Args) != 5 || os.Args[2] != "--ready-file" {
		fmt.Fprintln(os.Stderr, "usage: loopback DIR --ready-file FILE MOUNTPOINT")
		os.Exit(2)
	}
	dir, ready, mnt := os.Args[1], os.Args[3], os.Args[4]
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	lr := &fusefs.LoopbackRoot{Path: dir, Dev: uint64(st.Dev)}
	root := &node{LoopbackNode: &fusefs.LoopbackNode{RootData: lr}}
	lr.RootNode = root
	sec := time.Second
	srv, err := fusefs.Mount(mnt, root, &fusefs.Options{EntryTimeout: &sec, AttrTimeout: &sec,
		MountOptions: fuse.MountOptions{FsName: "loopback", DirectMount: true, MaxWrite: 1 << 20, MaxReadAhead: 1 << 20, DisableSplice: true}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	skrfs.RaiseReadAhead(mnt) // the same kernel read-ahead as skrfs
	os.WriteFile(ready, nil, 0o644)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sig; srv.Unmount() }()
	srv.Wait()
}

// node is a loopback node whose open files cannot be passed through to the
// kernel: every read goes through the daemon, as skrfs's must.
type node struct {
	*fusefs.LoopbackNode
}

// WrapChild makes every node of the tree a node of this type.
func (n *node) WrapChild(_ context.Context, ops fusefs.InodeEmbedder) fusefs.InodeEmbedder {
	return &node{ops.(*fusefs.LoopbackNode)}
}

func (n *node) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return &file{fh}, fl, 0
}

// file exposes reads but not fusefs.FilePassthroughFder.
type file struct{ fh fusefs.FileHandle }

func (f *file) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return f.fh.(fusefs.FileReader).Read(ctx, dest, off)
}

func (f *file) Release(ctx context.Context) syscall.Errno {
	return f.fh.(fusefs.FileReleaser).Release(ctx)
}

func (f *file) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return f.fh.(fusefs.FileGetattrer).Getattr(ctx, out)
}
