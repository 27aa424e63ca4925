package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/keyrelease"
)

// Exit codes, stable for scripts and systemd units.
const (
	exitOK = 0
	// exitFailure: any failure not listed below (I/O errors and the like).
	exitFailure = 1
	// exitUsage: bad command line or configuration.
	exitUsage = 2
	// exitFormat: the input is not a valid skrfs object.
	exitFormat = 10
	// exitAuth: an integrity check failed: tampered data, wrong key, or an
	// object sealed for another name.
	exitAuth = 11
	// exitKey: the key file could not be used (format, type, size).
	exitKey = 12
	// exitDenied: key release was denied.
	exitDenied = 20
	// exitAttestation: attestation failed.
	exitAttestation = 21
	// exitUnverified: `attest verify` without certificates: the evidence
	// parsed and its runtime-data binding holds, but nothing verified the
	// report's signature.
	exitUnverified = 22
)

// errAttestationFailed marks evidence that failed verification.
var errAttestationFailed = fmt.Errorf("%w: evidence rejected", keyrelease.ErrAttestation)

// usageError marks errors in how skrfs was invoked.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func isCobraUsage(err error) bool {
	s := err.Error()
	return strings.HasPrefix(s, "unknown command") || strings.HasPrefix(s, "unknown flag") ||
		strings.HasPrefix(s, "unknown shorthand flag") || strings.Contains(s, "flag needs an argument") ||
		strings.HasPrefix(s, "accepts ") || strings.HasPrefix(s, "requires ") || strings.Contains(s, "invalid argument")
}

func exitCode(err error) int {
	var ue usageError
	var ee exitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue), isCobraUsage(err):
		return exitUsage
	case errors.Is(err, crypto.ErrKeyType), errors.Is(err, keyrelease.ErrKeyFormat):
		return exitKey
	case errors.Is(err, crypto.ErrUnauthenticated):
		return exitAuth
	case errors.Is(err, crypto.ErrFormat):
		return exitFormat
	case errors.Is(err, keyrelease.ErrDenied):
		return exitDenied
	case errors.Is(err, keyrelease.ErrAttestation):
		return exitAttestation
	}
	return exitFailure
}
