package cache

import (
	"errors"

	"github.com/skrfs/skrfs/keyrelease"
)

// Class is how the cache treats a failed inner release.
type Class uint8

// Failure classes. Permanent classes are returned at once, never retried,
// and remembered for Options.NegativeTTL; ClassTransient is retried with
// backoff.
const (
	// ClassNone: no error.
	ClassNone Class = iota
	// ClassTransient: keyrelease.ErrUnavailable, context.DeadlineExceeded
	// or context.Canceled from the inner call (the cache's own context
	// decides whether to stop), and every error that wraps none of the
	// sentinels below: network and TLS errors an inner releaser did not
	// classify, or a release response that failed verification
	// (akv.ErrBadResponse), which a retry may cure.
	ClassTransient
	// ClassDenied: keyrelease.ErrDenied (release policy not satisfied,
	// 401/403).
	ClassDenied
	// ClassNotAllowed: keyrelease.ErrNotAllowed.
	ClassNotAllowed
	// ClassNotFound: keyrelease.ErrNotFound.
	ClassNotFound
	// ClassAttestation: keyrelease.ErrAttestation (evidence rejected or not
	// produced).
	ClassAttestation
	// ClassInvalid: keyrelease.ErrInvalidKeyRef or keyrelease.ErrKeyFormat:
	// a bad reference or key material that cannot be parsed; asking again
	// gives the same answer.
	ClassInvalid

	numClasses
)

var classNames = [numClasses]string{"none", "transient", "denied", "not_allowed", "not_found", "attestation", "invalid"}

// String returns a short name usable as a metric label.
func (c Class) String() string {
	if c < numClasses {
		return classNames[c]
	}
	return "unknown"
}

// Permanent reports whether failures of class c are not retried.
func (c Class) Permanent() bool { return c >= ClassDenied && c < numClasses }

// Classify returns the class of err. A permanent sentinel wins over
// keyrelease.ErrUnavailable when an error wraps both.
func Classify(err error) Class {
	switch {
	case err == nil:
		return ClassNone
	case errors.Is(err, keyrelease.ErrDenied):
		return ClassDenied
	case errors.Is(err, keyrelease.ErrNotAllowed):
		return ClassNotAllowed
	case errors.Is(err, keyrelease.ErrNotFound):
		return ClassNotFound
	case errors.Is(err, keyrelease.ErrAttestation):
		return ClassAttestation
	case errors.Is(err, keyrelease.ErrInvalidKeyRef), errors.Is(err, keyrelease.ErrKeyFormat):
		return ClassInvalid
	}
	return ClassTransient
}
