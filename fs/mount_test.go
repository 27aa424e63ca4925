package fs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
)

// TestMountFailuresLeaveNothingMounted: a mount that fails says why and
// what to do, and leaves no mount behind (issue: a regular file as the
// mountpoint gave "not a directory" and a dead mount answering ENOTCONN).
func TestMountFailuresLeaveNothingMounted(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	withSpace := filepath.Join(dir, "a file")
	os.WriteFile(withSpace, nil, 0o600)
	for _, tc := range []struct {
		mnt, hint string
	}{
		{file, HintNotDirectory},
		{withSpace, HintNotDirectory},
		{filepath.Join(dir, "missing"), HintNoMountpoint},
	} {
		srv, err := Mount(tc.mnt, w.root, MountOptions{})
		var me *MountError
		if srv != nil || !errors.As(err, &me) || me.Hint != tc.hint || !strings.Contains(err.Error(), tc.hint) {
			t.Fatalf("Mount(%s) = %v, %v; want a MountError with hint %q", tc.mnt, srv, err, tc.hint)
		}
		if n := fuseMountsAt(tc.mnt); n != 0 {
			t.Fatalf("Mount(%s) failed but left %d mounts", tc.mnt, n)
		}
	}
	// The kernel accepts a FUSE mount on a regular file and go-fuse then
	// fails: below the mountpoint check, that mount is detached again.
	for _, mnt := range []string{file, withSpace} {
		root, err := NewRoot(Options{Releaser: w.rel})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mountAndWait(mnt, root, fuseOptions(root, MountOptions{}, true)); err == nil {
			t.Fatalf("mount on the regular file %s succeeded", mnt)
		}
		if n := fuseMountsAt(mnt); n != 0 {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
			t.Fatalf("a failed mount left %d mounts on %s", n, mnt)
		}
		var st syscall.Statfs_t
		if err := syscall.Statfs(mnt, &st); err != nil {
			t.Fatalf("statfs %s after the failed mount: %v", mnt, err)
		}
	}
}

// TestMountErrorHints: each cause of a failed mount becomes a sentence
// that says what to do.
func TestMountErrorHints(t *testing.T) {
	for _, tc := range []struct {
		name        string
		err         error
		asRoot, dev bool
		hint        string
	}{
		{"no /dev/fuse as root", &os.PathError{Op: "open", Path: "/dev/fuse", Err: syscall.ENOENT}, true, false, HintNoDevFuse},
		{"no /dev/fuse, device node missing", syscall.ENOENT, true, true, HintNoDevFuse},
		{"no /dev/fuse as a user", errors.New("fusermount exited with code 256"), false, false, HintNoDevFuse},
		{"EPERM from mount(2)", syscall.EPERM, true, true, HintNoCapability},
		{"EACCES opening /dev/fuse", &os.PathError{Op: "open", Path: "/dev/fuse", Err: syscall.EACCES}, true, true, HintNoCapability},
		{"not a directory", fmt.Errorf("wait: %w", syscall.ENOTDIR), true, true, HintNotDirectory},
		{"busy", syscall.EBUSY, true, true, HintBusy},
		{"no fusermount3", &exec.Error{Name: "fusermount3", Err: exec.ErrNotFound}, false, true, HintNoFusermount},
		{"fusermount not executable", &os.PathError{Op: "fork/exec", Path: "/bin/fusermount", Err: syscall.EACCES}, false, true, HintNoFusermount},
		{"fusermount failed", errors.New("fusermount exited with code 256\n"), false, true, HintFusermount},
		{"unknown", errors.New("something else"), true, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := classifyMountError("/mnt/x", tc.err, tc.asRoot, tc.dev)
			var me *MountError
			if !errors.As(err, &me) || me.Hint != tc.hint || !errors.Is(err, tc.err) || !strings.HasPrefix(err.Error(), "mount /mnt/x: ") {
				t.Fatalf("got %v (hint %q), want hint %q wrapping %v", err, me.Hint, tc.hint, tc.err)
			}
		})
	}
}

