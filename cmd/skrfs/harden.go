package main

import (
	"github.com/spf13/cobra"

	"github.com/skrfs/skrfs/internal/harden"
)

// annNoHarden marks a command that never holds keys, plaintext or tokens
// (it only reads public data), so it runs without the process protections.
// Every other command is hardened before it runs: new commands are covered
// by default.
const annNoHarden = "skrfs/no-harden"

// noHarden marks cmd as one that needs no hardening and returns it.
func noHarden(cmd *cobra.Command) *cobra.Command {
	if cmd.Annotations == nil {
		cmd.Annotations = map[string]string{}
	}
	cmd.Annotations[annNoHarden] = "true"
	return cmd
}

// hardened reports whether cmd runs with the process protections.
func hardened(cmd *cobra.Command) bool { return cmd.Annotations[annNoHarden] == "" }

// hardenProcess applies internal/harden: no core dumps, not dumpable (no
// ptrace by peers, /proc/PID/mem closed), memory locked. It is idempotent.
// Long-running daemons (mount, serve) warn about a protection that is
// unavailable; one-shot commands say so at info level, since a non-root
// user typically cannot lock memory and the keys live only for a moment.
func hardenProcess(daemon bool) {
	r := harden.Apply()
	if r.Err() == nil {
		return
	}
	ev := log.Info()
	if daemon {
		ev = log.Warn()
	}
	ev.Err(r.Err()).Bool("core_dumps_off", r.NoCoreDumps).Bool("not_dumpable", r.NotDumpable).
		Bool("memory_locked", r.MemLocked).Msg("some memory protections are unavailable")
}
