// Package localdir implements blob.Store over a local directory tree: the
// embedded default of `skrfs demo`, and the store for ciphertext kept on a
// local or network filesystem.
//
// Object names are '/'-separated paths relative to the root. Only regular
// files are objects; symbolic links, devices and sockets are ignored, so a
// link cannot make the store read outside its root. Names resolve beneath
// the root directory opened by New, with openat2(2) and RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS (one system call per open; on kernels without
// openat2, one openat(2) with O_NOFOLLOW per path component): a symbolic
// link anywhere in a name, final component or intermediate directory, is
// never followed by a read, a stat or a listing.
//
// Versions: the ETag of a file is derived from its inode, size, modification
// and change times. Replacing a file (rename over it) changes the inode;
// rewriting it in place changes the times. A read checks the ETag before and
// after reading, so a file modified during a read gives blob.ErrChanged
// rather than a mix of old and new bytes. One case cannot be seen: an
// in-place rewrite that keeps the size and lands within the same timestamp
// tick as the previous write. Producers should replace objects by rename
// (as Put does), which changes the inode.
//
// The store is also a blob.Writer (writer.go): a commit is a temporary
// file, fsync, a conditional rename under a lock that holds across
// processes, and a directory fsync; CleanTemp removes what a crash left.
package localdir

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skrfs/skrfs/blob"
)

// Store is a blob.Store backed by a directory.
type Store struct {
	root   string
	dir    *os.File // the root directory, held open: names resolve beneath it
	rootFD int
	// procFD: /proc/self/fd/<fd>/<name> reaches a directory's entry
	// without following it, so a listing reads metadata in one call.
	procFD bool
	// wmu serialises this store's commits and removals; flock on
	// lockName extends that to other processes (see writer.go).
	wmu sync.Mutex
	// wroot is the root for writes, opened at the first (writeRoot).
	wrootOnce sync.Once
	wroot     *os.Root
	wrootErr  error
	lockFile  *os.File // lockName, opened at the first commit (under wmu)
}

var (
	_ blob.Store      = (*Store)(nil)
	_ blob.HeadReader = (*Store)(nil)
)

// New returns a store rooted at dir, which must exist and be a directory.
func New(dir string) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, mapErr(err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("localdir: %s is not a directory", abs)
	}
	d, err := os.OpenFile(abs, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return nil, mapErr(err)
	}
	s := &Store{root: abs, dir: d, rootFD: int(d.Fd())}
	_, perr := os.Stat(fmt.Sprintf("/proc/self/fd/%d", s.rootFD))
	s.procFD = perr == nil
	return s, nil
}

// Root returns the absolute path of the store's root directory.
func (s *Store) Root() string { return s.root }

// Path returns the local path of the object name, after validating the name.
func (s *Store) Path(name string) (string, error) {
	if err := blob.CheckName(name); err != nil {
		return "", err
	}
	return filepath.Join(s.root, filepath.FromSlash(name)), nil
}

// Stat implements blob.Store: one O_PATH open beneath the root (which
// opens nothing: a device or FIFO is not touched), fstat, and the metadata
// read through the descriptor.
func (s *Store) Stat(ctx context.Context, name string) (blob.Info, error) {
	if err := ctx.Err(); err != nil {
		return blob.Info{}, err
	}
	if err := blob.CheckName(name); err != nil {
		return blob.Info{}, err
	}
	fd, st, err := s.open(name, unix.O_PATH|unix.O_CLOEXEC|unix.O_NOFOLLOW)
	if err != nil {
		return blob.Info{}, err
	}
	defer syscall.Close(fd)
	i := blob.Info{Name: name, Size: st.Size, ETag: etagOf(st), ModTime: time.Unix(st.Mtim.Unix())}
	if s.procFD {
		// fgetxattr does not take O_PATH descriptors; the descriptor's
		// /proc link names exactly the file opened.
		fdPath := fmt.Sprintf("/proc/self/fd/%d", fd)
		i.Metadata = getMetadata(func(buf []byte) (int, error) { return unix.Getxattr(fdPath, xattrName, buf) })
	} else if rfd, _, err := s.openFile(name); err == nil {
		if m := readMetadataFD(rfd); m != nil {
			i.Metadata = m
		}
		syscall.Close(rfd)
	}
	return i, nil
}

// xattrName holds all user metadata of an object, as one JSON object in
// one extended attribute, so that Stat costs a single getxattr.
const xattrName = "user.skrfs.metadata"

// readMetadata returns the user metadata kept in p's extended attribute,
// or nil when there is none or the filesystem has no user xattrs. A final
// symbolic link is not followed.
func readMetadata(p string) map[string]string {
	return getMetadata(func(buf []byte) (int, error) { return unix.Lgetxattr(p, xattrName, buf) })
}

