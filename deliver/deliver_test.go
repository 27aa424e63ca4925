package deliver

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/blob/memblob"
	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/keyrelease"
)

var (
	refRSA   = keyrelease.KeyRef{Vault: "v.vault.azure.net", Name: "demo-rsa", Version: "1"}
	refOct   = keyrelease.KeyRef{Vault: "v.vault.azure.net", Name: "demo-oct", Version: "2"}
	refOther = keyrelease.KeyRef{Vault: "evil.vault.azure.net", Name: "demo-oct", Version: "2"}
)

func pseudo(seed uint64, n int) []byte {
	b := make([]byte, n)
	mrand.NewChaCha8([32]byte{byte(seed), 9}).Read(b)
	return b
}

type world struct {
	t     *testing.T
	store *memblob.Store
	rel   *keyrelease.Static
	oct   *keyrelease.Key
	rsa   *rsa.PrivateKey
	plain map[string][]byte
}

func newWorld(t *testing.T) *world {
	t.Helper()
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaKey, _ := keyrelease.FromCrypto(rk)
	rsaKey.Ref = refRSA
	oct, _ := keyrelease.ParseKey(pseudo(1, 32))
	oct.Ref = refOct
	w := &world{t: t, store: memblob.New(), rel: keyrelease.NewStatic(rsaKey.Clone(), oct.Clone()), oct: oct, rsa: rk,
		plain: map[string][]byte{}}
	w.put("hello.txt.enc", []byte("hello, skrfs\n"), &rk.PublicKey, refRSA, "hello.txt")
	w.put("empty.enc", nil, oct.Oct, refOct, "empty")
	w.put("big.bin.enc", pseudo(3, 1<<20+123), oct.Oct, refOct, "big.bin")
	w.put("dir/sub/nested.txt.enc", []byte("nested file\n"), oct.Oct, refOct, "dir/sub/nested.txt")
	w.store.Put("README", []byte("not an object of the dataset (no suffix)"))
	return w
}

func (w *world) put(name string, pt []byte, kek any, ref keyrelease.KeyRef, sealedFor string) []byte {
	w.t.Helper()
	obj, err := crypto.Seal(pt, kek, crypto.SealOptions{Name: sealedFor, KeyRef: ref.String(), ChunkSize: 4096})
	if err != nil {
		w.t.Fatal(err)
	}
	if err := w.store.Put(name, obj); err != nil {
		w.t.Fatal(err)
	}
	w.plain[sealedFor] = pt
	return obj
}

func (w *world) opts() Options {
	return Options{Releaser: w.rel, Logger: zerolog.New(zerolog.NewTestWriter(w.t)).Level(zerolog.WarnLevel),
		Keys: []Key{{Name: "demo-rsa", Ref: keyrelease.KeyRef{Vault: refRSA.Vault, Name: refRSA.Name}, Views: []View{
			{File: "demo-rsa", Format: keyrelease.FormatDefault, Mode: 0o400},
			{File: "demo-rsa.pub.pem", Format: keyrelease.FormatPubPEM, Mode: 0o444}}},
			{Name: "demo-oct", Ref: refOct, Views: []View{
				{File: "demo-oct.jwk", Format: keyrelease.FormatJWK, Mode: 0o400},
				{File: "demo-oct.pub.pem", Format: keyrelease.FormatPubPEM, Mode: 0o400}}}},
		Datasets: []Dataset{{Name: "data", Store: w.store, Suffix: ".enc",
			Keys: []keyrelease.KeyRef{{Vault: refRSA.Vault, Name: refRSA.Name}, {Vault: refOct.Vault, Name: refOct.Name}}}}}
}

