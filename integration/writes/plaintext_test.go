package writes

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// canary marks every line of the plaintext that must never reach a disk.
const canary = "SKRFS-CANARY-PLAINTEXT-"

// canaryWriter writes 24 MiB of canary lines into a new file, prints
// "written" and waits for a line on stdin before it closes the file.
const canaryWriter = `
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
line = 0
buf = bytearray()
total = 0
while total < 24 << 20:
    buf.clear()
    while len(buf) < 1 << 20:
        buf += b"SKRFS-CANARY-PLAINTEXT-%010d\n" % line
        line += 1
    os.write(fd, buf)
    total += len(buf)
print("written", total, flush=True)
sys.stdin.readline()
os.close(fd)
print("closed", flush=True)
`

// scanFile reports whether the file at p contains the canary.
func scanFile(p string) (bool, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, 0, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var carry []byte
	var n int64
	for {
		k, err := f.Read(buf)
		n += int64(k)
		chunk := append(carry, buf[:k]...)
		if bytes.Contains(chunk, []byte(canary)) {
			return true, n, nil
		}
		carry = append([]byte(nil), chunk[max(0, len(chunk)-len(canary)):]...)
		if err == io.EOF {
			return false, n, nil
		}
		if err != nil {
			return false, n, err
		}
	}
}

// scanTree fails the test if any regular file under dir holds the canary,
// and returns how many bytes it scanned.
func scanTree(t *testing.T, dir string) int64 {
	t.Helper()
	var total int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		found, n, err := scanFile(p)
		total += n
		if err != nil {
			t.Errorf("scan %s: %v", p, err)
		}
		if found {
			t.Errorf("plaintext on disk: %s", p)
		}
		return nil
	})
	return total
}

// scanOpenFiles scans the regular files the process pid holds open,
// unlinked ones included (the spill files), and returns those under dir.
func scanOpenFiles(t *testing.T, pid int, dir string) (spills []string) {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		p := fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())
		target, err := os.Readlink(p)
		if err != nil {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(p, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG || strings.HasPrefix(target, "anon_inode:") {
			continue
		}
		found, n, err := scanFile(p)
		if err != nil {
			t.Errorf("scan %s (%s): %v", p, target, err)
		}
		if found {
			t.Errorf("plaintext in a file the daemon holds open: %s", target)
		}
		if strings.HasPrefix(target, dir+"/") && n > 0 {
			spills = append(spills, target+" ("+strconv.FormatInt(n, 10)+" bytes)")
		}
	}
	return spills
}

// TestScannerFindsCanary: the scanner does find the canary, across a
// buffer boundary too (so that the test below can fail).
func TestScannerFindsCanary(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	data := append(bytes.Repeat([]byte{'x'}, 1<<20-5), canary...)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if found, _, err := scanFile(p); !found || err != nil {
		t.Fatalf("scanFile missed the canary: %v", err)
	}
}

// TestNoPlaintextOnDisk: an app writes 24 MiB of recognisable plaintext,
// six times the staging bound (4 MiB), and holds the file open. The
// store, the spill directory, $TMPDIR and every file the daemon holds
// open (the unlinked spill files among them, which must exist: the
// staging bound was passed) hold none of it; after the close (the
// commit) the store holds none of it either, and the file reads back.
func TestNoPlaintextOnDisk(t *testing.T) {
	py := requireTool(t, "python3")
	ds := localDataset(t)
	spill, tmp := t.TempDir(), t.TempDir()
	ds.write = "  staging_bytes: 4194304\n  spill_dir: " + spill + "\n"
	d := mount(t, config(t, ds), "TMPDIR="+tmp)
	defer d.unmount()

	app := exec.Command(py, "-c", canaryWriter, filepath.Join(d.dir(), "secret.txt"))
	stdin, _ := app.StdinPipe()
	stdout, _ := app.StdoutPipe()
	var appErr bytes.Buffer
	app.Stderr = &appErr
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	defer app.Process.Kill()
	lines := lineReader(stdout)
	expect := func(prefix string) {
		t.Helper()
		select {
		case l := <-lines:
			if !strings.HasPrefix(l, prefix) {
				t.Fatalf("writer: %q, want %q (%s)", l, prefix, appErr.String())
			}
		case <-time.After(90 * time.Second):
			t.Fatalf("writer: no %q in 90s (%s)", prefix, appErr.String())
		}
	}
	expect("written")

	// While the file is open: staged, partly in memory, partly spilled.
	n := scanTree(t, ds.local) + scanTree(t, spill) + scanTree(t, tmp)
	spills := scanOpenFiles(t, d.cmd.Process.Pid, spill)
	t.Logf("scanned %d bytes on disk; spill files open: %v", n, spills)
	if len(spills) == 0 {
		t.Errorf("no spill file in %s although 24 MiB were staged under a 4 MiB bound", spill)
	}

	io.WriteString(stdin, "close\n")
	expect("closed")
	app.Wait()
	n = scanTree(t, ds.local) + scanTree(t, spill) + scanTree(t, tmp)
	if n < 24<<20 {
		t.Errorf("scanned only %d bytes after the commit: where is the object?", n)
	}
	// The spill file is closed when the kernel releases the last handle,
	// which follows close(2) asynchronously.
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		spills = scanOpenFiles(t, d.cmd.Process.Pid, spill)
		if len(spills) == 0 {
			break
		}
		if time.Now().After(end) {
			t.Errorf("spill files still open 10s after the commit: %v", spills)
			break
		}
	}
	// And the plaintext is what the app wrote.
	f, err := os.Open(filepath.Join(d.dir(), "secret.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 64)
	if _, err := io.ReadFull(f, head); err != nil || !bytes.HasPrefix(head, []byte(canary+"0000000000\n")) {
		t.Fatalf("secret.txt reads %q, %v", head, err)
	}
	if st, _ := f.Stat(); st.Size() < 24<<20 {
		t.Fatalf("secret.txt is %d bytes", st.Size())
	}
}