// readMetadataFD is readMetadata for an open file.
func readMetadataFD(fd int) map[string]string {
	return getMetadata(func(buf []byte) (int, error) { return unix.Fgetxattr(fd, xattrName, buf) })
}

func getMetadata(get func([]byte) (int, error)) map[string]string {
	var small [512]byte
	buf := small[:]
	n, err := get(buf)
	if err == unix.ERANGE {
		buf = make([]byte, 64<<10) // the most a value may hold on Linux
		n, err = get(buf)
	}
	if err != nil || n <= 0 {
		return nil
	}
	var md map[string]string
	if json.Unmarshal(buf[:n], &md) != nil {
		return nil
	}
	return md
}

// etagOf derives a version identifier from the file's identity, size and
// times.
func etagOf(sys *syscall.Stat_t) string {
	return fmt.Sprintf("\"%x-%x-%x-%x.%x\"", sys.Ino, sys.Size,
		time.Unix(sys.Mtim.Unix()).UnixNano(), sys.Ctim.Sec, sys.Ctim.Nsec)
}

// etagOfUnix is etagOf for a unix.Stat_t (the same fields, the same ETag).
func etagOfUnix(st *unix.Stat_t) string {
	return fmt.Sprintf("\"%x-%x-%x-%x.%x\"", st.Ino, st.Size,
		time.Unix(st.Mtim.Unix()).UnixNano(), st.Ctim.Sec, st.Ctim.Nsec)
}

// ReadAt implements blob.Store.
func (s *Store) ReadAt(ctx context.Context, ref blob.Ref, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, fmt.Errorf("%w: negative offset %d", blob.ErrOutOfRange, off)
	}
	path, err := s.Path(ref.Name)
	if err != nil {
		return 0, err
	}
	fd, st, err := s.openPinned(ref)
	if err != nil {
		return 0, err
	}
	defer syscall.Close(fd)
	if off > st.Size {
		return 0, fmt.Errorf("%w: offset %d beyond size %d of %s", blob.ErrOutOfRange, off, st.Size, ref.Name)
	}
	n, err := pread(fd, path, p, off)
	if err != nil {
		return 0, err
	}
	// A concurrent in-place rewrite may have changed bytes under us.
	if err := sameVersion(fd, path, ref); err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// ReadHead implements blob.HeadReader with one open(2): the version is the
// open file's, checked again after the read. Info.Metadata is nil (it is
// kept in an extended attribute, which Stat and List read).
func (s *Store) ReadHead(ctx context.Context, name string, p []byte) (blob.Info, int, error) {
	if err := ctx.Err(); err != nil {
		return blob.Info{}, 0, err
	}
	path, err := s.Path(name)
	if err != nil {
		return blob.Info{}, 0, err
	}
	fd, st, err := s.openFile(name)
	if err != nil {
		return blob.Info{}, 0, err
	}
	defer syscall.Close(fd)
	info := blob.Info{Name: name, Size: st.Size, ETag: etagOf(st), ModTime: time.Unix(st.Mtim.Unix())}
	n, err := pread(fd, path, p[:min(int64(len(p)), st.Size)], 0)
	if err != nil {
		return blob.Info{}, 0, err
	}
	if err := sameVersion(fd, path, info.Ref()); err != nil {
		return blob.Info{}, 0, err
	}
	return info, n, nil
}

// openFile opens an object's file for reading, beneath the root and
// without following any symbolic link (a link is not an object, and a
// linked directory may lead outside the root) or blocking on a FIFO, and
// returns the descriptor and its status. Raw system calls: an *os.File
// costs five more per open (it tries to register the descriptor with the
// poller), which showed in profiles of small-file opens.
func (s *Store) openFile(name string) (int, *syscall.Stat_t, error) {
	return s.open(name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW|unix.O_NONBLOCK)
}

// open is openFile with the given open flags.
func (s *Store) open(name string, flags int) (int, *syscall.Stat_t, error) {
	path := filepath.Join(s.root, filepath.FromSlash(name)) // for messages only
	fd, err := s.openBeneath(name, flags)
	if err == syscall.ELOOP || err == syscall.EXDEV {
		return -1, nil, fmt.Errorf("%w: %s is not a regular file beneath the root (symbolic link)", blob.ErrNotFound, name)
	}
	if err != nil {
		return -1, nil, mapErr(&fs.PathError{Op: "open", Path: path, Err: err})
	}
	st := new(syscall.Stat_t)
	if err := syscall.Fstat(fd, st); err != nil {
		syscall.Close(fd)
		return -1, nil, mapErr(&fs.PathError{Op: "fstat", Path: path, Err: err})
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		syscall.Close(fd)
		return -1, nil, fmt.Errorf("%w: %s is not a regular file", blob.ErrNotFound, name)
	}
	return fd, st, nil
}

