package fs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/crypto"
)

// manifestWorld is a world whose dataset enforces a signed manifest.
type manifestWorld struct {
	*world
	signer *crypto.LocalSigner
	spec   *ManifestSpec
}

func newSigner(t *testing.T) *crypto.LocalSigner {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, err := crypto.NewLocalSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// listedNames are the objects the first manifest lists.
var listedNames = []string{"big.bin", "dir/sub/nested.txt", "empty", "hello.txt"}

// newManifestWorld publishes a manifest of epoch 5 listing listedNames
// (before the mount, unless publish is false) and mounts with spec
// adjusted by tune.
func newManifestWorld(t *testing.T, publish bool, tune func(*ManifestSpec), opts ...func(*Options)) *manifestWorld {
	return newManifestWorldSigned(t, newSigner(t), publish, tune, opts...)
}

// newManifestWorldSigned is newManifestWorld with the producer's signer.
func newManifestWorldSigned(t *testing.T, signer *crypto.LocalSigner, publish bool, tune func(*ManifestSpec), opts ...func(*Options)) *manifestWorld {
	mw := &manifestWorld{signer: signer}
	v, err := crypto.NewManifestVerifier(mw.signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	mw.spec = &ManifestSpec{Mode: ManifestRequire, Verifier: v, Refresh: time.Hour}
	if tune != nil {
		tune(mw.spec)
	}
	mw.world = newWorld(t, func(w *world) {
		mw.world = w
		if publish {
			mw.publish(5, time.Now().UTC().Truncate(time.Second), "ds-test", listedNames...)
		}
		w.tune = func(o *Options) {
			o.Datasets[0].Manifest = mw.spec
			for _, f := range opts {
				f(o)
			}
		}
	})
	return mw
}

// entry describes the object stored under name as it is now.
func (mw *manifestWorld) entry(name string) crypto.ManifestEntry {
	mw.t.Helper()
	ctx := context.Background()
	info, err := mw.store.Stat(ctx, name)
	if err != nil {
		mw.t.Fatal(err)
	}
	buf := make([]byte, info.Size)
	if _, err := mw.store.ReadAt(ctx, info.Ref(), buf, 0); err != nil {
		mw.t.Fatal(err)
	}
	h, err := crypto.ParseHeader(buf)
	if err != nil {
		mw.t.Fatal(err)
	}
	size, err := h.PlainSize(info.Size)
	if err != nil {
		mw.t.Fatal(err)
	}
	return crypto.ManifestEntry{Name: name, Size: size, HeaderSHA256: crypto.HeaderDigest(h.Bytes())}
}

func (mw *manifestWorld) sign(epoch uint64, created time.Time, id string, s crypto.ManifestSigner, names ...string) []byte {
	mw.t.Helper()
	m := &crypto.Manifest{Dataset: id, Epoch: epoch, Created: created}
	for _, n := range names {
		m.Entries = append(m.Entries, mw.entry(n))
	}
	if err := crypto.SortEntries(m.Entries); err != nil {
		mw.t.Fatal(err)
	}
	tok, err := crypto.SignManifest(m, s)
	if err != nil {
		mw.t.Fatal(err)
	}
	return tok
}

func (mw *manifestWorld) publish(epoch uint64, created time.Time, id string, names ...string) []byte {
	mw.t.Helper()
	tok := mw.sign(epoch, created, id, mw.signer, names...)
	if err := mw.store.Put(crypto.ManifestName, tok); err != nil {
		mw.t.Fatal(err)
	}
	return tok
}

func (mw *manifestWorld) reload() error {
	return mw.root.ReloadManifests(context.Background())
}

func readDirNames(t *testing.T, p string) []string {
	t.Helper()
	ents, err := os.ReadDir(p)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// TestManifestView: only listed objects appear, sizes come from the
// manifest without any release, and the manifest's directory is hidden.
func TestManifestView(t *testing.T) {
	mw := newManifestWorld(t, true, nil)
	if got, want := readDirNames(t, mw.path("data")), []string{"big.bin", "dir", "empty", "hello.txt"}; !slices.Equal(got, want) {
		t.Fatalf("root listing %v, want %v (unlisted objects must be invisible)", got, want)
	}
	if got := readDirNames(t, mw.path("data/dir/sub")); !slices.Equal(got, []string{"nested.txt"}) {
		t.Fatalf("nested listing %v", got)
	}
	for _, n := range listedNames {
		st, err := os.Stat(mw.path("data/" + n))
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() != int64(len(mw.plain[n])) {
			t.Fatalf("%s: size %d, want %d", n, st.Size(), len(mw.plain[n]))
		}
	}
	if n := mw.rel.calls.Load(); n != 0 {
		t.Fatalf("listing released %d keys", n)
	}
	for _, n := range []string{"swapped.txt", "tampered.bin", "not-an-object", ".skrfs", ".skrfs/manifest"} {
		if _, err := os.Stat(mw.path("data/" + n)); errnoOf(err) != syscall.ENOENT {
			t.Fatalf("unlisted %s: %v, want ENOENT", n, err)
		}
	}
	for _, n := range listedNames {
		got, err := os.ReadFile(mw.path("data/" + n))
		if err != nil || !bytes.Equal(got, mw.plain[n]) {
			t.Fatalf("%s: %v", n, err)
		}
	}
	if mw.root.ManifestEpoch("data") != 5 {
		t.Fatal("epoch")
	}
}

// TestManifestRefusesForgeryAndRollback: an object forged with the public
// key under a listed name gives EIO, under a new name it is invisible, an
// older genuine version put back gives EIO, and a listed object that
// storage lacks gives EIO. No key is released for a refused object.
func TestManifestRefusesForgeryAndRollback(t *testing.T) {
	var old []byte
	mw := newManifestWorld(t, false, nil)
	// Two genuine versions of report.csv: the manifest lists the second.
	mw.put("report.csv", []byte("version 1\n"), mw.oct.Oct, refOct, "report.csv")
	old = mw.getRaw("report.csv")
	mw.put("report.csv", []byte("version 2\n"), mw.oct.Oct, refOct, "report.csv")
	mw.publish(5, time.Now().UTC().Truncate(time.Second), "ds-test", append([]string{"report.csv"}, listedNames...)...)
	if err := mw.reload(); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(mw.path("data/report.csv")); err != nil || string(got) != "version 2\n" {
		t.Fatalf("%q %v", got, err)
	}

	// Forgery: anyone with the RSA public key seals a new hello.txt.
	forged, err := crypto.Seal([]byte("forged\n"), &mw.rk.PublicKey, crypto.SealOptions{Name: "hello.txt", KeyRef: refRSA.String(), ChunkSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	mw.store.Put("hello.txt", forged)
	before := mw.rel.calls.Load()
	if _, err := os.ReadFile(mw.path("data/hello.txt")); errnoOf(err) != syscall.EIO {
		t.Fatalf("forged object under a listed name: %v, want EIO", err)
	}
	if mw.rel.calls.Load() != before {
		t.Fatal("a forged object caused a key release")
	}
	// Under a new name: invisible.
	forged2, _ := crypto.Seal([]byte("forged\n"), &mw.rk.PublicKey, crypto.SealOptions{Name: "new.txt", KeyRef: refRSA.String(), ChunkSize: 4096})
	mw.store.Put("new.txt", forged2)
	if _, err := os.ReadFile(mw.path("data/new.txt")); errnoOf(err) != syscall.ENOENT {
		t.Fatalf("forged object under a new name: %v, want ENOENT", err)
	}
	if slices.Contains(readDirNames(t, mw.path("data")), "new.txt") {
		t.Fatal("forged object listed")
	}
	// Rollback of one object: the saved older genuine version put back.
	mw.store.Put("report.csv", old)
	if _, err := os.ReadFile(mw.path("data/report.csv")); errnoOf(err) != syscall.EIO {
		t.Fatalf("older genuine version: %v, want EIO", err)
	}
	// Listed but missing.
	mw.store.Delete("dir/sub/nested.txt")
	if _, err := os.ReadFile(mw.path("data/dir/sub/nested.txt")); errnoOf(err) != syscall.EIO {
		t.Fatalf("listed but missing: %v, want EIO", err)
	}
	// Untouched objects still read.
	if got, err := os.ReadFile(mw.path("data/big.bin")); err != nil || !bytes.Equal(got, mw.plain["big.bin"]) {
		t.Fatal(err)
	}
}

func (w *world) getRaw(name string) []byte {
	w.t.Helper()
	ctx := context.Background()
	info, err := w.store.Stat(ctx, name)
	if err != nil {
		w.t.Fatal(err)
	}
	buf := make([]byte, info.Size)
	if _, err := w.store.ReadAt(ctx, info.Ref(), buf, 0); err != nil {
		w.t.Fatal(err)
	}
	return buf
}

// TestManifestRefusedKeepsLastGood: a manifest that fails verification or
// policy keeps the last good view; each refusal is counted.
func TestManifestRefusedKeepsLastGood(t *testing.T) {
	obs := &manifestCounter{}
	var audit syncBuffer
	mw := newManifestWorld(t, true, nil, func(o *Options) { o.Observer = obs; o.Audit = zerolog.New(&audit) })
	if err := mw.reload(); err != nil {
		t.Fatal(err)
	}
	good := mw.getRaw(crypto.ManifestName)
	now := time.Now().UTC().Truncate(time.Second)
	other := newSigner(t)
	cases := []struct {
		name string
		tok  []byte
		want error
	}{
		{"truncated", good[:len(good)/2], crypto.ErrManifestMalformed},
		{"garbled", append([]byte("garbage"), good[7:]...), crypto.ErrManifestMalformed},
		{"unpinned signer", mw.sign(6, now, "ds-test", other, "hello.txt"), crypto.ErrManifestSigner},
		{"older epoch", mw.sign(4, now, "ds-test", mw.signer, "hello.txt"), ErrManifestRollback},
		{"same epoch re-signed earlier", mw.sign(5, now.Add(-time.Hour), "ds-test", mw.signer, "hello.txt"), ErrManifestRollback},
		{"other dataset id", mw.sign(9, now, "another-dataset", mw.signer, "hello.txt"), ErrManifestDataset},
	}
	for _, c := range cases {
		mw.store.Put(crypto.ManifestName, c.tok)
		if err := mw.reload(); !errors.Is(err, c.want) {
			t.Fatalf("%s: %v, want %v", c.name, err, c.want)
		}
		// The last good view (epoch 5, four objects) is still served.
		if mw.root.ManifestEpoch("data") != 5 {
			t.Fatalf("%s: view changed", c.name)
		}
		if got := readDirNames(t, mw.path("data")); len(got) != 4 {
			t.Fatalf("%s: listing %v", c.name, got)
		}
		if got, err := os.ReadFile(mw.path("data/hello.txt")); err != nil || !bytes.Equal(got, mw.plain["hello.txt"]) {
			t.Fatalf("%s: %v", c.name, err)
		}
	}
	// A dataset with deltas (docs/format.md 12.5) is refused by this
	// version rather than served without them.
	mw.store.Put(crypto.ManifestName, good)
	mw.store.Put(crypto.ManifestDeltaPrefix+"00000000000000000006", []byte("delta"))
	if err := mw.reload(); !errors.Is(err, ErrManifestDeltas) || mw.root.ManifestEpoch("data") != 5 {
		t.Fatalf("deltas: %v", err)
	}
	mw.store.Delete(crypto.ManifestDeltaPrefix + "00000000000000000006")
	if obs.refused.Load() != int64(len(cases))+1 {
		t.Fatalf("%d refusals counted, want %d", obs.refused.Load(), len(cases))
	}
	if n := strings.Count(audit.String(), `"event":"manifest_load"`); n < len(cases)+1 ||
		strings.Count(audit.String(), `"outcome":"denied"`) != len(cases)+1 {
		t.Fatalf("audit events: %d manifest loads, want %d refused and the accepted ones:\n%s", n, len(cases), audit.String())
	}
	// A newer manifest is accepted and swaps the view.
	mw.publish(6, now, "ds-test", "hello.txt")
	if err := mw.reload(); err != nil {
		t.Fatal(err)
	}
	if got := readDirNames(t, mw.path("data")); !slices.Equal(got, []string{"hello.txt"}) {
		t.Fatalf("after epoch 6: %v", got)
	}
}

type manifestCounter struct{ loaded, refused atomic.Int64 }

func (c *manifestCounter) Fetched(time.Duration, error) {}
func (c *manifestCounter) Failed(string, syscall.Errno) {}
func (c *manifestCounter) ManifestLoaded(ds string, epoch uint64, err error) {
	if err != nil {
		c.refused.Add(1)
	} else {
		c.loaded.Add(1)
	}
}

type fixedAnchor uint64

func (a fixedAnchor) Epoch(context.Context) (uint64, error) { return uint64(a), nil }

// TestManifestFreshness: a whole dataset restored with its older manifest
// is accepted by a fresh mount with no anchor (documented), and refused by
// min_epoch and by the anchor; max_age refuses an old manifest; a fresh
// mount with no verified manifest fails closed.
func TestManifestFreshness(t *testing.T) {
	t.Run("fresh mount without anchor accepts an old epoch", func(t *testing.T) {
		mw := newManifestWorld(t, true, nil)
		if _, err := os.ReadFile(mw.path("data/hello.txt")); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("min_epoch", func(t *testing.T) {
		mw := newManifestWorld(t, true, func(s *ManifestSpec) { s.MinEpoch = 6 })
		if _, err := os.ReadDir(mw.path("data")); errnoOf(err) != syscall.EIO {
			t.Fatalf("epoch 5 < min_epoch 6: %v, want EIO", err)
		}
		if _, err := os.ReadFile(mw.path("data/hello.txt")); errnoOf(err) != syscall.EIO {
			t.Fatalf("open: %v, want EIO", err)
		}
	})
	t.Run("anchor", func(t *testing.T) {
		mw := newManifestWorld(t, true, func(s *ManifestSpec) { s.Anchor = fixedAnchor(6) })
		if _, err := os.ReadDir(mw.path("data")); errnoOf(err) != syscall.EIO {
			t.Fatalf("epoch 5 < anchor 6: %v, want EIO", err)
		}
		// The producer publishes epoch 6: accepted at the next load.
		mw.publish(6, time.Now().UTC().Truncate(time.Second), "ds-test", listedNames...)
		if err := mw.reload(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.ReadFile(mw.path("data/hello.txt")); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("max_age", func(t *testing.T) {
		mw := newManifestWorld(t, true, func(s *ManifestSpec) {
			s.MaxAge = time.Hour
			s.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
		})
		if _, err := os.ReadDir(mw.path("data")); errnoOf(err) != syscall.EIO {
			t.Fatalf("expired: %v, want EIO", err)
		}
	})
	t.Run("dataset id pinned in config", func(t *testing.T) {
		mw := newManifestWorld(t, true, func(s *ManifestSpec) { s.ID = "another" })
		if _, err := os.ReadDir(mw.path("data")); errnoOf(err) != syscall.EIO {
			t.Fatalf("other dataset: %v, want EIO", err)
		}
	})
	t.Run("require without a manifest fails closed", func(t *testing.T) {
		mw := newManifestWorld(t, false, nil)
		if _, err := os.ReadDir(mw.path("data")); errnoOf(err) != syscall.EIO {
			t.Fatalf("%v, want EIO", err)
		}
		if _, err := os.ReadFile(mw.path("data/hello.txt")); errnoOf(err) != syscall.EIO {
			t.Fatalf("%v, want EIO", err)
		}
	})
	t.Run("prefer without a manifest lists storage", func(t *testing.T) {
		mw := newManifestWorld(t, false, func(s *ManifestSpec) { s.Mode = ManifestPrefer })
		if got, err := os.ReadFile(mw.path("data/swapped.txt")); errnoOf(err) != syscall.EIO || got != nil {
			t.Fatalf("%v", err) // listed by storage, refused by its name binding as before
		}
		if _, err := os.ReadFile(mw.path("data/hello.txt")); err != nil {
			t.Fatal(err)
		}
		// A manifest that appears and fails verification is not bypassed.
		mw.store.Put(crypto.ManifestName, []byte("garbage"))
		if err := mw.reload(); !errors.Is(err, crypto.ErrManifestMalformed) {
			t.Fatal(err)
		}
		if _, err := os.ReadDir(mw.path("data")); errnoOf(err) != syscall.EIO {
			t.Fatalf("prefer with a bad manifest: %v, want EIO", err)
		}
		// A manifest published later is enforced from the next load on.
		mw.publish(1, time.Now().UTC().Truncate(time.Second), "ds-test", "hello.txt")
		if err := mw.reload(); err != nil {
			t.Fatal(err)
		}
		if got := readDirNames(t, mw.path("data")); !slices.Equal(got, []string{"hello.txt"}) {
			t.Fatalf("%v", got)
		}
	})
}

// TestManifestSwapKeepsOpenHandles: the manifest is replaced while a
// reader streams a file, by one that no longer lists it: the reader
// finishes with the right bytes (its handle pinned the version it opened);
// new opens follow the new manifest.
func TestManifestSwapKeepsOpenHandles(t *testing.T) {
	mw := newManifestWorld(t, true, nil)
	f, err := os.Open(mw.path("data/big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := mw.plain["big.bin"]
	got := make([]byte, 0, len(want))
	buf := make([]byte, 128<<10)
	swapped := false
	for {
		n, err := f.Read(buf)
		got = append(got, buf[:n]...)
		if !swapped && len(got) >= len(want)/3 {
			mw.publish(6, time.Now().UTC().Truncate(time.Second), "ds-test", "hello.txt")
			if err := mw.reload(); err != nil {
				t.Fatal(err)
			}
			swapped = true
		}
		if err != nil {
			break
		}
	}
	if !swapped || !bytes.Equal(got, want) {
		t.Fatalf("reader across the swap got %d bytes, equal %v", len(got), bytes.Equal(got, want))
	}
	if _, err := os.Stat(mw.path("data/big.bin")); errnoOf(err) != syscall.ENOENT {
		t.Fatalf("new lookup after the swap: %v, want ENOENT", err)
	}
	if _, err := os.ReadFile(mw.path("data/hello.txt")); err != nil {
		t.Fatal(err)
	}
}

// TestManifestLogsUnlistedOnce: objects that storage has and the manifest
// does not, and listed objects that storage lacks, are logged once per
// name, however many manifests follow.
func TestManifestLogsUnlistedOnce(t *testing.T) {
	defer unlistedCheckDelay.Store(unlistedCheckDelay.Load())
	unlistedCheckDelay.Store(0)
	var logs syncBuffer
	mw := newManifestWorld(t, false, nil, func(o *Options) { o.Logger = zerolog.New(&logs).Level(zerolog.WarnLevel) })
	emptyObj := mw.getRaw("empty")
	count := func(msg, object string) int {
		n := 0
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, msg) && strings.Contains(l, `"object":"`+object+`"`) {
				n++
			}
		}
		return n
	}
	for epoch := uint64(5); epoch <= 7; epoch++ {
		mw.store.Put("empty", emptyObj)
		mw.publish(epoch, time.Now().UTC().Truncate(time.Second), "ds-test", listedNames...)
		mw.store.Delete("empty") // listed, then missing
		if err := mw.reload(); err != nil {
			t.Fatal(err)
		}
		pollUntil(t, "the unlisted check", func() bool {
			return count("not listed in the manifest", "swapped.txt") >= 1 && count("missing from storage", "empty") >= 1
		})
	}
	// Let any check still running finish: no name is logged twice.
	time.Sleep(200 * time.Millisecond)
	for _, c := range []struct{ msg, object string }{
		{"not listed in the manifest", "swapped.txt"}, {"not listed in the manifest", "tampered.bin"},
		{"missing from storage", "empty"},
	} {
		if n := count(c.msg, c.object); n != 1 {
			t.Fatalf("%s %s logged %d times, want once:\n%s", c.object, c.msg, n, logs.String())
		}
	}
	if count("not listed", "hello.txt") != 0 {
		t.Fatal("a listed object was logged as unlisted")
	}
}

// pollUntil polls f (a hang guard with a generous deadline, not a timing
// assertion).
func pollUntil(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestManifestRefreshInterval: the refresh loop re-reads the manifest on
// its interval: a newer epoch is served without SIGHUP, and one refused
// afterwards (an older epoch put back) keeps the newer view.
func TestManifestRefreshInterval(t *testing.T) {
	mw := newManifestWorld(t, true, func(ms *ManifestSpec) { ms.Refresh = 50 * time.Millisecond })
	if got := readDirNames(t, mw.path("data")); !slices.Equal(got, []string{"big.bin", "dir", "empty", "hello.txt"}) {
		t.Fatalf("epoch 5: %v", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { mw.root.RunManifestRefresh(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	now := time.Now().UTC().Truncate(time.Second)
	mw.publish(6, now, "ds-test", "hello.txt")
	pollUntil(t, "epoch 6 served", func() bool { return mw.root.ManifestEpoch("data") == 6 })
	pollUntil(t, "listing of epoch 6", func() bool {
		ents, err := os.ReadDir(mw.path("data"))
		return err == nil && len(ents) == 1 && ents[0].Name() == "hello.txt"
	})
	mw.publish(5, now, "ds-test", listedNames...)
	time.Sleep(300 * time.Millisecond) // several refreshes
	if got := mw.root.ManifestEpoch("data"); got != 6 {
		t.Fatalf("after an older epoch was put back: serving epoch %d, want 6", got)
	}
}
