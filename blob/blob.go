// Package blob defines the ranged object store that skrfs reads encrypted
// objects from, its sentinel errors, and small helpers shared by every
// implementation (local directory, in-memory, Azure Blob Storage).
//
// A Store is read-only from skrfs's point of view: the filesystem stats an
// object once, pins the version it saw (the ETag), and then reads ranges of
// exactly that version. A store must never return a mix of two versions: a
// read of a version that is no longer current fails with ErrChanged.
package blob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Sentinel errors. Implementations wrap them with %w so that callers can
// classify failures with errors.Is; the filesystem maps them to errno in one
// place (fs/errno.go).
var (
	// ErrNotFound: the object or container does not exist.
	ErrNotFound = errors.New("blob: not found")
	// ErrChanged: the object was replaced or modified since it was stat'ed
	// (its ETag no longer matches the pinned Ref).
	ErrChanged = errors.New("blob: changed since stat")
	// ErrPermission: the store refused access (HTTP 401/403, EACCES).
	ErrPermission = errors.New("blob: permission denied")
	// ErrOutOfRange: a read started beyond the end of the object.
	ErrOutOfRange = errors.New("blob: offset out of range")
	// ErrInvalidName: a name that the store cannot address (empty, absolute,
	// containing "..", NUL, or a backslash).
	ErrInvalidName = errors.New("blob: invalid object name")
	// ErrConditionNotMet: a conditional Commit or Remove found another
	// version than the one it was conditioned on, or an object where none
	// was expected: another writer got there first. Nothing was changed.
	ErrConditionNotMet = errors.New("blob: condition not met (the object was changed by another writer)")
)

// Condition makes a Commit or Remove conditional on the object's current
// version, so that two writers never silently overwrite each other. The
// zero value is unconditional.
type Condition struct {
	// IfMatch, when non-empty, lets the operation proceed only if the
	// object exists and its current version has this ETag (Azure:
	// If-Match).
	IfMatch string
	// IfNoneMatch lets the operation proceed only if no object exists under
	// the name (Azure: If-None-Match: *).
	IfNoneMatch bool
}

// Writer is implemented by stores that a read-write dataset writes
// through. Commits are atomic: a reader sees the old version or the new
// one, never a partial object, and a crash at any moment (of the writer or
// of the store's host) leaves one of the two.
type Writer interface {
	// Commit stores the bytes of r as object name, with user metadata md,
	// if cond holds when the new version becomes visible, and returns the
	// new version (Name, Size, ETag; Metadata may be nil). A failed
	// condition gives ErrConditionNotMet and leaves the object as it was.
	Commit(ctx context.Context, name string, r io.Reader, md map[string]string, cond Condition) (Info, error)
	// Remove deletes object name if cond holds. A missing object gives
	// ErrNotFound (ErrConditionNotMet when cond.IfMatch is set).
	Remove(ctx context.Context, name string, cond Condition) error
}

// Info describes one object, or, in a hierarchical listing, one common prefix
// (a virtual directory).
type Info struct {
	// Name is the full object name within the store, '/'-separated, never
	// starting with '/'. For a prefix it ends with the delimiter.
	Name string
	// Size is the object's size in bytes (0 for a prefix).
	Size int64
	// ETag identifies this version of the object. It is opaque; two versions
	// of one object never share an ETag.
	ETag string
	// ModTime is the last modification time (zero if unknown).
	ModTime time.Time
	// Metadata holds user metadata when the store has it. Keys are compared
	// case-insensitively (Azure canonicalises them); use MetadataValue.
	// Nil when the store has none or the listing did not ask for it.
	Metadata map[string]string
	// IsPrefix is true for a common prefix returned by a hierarchical listing.
	IsPrefix bool
}

// Ref pins one version of one object.
type Ref struct {
	Name string
	ETag string
}

// Ref returns the reference that pins the version described by i.
func (i Info) Ref() Ref { return Ref{Name: i.Name, ETag: i.ETag} }

// ListOptions select what List returns.
type ListOptions struct {
	// Prefix restricts the listing to names that start with it ("" = all).
	Prefix string
	// Delimiter, when non-empty (normally "/"), makes the listing
	// hierarchical: names that contain the delimiter after the prefix are
	// rolled up into one Info with IsPrefix set, as Azure's List Blobs does.
	Delimiter string
	// WithMetadata asks for user metadata in the returned Infos.
	WithMetadata bool
}