// noOpenat2 is set once openat2(2) is found missing (Linux before 5.6).
var noOpenat2 atomic.Bool

// openBeneath opens name (a checked object name, or "." for the root)
// relative to the root without following symbolic links in any component.
func (s *Store) openBeneath(name string, flags int) (int, error) {
	if !noOpenat2.Load() {
		how := unix.OpenHow{Flags: uint64(flags), Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS}
		for tries := 0; ; tries++ {
			fd, err := unix.Openat2(s.rootFD, name, &how)
			if err == unix.EINTR || (err == unix.EAGAIN && tries < 16) {
				continue // EAGAIN: a concurrent rename; the kernel asks to retry
			}
			if err == unix.ENOSYS {
				noOpenat2.Store(true)
				break
			}
			return fd, err
		}
	}
	return openWalk(s.rootFD, name, flags)
}

// openWalk is openBeneath with openat(2): one open per component, each
// with O_NOFOLLOW. Object names have no "." or ".." components.
func openWalk(root int, name string, flags int) (int, error) {
	dir := root
	parts := strings.Split(name, "/")
	for i, part := range parts {
		f := unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if i == len(parts)-1 {
			f = flags | unix.O_NOFOLLOW
		}
		var fd int
		var err error
		for {
			fd, err = unix.Openat(dir, part, f, 0)
			if err != unix.EINTR {
				break
			}
		}
		if err == unix.ENOTDIR && i < len(parts)-1 {
			// A symbolic link (O_NOFOLLOW|O_DIRECTORY) or a file.
			var st unix.Stat_t
			if unix.Fstatat(dir, part, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				err = unix.ELOOP
			}
		}
		if dir != root {
			unix.Close(dir)
		}
		if err != nil {
			return -1, err
		}
		dir = fd
	}
	return dir, nil
}

// pread fills p from off, stopping early only at the end of the file.
func pread(fd int, path string, p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		k, err := syscall.Pread(fd, p[n:], off+int64(n))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return n, mapErr(&fs.PathError{Op: "read", Path: path, Err: err})
		}
		if k == 0 {
			break
		}
		n += k
	}
	return n, nil
}

// openPinned opens the file of ref's object if it is the version ref pins.
func (s *Store) openPinned(ref blob.Ref) (int, *syscall.Stat_t, error) {
	fd, st, err := s.openFile(ref.Name)
	if err != nil {
		return -1, nil, err
	}
	if err := pinned(st, ref); err != nil {
		syscall.Close(fd)
		return -1, nil, err
	}
	return fd, st, nil
}

// sameVersion checks that the open file is still the version ref pins.
func sameVersion(fd int, path string, ref blob.Ref) error {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return mapErr(&fs.PathError{Op: "fstat", Path: path, Err: err})
	}
	return pinned(&st, ref)
}

func pinned(st *syscall.Stat_t, ref blob.Ref) error {
	if got := etagOf(st); got != ref.ETag {
		return fmt.Errorf("%w: %s has ETag %s, pinned %s", blob.ErrChanged, ref.Name, got, ref.ETag)
	}
	return nil
}

// OpenRange implements blob.RangeOpener: the file is opened and its
// version checked once, then read sequentially. The version is checked
// again when the reader reaches the end of the range, so an in-place
// rewrite during the read is reported as blob.ErrChanged.
func (s *Store) OpenRange(ctx context.Context, ref blob.Ref, off, n int64) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if off < 0 || n < 0 {
		return nil, fmt.Errorf("%w: offset %d, length %d", blob.ErrOutOfRange, off, n)
	}
	path, err := s.Path(ref.Name)
	if err != nil {
		return nil, err
	}
	fd, st, err := s.openPinned(ref)
	if err != nil {
		return nil, err
	}
	if off > st.Size {
		syscall.Close(fd)
		return nil, fmt.Errorf("%w: offset %d beyond size %d of %s", blob.ErrOutOfRange, off, st.Size, ref.Name)
	}
	return &fileRange{fd: fd, path: path, ref: ref, off: off, end: off + min(n, st.Size-off)}, nil
}

// fileRange reads [off, end) of an open file, and checks at the end that
// the file is still the pinned version.
type fileRange struct {
	fd       int
	path     string
	ref      blob.Ref
	off, end int64
}

