package fakesgx

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Dev serves fake Gramine /dev/attestation directories over FUSE: one
// subdirectory per enclave, each with the pseudo-files the sgx provider
// uses (Gramine docs, "Attestation and Secret Provisioning"):
//
//	attestation_type  reads "dcap"
//	user_report_data  64 bytes, written by the app (reads back what was written)
//	quote             a quote v3 over the last user_report_data, made at open
//
// As in Gramine, writing user_report_data changes what quote reads. Each
// subdirectory is one enclave: its state is shared by every process, so
// callers of one enclave directory must not attest concurrently (in
// Gramine each enclave has its own /dev/attestation).
type Dev struct {
	Dir    string
	server *fuse.Server
	once   sync.Once
	err    error
}

// MountDev mounts the fake devices at dir (created if needed; a stale
// mount left by a killed devstack is detached first).
func MountDev(dir string, p *Platform, enclaves map[string]Enclave) (*Dev, error) {
	syscall.Unmount(dir, syscall.MNT_DETACH) // a stale mount of an earlier run
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	root := &rootNode{p: p, enclaves: enclaves}
	sec := time.Second
	srv, err := fusefs.Mount(dir, root, &fusefs.Options{EntryTimeout: &sec, AttrTimeout: &sec,
		MountOptions: fuse.MountOptions{FsName: "skrfs-fake-sgx", Name: "fakesgx", AllowOther: os.Geteuid() == 0,
			DirectMount: true}})
	if err != nil {
		return nil, fmt.Errorf("fakesgx: mount the fake /dev/attestation at %s (needs /dev/fuse): %w", dir, err)
	}
	return &Dev{Dir: dir, server: srv}, nil
}

// Path is the /dev/attestation stand-in of one enclave.
func (d *Dev) Path(enclave string) string { return filepath.Join(d.Dir, enclave) }

// Close unmounts; it is idempotent.
func (d *Dev) Close() error {
	if d == nil || d.server == nil {
		return nil
	}
	d.once.Do(func() {
		if d.err = d.server.Unmount(); d.err != nil {
			syscall.Unmount(d.Dir, syscall.MNT_DETACH)
		}
	})
	return d.err
}

type rootNode struct {
	fusefs.Inode
	p        *Platform
	enclaves map[string]Enclave
}

func (r *rootNode) OnAdd(ctx context.Context) {
	for name, e := range r.enclaves {
		st := &enclaveState{p: r.p, e: e}
		d := r.NewPersistentInode(ctx, &fusefs.Inode{}, fusefs.StableAttr{Mode: syscall.S_IFDIR})
		r.AddChild(name, d, false)
		for _, f := range []string{"attestation_type", "user_report_data", "quote"} {
			n := d.NewPersistentInode(ctx, &pseudoFile{st: st, name: f}, fusefs.StableAttr{Mode: syscall.S_IFREG})
			d.AddChild(f, n, false)
		}
	}
}

type enclaveState struct {
	mu sync.Mutex
	p  *Platform
	e  Enclave
	rd [64]byte
}

type pseudoFile struct {
	fusefs.Inode
	st   *enclaveState
	name string
}

var (
	_ fusefs.NodeOpener    = (*pseudoFile)(nil)
	_ fusefs.NodeReader    = (*pseudoFile)(nil)
	_ fusefs.NodeWriter    = (*pseudoFile)(nil)
	_ fusefs.NodeGetattrer = (*pseudoFile)(nil)
	_ fusefs.NodeSetattrer = (*pseudoFile)(nil)
)

// handle holds what one open of quote or attestation_type reads.
type handle struct{ data []byte }

func (f *pseudoFile) Getattr(_ context.Context, _ fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = 0o444
	if f.name == "user_report_data" {
		out.Mode = 0o666
		out.Size = 64
	}
	return 0
}

// Setattr accepts the truncation of an O_TRUNC open of user_report_data.
func (f *pseudoFile) Setattr(_ context.Context, _ fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if f.name != "user_report_data" {
		return syscall.EACCES
	}
	out.Mode, out.Size = 0o666, 64
	return 0
}

func (f *pseudoFile) Open(_ context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	write := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	switch f.name {
	case "attestation_type":
		if write {
			return nil, 0, syscall.EACCES
		}
		return &handle{data: []byte("dcap")}, fuse.FOPEN_DIRECT_IO, 0
	case "quote":
		if write {
			return nil, 0, syscall.EACCES
		}
		f.st.mu.Lock()
		q, err := f.st.p.Quote(f.st.e, f.st.rd)
		f.st.mu.Unlock()
		if err != nil {
			return nil, 0, syscall.EIO
		}
		return &handle{data: q}, fuse.FOPEN_DIRECT_IO, 0
	}
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (f *pseudoFile) Read(_ context.Context, fh fusefs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	var data []byte
	if h, ok := fh.(*handle); ok {
		data = h.data
	} else {
		f.st.mu.Lock()
		data = append([]byte(nil), f.st.rd[:]...)
		f.st.mu.Unlock()
	}
	if off >= int64(len(data)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(int(off)+len(dest), len(data))
	return fuse.ReadResultData(data[off:end]), 0
}

// Write of user_report_data: Gramine takes exactly 64 bytes at offset 0.
func (f *pseudoFile) Write(_ context.Context, _ fusefs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if f.name != "user_report_data" {
		return 0, syscall.EACCES
	}
	if off != 0 || len(data) != 64 {
		return 0, syscall.EINVAL
	}
	f.st.mu.Lock()
	copy(f.st.rd[:], data)
	f.st.mu.Unlock()
	return 64, 0
}