// Store is a read-only object store with version-pinned ranged reads.
//
// Every implementation passes the conformance suite in blob/blobtest.
type Store interface {
	// Stat returns the current size and version of the object name.
	// A missing object gives an error wrapping ErrNotFound.
	Stat(ctx context.Context, name string) (Info, error)

	// ReadAt reads len(p) bytes at offset off of the version pinned by ref,
	// with the io.ReaderAt contract: it returns n < len(p) only together
	// with a non-nil error, which is io.EOF when the object ends before
	// off+len(p). An offset beyond the end gives ErrOutOfRange (an offset
	// equal to the size gives 0, io.EOF). If the object is no longer the
	// pinned version the error wraps ErrChanged and no bytes are returned.
	ReadAt(ctx context.Context, ref Ref, p []byte, off int64) (int, error)

	// List calls fn for every object (and, with a delimiter, every common
	// prefix) that matches opts, in lexical order of Name. An error from fn
	// stops the listing and is returned.
	List(ctx context.Context, opts ListOptions, fn func(Info) error) error
}

// MetadataValue returns the value of the metadata key k, compared
// case-insensitively, and whether it was present.
func MetadataValue(md map[string]string, k string) (string, bool) {
	if v, ok := md[k]; ok {
		return v, true
	}
	for mk, v := range md {
		if strings.EqualFold(mk, k) {
			return v, true
		}
	}
	return "", false
}

// CheckName validates an object name: non-empty, relative, '/'-separated,
// without empty, "." or ".." segments, NUL or backslash. Every store rejects
// such names with ErrInvalidName so that no name can escape a store's root.
func CheckName(name string) error {
	if name == "" || strings.HasPrefix(name, "/") || strings.ContainsAny(name, "\\\x00") {
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: %q", ErrInvalidName, name)
		}
	}
	return nil
}

// ReaderAt adapts a store and a pinned ref to io.ReaderAt for one request.
// The returned value captures ctx, so it must not outlive the request that
// created it.
func ReaderAt(ctx context.Context, s Store, ref Ref) io.ReaderAt {
	return readerAt{ctx: ctx, s: s, ref: ref}
}

type readerAt struct {
	ctx context.Context
	s   Store
	ref Ref
}

func (r readerAt) ReadAt(p []byte, off int64) (int, error) {
	return r.s.ReadAt(r.ctx, r.ref, p, off)
}

// RangeOpener is implemented by stores that can stream a byte range: one
// request whose bytes a caller processes as they arrive, in buffers of its
// choosing, instead of waiting for the whole range in one buffer.
type RangeOpener interface {
	// OpenRange returns a reader of the bytes [off, off+n) of the pinned
	// version ref, cut short only by the end of the object (the reader then
	// ends early with io.EOF). Errors are those of ReadAt, from OpenRange or
	// from Read: ErrChanged, ErrNotFound, ErrOutOfRange, and
	// io.ErrUnexpectedEOF for a body that breaks off.
	OpenRange(ctx context.Context, ref Ref, off, n int64) (io.ReadCloser, error)
}

// OpenRange streams [off, off+n) of ref from s: through s's own
// RangeOpener when it has one, else with one ReadAt of the whole range.
func OpenRange(ctx context.Context, s Store, ref Ref, off, n int64) (io.ReadCloser, error) {
	if ro, ok := s.(RangeOpener); ok {
		return ro.OpenRange(ctx, ref, off, n)
	}
	if n < 0 {
		return nil, fmt.Errorf("%w: negative length %d", ErrOutOfRange, n)
	}
	buf := make([]byte, n)
	k, err := s.ReadAt(ctx, ref, buf, off)
	if err != nil && err != io.EOF {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(buf[:k])), nil
}

// HeadReader is implemented by stores that can find an object's current
// version and read its first bytes in one step: one ranged Get Blob on
// Azure instead of Get Blob Properties and a Get Blob, one open(2) locally
// instead of a stat and an open. The filesystem opens every object this
// way.
type HeadReader interface {
	// ReadHead returns the current version of name (as Stat does, except
	// that Info.Metadata may be nil) and reads its first len(p) bytes,
	// from that version only. n < len(p) only when the object is shorter
	// (n == Info.Size). A missing object gives ErrNotFound.
	ReadHead(ctx context.Context, name string, p []byte) (info Info, n int, err error)
}

// ReadHead reads the current version's first len(p) bytes of name from s:
// through s's own HeadReader when it has one, else with Stat and ReadAt.
func ReadHead(ctx context.Context, s Store, name string, p []byte) (Info, int, error) {
	if hr, ok := s.(HeadReader); ok {
		return hr.ReadHead(ctx, name, p)
	}
	info, err := s.Stat(ctx, name)
	if err != nil {
		return Info{}, 0, err
	}
	return ReadHeadOf(ctx, s, info, p)
}

// ReadHeadOf reads the first len(p) bytes (fewer if the object is shorter)
// of the version info describes, with ReadAt: the second half of ReadHead,
// for a store that knows the version already.
func ReadHeadOf(ctx context.Context, s Store, info Info, p []byte) (Info, int, error) {
	p = p[:min(int64(len(p)), info.Size)]
	n, err := s.ReadAt(ctx, info.Ref(), p, 0)
	if err != nil && !(err == io.EOF && n == len(p)) {
		return Info{}, 0, err
	}
	return info, n, nil
}
