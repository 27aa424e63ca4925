package writes

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// posixOps exercises the POSIX operations of docs/writes.md through the
// mount, with their errnos.
const posixOps = `
import os, sys, errno
d = sys.argv[1]
def fails(fn, code, what):
    try:
        fn()
    except OSError as e:
        assert e.errno == code, (what, errno.errorcode.get(e.errno), errno.errorcode[code])
        return
    raise AssertionError(what + ": no error, want " + errno.errorcode[code])
def read(p):
    with open(p, 'rb') as f:
        return f.read()
p = os.path.join(d, "s.txt")
fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
os.write(fd, b"hello")
os.close(fd)
fails(lambda: os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL), errno.EEXIST, "O_EXCL on an existing file")
fd = os.open(p, os.O_WRONLY | os.O_APPEND)
os.write(fd, b" world")
os.close(fd)
assert read(p) == b"hello world", read(p)
fd = os.open(p, os.O_RDWR)
os.pwrite(fd, b"J", 6)
assert os.pread(fd, 100, 0) == b"hello Jorld"
os.fsync(fd)
os.ftruncate(fd, 5)
os.close(fd)
assert read(p) == b"hello"
fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
os.write(fd, b"x")
os.close(fd)
assert read(p) == b"x"
os.truncate(p, 10)
assert read(p) == b"x" + bytes(9)
os.chmod(p, 0o600)
os.chown(p, 1234, 1234)
os.utime(p, (1, 1))
assert read(p) == b"x" + bytes(9)
sub = os.path.join(d, "dir")
os.mkdir(sub)
with open(os.path.join(sub, "f"), 'wb') as f:
    f.write(b"in dir")
fails(lambda: os.rmdir(sub), errno.ENOTEMPTY, "rmdir of a directory with a file")
os.rename(os.path.join(sub, "f"), os.path.join(d, "g"))
os.rmdir(sub)
os.rename(os.path.join(d, "g"), p)
assert read(p) == b"in dir"
assert sorted(os.listdir(d)) == ["s.txt"], os.listdir(d)
os.unlink(p)
fails(lambda: os.stat(p), errno.ENOENT, "stat after unlink")
fails(lambda: os.unlink(p), errno.ENOENT, "unlink twice")
assert os.statvfs(d).f_bavail > 0
print("ok")
`

// TestPOSIXOperations runs posixOps in a local writable dataset, then
// checks from a fresh mount that the dataset ended up empty.
func TestPOSIXOperations(t *testing.T) {
	requireTool(t, "python3")
	ds := localDataset(t)
	d := mount(t, config(t, ds))
	defer d.unmount()
	if out := strings.TrimSpace(python(t, posixOps, d.dir())); out != "ok" {
		t.Fatal(out)
	}
	if objects, temps := storeFiles(t, ds.local); len(objects)+len(temps) != 0 {
		t.Fatalf("the store holds %v %v after everything was removed", objects, temps)
	}
}

// TestFsyncCommitsAndPinnedReaders: fsync commits while the file stays open
// (a mount started afterwards reads the synced bytes); a reader in that
// other mount that opened the synced version, when the writer then
// replaces it, reads only bytes of the version it opened or fails with
// ESTALE, never bytes of the new version.
func TestFsyncCommitsAndPinnedReaders(t *testing.T) {
	py := requireTool(t, "python3")
	cfg := config(t, localDataset(t))
	a := mount(t, cfg)
	defer a.unmount()
	v1, v2 := pattern("v1", 2<<20), pattern("v2", 2<<20)
	writer := exec.Command(py, "-c", `
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
v1, v2 = open(sys.argv[2], 'rb').read(), open(sys.argv[3], 'rb').read()
os.write(fd, v1)
os.fsync(fd)
print("synced", flush=True)
sys.stdin.readline()
os.pwrite(fd, v2, 0)
os.close(fd)
print("closed", flush=True)
`, filepath.Join(a.dir(), "obj"), writeTemp(t, v1), writeTemp(t, v2))
	stdin, _ := writer.StdinPipe()
	stdout, _ := writer.StdoutPipe()
	var werr bytes.Buffer
	writer.Stderr = &werr
	if err := writer.Start(); err != nil {
		t.Fatal(err)
	}
	defer writer.Process.Kill()
	lines := lineReader(stdout)
	next := func(want string) {
		t.Helper()
		select {
		case l := <-lines:
			if l != want {
				t.Fatalf("writer: %q, want %q (%s)", l, want, werr.String())
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("writer: no %q (%s)", want, werr.String())
		}
	}
	next("synced")

	b := mount(t, cfg)
	defer b.unmount()
	f, err := os.Open(filepath.Join(b.dir(), "obj"))
	if err != nil {
		t.Fatalf("the fsynced file is not in storage: %v", err)
	}
	defer f.Close()
	head := make([]byte, 64<<10)
	if _, err := io.ReadFull(f, head); err != nil || !bytes.Equal(head, v1[:len(head)]) {
		t.Fatalf("the fsynced file reads other bytes than were synced: %v", err)
	}

	io.WriteString(stdin, "go\n")
	next("closed")
	writer.Wait()
	// The rest of the open handle: the version it opened, or ESTALE.
	rest, err := io.ReadAll(f)
	got := append(head, rest...)
	if !bytes.Equal(got, v1[:len(got)]) {
		t.Fatalf("a reader of the replaced version got bytes of another version (%d bytes read, %v)", len(got), err)
	}
	if err != nil && !errors.Is(err, syscall.ESTALE) {
		t.Fatalf("a reader of the replaced version failed with %v, want ESTALE", err)
	}
	t.Logf("the pinned reader read %d of %d bytes, then %v", len(got), len(v1), err)
	// A new open sees the new version.
	end := time.Now().Add(30 * time.Second)
	for {
		now, err := os.ReadFile(filepath.Join(b.dir(), "obj"))
		if err == nil && bytes.Equal(now, v2) {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("mount B does not read the new version 30s after its commit: %d bytes, %v", len(now), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func writeTemp(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
