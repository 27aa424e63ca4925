// Package localdir implements blob.Store over a local directory tree: the
// embedded default of `skrfs demo`, and the store for ciphertext kept on a
// local or network filesystem.
//
// Object names are '/'-separated paths relative to the root. Only regular
// files are objects; symbolic links, devices and sockets are ignored, so a
// link cannot make the store read outside its root.
//
// Versions: the ETag of a file is derived from its inode, size, modification
// and change times. Replacing a file (rename over it) changes the inode;
// rewriting it in place changes the times. A read checks the ETag before and
// after reading, so a file modified during a read gives blob.ErrChanged
// rather than a mix of old and new bytes. One case cannot be seen: an
// in-place rewrite that keeps the size and lands within the same timestamp
// tick as the previous write. Producers should replace objects by rename
// (as Put does), which changes the inode.
package localdir

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skrfs/skrfs/blob"
)

// Store is a blob.Store backed by a directory.
type Store struct {
	root string
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
	return &Store{root: abs}, nil
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

// Stat implements blob.Store.
func (s *Store) Stat(ctx context.Context, name string) (blob.Info, error) {
	if err := ctx.Err(); err != nil {
		return blob.Info{}, err
	}
	p, err := s.Path(name)
	if err != nil {
		return blob.Info{}, err
	}
	st, err := os.Lstat(p)
	if err != nil {
		return blob.Info{}, mapErr(err)
	}
	if !st.Mode().IsRegular() {
		return blob.Info{}, fmt.Errorf("%w: %s is not a regular file", blob.ErrNotFound, name)
	}
	i := info(name, st)
	i.Metadata = readMetadata(p)
	return i, nil
}

func info(name string, st fs.FileInfo) blob.Info {
	return blob.Info{Name: name, Size: st.Size(), ETag: etag(st), ModTime: st.ModTime()}
}

// xattrName holds all user metadata of an object, as one JSON object in
// one extended attribute, so that Stat costs a single getxattr.
const xattrName = "user.skrfs.metadata"

// readMetadata returns the user metadata kept in p's extended attribute,
// or nil when there is none or the filesystem has no user xattrs.
func readMetadata(p string) map[string]string {
	var small [512]byte
	buf := small[:]
	n, err := unix.Lgetxattr(p, xattrName, buf)
	if err == unix.ERANGE {
		buf = make([]byte, 64<<10) // the most a value may hold on Linux
		n, err = unix.Lgetxattr(p, xattrName, buf)
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

// etag derives a version identifier from the file's identity and times.
func etag(st fs.FileInfo) string {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Sprintf("\"%x-%x\"", st.Size(), st.ModTime().UnixNano())
	}
	return etagOf(sys)
}

func etagOf(sys *syscall.Stat_t) string {
	return fmt.Sprintf("\"%x-%x-%x-%x.%x\"", sys.Ino, sys.Size,
		time.Unix(sys.Mtim.Unix()).UnixNano(), sys.Ctim.Sec, sys.Ctim.Nsec)
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
	fd, st, err := openPinned(ref, path)
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
	fd, st, err := openFile(name, path)
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

// openFile opens an object's file for reading, without following a final
// symbolic link (a link is not an object) or blocking on a FIFO, and
// returns the descriptor and its status. Raw system calls: an *os.File
// costs five more per open (it tries to register the descriptor with the
// poller), which showed in profiles of small-file opens.
func openFile(name, path string) (int, *syscall.Stat_t, error) {
	var fd int
	var err error
	for {
		fd, err = syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
		if err != syscall.EINTR {
			break
		}
	}
	if err == syscall.ELOOP {
		return -1, nil, fmt.Errorf("%w: %s is not a regular file", blob.ErrNotFound, name)
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
func openPinned(ref blob.Ref, path string) (int, *syscall.Stat_t, error) {
	fd, st, err := openFile(ref.Name, path)
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
	fd, st, err := openPinned(ref, path)
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
// prefix, so listing a small subtree of a large root is cheap.
func (s *Store) List(ctx context.Context, opts blob.ListOptions, fn func(blob.Info) error) error {
	dir := ""
	if i := strings.LastIndex(opts.Prefix, "/"); i >= 0 {
		dir = opts.Prefix[:i]
	}
	start := s.root
	if dir != "" {
		p, err := s.Path(dir)
		if err != nil {
			return err
		}
		start = p
	}
	var infos []blob.Info
	prefixes := map[string]bool{}
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == start && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return mapErr(err)
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		rel, _ := filepath.Rel(s.root, p)
		name := filepath.ToSlash(rel)
		if d.IsDir() {
			// Prune directories that cannot contain a match.
			if p != start && !strings.HasPrefix(name+"/", opts.Prefix) && !strings.HasPrefix(opts.Prefix, name+"/") {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !strings.HasPrefix(name, opts.Prefix) || strings.HasPrefix(d.Name(), tmpPrefix) {
			return nil
		}
		if opts.Delimiter != "" {
			rest := name[len(opts.Prefix):]
			if i := strings.Index(rest, opts.Delimiter); i >= 0 {
				prefixes[opts.Prefix+rest[:i+len(opts.Delimiter)]] = true
				return nil
			}
		}
		st, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed during the walk
			}
			return mapErr(err)
		}
		i := info(name, st)
		if opts.WithMetadata {
			i.Metadata = readMetadata(p)
		}
		infos = append(infos, i)
		return nil
	})
	if err != nil {
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
// filesystem supports them; elsewhere the metadata is dropped.
func (s *Store) Upload(ctx context.Context, name string, r io.Reader, metadata map[string]string) error {
	p, err := s.Path(name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), tmpPrefix+"*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
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
	return os.Rename(tmp.Name(), p)
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

// Delete removes object name.
func (s *Store) Delete(name string) error {
	p, err := s.Path(name)
	if err != nil {
		return err
	}
	return mapErr(os.Remove(p))
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
