// Package harden applies the process protections skrfs relies on to keep
// keys and plaintext in memory only: no core dumps, no ptrace attach by
// other processes of the same user, and locked memory where permitted.
package harden

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Report says which protections took effect.
type Report struct {
	NoCoreDumps bool // RLIMIT_CORE = 0
	NotDumpable bool // PR_SET_DUMPABLE = 0 (no core, no ptrace by peers, /proc/pid/mem closed)
	MemLocked   bool // mlockall(MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT): nothing is swapped
	Errs        []error
}

// Apply turns on every protection it can and reports the rest.
func Apply() Report {
	var r Report
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0}); err != nil {
		r.Errs = append(r.Errs, fmt.Errorf("RLIMIT_CORE: %w", err))
	} else {
		r.NoCoreDumps = true
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		r.Errs = append(r.Errs, fmt.Errorf("PR_SET_DUMPABLE: %w", err))
	} else {
		r.NotDumpable = true
	}
	// MCL_ONFAULT locks pages as they are touched, so the Go runtime's large
	// address-space reservations do not become resident.
	if err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE | unix.MCL_ONFAULT); err != nil {
		r.Errs = append(r.Errs, fmt.Errorf("mlockall: %w (memory may be swapped)", err))
	} else {
		r.MemLocked = true
	}
	return r
}

// Err joins the failures of a report.
func (r Report) Err() error { return errors.Join(r.Errs...) }