func listTree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if p != dir {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

func TestFetchLayout(t *testing.T) {
	w := newWorld(t)
	dir := filepath.Join(t.TempDir(), "out")
	st, err := Fetch(context.Background(), dir, w.opts())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"data", "data/big.bin", "data/dir", "data/dir/sub", "data/dir/sub/nested.txt", "data/empty", "data/hello.txt",
		"keys", "keys/demo-oct.jwk", "keys/demo-rsa", "keys/demo-rsa.pub.pem"}
	if got := listTree(t, dir); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("tree\n got %v\nwant %v", got, want)
	}
	for name, pt := range w.plain {
		got, err := os.ReadFile(filepath.Join(dir, "data", name))
		if err != nil || !bytes.Equal(got, pt) {
			t.Errorf("%s: %v, %d bytes, want %d", name, err, len(got), len(pt))
		}
	}
	priv, _ := os.ReadFile(filepath.Join(dir, "keys", "demo-rsa"))
	pub, _ := os.ReadFile(filepath.Join(dir, "keys", "demo-rsa.pub.pem"))
	if !strings.Contains(string(priv), "PRIVATE KEY") || !strings.Contains(string(pub), "PUBLIC KEY") {
		t.Errorf("key views: %q / %q", priv[:20], pub[:20])
	}
	for p, mode := range map[string]os.FileMode{"keys/demo-rsa": 0o400, "keys/demo-rsa.pub.pem": 0o444, "data/big.bin": 0o400,
		"data/dir": os.ModeDir | 0o500, ".": os.ModeDir | 0o500} {
		fi, err := os.Stat(filepath.Join(dir, p))
		if err != nil || fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v (%v)", p, fi.Mode(), mode, err)
		}
	}
	if st.Files != 7 || st.Bytes < 1<<20 {
		t.Errorf("stats %+v", st)
	}
	if err := Wipe(dir, true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dir after Wipe: %v", err)
	}
}

// TestFetchFailuresWipe: every way an object can be bad fails the whole
// fetch, names the reason, and leaves DIR empty: no partial plaintext, no
// file of the good objects either.
func TestFetchFailuresWipe(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setup   func(w *world, o *Options)
		wantErr error
		wantMsg string
	}{
		{"tampered chunk", func(w *world, o *Options) {
			obj := w.put("zz-tampered.bin.enc", pseudo(4, 5*4096), w.oct.Oct, refOct, "zz-tampered.bin")
			obj[len(obj)-4096] ^= 1
			w.store.Put("zz-tampered.bin.enc", obj)
		}, crypto.ErrUnauthenticated, "zz-tampered.bin"},
		{"truncated", func(w *world, o *Options) {
			obj := w.put("zz-trunc.enc", pseudo(5, 5*4096), w.oct.Oct, refOct, "zz-trunc")
			w.store.Put("zz-trunc.enc", obj[:len(obj)-4096-16])
		}, crypto.ErrUnauthenticated, "zz-trunc"},
		{"sealed for another name", func(w *world, o *Options) {
			w.put("swapped.txt.enc", []byte("I was sealed for another name"), w.oct.Oct, refOct, "other.txt")
		}, nil, "swapped.txt"},
		{"foreign key", func(w *world, o *Options) {
			w.put("foreign.enc", []byte("names a key nobody configured"), w.oct.Oct, refOther, "foreign")
		}, keyrelease.ErrNotAllowed, "evil.vault.azure.net"},
		{"dataset may not use the key", func(w *world, o *Options) {
			o.Datasets[0].Keys = o.Datasets[0].Keys[:1] // only demo-rsa
		}, ErrKeyNotAllowed, "demo-oct"},
		{"not an object", func(w *world, o *Options) {
			w.store.Put("junk.enc", []byte("plain text that is not sealed"))
		}, crypto.ErrFormat, "junk"},
		{"size limit", func(w *world, o *Options) { o.MaxBytes = 1 << 20 }, ErrTooLarge, "limit of 1048576"},
		{"release fails", func(w *world, o *Options) {
			o.Keys = append(o.Keys, Key{Name: "gone", Ref: keyrelease.KeyRef{Vault: "v.vault.azure.net", Name: "gone"},
				Views: []View{{File: "gone", Format: keyrelease.FormatDefault, Mode: 0o400}}})
		}, keyrelease.ErrNotFound, "key gone"},
		{"unsafe name", func(w *world, o *Options) {
			o.Datasets[0].Store = evilNames{w.store}
		}, ErrUnsafeName, `"../escape.enc"`},
		{"object of a denied key", func(w *world, o *Options) {
			o.Releaser = denyOct{w.rel}
		}, keyrelease.ErrDenied, "demo-oct"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			o := w.opts()
			tc.setup(w, &o)
			dir := t.TempDir()
			_, err := Fetch(context.Background(), dir, o)
			if err == nil || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("err = %v, want %v and %q", err, tc.wantErr, tc.wantMsg)
			}
			if left := listTree(t, dir); len(left) != 0 {
				t.Fatalf("left behind after a failed fetch: %v", left)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "escape")); err == nil {
				t.Fatal("wrote outside DIR")
			}
		})
	}
}

// evilNames lists one object whose name climbs out of the dataset.
type evilNames struct{ blob.Store }

