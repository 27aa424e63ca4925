package fs

import (
	"bytes"
	"encoding/json"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// recorder is an Observer that remembers what it is told.
type recorder struct {
	mu      sync.Mutex
	fetches int
	failed  map[string]int // "op errno"
}

func (r *recorder) Fetched(d time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if d < 0 {
		panic("negative duration")
	}
	r.fetches++
}

func (r *recorder) Failed(op string, errno syscall.Errno) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed[op+" "+errnoName(errno)]++
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) lines() []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, s := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if s == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			panic(err)
		}
		out = append(out, m)
	}
	return out
}

func TestAuditEventsAndObserver(t *testing.T) {
	audit := &lockedBuf{}
	rec := &recorder{failed: map[string]int{}}
	w := newWorld(t, func(w *world) {
		w.tune = func(o *Options) { o.Audit = zerolog.New(audit); o.Observer = rec }
	})
	for _, tc := range []struct {
		path, event, key, outcome, errno string
	}{
		// oct keys have no public part: the first release shows it, and
		// the view is gone from then on (not opened again, so no event).
		{"keys/demo-oct.pub.pem", "key_open", refOct.String(), "denied", "ENOENT"},
		{"keys/demo-oct", "key_open", refOct.String(), "allowed", ""},
		{"keys/demo-rsa.pub.pem", "key_open", refRSA.String(), "allowed", ""},
		{"keys/denied", "key_open", refDenied.String(), "denied", "EACCES"},
		{"data/hello.txt", "object_open", refRSA.String(), "allowed", ""},
		{"data/denied.txt", "object_open", refDenied.String(), "denied", "EACCES"},
		{"data/foreign-key.txt", "object_open", refOther.String(), "denied", "EACCES"}, // the refused key is named
		{"data/not-an-object", "object_open", "", "denied", "EIO"},                     // no key to name
	} {
		t.Run(tc.path, func(t *testing.T) {
			before := len(audit.lines())
			_, err := os.ReadFile(w.path(tc.path))
			if (err == nil) != (tc.outcome == "allowed") {
				t.Fatalf("read: %v", err)
			}
			events := audit.lines()[before:]
			if len(events) != 1 {
				t.Fatalf("%d audit events, want 1: %v", len(events), events)
			}
			e := events[0]
			want := map[string]any{"event": tc.event, "path": tc.path, "outcome": tc.outcome, "message": "audit",
				"uid": float64(os.Getuid()), "pid": float64(os.Getpid())}
			if tc.key != "" {
				want["key"] = tc.key
			}
			if tc.errno != "" {
				want["errno"] = tc.errno
			}
			for k, v := range want {
				if e[k] != v {
					t.Errorf("%s = %v, want %v (event %v)", k, e[k], v, e)
				}
			}
			if _, ok := e["key"]; ok != (tc.key != "") {
				t.Errorf("key present = %v, want %v", ok, tc.key != "")
			}
			if _, ok := e["reason"]; ok != (tc.outcome != "allowed") {
				t.Errorf("reason present = %v for outcome %s", ok, tc.outcome)
			}
		})
	}
	// Key material never appears: not the oct key's bytes, nor the RSA
	// key's private exponent in any of the encodings a view uses.
	audit.mu.Lock()
	raw := bytes.Clone(audit.b.Bytes())
	audit.mu.Unlock()
	jwk, _ := w.rsaKey.Marshal("jwk")
	var priv struct{ D string }
	json.Unmarshal(jwk, &priv)
	if bytes.Contains(raw, w.oct.Oct) || priv.D == "" || bytes.Contains(raw, []byte(priv.D)) {
		t.Fatal("key material in the audit log")
	}

	// A second handle opened while the first is open is not a first open.
	f, err := os.Open(w.path("data/big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	n := len(audit.lines())
	g, err := os.Open(w.path("data/big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(audit.lines()); got != n {
		t.Fatalf("second open of an open object wrote %d audit events", got-n)
	}
	g.Close()
	f.Close()

	n = len(audit.lines())
	if _, err := os.ReadFile(w.path("keys/demo-oct.pub.pem")); errnoOf(err) != syscall.ENOENT || len(audit.lines()) != n {
		t.Fatalf("the removed oct pub.pem: %v, %d audit events", err, len(audit.lines())-n)
	}

	// The observer saw the storage reads and each failed operation.
	if _, err := os.ReadFile(w.path("data/tampered.bin")); errnoOf(err) != syscall.EIO {
		t.Fatalf("tampered: %v", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.fetches == 0 || int64(rec.fetches) > w.root.Stats().Fetches {
		t.Errorf("%d fetches observed, %d made", rec.fetches, w.root.Stats().Fetches)
	}
	for k, v := range map[string]int{"open EACCES": 3, "open ENOENT": 1, "open EINVAL": 0, "open EIO": 1} {
		if rec.failed[k] != v {
			t.Errorf("failed %q = %d, want %d (all: %v)", k, rec.failed[k], v, rec.failed)
		}
	}
	// The kernel may retry a failed read or read ahead over the chunk.
	if rec.failed["read EIO"] == 0 {
		t.Errorf("the failed read was not reported (all: %v)", rec.failed)
	}
}

// TestTgid: a thread's process is its thread group, also when the answer
// comes from the short-lived cache; an unknown thread is reported as itself.
func TestTgid(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := uint32(unix.Gettid())
	for i := 0; i < 2; i++ { // read, then cached
		if got := tgid(tid); got != os.Getpid() {
			t.Fatalf("tgid(%d) = %d, want %d", tid, got, os.Getpid())
		}
	}
	const gone = 1<<31 - 5 // above any pid_max
	if got := tgid(gone); got != gone {
		t.Fatalf("tgid of a missing thread = %d, want the thread id", got)
	}
}
