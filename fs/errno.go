package fs

import (
	"context"
	"errors"
	"syscall"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/keyrelease"
)

// errObjectKeyNotAllowed: an object's header names a key that the dataset
// may not use.
var errObjectKeyNotAllowed = errors.New("object names a key that is not configured for this dataset")

// fail maps err for operation op and tells the observer.
func (r *Root) fail(op string, err error) syscall.Errno {
	errno := toErrno(err)
	if errno != 0 && r.opts.Observer != nil {
		r.opts.Observer.Failed(op, errno)
	}
	return errno
}

// toErrno is the one place where errors become errno values (go-fuse turns
// anything that is not a syscall.Errno into ENOSYS).
func toErrno(err error) syscall.Errno {
	var errno syscall.Errno
	switch {
	case err == nil:
		return 0
	case errors.As(err, &errno):
		return errno
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	case errors.Is(err, ErrManifestMissing), errors.Is(err, ErrManifestUnavailable):
		// A listed object that storage lacks, or a dataset without a
		// verified manifest: damage or attack, not absence.
		return syscall.EIO
	case errors.Is(err, blob.ErrNotFound), errors.Is(err, blob.ErrInvalidName):
		return syscall.ENOENT
	case errors.Is(err, keyrelease.ErrDenied), errors.Is(err, keyrelease.ErrNotAllowed),
		errors.Is(err, keyrelease.ErrAttestation), errors.Is(err, errObjectKeyNotAllowed),
		errors.Is(err, blob.ErrPermission):
		return syscall.EACCES
	case errors.Is(err, keyrelease.ErrNotFound):
		return syscall.ENOKEY
	case errors.Is(err, keyrelease.ErrNoPublicKey):
		return syscall.EINVAL
	case errors.Is(err, blob.ErrChanged):
		return syscall.ESTALE
	}
	// Tampered or corrupt data (crypto.ErrUnauthenticated, crypto.ErrFormat),
	// services unavailable after retries (keyrelease.ErrUnavailable,
	// context.DeadlineExceeded), and anything unexpected: EIO, never
	// wrong bytes.
	return syscall.EIO
}
