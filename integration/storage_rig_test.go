package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/blob/azblob"
	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/fs"
	"github.com/skrfs/skrfs/integration/azurite"
	"github.com/skrfs/skrfs/integration/faultproxy"
	"github.com/skrfs/skrfs/keyrelease"
)

// storageRig is an in-process skrfs filesystem, mounted with real FUSE,
// whose one dataset ("data") is an Azurite container reached through a
// fault-injecting proxy. Objects are written to Azurite directly (never
// through the proxy), sealed with oct keys held by a static releaser (key
// release is not what these tests exercise; integration/keyfaults_test.go
// does that with the devstack).
//
// Running the filesystem in the test process lets the tests count its
// goroutines and descriptors; the storage client has short per-try
// timeouts so that stalls cost seconds, not minutes.
type storageRig struct {
	t      *testing.T
	az     *azurite.Instance
	direct *azblob.Store // writes, no faults
	proxy  *faultproxy.Proxy
	tr     *http.Transport // the mount's storage transport
	root   *fs.Root
	mnt    string
	keys   map[string]*keyrelease.Key
	plain  map[string][]byte // object name -> plaintext the mount must show
}

const rigChunk = 64 << 10

// Keys of the rig: k1 and k2 may be used by the dataset, k3 may not.
var (
	rigRef1 = keyrelease.KeyRef{Vault: "rig.vault.azure.net", Name: "k1"}
	rigRef2 = keyrelease.KeyRef{Vault: "rig.vault.azure.net", Name: "k2"}
	rigRef3 = keyrelease.KeyRef{Vault: "rig.vault.azure.net", Name: "k3"}
)

func newStorageRig(t *testing.T) *storageRig {
	t.Helper()
	requireFUSE(t)
	ctx := context.Background()
	r := &storageRig{t: t, keys: map[string]*keyrelease.Key{}, plain: map[string][]byte{}}
	r.az = azurite.Start(t, azurite.Options{})
	r.az.CreateContainer(t, "enc")
	var err error
	r.direct, err = azblob.Open(ctx, azblob.Config{ContainerURL: r.az.ContainerURL("enc"), AccountKey: r.az.AccountKey, Transport: r.az.HTTPClient})
	if err != nil {
		t.Fatal(err)
	}
	r.proxy, err = faultproxy.Start(r.az.Endpoint, faultproxy.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.proxy.Close() })

	var keys []*keyrelease.Key
	for i, ref := range []keyrelease.KeyRef{rigRef1, rigRef2, rigRef3} {
		k, err := keyrelease.ParseKey(bytes.Repeat([]byte{byte(i + 1)}, 32))
		if err != nil {
			t.Fatal(err)
		}
		k.Ref = ref
		r.keys[ref.Name] = k
		keys = append(keys, k.Clone())
	}
	r.tr = http.DefaultTransport.(*http.Transport).Clone()
	r.tr.MaxIdleConnsPerHost = 64
	store, err := azblob.Open(ctx, azblob.Config{
		ContainerURL: r.proxy.URL() + "/" + azurite.AccountName + "/enc",
		AccountKey:   r.az.AccountKey,
		Transport:    &http.Client{Transport: r.tr},
		// Short tries: a stalled request is abandoned after 2s and
		// retried; 4 tries in all.
		Retry: policy.RetryOptions{MaxRetries: 3, TryTimeout: 2 * time.Second,
			RetryDelay: 10 * time.Millisecond, MaxRetryDelay: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	root, err := fs.NewRoot(fs.Options{
		Releaser:   keyrelease.NewStatic(keys...),
		Datasets:   []fs.DatasetSpec{{Name: "data", Store: store, Keys: []keyrelease.KeyRef{rigRef1, rigRef2}}},
		CacheBytes: 2 << 20, // smaller than the objects together: reads go to storage
		RangeSize:  128 << 10,
		Parallel:   16,
		ListTTL:    200 * time.Millisecond,
		OpTimeout:  30 * time.Second,
		Logger:     zerolog.New(newRigLog(t)).Level(zerolog.WarnLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	r.root = root
	r.mnt = filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(r.mnt, 0o755)
	srv, err := fs.Mount(r.mnt, root, fs.MountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
		root.Wipe()
	})
	return r
}

// rigLog keeps the filesystem's log and shows it only when the test
// fails (storage faults make many warnings). Loads run detached from
// readers and may log after the test ended; those lines are dropped.
type rigLog struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	done bool
}

func newRigLog(t *testing.T) *rigLog {
	l := &rigLog{}
	t.Cleanup(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.done = true
		if t.Failed() {
			t.Logf("filesystem log (last 64 KiB):\n%s", l.buf.Bytes()[max(0, l.buf.Len()-64<<10):])
		}
	})
	return l
}

func (l *rigLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.buf.Write(p)
	}
	return len(p), nil
}

// seal seals pt for key (a rig key name) under sealedFor.
func (r *storageRig) seal(pt []byte, key, sealedFor string) []byte {
	r.t.Helper()
	k := r.keys[key]
	obj, err := crypto.Seal(pt, k.Oct, crypto.SealOptions{Name: sealedFor, KeyRef: k.Ref.String(), ChunkSize: rigChunk})
	if err != nil {
		r.t.Fatal(err)
	}
	return obj
}

// put stores obj as name in Azurite, with the upload metadata that lets
// listings compute sizes when withMeta (as `skrfs upload` does), and
// records the plaintext the mount must show for it (nil: none).
func (r *storageRig) put(name string, obj []byte, withMeta bool, pt []byte) {
	r.t.Helper()
	var md map[string]string
	if withMeta {
		h, err := crypto.ParseHeader(obj)
		if err != nil {
			r.t.Fatal(err)
		}
		md = map[string]string{"skrfs_header_len": strconv.Itoa(h.Len()), "skrfs_chunk_size": strconv.Itoa(h.ChunkSize), "skrfs_version": strconv.Itoa(h.Version)}
	}
	r.putRaw(name, obj, md)
	r.plain[name] = pt
}

func (r *storageRig) putRaw(name string, obj []byte, md map[string]string) {
	r.t.Helper()
	if err := r.direct.Put(context.Background(), name, obj, md); err != nil {
		r.t.Fatal(err)
	}
}

func (r *storageRig) path(name string) string {
	return filepath.Join(r.mnt, "data", filepath.FromSlash(name))
}

// errWrongBytes: a read returned bytes other than the plaintext. Never
// acceptable.
var errWrongBytes = fmt.Errorf("wrong bytes")

// readAll opens name with O_DIRECT (every read goes to the filesystem, not
// the page cache) and reads it whole. It returns errWrongBytes (wrapped
// with detail) for anything but exactly want, or the error.
func readAll(p string, want []byte) error {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		var size int64 = -1
		if st, err := f.Stat(); err == nil {
			size = st.Size()
		}
		return fmt.Errorf("%w: %d bytes, want %d (first difference at %d; size now %d)", errWrongBytes, len(got), len(want), firstDiff(got, want), size)
	}
	return nil
}

