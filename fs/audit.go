package fs

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/skrfs/skrfs/keyrelease"
)

// Audit event names (the "event" field).
const (
	auditKeyOpen    = "key_open"
	auditObjectOpen = "object_open"
	auditManifest   = "manifest_load"
	// Writes (docs/writes.md): every commit, unlink and rename.
	auditObjectCommit = "object_commit"
	auditObjectUnlink = "object_unlink"
	auditObjectRename = "object_rename"
)

// audit writes one audit event: who (the caller's uid, gid and pid, as the
// kernel reports them) opened what (path relative to the mount), which key
// it needed (identifier and version; never its material), and the outcome
// ("allowed", or "denied" with the errno and the reason).
func (r *Root) audit(ctx context.Context, event, path string, ref keyrelease.KeyRef, err error) {
	e := r.opts.Audit.Info()
	if e == nil { // audit disabled
		return
	}
	e.Str("event", event).Str("path", path)
	if c, ok := fuse.FromContext(ctx); ok {
		// The kernel names the calling thread; the process is its
		// thread group.
		e.Uint32("uid", c.Uid).Uint32("gid", c.Gid).Int("pid", tgid(c.Pid)).Uint32("tid", c.Pid)
	}
	if ref.Vault != "" {
		v := ref
		v.Version = ""
		e.Str("key", v.String()).Str("key_version", ref.Version)
	}
	if err == nil {
		e.Str("outcome", "allowed").Msg("audit")
		return
	}
	errno := toErrno(err)
	e.Str("outcome", "denied").Str("errno", errnoName(errno)).Str("reason", err.Error()).Msg("audit")
}

// tgid returns the process (thread group) of a thread, from
// /proc/TID/status; the thread id itself when that cannot be read (the
// thread has exited, or /proc is another namespace's). Answers are kept for
// a second: the kernel formats the whole status file on every read, which
// cost more than the rest of a small file's open, and one reader's opens
// come from the same few threads. A thread id is reused only after the
// kernel has cycled through pid_max ids, not within a second.
func tgid(tid uint32) int {
	now := time.Now()
	tgids.mu.Lock()
	if e, ok := tgids.m[tid]; ok && now.Sub(e.at) < tgidTTL {
		tgids.mu.Unlock()
		return e.tgid
	}
	tgids.mu.Unlock()
	n := readTgid(tid)
	tgids.mu.Lock()
	defer tgids.mu.Unlock()
	if tgids.m == nil || len(tgids.m) >= 4096 {
		tgids.m = map[uint32]tgidEntry{}
	}
	tgids.m[tid] = tgidEntry{n, now}
	return n
}

const tgidTTL = time.Second

type tgidEntry struct {
	tgid int
	at   time.Time
}

var tgids struct {
	mu sync.Mutex
	m  map[uint32]tgidEntry
}

func readTgid(tid uint32) int {
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(tid), 10) + "/status")
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
				if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
					return n
				}
			}
		}
	}
	return int(tid)
}

// errnoName returns the symbolic name of an errno, e.g. "EACCES".
func errnoName(errno syscall.Errno) string {
	if n := unix.ErrnoName(errno); n != "" {
		return n
	}
	return errno.Error()
}

// auditManifest writes one event per manifest load: the dataset's manifest
// path, its epoch and signer, and the outcome.
func (r *Root) auditManifest(path string, epoch uint64, signer string, err error) {
	e := r.opts.Audit.Info()
	if e == nil {
		return
	}
	e.Str("event", auditManifest).Str("path", path).Uint64("epoch", epoch)
	if signer != "" {
		e.Str("signer", signer)
	}
	if err == nil {
		e.Str("outcome", "allowed").Msg("audit")
		return
	}
	e.Str("outcome", "denied").Str("reason", err.Error()).Msg("audit")
}