// TestMountNonRootWithoutFusermount: a user other than root with no
// fusermount3 on PATH is told so, instead of go-fuse's exec error.
func TestMountNonRootWithoutFusermount(t *testing.T) {
	if os.Getenv("SKRFS_TEST_NONROOT_MOUNT") == "" {
		if os.Geteuid() != 0 {
			t.Skip("needs root to drop to another user")
		}
		// The test binary's directory is private to root: copy it.
		tmp, err := os.MkdirTemp("", "skrfs-fs-test-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(tmp)
		os.Chmod(tmp, 0o755)
		bin := filepath.Join(tmp, "fs.test")
		b, err := os.ReadFile(os.Args[0])
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(bin, b, 0o755)
		cmd := exec.Command(bin, "-test.run=^TestMountNonRootWithoutFusermount$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), "SKRFS_TEST_NONROOT_MOUNT=1", "PATH=/nonexistent")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		cmd.Dir = "/"
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "HINT OK") {
			t.Fatalf("as uid 65534: %v\n%s", err, out)
		}
		return
	}
	fusermountDirs = nil // and PATH=/nonexistent: as in an image without fuse3
	dir, err := os.MkdirTemp("", "skrfs-nonroot-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(dir)
	root, err := NewRoot(Options{Releaser: &countingReleaser{}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Mount(dir, root, MountOptions{})
	var me *MountError
	if !errors.As(err, &me) || me.Hint != HintNoFusermount {
		t.Fatalf("as uid %d without fusermount3: %v", os.Geteuid(), err)
	}
	fmt.Println("HINT OK:", err)
}

// TestMountRealFailureHints: real mounts that fail for the causes users
// meet in containers give the sentence for that cause and leave nothing
// mounted: root without CAP_SYS_ADMIN (EPERM from mount(2)), and no
// /dev/fuse (an empty /dev in a private mount namespace).
func TestMountRealFailureHints(t *testing.T) {
	if want := os.Getenv("SKRFS_TEST_MOUNT_HINT"); want != "" {
		dir, err := os.MkdirTemp("", "skrfs-hint-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.Remove(dir)
		root, err := NewRoot(Options{Releaser: &countingReleaser{}})
		if err != nil {
			t.Fatal(err)
		}
		srv, err := Mount(dir, root, MountOptions{})
		if srv != nil {
			srv.Unmount()
		}
		var me *MountError
		if !errors.As(err, &me) || me.Hint != want {
			t.Fatalf("Mount: %v, want the hint %q", err, want)
		}
		if n := fuseMountsAt(dir); n != 0 {
			t.Fatalf("the failed mount left %d mounts", n)
		}
		fmt.Println("HINT OK:", err)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, tc := range []struct {
		name, hint string
		wrap       []string
	}{
		{"no CAP_SYS_ADMIN", HintNoCapability, []string{"setpriv", "--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin", "--"}},
		{"no /dev/fuse", HintNoDevFuse, []string{"unshare", "--mount", "--propagation", "private", "sh", "-c", `mount -t tmpfs none /dev && exec "$0" "$@"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := exec.LookPath(tc.wrap[0]); err != nil {
				t.Skipf("%s: %v", tc.wrap[0], err)
			}
			args := append(append([]string{}, tc.wrap[1:]...), os.Args[0], "-test.run=^TestMountRealFailureHints$", "-test.count=1", "-test.v")
			cmd := exec.Command(tc.wrap[0], args...)
			cmd.Env = append(os.Environ(), "SKRFS_TEST_MOUNT_HINT="+tc.hint)
			out, err := cmd.CombinedOutput()
			i := strings.Index(string(out), "HINT OK")
			if err != nil || i < 0 {
				t.Fatalf("%v\n%s", err, out)
			}
			t.Log(strings.SplitN(string(out[i:]), "\n", 2)[0])
		})
	}
}

func TestApplyTuning(t *testing.T) {
	day := 24 * time.Hour
	tests := []struct {
		spec  string
		check func(o *fusefs.Options) bool
	}{
		{"", func(o *fusefs.Options) bool {
			return o.MaxBackground == 0 && !o.DisableReadDirPlus && o.MaxWrite == 1<<20
		}},
		{"max_background=64", func(o *fusefs.Options) bool { return o.MaxBackground == 64 }},
		{"max_write=131072, readdirplus=off", func(o *fusefs.Options) bool { return o.MaxWrite == 131072 && o.DisableReadDirPlus }},
		{"entry_timeout=24h,attr_timeout=24h", func(o *fusefs.Options) bool { return *o.EntryTimeout == day && *o.AttrTimeout == day }},
		{"max_background=-1,max_write=12,entry_timeout=x,bogus", func(o *fusefs.Options) bool {
			return o.MaxBackground == 0 && o.MaxWrite == 1<<20 && *o.EntryTimeout == time.Second
		}},
	}
	for _, tc := range tests {
		timeout := time.Second
		o := &fusefs.Options{EntryTimeout: &timeout, AttrTimeout: &timeout}
		o.MaxWrite = 1 << 20
		applyTuning(o, tc.spec)
		if !tc.check(o) {
			t.Errorf("%q: %+v", tc.spec, o.MountOptions)
		}
	}
}
