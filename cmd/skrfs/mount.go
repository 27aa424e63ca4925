package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/skrfs/skrfs/fs"
	"github.com/skrfs/skrfs/internal/config"
)

func newMountCmd() *cobra.Command {
	var cfgFile, readyFile, serveAddr, metricsAddr string
	var debug, mkdir bool
	cmd := &cobra.Command{
		Use:   "mount --config FILE MOUNTPOINT",
		Short: "Mount the filesystem: keys/ and the configured datasets",
		Long: `Mount skrfs at MOUNTPOINT and serve until SIGTERM or SIGINT (or until it is
unmounted). Listing and stat never attest; the first open of a key file, or
of an object whose key is not cached, attests and releases the key.

When mounted, skrfs logs "mounted" and, with --ready-file, creates that file
(containing the mount point), so a sidecar's readiness probe or a script can
wait for it. On SIGTERM/SIGINT it unmounts (lazily if busy), wipes keys and
plaintext, and exits 0. A stale mount left by a crash is cleaned up first.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cfgFile)
			if err != nil {
				return err
			}
			if err := listenFlags(cfg, serveAddr, metricsAddr); err != nil {
				return err
			}
			if mkdir {
				if err := createMountpoint(args[0]); err != nil {
					return err
				}
			}
			m, err := startMount(cmd.Context(), cfg, args[0], debug)
			if err != nil {
				return err
			}
			// For profiling the read path (make bench, developers); %p in
			// the path is the process ID (the bench runs several daemons).
			if p := os.Getenv("SKRFS_CPUPROFILE"); p != "" {
				if f, err := os.Create(strings.ReplaceAll(p, "%p", strconv.Itoa(os.Getpid()))); err == nil {
					pprof.StartCPUProfile(f)
					defer func() { pprof.StopCPUProfile(); f.Close() }()
				}
			}
			// Signals are caught before readiness is announced: the default
			// actions of SIGTERM and SIGUSR1 would kill the daemon without
			// unmounting.
			sig := make(chan os.Signal, 2)
			signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
			defer signal.Stop(sig)
			defer logStatsOnSIGUSR1(m.root)()
			if readyFile != "" {
				if err := writeReadyFile(readyFile, []byte(m.dir+"\n")); err != nil {
					m.stop()
					return err
				}
				defer os.Remove(readyFile)
			}
			done := make(chan struct{})
			go func() { m.srv.Wait(); close(done) }()
			select {
			case s := <-sig:
				log.Info().Str("signal", s.String()).Msg("unmounting")
				m.stop()
			case <-done:
				log.Info().Msg("unmounted externally")
				m.stop()
			}
			if p := os.Getenv("SKRFS_HOLD_AT_EXIT"); p != "" {
				holdAtExit(p, sig)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgFile, "config", "", "configuration file (docs/config.md)")
	cmd.Flags().StringVar(&readyFile, "ready-file", "", "create this file once mounted; removed at exit")
	cmd.Flags().BoolVar(&debug, "fuse-debug", false, "log every FUSE request and reply to stderr (never their data: payloads show as their length)")
	cmd.Flags().BoolVar(&mkdir, "mkdir", false, "create MOUNTPOINT (mode 0755, with its parents) when it does not exist, e.g. a subdirectory of a volume shared with other containers")
	cmd.Flags().StringVar(&serveAddr, "serve", "", "also serve the SKR sidecar API on this address, sharing the key cache (default: serve.listen; docs/sidecar.md)")
	cmd.Flags().StringVar(&metricsAddr, "metrics-listen", "", "serve /metrics, /healthz and /readyz on this address (default: metrics.listen)")
	return cmd
}

// listenFlags applies --serve/--listen and --metrics-listen over the
// configuration, with the configuration's loopback rule.
func listenFlags(cfg *config.Config, apiAddr, metricsAddr string) error {
	for _, f := range []struct {
		flag, addr string
		dst        *string
	}{{"API address", apiAddr, &cfg.Serve.Listen}, {"--metrics-listen", metricsAddr, &cfg.Metrics.Listen}} {
		if f.addr == "" {
			continue
		}
		if err := config.CheckListen(f.addr, cfg.Serve.AllowRemote); err != nil {
			return usageError{fmt.Errorf("%s: %w", f.flag, err)}
		}
		*f.dst = f.addr
	}
	return nil
}

func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return nil, usageError{errors.New("--config is required")}
	}
	cfg, err := config.Load(path)
	if err != nil {
		if errors.Is(err, config.ErrInvalid) {
			return nil, usageError{err}
		}
		return nil, err
	}
	return cfg, nil
}

// mounted is a live mount and everything to tear down with it.
type mounted struct {
	dir     string
	srv     *fuse.Server
	root    *fs.Root
	cleanup func()
	stopped bool
	// detached: the mount was already removed from our namespace (run);
	// the kernel ends the FUSE session when the last user goes away.
	detached bool
}

// startMount hardens the process, builds the filesystem from cfg, cleans
// up a stale mount at dir, and mounts.
func startMount(ctx context.Context, cfg *config.Config, dir string, fuseDebug bool) (*mounted, error) {
	hardenProcess(true)
	// Memory is locked (so never swapped) and cannot be handed back to the
	// kernel: keep the heap close to the live data (chunk cache, reads in
	// flight) with a tighter GC and a soft limit.
	// GOGC and GOMEMLIMIT in the environment take precedence.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(96 << 20)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	cleanStaleMount(abs)
	ep, err := newEndpoints(cfg)
	if err != nil {
		return nil, err
	}
	root, rt, err := buildFilesystem(ctx, cfg, ep, cfg.Serve.Listen != "")
	if err != nil {
		ep.close()
		return nil, err
	}
	cleanup := func() { ep.close(); rt.close() }
	srv, err := fs.Mount(abs, root, fs.MountOptions{AllowOther: cfg.Mount.AllowOther, Debug: fuseDebug})
	if err != nil {
		cleanup()
		return nil, err
	}
	log.Info().Str("mountpoint", abs).Int("keys", len(cfg.Keys)).Int("datasets", len(cfg.Datasets)).Msg("mounted")
	// Manifests are re-read on their interval and on SIGHUP until unmount.
	mctx, mcancel := context.WithCancel(context.WithoutCancel(ctx))
	go root.RunManifestRefresh(mctx)
	stopHUP := reloadManifestsOnSIGHUP(mctx, root)
	cleanup = func() { mcancel(); stopHUP(); ep.close(); rt.close() }
	m := &mounted{dir: abs, srv: srv, root: root, cleanup: cleanup}
	ep.watch(root, rt)
	if err := ep.listen(cfg, rt, cfg.Serve.Listen, cfg.Metrics.Listen); err != nil {
		m.stop()
		return nil, err
	}
	return m, nil
}

// stop unmounts (lazily when busy), then wipes plaintext and keys.
func (m *mounted) stop() {
	if m.stopped {
		return
	}
	m.stopped = true
	if m.detached {
		// Our namespace has no mount left to unmount. Ending the session
		// from our side makes any remaining user see ENOTCONN, not stale
		// plaintext.
		_ = m.srv.Unmount()
	} else if err := m.srv.Unmount(); err != nil {
		log.Warn().Err(err).Msg("unmount failed; detaching lazily")
		if err := syscall.Unmount(m.dir, syscall.MNT_DETACH); err != nil {
			log.Error().Err(err).Msg("lazy unmount failed")
		}
	}
	logStats(log.Info(), m.root)
	m.root.Wipe()
	m.cleanup()
}

// logStatsOnSIGUSR1 logs the read counters whenever the daemon gets
// SIGUSR1 (whatever the log level, like dd's progress), until the returned
// function is called.
func logStatsOnSIGUSR1(root *fs.Root) (stop func()) {
	usr := make(chan os.Signal, 1)
	signal.Notify(usr, syscall.SIGUSR1)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-usr:
				logStats(log.Log(), root)
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(usr); close(done) }
}

func logStats(e *zerolog.Event, root *fs.Root) {
	s := root.Stats()
	e.Int64("fetches", s.Fetches).Int64("bytes_fetched", s.BytesFetched).Int64("reads", s.Reads).
		Int64("bytes_served", s.BytesServed).Int64("chunks_loaded", s.ChunksLoaded).
		Int64("chunk_hits", s.ChunkHits).Int64("chunk_misses", s.ChunkMisses).
		Float64("read_amplification", s.Amplification()).
		Int("goroutines", goruntime.NumGoroutine()).Msg("read counters")
}

// cleanStaleMount detaches a dead FUSE mount at dir: a FUSE mount whose
// daemon died answers every request with ENOTCONN. (Statfs always reaches
// the daemon; a stat of the root may be answered from cached attributes.)
func cleanStaleMount(dir string) {
	mounts, _ := os.ReadFile("/proc/self/mounts")
	isFUSE := false
	for _, line := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[1] == dir && strings.HasPrefix(f[2], "fuse") {
			isFUSE = true
		}
	}
	var st syscall.Statfs_t
	if !isFUSE || !errors.Is(syscall.Statfs(dir, &st), syscall.ENOTCONN) {
		return
	}
	if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
		log.Warn().Err(err).Str("mountpoint", dir).Msg("stale mount could not be removed")
		return
	}
	log.Info().Str("mountpoint", dir).Msg("removed a stale mount left by an earlier crash")
}

// holdAtExit is for the test that inspects the daemon's memory after an
// unmount (integration/wipe_test.go): with everything wiped and closed, it
// creates the file p and waits (at most a minute) for another SIGTERM or
// SIGINT before the process exits.
func holdAtExit(p string, sig <-chan os.Signal) {
	if err := os.WriteFile(p, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		log.Warn().Err(err).Msg("SKRFS_HOLD_AT_EXIT")
		return
	}
	select {
	case <-sig:
	case <-time.After(time.Minute):
	}
}

// reloadManifestsOnSIGHUP re-reads every dataset's manifest on SIGHUP; a
// refused manifest keeps the last good view (logged and audited by fs).
func reloadManifestsOnSIGHUP(ctx context.Context, root *fs.Root) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for {
			select {
			case <-hup:
				if err := root.ReloadManifests(ctx); err != nil {
					log.Warn().Err(err).Msg("SIGHUP: manifest reload refused; last good view kept")
				} else {
					log.Info().Msg("SIGHUP: manifests reloaded")
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() { signal.Stop(hup) }
}

// createMountpoint makes dir (and its parents) when nothing is there. An
// existing path is left alone: a directory is used as it is, anything else
// fails in the mount with its own message, and a dead mount left by a
// crash (ENOTCONN, not ENOENT) is cleaned up by startMount.
func createMountpoint(dir string) error {
	_, err := os.Lstat(dir)
	switch {
	case errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("--mkdir: %w", err)
	case !errors.Is(err, os.ErrNotExist):
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--mkdir: %w", err)
	}
	return nil
}
