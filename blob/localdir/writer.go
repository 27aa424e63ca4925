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
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skrfs/skrfs/blob"
)

// Writes (blob.Writer).
//
// A commit writes the new version to a temporary file in the object's
// directory (named with tmpPrefix, so List never shows it), fsyncs it,
// then, holding the store's write lock, checks the condition against the
// current version and renames the temporary file over the object, and
// fsyncs the directory. rename(2) is atomic: a reader opens the old inode
// or the new one, and a crash at any moment leaves the old file or the new
// one under the name, plus at most a temporary file that CleanTemp
// removes.
//
// The write lock is an in-process mutex plus flock(2) on lockName in the
// store's root, so that two processes (two daemons mounting one
// directory) that commit to one store exclude each other too. flock
// covers cooperating writers on one host only: a network filesystem may
// not implement it across hosts, and a writer that does not take the lock
// (cp, rsync) is not excluded.

// lockName is the lock file in the store's root. It starts with tmpPrefix
// so that List skips it; CleanTemp never removes it.
const lockName = tmpPrefix + "lock"

var _ blob.Writer = (*Store)(nil)

// lock takes the store's write lock (in-process and across processes) and
// returns its release.
func (s *Store) lock(root *os.Root) (func(), error) {
	s.wmu.Lock()
	if s.lockFile == nil {
		f, err := root.OpenFile(lockName, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			s.wmu.Unlock()
			return nil, mapErr(err)
		}
		s.lockFile = f // held open: one flock and one unlock per commit
	}
	fd := int(s.lockFile.Fd())
	var err error
	for {
		err = unix.Flock(fd, unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		s.wmu.Unlock()
		return nil, fmt.Errorf("localdir: lock %s: %w", filepath.Join(s.root, lockName), err)
	}
	return func() {
		unix.Flock(fd, unix.LOCK_UN)
		s.wmu.Unlock()
	}, nil
}

// checkCond checks cond against the current version of name (under the
// write lock).
func (s *Store) checkCond(ctx context.Context, name string, cond blob.Condition) (exists bool, err error) {
	cur, err := s.Stat(ctx, name)
	switch {
	case errors.Is(err, blob.ErrNotFound):
		if cond.IfMatch != "" {
			return false, fmt.Errorf("localdir: %w: %s is gone (wanted version %s)", blob.ErrConditionNotMet, name, cond.IfMatch)
		}
		return false, nil
	case err != nil:
		return false, err
	case cond.IfNoneMatch:
		return true, fmt.Errorf("localdir: %w: %s exists (version %s)", blob.ErrConditionNotMet, name, cur.ETag)
	case cond.IfMatch != "" && cur.ETag != cond.IfMatch:
		return true, fmt.Errorf("localdir: %w: %s is version %s, wanted %s", blob.ErrConditionNotMet, name, cur.ETag, cond.IfMatch)
	}
	return true, nil
}

// Commit implements blob.Writer: temporary file, fsync, conditional
// rename under the write lock, fsync of the directory. Parent directories
// are created as needed. The returned Info carries the ETag that Stat
// gives for the new version, and its metadata as Stat reads it back (nil
// where the filesystem has no user extended attributes).
func (s *Store) Commit(ctx context.Context, name string, r io.Reader, md map[string]string, cond blob.Condition) (blob.Info, error) {
	if err := blob.CheckName(name); err != nil {
		return blob.Info{}, err
	}
	if cond.IfMatch != "" && cond.IfNoneMatch {
		return blob.Info{}, fmt.Errorf("localdir: commit %s: IfMatch and IfNoneMatch together: %w", name, blob.ErrConditionNotMet)
	}
	root, err := s.writeRoot()
	if err != nil {
		return blob.Info{}, mapErr(err)
	}
	rel := filepath.FromSlash(name)
	dir := filepath.Dir(rel)
	tmp, tmpName, err := createTemp(root, dir)
	if err != nil {
		return blob.Info{}, err
	}
	renamed := false
	defer func() {
		tmp.Close()
		if !renamed {
			root.Remove(tmpName)
		}
	}()
	// Held until the rename, so that CleanTemp (of this or another
	// process) leaves this file alone while it is being written.
	if err := unix.Flock(int(tmp.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return blob.Info{}, fmt.Errorf("localdir: commit %s: lock temporary file: %w", name, err)
	}
	if err := copyBody(ctx, tmp, r); err != nil {
		return blob.Info{}, fmt.Errorf("localdir: commit %s: %w", name, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return blob.Info{}, mapErr(err)
	}
	var stored map[string]string // what Stat reads back
	if len(md) > 0 {
		lower := make(map[string]string, len(md))
		for k, v := range md {
			lower[strings.ToLower(k)] = v
		}
		b, _ := json.Marshal(lower)
		if unix.Fsetxattr(int(tmp.Fd()), xattrName, b, 0) == nil { // as Upload: no user xattrs here, no metadata
			stored = lower
		}
	}
	if err := tmp.Sync(); err != nil {
		return blob.Info{}, fmt.Errorf("localdir: commit %s: fsync: %w", name, err)
	}
	if err := ctx.Err(); err != nil {
		return blob.Info{}, err
	}

	unlock, err := s.lock(root)
	if err != nil {
		return blob.Info{}, err
	}
	defer unlock()
	if _, err := s.checkCond(ctx, name, cond); err != nil {
		return blob.Info{}, err
	}
	if err := root.Rename(tmpName, rel); err != nil {
		return blob.Info{}, fmt.Errorf("localdir: commit %s: %w", name, mapErr(err))
	}
	renamed = true
	// rename(2) changes the inode's ctime, part of the ETag: stat after it.
	var st syscall.Stat_t
	if err := syscall.Fstat(int(tmp.Fd()), &st); err != nil {
		return blob.Info{}, mapErr(err)
	}
	if err := syncDir(root, dir); err != nil {
		return blob.Info{}, fmt.Errorf("localdir: commit %s: fsync directory: %w", name, err)
	}
	return blob.Info{
		Name: name, Size: st.Size, ETag: etagOf(&st), ModTime: time.Unix(st.Mtim.Unix()),
		Metadata: stored,
	}, nil
}

// writeRoot is the store's root as an os.Root for writes, opened once:
// names resolve beneath it, and escapes are refused.
func (s *Store) writeRoot() (*os.Root, error) {
	s.wrootOnce.Do(func() { s.wroot, s.wrootErr = os.OpenRoot(s.root) })
	return s.wroot, s.wrootErr
}

// copyBuffers recycles the buffers of commits whose body is a stream.
var copyBuffers = sync.Pool{New: func() any { return new([256 << 10]byte) }}

// copyBody writes r into f: an in-memory body in one write, a stream
// through a pooled buffer, checking ctx between reads.
func copyBody(ctx context.Context, f *os.File, r io.Reader) error {
	if br, ok := r.(*bytes.Reader); ok {
		if err := ctx.Err(); err != nil {
			return err
		}
		_, err := br.WriteTo(f)
		return err
	}
	buf := copyBuffers.Get().(*[256 << 10]byte)
	defer copyBuffers.Put(buf) // ciphertext only
	_, err := io.CopyBuffer(struct{ io.Writer }{f}, ctxReader{ctx, r}, buf[:])
	return err
}

// createTemp creates a new temporary file in dir (creating dir first),
// beneath root. A concurrent Remove may prune dir between the two steps:
// it is created again.
func createTemp(root *os.Root, dir string) (*os.File, string, error) {
	for tries := 0; ; tries++ {
		if tries > 0 { // the directory first: it usually exists
			if err := root.MkdirAll(dir, 0o755); err != nil {
				return nil, "", mapErr(err)
			}
		}
		var rnd [8]byte
		rand.Read(rnd[:])
		tmpName := filepath.Join(dir, tmpPrefix+hex.EncodeToString(rnd[:]))
		f, err := root.OpenFile(tmpName, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrNotExist) && tries < 8 {
			continue
		}
		if err != nil {
			return nil, "", mapErr(err)
		}
		return f, tmpName, nil
	}
}

// syncDir fsyncs directory dir beneath root, making a rename or removal
// in it durable.
func syncDir(root *os.Root, dir string) error {
	d, err := root.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Remove implements blob.Writer: the condition is checked and the file
// removed under the write lock; parent directories left empty are removed
// too (the namespace is flat: a directory exists while an object is under
// it).
func (s *Store) Remove(ctx context.Context, name string, cond blob.Condition) error {
	if err := blob.CheckName(name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	root, err := s.writeRoot()
	if err != nil {
		return mapErr(err)
	}
	unlock, err := s.lock(root)
	if err != nil {
		return err
	}
	defer unlock()
	exists, err := s.checkCond(ctx, name, cond)
	if err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("localdir: remove: %w: %s", blob.ErrNotFound, name)
	}
	rel := filepath.FromSlash(name)
	if err := root.Remove(rel); err != nil {
		return fmt.Errorf("localdir: remove %s: %w", name, mapErr(err))
	}
	dir := filepath.Dir(rel)
	if err := syncDir(root, dir); err != nil {
		return fmt.Errorf("localdir: remove %s: fsync directory: %w", name, err)
	}
	// Prune parents left empty (rmdir fails on a non-empty one).
	for d := path.Dir(name); d != "."; d = path.Dir(d) {
		if root.Remove(filepath.FromSlash(d)) != nil {
			break
		}
	}
	return nil
}

// CleanTemp removes the temporary files that commits and uploads
// interrupted by a crash left behind, anywhere beneath the root, if they
// were last modified more than olderThan ago. A temporary file that a
// running commit (of any process on this host) is writing is locked and
// skipped whatever its age; olderThan guards the moment between its
// creation and its lock, and writers on other hosts of a network
// filesystem, where flock may not reach. Symbolic links are not followed.
// It returns how many files it removed.
func (s *Store) CleanTemp(ctx context.Context, olderThan time.Duration) (removed int, err error) {
	root, err := os.OpenRoot(s.root)
	if err != nil {
		return 0, mapErr(err)
	}
	defer root.Close()
	cutoff := time.Now().Add(-olderThan)
	err = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed during the walk
			}
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if d.IsDir() || !d.Type().IsRegular() || !strings.HasPrefix(d.Name(), tmpPrefix) || (p == lockName) {
			return nil
		}
		fi, err := d.Info()
		if err != nil || fi.ModTime().After(cutoff) {
			return nil
		}
		f, err := root.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
		if err != nil {
			return nil
		}
		defer f.Close()
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
			return nil // a commit in progress
		}
		if err := root.Remove(p); err == nil {
			removed++
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	})
	return removed, mapErr(err)
}
