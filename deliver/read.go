package deliver

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/keyrelease"
)

// ReadObject returns the plaintext of one object of d, in memory, for
// programs that use skrfs as a library: nothing is written anywhere. name
// is the file's name in the dataset (the object name less d.Suffix), as
// Fetch would deliver it under DIR/<dataset>/.
//
// The checks are Fetch's: the name is safe; with d.Manifest, the object
// must be listed in the verified manifest, with its header digest and
// size; the key named in the object's header must be one of d.Keys (storage
// cannot make the releaser release another key); the header MAC and the
// name the object was sealed for are verified; and every chunk, the last
// included, is authenticated before ReadObject returns. The plaintext is
// returned only whole: on any error, what was decrypted is zeroed and
// only the error is returned.
//
// r releases the key (keyrelease/attested in a TEE); the key is wiped
// before ReadObject returns. maxBytes bounds the plaintext (ErrTooLarge;
// 0 = no limit). A missing object gives an error wrapping
// blob.ErrNotFound, as does an object that the manifest does not list.
func ReadObject(ctx context.Context, r keyrelease.Releaser, d Dataset, name string, maxBytes int64) ([]byte, error) {
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("dataset %s: %q: %w", d.Name, name, err)
	}
	if strings.HasPrefix(name+d.Suffix, crypto.ManifestPrefix) {
		return nil, fmt.Errorf("dataset %s: %q: %w (reserved for the signed manifest)", d.Name, name, ErrUnsafeName)
	}
	pt, err := readObject(ctx, r, &d, name, maxBytes)
	if err != nil {
		return nil, fmt.Errorf("dataset %s: %s: %w", d.Name, name, err)
	}
	return pt, nil
}

func readObject(ctx context.Context, r keyrelease.Releaser, d *Dataset, name string, maxBytes int64) ([]byte, error) {
	var want *crypto.ManifestEntry
	if d.Manifest != nil {
		m, err := loadManifest(ctx, d)
		if err != nil {
			return nil, fmt.Errorf("manifest: %w", err)
		}
		if m != nil {
			e, listed := m.Lookup(name)
			if !listed {
				return nil, fmt.Errorf("not listed in the signed manifest (epoch %d): %w", m.Epoch, blob.ErrNotFound)
			}
			want = &e
		}
	}
	info, err := d.Store.Stat(ctx, name+d.Suffix)
	if err != nil {
		if want != nil && errors.Is(err, blob.ErrNotFound) {
			return nil, fmt.Errorf("%w: %w", ErrManifestMissing, err)
		}
		return nil, err
	}
	var key *keyrelease.Key
	defer func() {
		if key != nil {
			key.Wipe()
		}
	}()
	dec, src, err := openObject(ctx, d, info, name, want, func(ref keyrelease.KeyRef) (*keyrelease.Key, error) {
		var err error
		key, err = r.Release(ctx, ref)
		return key, err
	})
	if err != nil {
		return nil, err
	}
	if maxBytes > 0 && dec.PlainSize() > maxBytes {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, dec.PlainSize(), maxBytes)
	}
	w := &fixedWriter{b: make([]byte, 0, dec.PlainSize())}
	if _, err := dec.Stream(w, src); err != nil {
		clear(w.b[:cap(w.b)])
		return nil, err
	}
	if int64(len(w.b)) != dec.PlainSize() {
		clear(w.b[:cap(w.b)])
		return nil, fmt.Errorf("decrypted %d bytes of %d", len(w.b), dec.PlainSize())
	}
	return w.b, nil
}

// fixedWriter appends to a buffer allocated once at the plaintext's size,
// so no copy of the plaintext is left behind by a reallocation.
type fixedWriter struct{ b []byte }

func (w *fixedWriter) Write(p []byte) (int, error) {
	if len(w.b)+len(p) > cap(w.b) {
		return 0, errors.New("plaintext longer than its header says")
	}
	w.b = append(w.b, p...)
	return len(p), nil
}
