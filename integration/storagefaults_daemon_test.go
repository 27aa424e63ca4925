package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/skrfs/skrfs/blob/azblob"
	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/integration/azurite"
	"github.com/skrfs/skrfs/integration/faultproxy"
)

// daemonStorageFaults are faults the daemon's default storage client
// (5 tries of at most a minute each) gets through in seconds: stalls that
// end in a dropped connection, not stalls until the client gives up
// (TestStorageFaultsConcurrentReaders has those, with short tries).
var daemonStorageFaults = []faultproxy.Rule{
	{Kinds: []faultproxy.Kind{faultproxy.KindRead, faultproxy.KindStat}, Prob: 0.02, Fault: faultproxy.Stall, Delay: 2 * time.Second},
	{Kinds: []faultproxy.Kind{faultproxy.KindRead}, Prob: 0.06, Fault: faultproxy.Truncate},
	{Kinds: []faultproxy.Kind{faultproxy.KindRead}, Prob: 0.02, Fault: faultproxy.Corrupt},
	{Prob: 0.05, Fault: faultproxy.Reset},
	{Prob: 0.05, Fault: faultproxy.Status, Status: 503},
	{Prob: 0.05, Fault: faultproxy.Status, Status: 500},
	{Prob: 0.03, Fault: faultproxy.Status, Status: 429, RetryAfter: time.Second},
	{Prob: 0.10, Fault: faultproxy.Delay, Delay: 30 * time.Millisecond},
}

