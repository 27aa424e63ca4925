// Package memblob is an in-memory blob.Store for tests: every object lives
// in a map, and every Put creates a new version with a new ETag.
package memblob

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/skrfs/skrfs/blob"
)

// Store is an in-memory blob.Store. The zero value is not usable; call New.
type Store struct {
	mu      sync.RWMutex
	objs    map[string]object
	version uint64
	// Reads counts ReadAt calls and BytesRead the bytes they returned, so
	// tests can measure read amplification.
	reads, bytesRead int64
}

type object struct {
	data    []byte
	etag    string
	modTime time.Time
	md      map[string]string
}

var _ blob.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store { return &Store{objs: map[string]object{}} }

// Put creates or replaces name with a copy of data.
func (s *Store) Put(name string, data []byte) error { return s.PutMetadata(name, data, nil) }

// PutMetadata is Put with user metadata.
func (s *Store) PutMetadata(name string, data []byte, md map[string]string) error {
	if err := blob.CheckName(name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.version++
	s.objs[name] = object{
		data:    append([]byte(nil), data...),
		etag:    `"` + strconv.FormatUint(s.version, 16) + `"`,
		modTime: time.Now(),
		md:      md,
	}
	return nil
}

// Delete removes name.
func (s *Store) Delete(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.objs[name]; !ok {
		return fmt.Errorf("%w: %s", blob.ErrNotFound, name)
	}
	delete(s.objs, name)
	return nil
}

var _ blob.Writer = (*Store)(nil)

// check reports whether cond holds for the current object (locked).
func (s *Store) checkLocked(name string, cond blob.Condition) error {
	cur, exists := s.objs[name]
	switch {
	case cond.IfNoneMatch && exists:
		return fmt.Errorf("%w: %s exists (version %s)", blob.ErrConditionNotMet, name, cur.etag)
	case cond.IfMatch != "" && !exists:
		return fmt.Errorf("%w: %s is gone (wanted version %s)", blob.ErrConditionNotMet, name, cond.IfMatch)
	case cond.IfMatch != "" && cur.etag != cond.IfMatch:
		return fmt.Errorf("%w: %s is version %s, wanted %s", blob.ErrConditionNotMet, name, cur.etag, cond.IfMatch)
	}
	return nil
}

// Commit implements blob.Writer: the whole of r becomes the new version
// at once, if cond holds.
func (s *Store) Commit(ctx context.Context, name string, r io.Reader, md map[string]string, cond blob.Condition) (blob.Info, error) {
	if err := blob.CheckName(name); err != nil {
		return blob.Info{}, err
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return blob.Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return blob.Info{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkLocked(name, cond); err != nil {
		return blob.Info{}, err
	}
	s.version++
	o := object{data: data, etag: `"` + strconv.FormatUint(s.version, 16) + `"`, modTime: time.Now(), md: md}
	s.objs[name] = o
	return blob.Info{Name: name, Size: int64(len(data)), ETag: o.etag, ModTime: o.modTime}, nil
}

// Remove implements blob.Writer.
func (s *Store) Remove(ctx context.Context, name string, cond blob.Condition) error {
	if err := blob.CheckName(name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkLocked(name, cond); err != nil {
		return err
	}
	if _, ok := s.objs[name]; !ok {
		return fmt.Errorf("%w: %s", blob.ErrNotFound, name)
	}
	delete(s.objs, name)
	return nil
}

// Stats returns the number of ReadAt calls and the bytes they returned.
func (s *Store) Stats() (reads, bytes int64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.reads, s.bytesRead
}

func (o object) info(name string, withMD bool) blob.Info {
	i := blob.Info{Name: name, Size: int64(len(o.data)), ETag: o.etag, ModTime: o.modTime}
	if withMD {
		i.Metadata = o.md
	}
	return i
}

// Stat implements blob.Store.
func (s *Store) Stat(ctx context.Context, name string) (blob.Info, error) {
	if err := ctx.Err(); err != nil {
		return blob.Info{}, err
	}
	if err := blob.CheckName(name); err != nil {
		return blob.Info{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	o, ok := s.objs[name]
	if !ok {
		return blob.Info{}, fmt.Errorf("%w: %s", blob.ErrNotFound, name)
	}
	return o.info(name, true), nil
}

// ReadAt implements blob.Store.
func (s *Store) ReadAt(ctx context.Context, ref blob.Ref, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objs[ref.Name]
	switch {
	case !ok:
		return 0, fmt.Errorf("%w: %s", blob.ErrNotFound, ref.Name)
	case o.etag != ref.ETag:
		return 0, fmt.Errorf("%w: %s", blob.ErrChanged, ref.Name)
	case off < 0 || off > int64(len(o.data)):
		return 0, fmt.Errorf("%w: offset %d, size %d", blob.ErrOutOfRange, off, len(o.data))
	}
	n := copy(p, o.data[off:])
	s.reads++
	s.bytesRead += int64(n)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// OpenRange implements blob.RangeOpener. Object data is never modified in
// place (Put replaces it), so the reader needs no lock.
func (s *Store) OpenRange(ctx context.Context, ref blob.Ref, off, n int64) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objs[ref.Name]
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: %s", blob.ErrNotFound, ref.Name)
	case o.etag != ref.ETag:
		return nil, fmt.Errorf("%w: %s", blob.ErrChanged, ref.Name)
	case off < 0 || n < 0 || off > int64(len(o.data)):
		return nil, fmt.Errorf("%w: offset %d, length %d, size %d", blob.ErrOutOfRange, off, n, len(o.data))
	}
	data := o.data[off:min(int64(len(o.data)), off+n)]
	s.reads++
	s.bytesRead += int64(len(data))
	return io.NopCloser(bytes.NewReader(data)), nil
}

// List implements blob.Store.
func (s *Store) List(ctx context.Context, opts blob.ListOptions, fn func(blob.Info) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	var infos []blob.Info
	seen := map[string]bool{}
	for name, o := range s.objs {
		if !strings.HasPrefix(name, opts.Prefix) {
			continue
		}
		if opts.Delimiter != "" {
			rest := name[len(opts.Prefix):]
			if i := strings.Index(rest, opts.Delimiter); i >= 0 {
				p := opts.Prefix + rest[:i+len(opts.Delimiter)]
				if !seen[p] {
					seen[p] = true
					infos = append(infos, blob.Info{Name: p, IsPrefix: true})
				}
				continue
			}
		}
		infos = append(infos, o.info(name, opts.WithMetadata))
	}
	s.mu.RUnlock()
	sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
	for _, i := range infos {
		if err := fn(i); err != nil {
			return err
		}
	}
	return nil
}
