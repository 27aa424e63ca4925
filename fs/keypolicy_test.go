package fs

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/keyrelease"
)

// A dataset whose objects may use an RSA or EC key and that has no
// producer authentication gets one warning (not one per open); datasets
// restricted to oct keys, or with producer authentication, get none.
func TestPublicKeyDatasetWarning(t *testing.T) {
	logs := &syncBuffer{}
	w := newWorld(t, func(w *world) {
		w.tune = func(o *Options) {
			o.Logger = zerolog.New(logs).Level(zerolog.WarnLevel)
			o.Datasets = append(o.Datasets,
				DatasetSpec{Name: "octonly", Store: w.store, Keys: []keyrelease.KeyRef{refOct}},
				DatasetSpec{Name: "signed", Store: w.store, Keys: []keyrelease.KeyRef{refRSA, refOct}, ProducerAuthenticated: true})
		}
	})
	for i := 0; i < 3; i++ {
		for _, p := range []string{"data/hello.txt", "data/big.bin", "octonly/big.bin", "signed/hello.txt", "keys/demo-rsa.pub.pem"} {
			if _, err := os.ReadFile(w.path(p)); err != nil {
				t.Fatalf("%s: %v", p, err)
			}
		}
	}
	var warnings []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "no producer authentication") {
			warnings = append(warnings, l)
		}
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], `"dataset":"data"`) || !strings.Contains(warnings[0], `"kty":"RSA"`) ||
		!strings.Contains(warnings[0], refRSA.String()) {
		t.Fatalf("want one warning for dataset data and key demo-rsa, got %d:\n%s", len(warnings), strings.Join(warnings, "\n"))
	}
}

// versionedReleaser reports the current version of a key released
// without one, as Key Vault does in the released key's kid.
type versionedReleaser struct {
	inner   keyrelease.Releaser
	current string
}

func (v versionedReleaser) Release(ctx context.Context, ref keyrelease.KeyRef) (*keyrelease.Key, error) {
	k, err := v.inner.Release(ctx, ref)
	if err == nil {
		k.Ref.Version = ref.Version
		if ref.Version == "" {
			k.Ref.Version = v.current
		}
	}
	return k, err
}

// A dataset with a version allow-list for a key opens only objects sealed
// for a listed version; an object naming another version (storage chose
// it) is refused with EACCES before any release, and an object naming no
// version is refused when the key's current version is not listed.
func TestKeyVersionAllowList(t *testing.T) {
	vref := func(v string) keyrelease.KeyRef { r := refOct; r.Version = v; return r }
	for _, current := range []string{"0123456789abcdef0123456789abcdef", "ffffffffffffffffffffffffffffffff"} {
		w := newWorld(t, func(w *world) {
			w.put("v/listed.txt", []byte("listed"), w.oct.Oct, vref("0123456789abcdef0123456789abcdef"), "v/listed.txt")
			w.put("v/other.txt", []byte("other"), w.oct.Oct, vref("9999999999999999999999999999999a"), "v/other.txt")
			w.put("v/none.txt", []byte("none"), w.oct.Oct, refOct, "v/none.txt")
			w.tune = func(o *Options) {
				o.Releaser = versionedReleaser{inner: o.Releaser, current: current}
				o.Datasets[0].Versions = map[keyrelease.KeyRef][]string{refOct: {"0123456789ABCDEF0123456789ABCDEF", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}}
			}
		})
		if got, err := os.ReadFile(w.path("data/v/listed.txt")); err != nil || string(got) != "listed" {
			t.Errorf("listed version: %q, %v", got, err)
		}
		before := w.rel.calls.Load()
		if _, err := os.ReadFile(w.path("data/v/other.txt")); errnoOf(err) != syscall.EACCES {
			t.Errorf("unlisted version: %v, want EACCES", err)
		}
		if w.rel.calls.Load() != before {
			t.Errorf("an unlisted version was released")
		}
		_, err := os.ReadFile(w.path("data/v/none.txt"))
		if listed := strings.HasPrefix(current, "0123"); listed != (err == nil) || (!listed && errnoOf(err) != syscall.EACCES) {
			t.Errorf("no version, current %s: %v", current, err)
		}
		// Keys without an allow-list are unaffected.
		if _, err := os.ReadFile(w.path("data/hello.txt")); err != nil {
			t.Errorf("RSA key without a list: %v", err)
		}
	}
}
