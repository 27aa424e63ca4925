package upload

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skrfs/skrfs/blob/memblob"
	"github.com/skrfs/skrfs/crypto"
)

// memDest is a memblob store that accepts uploads.
type memDest struct{ *memblob.Store }

func (d memDest) Upload(ctx context.Context, name string, r io.Reader, md map[string]string) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	return d.PutMetadata(name, b, md)
}

// TestSignedRuns: a signed run's manifest lists exactly what it sealed,
// the next run builds on the previous verified manifest at epoch + 1, an
// object that is unchanged by its metadata but not the one the previous
// manifest lists (planted with copied metadata) is uploaded again before
// it is signed, and a previous manifest that does not verify is refused.
func TestSignedRuns(t *testing.T) {
	ctx := context.Background()
	dst := memDest{memblob.New()}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, _ := crypto.NewLocalSigner(k)
	v, _ := crypto.NewManifestVerifier(s.Public())
	kek := bytes.Repeat([]byte{7}, 32)
	src := t.TempDir()
	write := func(name, content string) {
		os.MkdirAll(filepath.Dir(filepath.Join(src, name)), 0o755)
		os.WriteFile(filepath.Join(src, name), []byte(content), 0o644)
	}
	write("a.txt", "alpha")
	write("dir/b.txt", "beta")
	signedRun := func(id string) *crypto.Manifest {
		t.Helper()
		prev, err := Previous(ctx, dst, v)
		if err != nil {
			t.Fatal(err)
		}
		files, err := Collect([]string{src})
		if err != nil {
			t.Fatal(err)
		}
		var c Collector
		opts := Options{KEK: kek, KeyRef: "https://v.vault.azure.net/keys/k", Sealed: c.Sealed}
		if res := Run(ctx, dst, files, opts); len(res.Errors) > 0 {
			t.Fatal(res.Errors)
		}
		again, err := Unpinned(ctx, dst, files, c.Entries(), prev, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(again) > 0 {
			opts.Force = true
			Run(ctx, dst, again, opts)
		}
		m, err := NextManifest(prev, id, c.Entries(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Publish(ctx, dst, m, s); err != nil {
			t.Fatal(err)
		}
		got, err := Previous(ctx, dst, v)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	m1 := signedRun("ds")
	if m1.Epoch != 1 || m1.Dataset != "ds" || len(m1.Entries) != 2 {
		t.Fatalf("first run: %+v", m1)
	}
	for _, e := range m1.Entries {
		got, err := StoredEntry(ctx, dst, e.Name, e.Name)
		if err != nil || got != e {
			t.Fatalf("%s: entry does not pin the stored object: %v", e.Name, err)
		}
	}
	// A planted object with the genuine object's metadata: the upload
	// skips it as unchanged, the signed run must not sign it.
	info, _ := dst.Stat(ctx, "a.txt")
	planted, _ := crypto.Seal([]byte("planted"), kek, crypto.SealOptions{Name: "a.txt", KeyRef: "https://v.vault.azure.net/keys/k"})
	dst.PutMetadata("a.txt", planted, info.Metadata)
	m2 := signedRun("")
	if m2.Epoch != 2 || m2.Dataset != "ds" {
		t.Fatalf("second run: %+v", m2)
	}
	e, _ := m2.Lookup("a.txt")
	if got, _ := StoredEntry(ctx, dst, "a.txt", "a.txt"); got != e || e.HeaderSHA256 == crypto.HeaderDigest(planted[:mustHeaderLen(t, planted)]) {
		t.Fatal("the planted object was signed")
	}
	// A mirror publish of only dir/: a.txt's entry is removed.
	files, _ := Collect([]string{src})
	var only []File
	for _, f := range files {
		if f.Name == "dir/b.txt" {
			only = append(only, f)
		}
	}
	ents, err := Mirror(m2, only, nil)
	if err != nil {
		t.Fatal(err)
	}
	m3, err := NextManifest(WithoutEntries(m2), "", ents, time.Now())
	if err != nil || m3.Epoch != 3 || len(m3.Entries) != 1 || m3.Entries[0].Name != "dir/b.txt" {
		t.Fatalf("mirror: %+v %v", m3, err)
	}
	if _, err := Mirror(nil, only, nil); err == nil {
		t.Fatal("mirror of a file neither uploaded nor listed")
	}
	// Another dataset id than the previous manifest's is refused.
	if _, err := NextManifest(m2, "other", nil, time.Now()); !errors.Is(err, ErrPrevious) {
		t.Fatal(err)
	}
	// A refresh keeps epoch and entries, moves the time forward.
	r := Refreshed(m2, m2.Created.Add(-time.Hour))
	if r.Epoch != 2 || !r.Created.After(m2.Created) || len(r.Entries) != 2 {
		t.Fatalf("refresh: %+v", r)
	}
	// A manifest by another key is not built on.
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s2, _ := crypto.NewLocalSigner(k2)
	if _, err := Publish(ctx, dst, m2, s2); err != nil {
		t.Fatal(err)
	}
	if _, err := Previous(ctx, dst, v); !errors.Is(err, ErrPrevious) || !errors.Is(err, crypto.ErrManifestSigner) {
		t.Fatalf("previous by another key: %v", err)
	}
	// Names under .skrfs/ are refused.
	write(".skrfs/manifest", "x")
	if _, err := Collect([]string{src}); err == nil {
		t.Fatal("a source file named .skrfs/manifest was accepted")
	}
}

func mustHeaderLen(t *testing.T, obj []byte) int {
	h, err := crypto.ParseHeader(obj)
	if err != nil {
		t.Fatal(err)
	}
	return h.Len()
}

// TestCheckFloors: a previous manifest (or none) below any floor the
// producer knows is refused with ErrStale (an ErrPrevious), naming its
// epoch and every floor above it with where it is known from; at or above
// every floor it is accepted.
func TestCheckFloors(t *testing.T) {
	at := func(e uint64) *crypto.Manifest { return &crypto.Manifest{Dataset: "ds", Epoch: e} }
	anchor := Floor{Epoch: 5, Source: "the anchor", Override: "set it by hand"}
	minEpoch := Floor{Epoch: 4, Source: "--min-epoch 4"}
	for _, tc := range []struct {
		name   string
		prev   *crypto.Manifest
		floors []Floor
		want   []string // nil: accepted
	}{
		{"no floors", at(1), nil, nil},
		{"no manifest, no floors", nil, nil, nil},
		{"at the floors", at(5), []Floor{anchor, minEpoch}, nil},
		{"above the floors", at(9), []Floor{anchor, minEpoch}, nil},
		{"zero floor", nil, []Floor{{Epoch: 0, Source: "x"}}, nil},
		{"below one", at(4), []Floor{anchor, minEpoch},
			[]string{"storage holds epoch 4, below epoch 5 known from the anchor (set it by hand)"}},
		{"below both", at(3), []Floor{anchor, minEpoch},
			[]string{"storage holds epoch 3, below epoch 5 known from the anchor (set it by hand); epoch 4 known from --min-epoch 4;", "nothing was signed"}},
		{"deleted", nil, []Floor{minEpoch}, []string{"the dataset has no manifest, below epoch 4 known from --min-epoch 4;"}},
	} {
		err := CheckFloors(tc.prev, tc.floors...)
		if tc.want == nil {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, ErrStale) || !errors.Is(err, ErrPrevious) {
			t.Errorf("%s: %v, want ErrStale", tc.name, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", tc.name, err, w)
			}
		}
	}
}
