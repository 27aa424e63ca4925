package integration

import (
	"bytes"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skrfs/skrfs/internal/devstack"
)

// soakDuration is how long TestSoak runs: -soak=DURATION on the
// integration package, or SKRFS_SOAK=DURATION (for `go test ./...`),
// default 2 minutes.
var soakFlag = flag.Duration("soak", 0, "duration of TestSoak (default 2m; also SKRFS_SOAK)")

func soakDuration(t *testing.T) time.Duration {
	if *soakFlag > 0 {
		return *soakFlag
	}
	if v := os.Getenv("SKRFS_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("SKRFS_SOAK=%q: want a Go duration such as 2h", v)
		}
		return d
	}
	return 2 * time.Minute
}

// procStatus returns a field of /proc/PID/status in kB (VmRSS, Threads).
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, field)
	return 0
}

func openFDs(t *testing.T, pid int) int {
	t.Helper()
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// TestSoak drives a real mount of the devstack-backed daemon with a mixed
// load from 8 goroutines (stat, readdir, whole-file reads, random ranged
// reads of a 64 MiB object, key files, and other processes: sha256sum
// and ls -lR run through the mount) for soakDuration, with a 5s key TTL
// so that keys are released again throughout. Every result is checked
// against the plaintext; any error fails. The daemon's RSS, threads and
// open descriptors must stay flat after a warm-up (within generous bounds:
// peak RSS of the last third of the run at most +64 MiB or +25% over that
// of the first third, +16 threads, +16 descriptors).
func TestSoak(t *testing.T) {
	requireFUSE(t)
	dur := soakDuration(t)
	s := startDevstack(t)
	d := mountDaemon(t, configWith(t, s, "cache:\n  ttl: 5s\n"))
	pid := d.cmd.Process.Pid
	plainDir := filepath.Join(s.Dir, "plain", "data")
	files := map[string][]byte{}
	for _, name := range []string{"hello.txt", "docs/readme.md", "nested/deeper/numbers.csv", "random-64m.bin"} {
		b, err := os.ReadFile(filepath.Join(plainDir, filepath.FromSlash(name)))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = b
	}
	big := files["random-64m.bin"]
	keys := map[string][]byte{}
	for _, k := range []string{devstack.KeyRSA, devstack.KeyRSA + ".jwk", devstack.KeyRSA + ".pub.pem", devstack.KeyOct, devstack.KeyOct + ".jwk"} {
		b, err := os.ReadFile(filepath.Join(d.mnt, "keys", k))
		if err != nil {
			t.Fatalf("key file %s: %v", k, err)
		}
		keys[k] = b
	}
	dirs := map[string][]string{
		"data":               {"docs", "hello.txt", "nested", "random-64m.bin"},
		"data/docs":          {"readme.md"},
		"data/nested/deeper": {"numbers.csv"},
	}

	sums := map[string]string{}
	for n, b := range files {
		sums[n] = fmt.Sprintf("%x", sha256.Sum256(b))
	}
	var ops [6]atomic.Int64
	var failed atomic.Bool
	var firstErr sync.Once
	fail := func(format string, args ...any) {
		firstErr.Do(func() { t.Errorf(format, args...) })
		failed.Store(true)
	}
	op := func(r *rand.Rand) {
		switch i := r.IntN(6); i {
		case 0: // stat
			names := []string{"hello.txt", "docs/readme.md", "nested/deeper/numbers.csv", "random-64m.bin"}
			n := names[r.IntN(len(names))]
			st, err := os.Stat(filepath.Join(d.mnt, "data", filepath.FromSlash(n)))
			if err != nil || st.Size() != int64(len(files[n])) {
				fail("stat %s: %v (size %v, want %d)", n, err, st, len(files[n]))
			}
			ops[i].Add(1)
		case 1: // readdir
			dir := []string{"data", "data/docs", "data/nested/deeper", "keys"}[r.IntN(4)]
			es, err := os.ReadDir(filepath.Join(d.mnt, filepath.FromSlash(dir)))
			var got []string
			for _, e := range es {
				got = append(got, e.Name())
			}
			want := dirs[dir]
			if dir == "keys" {
				if err != nil || len(got) < len(keys) {
					fail("readdir keys: %v %v", err, got)
				}
			} else if err != nil || !slices.Equal(got, want) {
				fail("readdir %s: %v %v, want %v", dir, err, got, want)
			}
			ops[i].Add(1)
		case 2: // whole small file
			n := []string{"hello.txt", "docs/readme.md", "nested/deeper/numbers.csv"}[r.IntN(3)]
			b, err := os.ReadFile(filepath.Join(d.mnt, "data", filepath.FromSlash(n)))
			if err != nil || !bytes.Equal(b, files[n]) {
				fail("read %s: %v (or wrong bytes)", n, err)
			}
			ops[i].Add(1)
		case 3: // ranged reads of the big object
			f, err := os.Open(filepath.Join(d.mnt, "data", "random-64m.bin"))
			if err != nil {
				fail("open random-64m.bin: %v", err)
				return
			}
			defer f.Close()
			for range 4 {
				n := 4096 + r.IntN(1<<20)
				off := r.Int64N(int64(len(big) - n))
				buf := make([]byte, n)
				if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
					fail("read random-64m.bin at %d: %v", off, err)
					return
				}
				if !bytes.Equal(buf, big[off:off+int64(n)]) {
					fail("wrong bytes in random-64m.bin at %d+%d", off, n)
					return
				}
			}
			ops[i].Add(1)
		case 4: // key files (released again after each 5s TTL)
			var names []string
			for k := range keys {
				names = append(names, k)
			}
			slices.Sort(names)
			k := names[r.IntN(len(names))]
			b, err := os.ReadFile(filepath.Join(d.mnt, "keys", k))
			if err != nil || !bytes.Equal(b, keys[k]) {
				fail("key file %s: %v (or other bytes)", k, err)
			}
			ops[i].Add(1)
		case 5: // other processes: sha256sum of a file, ls -lR of the mount
			names := []string{"hello.txt", "docs/readme.md", "nested/deeper/numbers.csv", "random-64m.bin"}
			n := names[r.IntN(len(names))]
			out, err := exec.Command("sha256sum", filepath.Join(d.mnt, "data", filepath.FromSlash(n))).Output()
			if err != nil || !strings.HasPrefix(string(out), sums[n]+" ") {
				fail("sha256sum %s: %v %q, want %s", n, err, out, sums[n])
			}
			if out, err := exec.Command("ls", "-lR", d.mnt).CombinedOutput(); err != nil || !strings.Contains(string(out), "numbers.csv") {
				fail("ls -lR: %v %q", err, out)
			}
			ops[i].Add(1)
		}
	}

	const workers = 8
	start := time.Now()
	end := start.Add(dur)
	warmAt := start.Add(min(dur/5, 30*time.Second))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), uint64(start.UnixNano())))
			for time.Now().Before(end) && !failed.Load() {
				op(r)
			}
		})
	}
	for time.Now().Before(warmAt) && !failed.Load() {
		time.Sleep(100 * time.Millisecond)
	}
	threads0, fds0 := procStatus(t, pid, "Threads"), openFDs(t, pid)
	// RSS is sampled every 250ms after the warm-up: a leak shows as the
	// peak of the last third of the run above the peak of the first
	// (single samples swing with the GC and the race detector's shadow).
	var samples []int64
	for time.Now().Before(end) && !failed.Load() {
		samples = append(samples, procStatus(t, pid, "VmRSS"))
		time.Sleep(250 * time.Millisecond)
	}
	wg.Wait()
	rss1, threads1, fds1 := procStatus(t, pid, "VmRSS"), procStatus(t, pid, "Threads"), openFDs(t, pid)
	samples = append(samples, rss1)
	third := max(1, len(samples)/3)
	rss0, rssEnd := slices.Max(samples[:third]), slices.Max(samples[len(samples)-third:])
	var total int64
	for i := range ops {
		total += ops[i].Load()
	}
	t.Logf("soak %v: %d operations (stat %d, readdir %d, small reads %d, ranged reads %d, key files %d, processes %d); "+
		"daemon peak RSS %d -> %d kB (first and last third), threads %d -> %d, fds %d -> %d; %d key releases",
		time.Since(start).Round(time.Second), total, ops[0].Load(), ops[1].Load(), ops[2].Load(), ops[3].Load(), ops[4].Load(), ops[5].Load(),
		rss0, rssEnd, threads0, threads1, fds0, fds1, s.Vault.Stats(devstack.KeyRSA).Allowed+s.Vault.Stats(devstack.KeyOct).Allowed)
	if failed.Load() {
		t.FailNow()
	}
	for i := range ops {
		if ops[i].Load() == 0 {
			t.Fatalf("operation kind %d never ran", i)
		}
	}
	if rssEnd > rss0+max(64<<10, rss0/4) {
		t.Errorf("daemon peak RSS grew from %d kB (first third of the run) to %d kB (last third)", rss0, rssEnd)
	}
	if threads1 > threads0+16 {
		t.Errorf("daemon threads grew from %d to %d", threads0, threads1)
	}
	if fds1 > fds0+16 {
		t.Errorf("daemon descriptors grew from %d to %d", fds0, fds1)
	}
}