func (fr *fileRange) Read(p []byte) (int, error) {
	if fr.fd < 0 {
		return 0, os.ErrClosed
	}
	if fr.off >= fr.end {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), fr.end-fr.off)]
	n, err := pread(fr.fd, fr.path, p, fr.off)
	fr.off += int64(n)
	if err != nil {
		return n, err
	}
	if n < len(p) || fr.off == fr.end { // the end of the range, or of the file
		fr.end = fr.off
		if err := sameVersion(fr.fd, fr.path, fr.ref); err != nil {
			return n, err
		}
		return n, io.EOF
	}
	return n, nil
}

// Close closes the file once; later calls do nothing (the descriptor
// number may belong to another file by then).
func (fr *fileRange) Close() error {
	if fr.fd < 0 {
		return nil
	}
	fd := fr.fd
	fr.fd = -1
	return syscall.Close(fd)
}

// List implements blob.Store. It walks only the directory that contains the
// prefix, so listing a small subtree of a large root is cheap. Directories
// are opened beneath the root without following symbolic links, and each
// entry is examined relative to its open directory, so a symbolic link
// (to a file or a directory, inside the root or out) is never listed or
// descended into.
func (s *Store) List(ctx context.Context, opts blob.ListOptions, fn func(blob.Info) error) error {
	dir := ""
	if i := strings.LastIndex(opts.Prefix, "/"); i >= 0 {
		dir = opts.Prefix[:i]
		if err := blob.CheckName(dir); err != nil {
			return err
		}
	}
	var infos []blob.Info
	prefixes := map[string]bool{}
	fd, err := s.openBeneath(cmpOr(dir, "."), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
	switch {
	case err == unix.ENOENT || err == unix.ENOTDIR || err == unix.ELOOP || err == unix.EXDEV:
		return nil // no such directory beneath the root: nothing listed
	case err != nil:
		return mapErr(&fs.PathError{Op: "open", Path: filepath.Join(s.root, dir), Err: err})
	}
	add := func(dirfd int, entry, name string) error {
		if !strings.HasPrefix(name, opts.Prefix) || strings.HasPrefix(entry, tmpPrefix) {
			return nil
		}
		if opts.Delimiter != "" {
			rest := name[len(opts.Prefix):]
			if i := strings.Index(rest, opts.Delimiter); i >= 0 {
				prefixes[opts.Prefix+rest[:i+len(opts.Delimiter)]] = true
				return nil
			}
		}
		var st unix.Stat_t
		if err := unix.Fstatat(dirfd, entry, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if err == unix.ENOENT {
				return nil // removed during the walk
			}
			return mapErr(&fs.PathError{Op: "stat", Path: filepath.Join(s.root, name), Err: err})
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			return nil
		}
		i := blob.Info{Name: name, Size: st.Size, ETag: etagOfUnix(&st), ModTime: time.Unix(st.Mtim.Unix())}
		if opts.WithMetadata {
			i.Metadata = s.entryMetadata(dirfd, entry)
		}
		infos = append(infos, i)
		return nil
	}
	var walk func(fd int, rel string) error
	walk = func(fd int, rel string) error {
		f := os.NewFile(uintptr(fd), filepath.Join(s.root, rel))
		defer f.Close()
		ents, err := f.ReadDir(-1)
		if err != nil {
			return mapErr(err)
		}
		for _, d := range ents {
			if cerr := ctx.Err(); cerr != nil {
				return cerr
			}
			name := d.Name()
			if rel != "" {
				name = rel + "/" + name
			}
			if !d.IsDir() {
				if d.Type().IsRegular() || d.Type() == fs.ModeIrregular {
					if err := add(fd, d.Name(), name); err != nil {
						return err
					}
				}
				continue
			}
			// Prune directories that cannot contain a match.
			if !strings.HasPrefix(name+"/", opts.Prefix) && !strings.HasPrefix(opts.Prefix, name+"/") {
				continue
			}
			// With the delimiter "/", a directory one component below the
			// prefix rolls up into one common prefix: it is listed if it
			// holds any object, found by a search that stops at the first
			// one, instead of a walk of its whole subtree (a listing of
			// the root of a million objects walked all of them).
			rolled := ""
			if opts.Delimiter == "/" && strings.HasPrefix(name+"/", opts.Prefix) {
				if rest := (name + "/")[len(opts.Prefix):]; strings.Index(rest, "/") == len(rest)-1 {
					rolled = name + "/"
				}
			}
			if rolled != "" && prefixes[rolled] {
				continue
			}
			sub, err := unix.Openat(fd, d.Name(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err == unix.ENOENT || err == unix.ENOTDIR || err == unix.ELOOP {
				continue // removed or replaced (by a link, say) during the walk
			}
			if err != nil {
				return mapErr(&fs.PathError{Op: "open", Path: filepath.Join(s.root, name), Err: err})
			}
			if rolled != "" {
				found, err := holdsObject(ctx, sub, filepath.Join(s.root, name))
				if err != nil {
					return err
				}
				if found {
					prefixes[rolled] = true
				}
				continue
			}
			if err := walk(sub, name); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(fd, dir); err != nil {
		return err
	}
	for p := range prefixes {
		infos = append(infos, blob.Info{Name: p, IsPrefix: true})
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
	for _, i := range infos {
		if err := fn(i); err != nil {
			return err
		}
	}
	return nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// entryMetadata reads the metadata of a directory entry that is a regular
// file, through /proc/self/fd so that the directory stays the one opened
// (one call), or else through an open of its own.
func (s *Store) entryMetadata(dirfd int, entry string) map[string]string {
	if s.procFD {
		return readMetadata(fmt.Sprintf("/proc/self/fd/%d/%s", dirfd, entry))
	}
	fd, err := unix.Openat(dirfd, entry, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	return readMetadataFD(fd)
}

// holdsObject reports whether the directory fd (which it closes) holds a
// regular file other than a temporary one, at any depth. It stops at the
// first.
func holdsObject(ctx context.Context, fd int, path string) (bool, error) {
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	for {
		ents, err := f.ReadDir(256)
		if err == io.EOF || (err == nil && len(ents) == 0) {
			return false, nil
		}
		if err != nil {
			return false, mapErr(err)
		}
		var dirs []string
		for _, d := range ents {
			if d.IsDir() {
				dirs = append(dirs, d.Name())
			} else if (d.Type().IsRegular() || d.Type() == fs.ModeIrregular) && !strings.HasPrefix(d.Name(), tmpPrefix) {
				return true, nil
			}
		}
		for _, name := range dirs {
			if err := ctx.Err(); err != nil {
				return false, err
			}
			sub, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err == unix.ENOENT || err == unix.ENOTDIR || err == unix.ELOOP {
				continue
			}
			if err != nil {
				return false, mapErr(&fs.PathError{Op: "open", Path: filepath.Join(path, name), Err: err})
			}
			if found, err := holdsObject(ctx, sub, filepath.Join(path, name)); found || err != nil {
				return found, err
			}
		}
	}
}

// tmpPrefix starts the names of Put's temporary files, which List skips.
const tmpPrefix = ".skrfs-tmp-"

// Put writes data as object name atomically (temporary file + rename), so a
// concurrent reader sees either the old or the new version. It creates
// parent directories as needed.
func (s *Store) Put(name string, data []byte) error {
	return s.Upload(context.Background(), name, bytes.NewReader(data), nil)
}

// Upload writes the contents of r as object name atomically, with user
// metadata kept in extended attributes (user.skrfs.md.<key>) where the
// filesystem supports them; elsewhere the metadata is dropped. Writes go
// through an os.Root of the store's directory, so no symbolic link can
// make them land outside it.
func (s *Store) Upload(ctx context.Context, name string, r io.Reader, metadata map[string]string) error {
	if err := blob.CheckName(name); err != nil {
		return err
	}
	root, err := os.OpenRoot(s.root)
	if err != nil {
		return mapErr(err)
	}
	defer root.Close()
	rel := filepath.FromSlash(name)
	dir := filepath.Dir(rel)
	if err := root.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	tmpName := filepath.Join(dir, tmpPrefix+hex.EncodeToString(rnd[:]))
	tmp, err := root.OpenFile(tmpName, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer root.Remove(tmpName)
	if _, err := io.Copy(tmp, ctxReader{ctx, r}); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if len(metadata) > 0 {
		lower := make(map[string]string, len(metadata))
		for k, v := range metadata {
			lower[strings.ToLower(k)] = v
		}
		b, _ := json.Marshal(lower)
		_ = unix.Fsetxattr(int(tmp.Fd()), xattrName, b, 0) // no user xattrs here: metadata is a hint only
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return root.Rename(tmpName, rel)
}

// ctxReader stops a copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Delete removes object name (beneath the root, as Upload writes).
func (s *Store) Delete(name string) error {
	if err := blob.CheckName(name); err != nil {
		return err
	}
	root, err := os.OpenRoot(s.root)
	if err != nil {
		return mapErr(err)
	}
	defer root.Close()
	return mapErr(root.Remove(filepath.FromSlash(name)))
}

func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("%w: %v", blob.ErrNotFound, err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: %v", blob.ErrPermission, err)
	}
	return err
}
