package fs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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
// noisily on 1 MiB replies), and a 1 MiB kernel read-ahead. As root it
// calls mount(2) itself and never falls back to fusermount3, whose failure
// would hide the real cause; other users need fusermount3. A failure is
// a *MountError that says what to do, and leaves nothing mounted at dir.
func Mount(dir string, root *Root, mo MountOptions) (*fuse.Server, error) {
	if err := checkMountpoint(dir); err != nil {
		return nil, err
	}
	asRoot := os.Geteuid() == 0
	if !asRoot {
		if err := findFusermount(); err != nil {
			return nil, &MountError{Dir: dir, Err: err, Hint: HintNoFusermount}
		}
	}
	opts := fuseOptions(root, mo, asRoot)
	srv, err := mountAndWait(dir, root, opts)
	if err != nil {
		return nil, classifyMountError(dir, err, asRoot, devFuseExists())
	}
	if err := RaiseReadAhead(dir); err != nil {
		root.log().Debug().Err(err).Str("mountpoint", dir).Msg("cannot raise read-ahead")
	}
	return srv, nil
}

// fuseOptions are go-fuse's options for a mount of root.
func fuseOptions(root *Root, mo MountOptions, asRoot bool) *fusefs.Options {
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
			Options:           []string{"default_permissions"},
			DirectMount:       asRoot,
			DirectMountStrict: asRoot,
			MaxWrite:          1 << 20,
			MaxReadAhead:      1 << 20,
			DisableSplice:     true,
			DisableXAttrs:     true,
			Debug:             mo.Debug,
		},
	}
	applyTuning(opts, os.Getenv("SKRFS_FUSE_TUNING"))
	out := mo.DebugOut
	if out == nil {
		out = os.Stderr
	}
	// go-fuse's debug output would show the first bytes of every read and
	// write; its error lines and the fs layer's go through the same filter.
	opts.MountOptions.Logger = debugLogger(out)
	opts.Logger = opts.MountOptions.Logger
	return opts
}

// mountAndWait is go-fuse's fs.Mount, except that a mount which the kernel
// made but which then fails (go-fuse leaves it behind: the INIT handshake
// or the first stat fails, e.g. on a mountpoint that is a regular file) is
// detached, so that no dead mount answering ENOTCONN stays at dir.
func mountAndWait(dir string, root *Root, opts *fusefs.Options) (*fuse.Server, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	before := fuseMountsAt(abs)
	srv, err := fuse.NewServer(fusefs.NewNodeFS(root, opts), abs, &opts.MountOptions)
	if err == nil {
		go srv.Serve()
		if err = srv.WaitMount(); err == nil {
			return srv, nil
		}
		// The serve loop ends when the mount goes away.
		_ = srv.Unmount()
	}
	for n := fuseMountsAt(abs); n > before; n-- {
		if uerr := syscall.Unmount(abs, syscall.MNT_DETACH); uerr != nil {
			if fm, lerr := exec.LookPath("fusermount3"); lerr == nil {
				_ = exec.Command(fm, "-u", "-z", abs).Run()
			}
		}
	}
	return nil, err
}

// fuseMountsAt counts the FUSE mounts at dir in this mount namespace.
func fuseMountsAt(dir string) int {
	b, _ := os.ReadFile("/proc/self/mounts")
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && unescapeMountPath(f[1]) == dir && strings.HasPrefix(f[2], "fuse") {
			n++
		}
	}
	return n
}

// unescapeMountPath undoes the octal escapes (\040 for a space) of
// /proc/self/mounts.
func unescapeMountPath(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// checkMountpoint refuses a mountpoint that does not exist or is not a
// directory before anything is mounted.
func checkMountpoint(dir string) error {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return &MountError{Dir: dir, Err: err, Hint: HintNoMountpoint}
	case err != nil:
		return &MountError{Dir: dir, Err: err}
	case !st.IsDir():
		return &MountError{Dir: dir, Err: syscall.ENOTDIR, Hint: HintNotDirectory}
	}
	return nil
}

// fusermountDirs are where go-fuse looks for fusermount3 (and the older
// fusermount) when PATH has none.
var fusermountDirs = []string{"/bin"}