// daemonGoroutines asks the daemon for its counters (SIGUSR1) and returns
// the goroutine count it logs.
func daemonGoroutines(t *testing.T, d *daemonProc) int {
	t.Helper()
	count := func() (n, last int) {
		sc := bufio.NewScanner(bytes.NewReader(d.out.Bytes()))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var line struct {
				Message    string `json:"message"`
				Goroutines *int   `json:"goroutines"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Message == "read counters" && line.Goroutines != nil {
				n, last = n+1, *line.Goroutines
			}
		}
		return n, last
	}
	before, _ := count()
	if err := d.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var g int
	pollUntil(t, "the daemon logs its counters on SIGUSR1", 30*time.Second, func() bool {
		n, last := count()
		g = last
		return n > before
	})
	return g
}

// TestDaemonStorageFaults: the real daemon (`skrfs mount`, devstack keys)
// serves an Azure dataset through the fault proxy with its default
// storage settings. 64 concurrent readers get the right bytes or EIO;
// the daemon stays up, serves everything right once the faults stop,
// its goroutines (logged on SIGUSR1) and descriptors (/proc/PID/fd)
// return to their baseline, and it exits cleanly on SIGTERM.
func TestDaemonStorageFaults(t *testing.T) {
	requireFUSE(t)
	s := startDevstack(t)
	az := azurite.Start(t, azurite.Options{})
	az.CreateContainer(t, "enc")
	ctx := context.Background()
	direct, err := azblob.Open(ctx, azblob.Config{ContainerURL: az.ContainerURL("enc"), AccountKey: az.AccountKey, Transport: az.HTTPClient, Prefix: "ds"})
	if err != nil {
		t.Fatal(err)
	}
	// The devstack's sealed objects, uploaded as they are, with the
	// upload metadata.
	store := filepath.Join(s.Dir, "store", "data")
	err = filepath.WalkDir(store, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		obj, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		h, err := crypto.ParseHeader(obj)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(store, p)
		return direct.Put(ctx, filepath.ToSlash(rel), obj, map[string]string{
			"skrfs_header_len": strconv.Itoa(h.Len()), "skrfs_chunk_size": strconv.Itoa(h.ChunkSize), "skrfs_version": strconv.Itoa(h.Version)})
	})
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := faultproxy.Start(az.Endpoint, faultproxy.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })

	cfg := configWith(t, s, "  - name: cloud\n    azure: "+proxy.URL()+"/"+azurite.AccountName+"/enc/ds\n    keys: [demo-rsa, demo-oct]\n")
	t.Setenv("AZURE_STORAGE_CONNECTION_STRING", az.ConnectionString())
	mnt := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mnt, 0o755)
	ready := filepath.Join(t.TempDir(), "ready")
	d := execDaemon(t, "mount", "--config", cfg, "--ready-file", ready, "--log-level", "warn", "--log-json", mnt)
	t.Cleanup(func() {
		if isMounted(mnt) {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	waitReady(t, ready, d)
	pid := d.cmd.Process.Pid

	plainDir := filepath.Join(s.Dir, "plain", "data")
	small := []string{"hello.txt", "docs/readme.md", "nested/deeper/numbers.csv"}
	plain := map[string][]byte{}
	for _, n := range append(small, "random-64m.bin") {
		b, err := os.ReadFile(filepath.Join(plainDir, filepath.FromSlash(n)))
		if err != nil {
			t.Fatal(err)
		}
		plain[n] = b
	}
	const readers = 64
	phase := func(name string, ops int, allowEIO bool) (ok, eio int64) {
		t.Helper()
		var nOK, nEIO atomic.Int64
		var failed atomic.Bool
		var once sync.Once
		var wg sync.WaitGroup
		for w := range readers {
			wg.Go(func() {
				rnd := rand.New(rand.NewPCG(faultSeed, uint64(w)))
				for range ops {
					if failed.Load() {
						return
					}
					var err error
					if w%2 == 0 {
						n := small[rnd.IntN(len(small))]
						err = readAll(filepath.Join(mnt, "cloud", filepath.FromSlash(n)), plain[n])
					} else {
						err = readRanges(filepath.Join(mnt, "cloud", "random-64m.bin"), plain["random-64m.bin"], rnd, 3)
					}
					switch {
					case err == nil:
						nOK.Add(1)
					case allowEIO && errnoOf(err) == syscall.EIO && !errors.Is(err, errWrongBytes):
						nEIO.Add(1)
					default:
						once.Do(func() {
							t.Errorf("%s: reader %d: %v (errno %d), want the right bytes or EIO", name, w, err, errnoOf(err))
						})
						failed.Store(true)
					}
				}
			})
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case err := <-d.exited:
			t.Fatalf("%s: the daemon exited: %v\n%s", name, err, d.out.Bytes())
		case <-time.After(3 * time.Minute):
			t.Fatalf("%s: readers hang (hang guard)\n%s", name, d.out.Bytes())
		}
		t.Logf("%s: %d right, %d EIO", name, nOK.Load(), nEIO.Load())
		if failed.Load() {
			t.FailNow()
		}
		return nOK.Load(), nEIO.Load()
	}

	// Baseline and leak check without the daemon's idle keep-alive
	// connections (its pool keeps up to 64 per host for 90s): the proxy
	// closes them, as a server does after its idle timeout.
	phase("warm-up", 1, false)
	proxy.CloseIdleClientConnections()
	var g0, fd0 int
	for prev := -1; ; time.Sleep(200 * time.Millisecond) { // until the closes have been seen
		g0, fd0 = daemonGoroutines(t, d), openFDs(t, pid)
		if fd0 == prev {
			break
		}
		prev = fd0
	}
	if err := proxy.SetConfig(faultproxy.Config{Seed: faultSeed, Rules: daemonStorageFaults}); err != nil {
		t.Fatal(err)
	}
	ok, _ := phase("faults", 3, true)
	st := proxy.Stats()
	proxy.SetConfig(faultproxy.Config{})
	t.Logf("storage requests %v; faults %v", st.Requests, st.Faults)
	for _, f := range []faultproxy.Fault{faultproxy.Stall, faultproxy.Truncate, faultproxy.Reset, faultproxy.Status, faultproxy.Delay} {
		if st.Fired(f) == 0 {
			t.Errorf("fault %s never fired: the test did not exercise it", f)
		}
	}
	if ok == 0 {
		t.Error("no read succeeded under faults")
	}
	phase("recovery", 1, false)

	// Leak check (the deadline is a hang guard): connections the faults
	// broke are gone, goroutines are back.
	var g, fds int
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		proxy.CloseIdleClientConnections()
		g, fds = daemonGoroutines(t, d), openFDs(t, pid)
		if g <= g0+8 && fds <= fd0+4 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("daemon goroutines %d -> %d, descriptors %d -> %d: not back to baseline in 30s", g0, g, fd0, fds)
		}
	}
	t.Logf("daemon goroutines %d -> %d, descriptors %d -> %d", g0, g, fd0, fds)

	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.exited:
		if err != nil {
			t.Fatalf("daemon exit after SIGTERM: %v\n%s", err, d.out.Bytes())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("daemon did not stop on SIGTERM")
	}
	if isMounted(mnt) {
		t.Fatal("mount left behind after SIGTERM")
	}
}