func (e evilNames) List(ctx context.Context, opts blob.ListOptions, fn func(blob.Info) error) error {
	if err := fn(blob.Info{Name: "../escape.enc", Size: 100, ETag: `"1"`}); err != nil {
		return err
	}
	return e.Store.List(ctx, opts, fn)
}

// watchStore checks, at each read of ciphertext after the header, that the
// object's final name does not exist yet: a file appears only verified.
type watchStore struct {
	blob.Store
	t       *testing.T
	final   string
	checked atomic.Int32
}

func (s *watchStore) ReadAt(ctx context.Context, ref blob.Ref, p []byte, off int64) (int, error) {
	if ref.Name == "big.bin.enc" && off > 0 {
		if _, err := os.Lstat(s.final); !errors.Is(err, os.ErrNotExist) {
			s.t.Errorf("%s exists while its chunks are still being read (%v)", s.final, err)
		}
		parts, _ := filepath.Glob(filepath.Join(filepath.Dir(s.final), tempPrefix+"*"))
		if len(parts) != 1 {
			s.t.Errorf("partial files %v", parts)
		}
		s.checked.Add(1)
	}
	return s.Store.ReadAt(ctx, ref, p, off)
}

func TestFileAppearsOnlyVerified(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	ws := &watchStore{Store: w.store, t: t, final: filepath.Join(dir, "data", "big.bin")}
	o := w.opts()
	o.Datasets[0].Store = ws
	if _, err := Fetch(context.Background(), dir, o); err != nil {
		t.Fatal(err)
	}
	if ws.checked.Load() == 0 {
		t.Fatal("no chunk read observed")
	}
	if parts, _ := filepath.Glob(filepath.Join(dir, "data", tempPrefix+"*")); len(parts) != 0 {
		t.Fatalf("partial files left: %v", parts)
	}
}

func TestFetchRefusesNonEmptyDir(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	mine := filepath.Join(dir, "mine.txt")
	os.WriteFile(mine, []byte("user data"), 0o600)
	if _, err := Fetch(context.Background(), dir, w.opts()); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("err = %v", err)
	}
	if b, err := os.ReadFile(mine); err != nil || string(b) != "user data" {
		t.Fatalf("the user's file was touched: %v %q", err, b)
	}
}

// TestWipeOverwrites: an open descriptor of a delivered file reads zeros
// after Wipe: the bytes were overwritten, not just unlinked.
func TestWipeOverwrites(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	if _, err := Fetch(context.Background(), dir, w.opts()); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "data", "hello.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Wipe(dir, false); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := f.ReadAt(buf, 0)
	if n != len("hello, skrfs\n") || !bytes.Equal(buf[:n], make([]byte, n)) {
		t.Fatalf("after Wipe the file reads %q", buf[:n])
	}
	if left := listTree(t, dir); len(left) != 0 {
		t.Fatalf("left: %v", left)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("Wipe(dir, false) removed dir: %v", err)
	}
}

func TestCheckMemoryBacked(t *testing.T) {
	if err := CheckMemoryBacked("/dev/shm/does/not/exist/yet"); err != nil {
		t.Errorf("/dev/shm: %v", err)
	}
	if err := CheckMemoryBacked("/"); !errors.Is(err, ErrDiskBacked) {
		// The root of this machine is ext4 (the harness); on a tmpfs root
		// there is nothing disk-backed to test against.
		t.Logf("/ is memory-backed here: %v", err)
	}
	if err := CheckMemoryBacked("/proc/self"); !errors.Is(err, ErrDiskBacked) {
		t.Errorf("/proc accepted: %v", err)
	}
}

func TestCheckEnclaveDir(t *testing.T) {
	for _, tc := range []struct {
		dir, enclave string
		ok           bool
	}{
		{"/secrets", "/secrets", true},
		{"/secrets/app", "/secrets/", true},
		{"/secrets2", "/secrets", false},
		{"/tmp", "/secrets", false},
		{"/secrets/../etc", "/secrets", false},
		{"secrets", "/secrets", false},
		{"/secrets", "", false},
	} {
		err := CheckEnclaveDir(tc.dir, tc.enclave)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrNotEnclaveDir)) {
			t.Errorf("CheckEnclaveDir(%q, %q) = %v", tc.dir, tc.enclave, err)
		}
	}
}

func TestCheckName(t *testing.T) {
	for name, ok := range map[string]bool{"a": true, "a/b.txt": true, "..a": true, "": false, "/a": false, "a/../b": false,
		"a//b": false, ".": false, "a/\x01": false, `a\b`: false, strings.Repeat("x", 256): false} {
		if err := checkName(name); (err == nil) != ok {
			t.Errorf("checkName(%q) = %v", name, err)
		}
	}
}

