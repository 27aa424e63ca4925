package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/blob/azblob"
	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/fs"
	"github.com/skrfs/skrfs/integration/azurite"
	"github.com/skrfs/skrfs/keyrelease"
)

// BenchmarkFirstListing measures the first `ls -l` (readdir, then lstat of
// every entry) of a fresh mount of 10,000 objects in 100 directories on
// Azurite, listed from the signed manifest and from storage LIST (which
// carries the sizes in upload metadata), side by side, with the storage
// requests each made. It is in `make bench`, not `make test`:
//
//	go test -run '^$' -bench BenchmarkFirstListing -benchtime 1x -count 3 ./integration/
func BenchmarkFirstListing(b *testing.B) {
	const n, dirs = 10_000, 100
	if _, err := os.Stat("/dev/fuse"); err != nil || os.Geteuid() != 0 {
		b.Fatal("needs /dev/fuse and root")
	}
	ctx := context.Background()
	az := azurite.Start(b, azurite.Options{})
	az.CreateContainer(b, "enc")
	st, err := azblob.Open(ctx, azblob.Config{ContainerURL: az.ContainerURL("enc"), AccountKey: az.AccountKey, Transport: az.HTTPClient})
	if err != nil {
		b.Fatal(err)
	}
	key, _ := keyrelease.ParseKey(make([]byte, 32))
	key.Ref = keyrelease.KeyRef{Vault: "bench.vault.azure.net", Name: "k"}
	signer := newBenchSigner(b)
	m := &crypto.Manifest{Dataset: "bench", Epoch: 1, Created: time.Now().UTC().Truncate(time.Second), Entries: make([]crypto.ManifestEntry, n)}
	var wg sync.WaitGroup
	work := make(chan int)
	var failed atomic.Value
	for range 16 {
		wg.Go(func() {
			for i := range work {
				name := fmt.Sprintf("d%03d/f%05d.csv", i%dirs, i)
				obj, err := crypto.Seal([]byte(name), key.Oct, crypto.SealOptions{Name: name, KeyRef: key.Ref.String()})
				if err == nil {
					h, _ := crypto.ParseHeader(obj)
					m.Entries[i] = crypto.ManifestEntry{Name: name, Size: int64(len(name)), HeaderSHA256: crypto.HeaderDigest(h.Bytes())}
					err = st.Put(ctx, name, obj, map[string]string{"skrfs_header_len": strconv.Itoa(h.Len()), "skrfs_chunk_size": strconv.Itoa(h.ChunkSize), "skrfs_version": strconv.Itoa(h.Version)})
				}
				if err != nil {
					failed.Store(err)
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	if err := crypto.SortEntries(m.Entries); err != nil {
		b.Fatal(err)
	}
	tok, err := crypto.SignManifest(m, signer)
	if err != nil {
		b.Fatal(err)
	}
	if err := st.Put(ctx, crypto.ManifestName, tok, nil); err != nil {
		b.Fatal(err)
	}
	v, _ := crypto.NewManifestVerifier(signer.Public())

	for _, mode := range []string{"manifest", "list"} {
		b.Run(mode, func(b *testing.B) {
			for b.Loop() {
				cs := &callCountingStore{Store: st}
				spec := fs.DatasetSpec{Name: "data", Store: cs, Keys: []keyrelease.KeyRef{key.Ref}}
				if mode == "manifest" {
					spec.Manifest = &fs.ManifestSpec{Mode: fs.ManifestRequire, Verifier: v, Refresh: time.Hour}
				}
				root, err := fs.NewRoot(fs.Options{Releaser: keyrelease.NewStatic(key.Clone()), Datasets: []fs.DatasetSpec{spec},
					Logger: zerolog.Nop()})
				if err != nil {
					b.Fatal(err)
				}
				mnt := b.TempDir()
				srv, err := fs.Mount(mnt, root, fs.MountOptions{})
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				files := lsLR(b, filepath.Join(mnt, "data"))
				el := time.Since(start)
				srv.Unmount()
				root.Wipe() // stops the background check for unlisted objects
				if files != n {
					b.Fatalf("%s: ls -l saw %d files, want %d", mode, files, n)
				}
				b.ReportMetric(float64(el.Milliseconds()), "ms/first-ls-l")
				b.ReportMetric(float64(cs.lists.Load()), "lists")
				b.ReportMetric(float64(cs.reads.Load()), "reads")
				b.ReportMetric(float64(cs.stats.Load()), "stats")
			}
		})
	}
}

// lsLR is `ls -lR`: readdir of every directory and lstat of every entry.
// It returns the number of files.
func lsLR(tb testing.TB, dir string) int {
	ents, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	files := 0
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if _, err := os.Lstat(p); err != nil {
			tb.Fatal(err)
		}
		if e.IsDir() {
			files += lsLR(tb, p)
		} else {
			files++
		}
	}
	return files
}

type callCountingStore struct {
	blob.Store
	lists, reads, stats atomic.Int64
}

func (c *callCountingStore) List(ctx context.Context, o blob.ListOptions, fn func(blob.Info) error) error {
	c.lists.Add(1)
	return c.Store.List(ctx, o, fn)
}

func (c *callCountingStore) ReadAt(ctx context.Context, ref blob.Ref, p []byte, off int64) (int, error) {
	c.reads.Add(1)
	return c.Store.ReadAt(ctx, ref, p, off)
}

func (c *callCountingStore) Stat(ctx context.Context, name string) (blob.Info, error) {
	c.stats.Add(1)
	return c.Store.Stat(ctx, name)
}

func newBenchSigner(tb testing.TB) *crypto.LocalSigner {
	tb.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, err := crypto.NewLocalSigner(k)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}
