package fs

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// MountOptions configure the kernel mount.
type MountOptions struct {
	// AllowOther lets users other than the mounting one access the files
	// (mount option allow_other). Off by default.
	AllowOther bool
	// Debug logs every FUSE request (very verbose), without payload bytes
	// (data, xattr values, link targets): see redactPayload.
	Debug bool
	// DebugOut receives the debug log; default os.Stderr.
	DebugOut io.Writer
}

// Mount mounts root at dir with settings tuned for large sequential reads:
// 1 MiB FUSE requests, no splice (it only helps fd-backed replies and fails
// noisily on 1 MiB replies), and a 1 MiB kernel read-ahead. It uses a
// direct mount(2) when running as root and falls back to fusermount3.
func Mount(dir string, root *Root, mo MountOptions) (*fuse.Server, error) {
	timeout := time.Second
	opts := &fusefs.Options{
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		UID:             root.opts.UID,
		GID:             root.opts.GID,
		MountOptions: fuse.MountOptions{
			FsName:     "skrfs",
			Name:       "skrfs",
			AllowOther: mo.AllowOther,
			// The kernel enforces the files' owner and modes: without
			// it, allow_other would let every user read every key file
			// whatever its mode (go-fuse nodes do not check access).
			Options:       []string{"default_permissions"},
			DirectMount:   os.Geteuid() == 0,
			MaxWrite:      1 << 20,
			MaxReadAhead:  1 << 20,
			DisableSplice: true,
			DisableXAttrs: true,
			Debug:         mo.Debug,
		},
	}
	out := mo.DebugOut
	if out == nil {
		out = os.Stderr
	}
	// go-fuse's debug output would show the first bytes of every read and
	// write; its error lines and the fs layer's go through the same filter.
	opts.MountOptions.Logger = debugLogger(out)
	opts.Logger = opts.MountOptions.Logger
	srv, err := fusefs.Mount(dir, root, opts)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	if err := RaiseReadAhead(dir); err != nil {
		root.log().Debug().Err(err).Msg("cannot raise read-ahead")
	}
	return srv, nil
}

// RaiseReadAhead sets the BDI read-ahead of the mount at dir to 1 MiB, so
// buffered sequential reads arrive as 1 MiB requests instead of 128 KiB
// (root only; failure only costs speed).
func RaiseReadAhead(dir string) error {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return err
	}
	maj, min := (st.Dev>>8)&0xfff|(st.Dev>>32)&^0xfff, st.Dev&0xff|(st.Dev>>12)&^0xff
	return os.WriteFile(filepath.Join("/sys/class/bdi", fmt.Sprintf("%d:%d", maj, min), "read_ahead_kb"), []byte("1024"), 0)
}
