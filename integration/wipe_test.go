package integration

import (
	"bufio"
	"bytes"
	"crypto/rsa"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKeysWipedAtUnmount inspects the daemon's whole memory (every
// readable mapping but the program's read-only text, through
// /proc/PID/mem) while it serves and again after it unmounted, with the
// process held before it exits (SKRFS_HOLD_AT_EXIT). While mounted, the
// symmetric key and the plaintext of an open file must be found (the scan
// sees the daemon's memory); after the unmount, no copy of either may be
// left anywhere in the process, whichever key views were read and however
// the plaintext was served. The RSA key's private numbers are counted and
// logged, not judged: Go's crypto/x509, crypto/rsa and the JWK encoder
// copy them into garbage that no code can reach (docs/threat-model.md).
func TestKeysWipedAtUnmount(t *testing.T) {
	held := filepath.Join(t.TempDir(), "held")
	mnt, d := mountDevstack(t, []string{"SKRFS_HOLD_AT_EXIT=" + held})

	needles := map[string][]byte{}
	for _, v := range readKeyViews(t, mnt) {
		switch k := v.key; {
		case k.Oct != nil:
			needles["oct key"] = k.Oct
		case k.Private != nil:
			rk := k.Private.(*rsa.PrivateKey)
			needles["RSA d"] = rk.D.Bytes()
			needles["RSA p"] = rk.Primes[0].Bytes()
			needles["RSA q"] = rk.Primes[1].Bytes()
		}
	}
	// The data too: opening objects unwraps their data keys with both keys.
	// The last file stays open, so its plaintext is in the chunk cache
	// (a file read before would be served from the kernel's page cache).
	var open *os.File
	for _, f := range []string{"hello.txt", "docs/readme.md", "nested/deeper/numbers.csv"} {
		fh, err := os.Open(filepath.Join(mnt, "data", filepath.FromSlash(f)))
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(fh)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) >= 64 {
			needles["plaintext of "+f] = b[len(b)/2-32 : len(b)/2+32]
		}
		if open != nil {
			open.Close()
		}
		open = fh
	}
	pid := d.cmd.Process.Pid
	live := scanMemory(t, pid, needles)
	t.Logf("while mounted: %v", live)
	if live["oct key"] == 0 || live["plaintext of nested/deeper/numbers.csv"] == 0 {
		t.Fatalf("while mounted the scan found the key and the open file's plaintext %v times: it cannot see the daemon's memory", live)
	}
	open.Close()

	d.cmd.Process.Signal(syscall.SIGTERM)
	waitReady(t, held, d) // unmounted, wiped, and holding before exit
	after := scanMemory(t, pid, needles)
	t.Logf("after unmount: %v", after)
	for name, n := range after {
		if n > 0 && !strings.HasPrefix(name, "RSA") {
			t.Errorf("%d copies of the %s left in the daemon's memory after unmount", n, name)
		}
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("the held daemon did not exit on SIGTERM")
	}
}

// scanMemory counts the occurrences of each needle in every readable
// mapping of process pid.
func scanMemory(t *testing.T, pid int, needles map[string][]byte) map[string]int {
	t.Helper()
	maps, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer maps.Close()
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	counts := map[string]int{}
	longest := 0
	for name, n := range needles {
		counts[name] = 0
		longest = max(longest, len(n))
	}
	buf := make([]byte, 1<<20+longest)
	scanned := 0
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[1][0] != 'r' || (len(f) >= 6 && (f[5] == "[vvar]" || f[5] == "[vsyscall]" || f[5] == "[vvar_vclock]")) {
			continue
		}
		if len(f) >= 6 && strings.HasPrefix(f[5], "/") && f[1][1] != 'w' {
			// Read-only file mappings: the program's text and constants
			// (the devstack's demo plaintext is compiled in), not data.
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		carry := 0
		for off := start; off < end; {
			n := min(uint64(1<<20), end-off)
			k, err := mem.ReadAt(buf[carry:carry+int(n)], int64(off))
			if k <= 0 || (err != nil && err != io.EOF) {
				break // unreadable part of a mapping
			}
			win := buf[:carry+k]
			for name, needle := range needles {
				// Count each occurrence once: those that end in the
				// new bytes (the carried tail was searched already).
				for i := 0; ; {
					j := bytes.Index(win[i:], needle)
					if j < 0 {
						break
					}
					if i+j+len(needle) > carry {
						counts[name]++
					}
					i += j + 1
				}
			}
			scanned += k
			carry = min(longest-1, len(win))
			copy(buf, win[len(win)-carry:])
			off += uint64(k)
		}
	}
	if scanned == 0 {
		t.Fatal("no memory of the daemon could be read")
	}
	return counts
}