// readRanges opens name with O_DIRECT and reads n random 4 KiB-aligned
// ranges, each compared with want.
func readRanges(p string, want []byte, rnd *rand.Rand, n int) error {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	for range n {
		off := rnd.Int64N(int64(len(want))/4096+1) * 4096
		buf := make([]byte, 4096*(1+rnd.IntN(32)))
		k, err := f.ReadAt(buf, off)
		if err != nil && err != io.EOF {
			return err
		}
		end := min(off+int64(len(buf)), int64(len(want)))
		if off > end || !bytes.Equal(buf[:k], want[off:end]) {
			return fmt.Errorf("%w: %d bytes at %d", errWrongBytes, k, off)
		}
	}
	return nil
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// settle closes idle connections and waits until the process's goroutines
// and descriptors are back within slack of the baseline (a leak check;
// the deadline is a hang guard, not a timing assertion).
func (r *storageRig) settle(what string, goroutines, fds int) {
	r.t.Helper()
	const slackG, slackFD = 8, 4
	deadline := time.Now().Add(30 * time.Second)
	for {
		r.tr.CloseIdleConnections()
		r.proxy.CloseIdleConnections()
		r.proxy.CloseIdleClientConnections()
		r.az.HTTPClient.CloseIdleConnections()
		g, n := runtime.NumGoroutine(), openFDs(r.t, os.Getpid())
		if g <= goroutines+slackG && n <= fds+slackFD {
			r.t.Logf("%s: %d goroutines (baseline %d), %d descriptors (baseline %d)", what, g, goroutines, n, fds)
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			r.t.Fatalf("%s: %d goroutines (baseline %d), %d descriptors (baseline %d) after 30s\n%s", what, g, goroutines, n, fds, buf)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// baseline closes idle connections and returns the goroutine and
// descriptor counts of the process.
func (r *storageRig) baseline() (goroutines, fds int) {
	r.tr.CloseIdleConnections()
	r.proxy.CloseIdleConnections()
	r.proxy.CloseIdleClientConnections()
	r.az.HTTPClient.CloseIdleConnections()
	time.Sleep(200 * time.Millisecond) // let closed connections' goroutines exit
	return runtime.NumGoroutine(), openFDs(r.t, os.Getpid())
}
