package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/skrfs/skrfs/deliver"
	"github.com/skrfs/skrfs/internal/config"
)

// noFuseFlags are `skrfs run --no-fuse [--dir DIR] [--exec]`.
type noFuseFlags struct {
	deliveryFlags
	enabled bool
	dir     string
	exec    bool
}

func (f *noFuseFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.enabled, "no-fuse", false, "deliver the files into a memory-backed directory instead of mounting (SGX, no /dev/fuse)")
	cmd.Flags().StringVar(&f.dir, "dir", "", "with --no-fuse: the delivery directory, empty or absent (default: delivery.dir, else a new directory under /dev/shm)")
	cmd.Flags().BoolVar(&f.exec, "exec", false, "with --no-fuse: replace skrfs with CMD (execve) instead of running it as a child (Gramine: same enclave)")
	f.deliveryFlags.register(cmd)
}

// signals that end a --no-fuse run: forwarded to the child, then DIR is wiped.
var endSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP}

// runNoFuse delivers into DIR, then runs CMD as a child and wipes DIR when
// it ends, or execs CMD.
func runNoFuse(ctx context.Context, cfg *config.Config, args []string, f noFuseFlags) error {
	dir, created, err := noFuseDir(cfg, f.dir)
	if err != nil {
		return err
	}
	// Signals are caught from here on: one during delivery cancels it
	// (the failed fetch wipes what it wrote); one while CMD runs is
	// forwarded, and DIR is wiped when CMD is gone.
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, endSignals...)
	defer signal.Stop(sig)
	fctx, cancel := context.WithCancel(ctx)
	var got os.Signal
	fetched, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case got = <-sig:
			cancel()
		case <-fetched:
		}
	}()
	st, err := fetchInto(fctx, cfg, dir, f.deliveryFlags)
	close(fetched)
	<-watched
	cancel()
	if err != nil {
		if created {
			os.Remove(dir)
		}
		if got != nil {
			log.Info().Str("signal", got.String()).Msg("delivery interrupted")
			return exitError{128 + int(got.(syscall.Signal))}
		}
		return err
	}
	log.Info().Str("dir", dir).Int("files", st.Files).Int64("bytes", st.Bytes).Msg("delivered")
	wipe := func() {
		if err := deliver.Wipe(dir, created); err != nil {
			log.Error().Err(err).Str("dir", dir).Msg("wiping the delivered files failed")
		} else {
			log.Info().Str("dir", dir).Msg("delivered files wiped")
		}
	}
	env := append(os.Environ(), "SKRFS_DIR="+dir, "SKRFS_MOUNTPOINT="+dir)
	if f.exec {
		path, err := exec.LookPath(args[0])
		if err != nil {
			wipe()
			return err
		}
		if !inEnclave() {
			log.Warn().Str("dir", dir).Msg("--exec: nothing will wipe the delivered files when CMD exits; they last as long as DIR's tmpfs")
		}
		signal.Stop(sig)
		err = syscall.Exec(path, args, env)
		wipe() // only reached when execve failed
		return fmt.Errorf("exec %s: %w", path, err)
	}
	child := exec.Command(args[0], args[1:]...)
	child.Stdin, child.Stdout, child.Stderr = os.Stdin, os.Stdout, os.Stderr
	child.Env = env
	if err := child.Start(); err != nil {
		wipe()
		return err
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sig:
				log.Info().Str("signal", s.String()).Msg("forwarding to the program; the files are wiped when it exits")
				child.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err = child.Wait()
	close(done)
	wipe()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code := ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		return exitError{code}
	}
	return err
}

// noFuseDir picks the delivery directory: --dir, delivery.dir, inside an
// enclave delivery.enclave_dir, else a new directory under /dev/shm.
// created says whether the directory itself goes away with the files.
func noFuseDir(cfg *config.Config, flagDir string) (dir string, created bool, err error) {
	dir = flagDir
	if dir == "" {
		dir = cfg.Delivery.Dir
	}
	if dir == "" && inEnclave() {
		dir = cfg.Delivery.EnclaveDir
	}
	if dir == "" {
		d, err := os.MkdirTemp("/dev/shm", "skrfs-")
		if err != nil {
			return "", false, fmt.Errorf("no delivery directory given and /dev/shm is unusable (%v): use --dir", err)
		}
		return d, true, nil
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return "", false, err
	}
	_, err = os.Lstat(dir)
	return dir, errors.Is(err, os.ErrNotExist), nil
}
