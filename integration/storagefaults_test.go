package integration

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/skrfs/skrfs/integration/faultproxy"
)

// faultSeed makes the storage faults reproducible (the proxy decides each
// request's fault from the seed and the request's identity and attempt).
const faultSeed = 20261124

// storageFaults are the faults of TestStorageFaultsConcurrentReaders:
// every kind the proxy has, frequent enough that each fires in a run and
// that some reads exhaust their retries.
var storageFaults = []faultproxy.Rule{
	{Kinds: []faultproxy.Kind{faultproxy.KindRead}, Prob: 0.02, Fault: faultproxy.Stall},
	{Kinds: []faultproxy.Kind{faultproxy.KindRead}, Prob: 0.02, Fault: faultproxy.StallBody},
	{Kinds: []faultproxy.Kind{faultproxy.KindRead}, Prob: 0.08, Fault: faultproxy.Truncate},
	{Kinds: []faultproxy.Kind{faultproxy.KindRead}, Prob: 0.02, Fault: faultproxy.Corrupt},
	{Prob: 0.06, Fault: faultproxy.Reset},
	{Prob: 0.06, Fault: faultproxy.Status, Status: 503},
	{Prob: 0.06, Fault: faultproxy.Status, Status: 500},
	{Prob: 0.04, Fault: faultproxy.Status, Status: 429, RetryAfter: time.Second},
	{Prob: 0.10, Fault: faultproxy.Delay, Delay: 30 * time.Millisecond},
}

// TestStorageFaultsConcurrentReaders: 64 concurrent readers of a real FUSE
// mount whose storage (Azurite behind the fault proxy) stalls, resets,
// throttles, fails, truncates and corrupts responses. Every read returns
// exactly the right bytes or fails cleanly with EIO, each operation
// finishes in bounded time (hang guard), the filesystem keeps serving
// (all readers read right once the faults stop), and the process's
// goroutines and descriptors return to their baseline.
func TestStorageFaultsConcurrentReaders(t *testing.T) {
	r := newStorageRig(t)
	const objects = 8
	var names []string
	for i := range objects {
		name := fmt.Sprintf("set/obj-%d.bin", i)
		pt := pseudoBytes(uint64(i), 300<<10+i*37<<10+123)
		// Half the objects carry the upload metadata (size from the
		// listing), half do not (size from the cleartext preamble, one
		// storage read at lookup).
		r.put(name, r.seal(pt, "k1", name), i%2 == 0, pt)
		names = append(names, name)
	}

	const readers = 64
	var started [readers]atomic.Int64 // unix nanos of the running operation, 0 when idle
	type tally struct{ ok, eio atomic.Int64 }
	phase := func(name string, opsPerReader int, allowEIO bool) *tally {
		t.Helper()
		var tl tally
		var failed atomic.Bool
		var firstErr sync.Once
		fail := func(format string, args ...any) {
			firstErr.Do(func() { t.Errorf("%s: "+format, append([]any{name}, args...)...) })
			failed.Store(true)
		}
		var wg sync.WaitGroup
		for w := range readers {
			wg.Go(func() {
				rnd := rand.New(rand.NewPCG(faultSeed, uint64(w)))
				for op := 0; op < opsPerReader && !failed.Load(); op++ {
					obj := names[rnd.IntN(len(names))]
					started[w].Store(time.Now().UnixNano())
					var err error
					if rnd.IntN(2) == 0 {
						err = readAll(r.path(obj), r.plain[obj])
					} else {
						err = readRanges(r.path(obj), r.plain[obj], rnd, 4)
					}
					started[w].Store(0)
					switch {
					case err == nil:
						tl.ok.Add(1)
					case errors.Is(err, errWrongBytes):
						fail("reader %d, %s: %v", w, obj, err)
					case allowEIO && errnoOf(err) == syscall.EIO:
						tl.eio.Add(1)
					default:
						fail("reader %d, %s: %v (errno %d), want the right bytes or EIO", w, obj, err, errnoOf(err))
					}
				}
			})
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		// Hang guard: no operation may run for 2 minutes (a stalled
		// request costs 2s per try, a load at most the 30s OpTimeout).
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				t.Logf("%s: %d reads right, %d EIO", name, tl.ok.Load(), tl.eio.Load())
				if failed.Load() {
					t.FailNow()
				}
				return &tl
			case <-tick.C:
				for w := range readers {
					if s := started[w].Load(); s != 0 && time.Since(time.Unix(0, s)) > 2*time.Minute {
						buf := make([]byte, 1<<20)
						t.Fatalf("%s: reader %d hangs (over 2 minutes in one operation)\n%s", name, w, buf[:runtime.Stack(buf, true)])
					}
				}
			}
		}
	}

	// Warm up without faults (connections, FUSE readers), then measure.
	phase("warm-up", 1, false)
	g0, fd0 := r.baseline()

	if err := r.proxy.SetConfig(faultproxy.Config{Seed: faultSeed, Rules: storageFaults}); err != nil {
		t.Fatal(err)
	}
	faulty := phase("faults", 3, true)
	st := r.proxy.Stats()
	if err := r.proxy.SetConfig(faultproxy.Config{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("storage requests %v; faults %v", st.Requests, st.Faults)
	for _, f := range []faultproxy.Fault{faultproxy.Stall, faultproxy.StallBody, faultproxy.Truncate, faultproxy.Corrupt,
		faultproxy.Reset, faultproxy.Status, faultproxy.Delay} {
		if st.Fired(f) == 0 {
			t.Errorf("fault %s never fired: the test did not exercise it", f)
		}
	}
	if faulty.ok.Load() == 0 {
		t.Error("no read succeeded under faults: retries do not work")
	}

	// Faults off: everything reads right again (nothing stuck, nothing
	// poisoned), and nothing leaked.
	phase("recovery", 2, false)
	r.settle("after the faults", g0, fd0)
}

// pseudoBytes returns n reproducible pseudo-random bytes.
func pseudoBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 42}).Read(b)
	return b
}