// denyOct denies demo-oct as Key Vault does when the policy fails.
type denyOct struct{ keyrelease.Releaser }

func (d denyOct) Release(ctx context.Context, ref keyrelease.KeyRef) (*keyrelease.Key, error) {
	if ref.Name == "demo-oct" {
		return nil, fmt.Errorf("%w: policy", keyrelease.ErrDenied)
	}
	return d.Releaser.Release(ctx, ref)
}

// TestDeniedKeyViewsAbsent: a key whose release is denied has no files
// (the mount answers EACCES for them); the rest is delivered.
func TestDeniedKeyViewsAbsent(t *testing.T) {
	w := newWorld(t)
	o := w.opts()
	o.Releaser = denyOct{w.rel}
	o.Datasets[0].Keys = o.Datasets[0].Keys[:1]
	w.store.Delete("empty.enc")
	w.store.Delete("big.bin.enc")
	w.store.Delete("dir/sub/nested.txt.enc")
	dir := t.TempDir()
	st, err := Fetch(context.Background(), dir, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Denied) != 1 || st.Denied[0] != "demo-oct" {
		t.Fatalf("denied %v", st.Denied)
	}
	want := "data data/hello.txt keys keys/demo-rsa keys/demo-rsa.pub.pem"
	if got := strings.Join(listTree(t, dir), " "); got != want {
		t.Fatalf("tree %s, want %s", got, want)
	}
}

// cancelStore cancels the fetch when the first chunk of big.bin is read:
// the signal path of `run --no-fuse` during delivery.
type cancelStore struct {
	blob.Store
	cancel context.CancelFunc
}

func (s cancelStore) ReadAt(ctx context.Context, ref blob.Ref, p []byte, off int64) (int, error) {
	if ref.Name == "big.bin.enc" && off > 0 {
		s.cancel()
		if err := ctx.Err(); err != nil {
			return 0, err
		}
	}
	return s.Store.ReadAt(ctx, ref, p, off)
}

func TestCanceledFetchWipes(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := w.opts()
	o.Datasets[0].Store = cancelStore{w.store, cancel}
	dir := t.TempDir()
	if _, err := Fetch(ctx, dir, o); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if left := listTree(t, dir); len(left) != 0 {
		t.Fatalf("left behind after a canceled fetch: %v", left)
	}
}

// TestFetchVersion2: version 2 objects (a batch key; the nonce table at the
// end of the object) deliver like version 1 ones: a small object whose table
// comes with its header, a large one whose table takes one more read, and a
// tampered table that fails the whole fetch.
func TestFetchVersion2(t *testing.T) {
	for _, tamper := range []bool{false, true} {
		w := newWorld(t)
		rb, err := crypto.NewBatch(&w.rsa.PublicKey, refRSA.String(), nil)
		if err != nil {
			t.Fatal(err)
		}
		ob, err := crypto.NewBatch(w.oct.Oct, refOct.String(), nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range []struct {
			name string
			pt   []byte
			b    *crypto.Batch
		}{{"v2/small.txt", []byte("version 2, small\n"), rb}, {"v2/large.bin", pseudo(7, 3<<20+11), ob}} {
			obj, err := crypto.SealV2(o.pt, o.b, crypto.SealOptions{Name: o.name, ChunkSize: 4096})
			if err != nil {
				t.Fatal(err)
			}
			if tamper && o.name == "v2/large.bin" {
				obj[len(obj)-1] ^= 1 // the last nonce of the table
			}
			if err := w.store.Put(o.name+".enc", obj); err != nil {
				t.Fatal(err)
			}
			w.plain[o.name] = o.pt
		}
		dir := filepath.Join(t.TempDir(), "out")
		_, err = Fetch(context.Background(), dir, w.opts())
		if tamper {
			if !errors.Is(err, crypto.ErrHeaderAuth) {
				t.Fatalf("tampered nonce table: %v, want ErrHeaderAuth", err)
			}
			if got := listTree(t, dir); len(got) != 0 {
				t.Fatalf("a failed fetch left %v", got)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for name, pt := range w.plain {
			got, err := os.ReadFile(filepath.Join(dir, "data", name))
			if err != nil || !bytes.Equal(got, pt) {
				t.Errorf("%s: %v, %d bytes, want %d", name, err, len(got), len(pt))
			}
		}
	}
}