// findFusermount reports whether go-fuse will find a fusermount binary,
// which users other than root need to mount.
func findFusermount() error {
	var first error
	for _, name := range []string{"fusermount3", "fusermount"} {
		_, err := exec.LookPath(name)
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
		for _, d := range fusermountDirs {
			if st, err := os.Stat(filepath.Join(d, name)); err == nil && st.Mode().IsRegular() {
				return nil
			}
		}
	}
	return first
}

func devFuseExists() bool {
	_, err := os.Stat("/dev/fuse")
	return err == nil
}

// What to do about a failed mount: one sentence per cause.
const (
	HintNoMountpoint = "the mountpoint does not exist: create it (mkdir -p) or pass an existing empty directory"
	HintNotDirectory = "the mountpoint is not a directory: pass an empty directory"
	HintNoDevFuse    = "there is no /dev/fuse: add the device (docker run --device /dev/fuse; Kubernetes or ACI: run the container privileged)"
	HintNoCapability = "mount(2) was refused: mounting needs CAP_SYS_ADMIN and access to /dev/fuse (run the container privileged: ACI securityContext.privileged, Kubernetes privileged: true, or docker --cap-add SYS_ADMIN --device /dev/fuse)"
	HintNoFusermount = "not root, and there is no fusermount3: install fuse3 (it provides the setuid fusermount3), or run skrfs as root with CAP_SYS_ADMIN"
	HintFusermount   = "fusermount3 could not mount: as a user other than root, /dev/fuse must be readable and writable by you and the mountpoint yours (with mount.allow_other, user_allow_other in /etc/fuse.conf); or run skrfs as root"
	HintBusy         = "something is mounted at the mountpoint already: unmount it first (umount -l)"
)

// MountError is a failed mount: the cause and what to do about it.
type MountError struct {
	Dir  string
	Hint string // what to do; empty when the cause is not known
	Err  error
}

func (e *MountError) Error() string {
	if e.Hint == "" {
		return fmt.Sprintf("mount %s: %v", e.Dir, e.Err)
	}
	return fmt.Sprintf("mount %s: %s (%v)", e.Dir, e.Hint, e.Err)
}

func (e *MountError) Unwrap() error { return e.Err }

// classifyMountError turns what mount(2), /dev/fuse or fusermount3 said
// into a MountError that says what to do.
func classifyMountError(dir string, err error, asRoot, haveDevFuse bool) error {
	var me *MountError
	if errors.As(err, &me) {
		return err
	}
	e := &MountError{Dir: dir, Err: err}
	var exitErr *exec.ExitError
	switch {
	case errors.Is(err, syscall.ENOTDIR):
		e.Hint = HintNotDirectory
	case !haveDevFuse:
		e.Hint = HintNoDevFuse
	case asRoot && (errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES)):
		e.Hint = HintNoCapability
	case asRoot && errors.Is(err, syscall.ENOENT):
		// The mountpoint was there a moment ago; /dev/fuse is: the device
		// node is missing in this mount namespace's /dev.
		e.Hint = HintNoDevFuse
	case errors.Is(err, syscall.EBUSY):
		e.Hint = HintBusy
	case !asRoot && (errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission)):
		e.Hint = HintNoFusermount
	case !asRoot && (errors.As(err, &exitErr) || strings.Contains(err.Error(), "fusermount")):
		e.Hint = HintFusermount
	}
	return e
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

// applyTuning applies SKRFS_FUSE_TUNING, a developers' knob for measuring
// FUSE settings side by side (make bench, group levers): comma-separated
// max_background=N, max_write=N (also the largest read request),
// entry_timeout=D, attr_timeout=D (Go durations) and readdirplus=off.
// (go-fuse 2.12 sizes its reader goroutines from GOMAXPROCS, 2 to 16; it
// has no setting for them.) Unknown or malformed
// items are ignored: the knob never stops a mount.
func applyTuning(o *fusefs.Options, spec string) {
	for _, item := range strings.Split(spec, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(item), "=")
		n, nerr := strconv.Atoi(v)
		d, derr := time.ParseDuration(v)
		switch {
		case k == "max_background" && nerr == nil && n > 0:
			o.MaxBackground = n
		case k == "max_write" && nerr == nil && n >= 4096:
			o.MaxWrite = n
		case k == "entry_timeout" && derr == nil && d >= 0:
			o.EntryTimeout = &d
		case k == "attr_timeout" && derr == nil && d >= 0:
			o.AttrTimeout = &d
		case k == "readdirplus" && v == "off":
			o.DisableReadDirPlus = true
		}
	}
}
