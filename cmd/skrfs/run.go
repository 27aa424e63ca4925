package main

import (
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"
)

// exitError carries a child's exit status through cobra to main.
type exitError struct{ code int }

func (e exitError) Error() string { return "command exited with status " + strconv.Itoa(e.code) }

func newRunCmd() *cobra.Command {
	var cfgFile, mountpoint string
	var nf noFuseFlags
	cmd := &cobra.Command{
		Use:   "run --config FILE [--mountpoint DIR | --no-fuse [--dir DIR] [--exec]] -- CMD ARGS...",
		Short: "Mount privately, run CMD with the files, exit with its status",
		Long: `Mount skrfs, run CMD, and exit with CMD's exit status; the mount goes away
with CMD. The mount lives in a private mount namespace of CMD (as root): no
other process on the host or in the pod sees the files. CMD finds the mount
point in $SKRFS_MOUNTPOINT (default: a new directory under $TMPDIR, or
--mountpoint). Signals SIGTERM and SIGINT are forwarded to CMD.

--no-fuse delivers the files instead (as 'skrfs fetch' does) into a
memory-backed DIR (--dir, delivery.dir, or a new directory under /dev/shm),
runs CMD as a child with $SKRFS_DIR (and $SKRFS_MOUNTPOINT) set to DIR, and
when CMD exits, or skrfs gets SIGTERM, SIGINT or SIGHUP (forwarded to CMD
first), overwrites and removes every delivered file. With --exec, skrfs
replaces itself with CMD (execve) once the files are delivered: under Gramine
CMD then runs in the same enclave and reads the in-enclave tmpfs, which dies
with the enclave; nothing is left to wipe it, so outside an enclave the files
stay until DIR's tmpfs goes away.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cfgFile)
			if err != nil {
				return err
			}
			if nf.enabled {
				if mountpoint != "" {
					return usageError{errors.New("--mountpoint is for the mount; with --no-fuse use --dir")}
				}
				return runNoFuse(cmd.Context(), cfg, args, nf)
			}
			if nf.dir != "" || nf.exec || nf.allowDisk || nf.maxSize != "" {
				return usageError{errors.New("--dir, --exec, --allow-disk and --max-size need --no-fuse")}
			}
			dir := mountpoint
			if dir == "" {
				if dir, err = os.MkdirTemp("", "skrfs-run-"); err != nil {
					return err
				}
				defer os.Remove(dir)
			}
			m, err := startMount(cmd.Context(), cfg, dir, false)
			if err != nil {
				return err
			}
			defer m.stop()
			child := exec.Command(args[0], args[1:]...)
			child.Stdin, child.Stdout, child.Stderr = os.Stdin, os.Stdout, os.Stderr
			child.Env = append(os.Environ(), "SKRFS_MOUNTPOINT="+m.dir)
			private := os.Geteuid() == 0
			if private {
				// The child gets its own copy of the mount table (Go makes
				// it recursively private); detaching the mount here leaves
				// the child's copy as the only one.
				child.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
			}
			// Catch signals before the child exists, so none is lost.
			sig := make(chan os.Signal, 2)
			signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
			defer signal.Stop(sig)
			if err := child.Start(); err != nil {
				return err
			}
			if private {
				if err := syscall.Unmount(m.dir, syscall.MNT_DETACH); err != nil {
					log.Warn().Err(err).Msg("could not hide the mount from other processes")
				} else {
					m.detached = true
				}
			} else {
				log.Warn().Msg("not root: the mount is visible to other processes of this user while CMD runs")
			}
			go func() {
				for s := range sig {
					child.Process.Signal(s)
				}
			}()
			err = child.Wait()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code := ee.ExitCode()
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					code = 128 + int(ws.Signal())
				}
				return exitError{code}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&cfgFile, "config", "", "configuration file (docs/config.md)")
	cmd.Flags().StringVar(&mountpoint, "mountpoint", "", "where to mount (default: a new temporary directory)")
	nf.register(cmd)
	return cmd
}
