package upload

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/crypto"
)

// Signed manifests (docs/format.md section 12). A signed upload writes the
// objects first and the manifest last, so that a crash never publishes a
// manifest naming missing objects. The new manifest is the previous
// verified one plus what the run uploaded: it is never rebuilt from a
// listing of storage, which would sign objects planted there.

// ErrPrevious: the dataset's current manifest cannot be built on.
var ErrPrevious = errors.New("upload: the dataset's current manifest cannot be used")

// ErrStale: the dataset's manifest is older than what the producer knows
// of the dataset (CheckFloors).
var ErrStale = fmt.Errorf("%w: it is older than this producer knows", ErrPrevious)

// Floor is an epoch that a producer knows its dataset's manifest has
// reached, from outside storage: the Key Vault anchor, an epoch given on
// the command line, the producer's own record of what it published.
type Floor struct {
	Epoch  uint64
	Source string // where the epoch is known from, e.g. "--min-epoch 7"
	// Override says what a person can do when the rollback is deliberate
	// ("" when nothing).
	Override string
}

// CheckFloors refuses prev (nil: the dataset has no manifest) when its
// epoch is below a floor. Signature checks cannot see this: an older
// manifest put back in storage (or the newest one deleted) is still
// genuinely signed. Building on it would sign its stale entries at a new
// epoch, resurrecting objects a later publish replaced or removed, and
// refreshing it would give a stale state a new creation time, defeating
// readers' max_age. So a producer checks before it signs anything.
func CheckFloors(prev *crypto.Manifest, floors ...Floor) error {
	var have uint64
	what := "the dataset has no manifest"
	if prev != nil {
		have = prev.Epoch
		what = fmt.Sprintf("storage holds epoch %d", have)
	}
	var above []string
	for _, f := range floors {
		if f.Epoch <= have {
			continue
		}
		s := fmt.Sprintf("epoch %d known from %s", f.Epoch, f.Source)
		if f.Override != "" {
			s += " (" + f.Override + ")"
		}
		above = append(above, s)
	}
	if len(above) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s, below %s; the manifest was rolled back or deleted in storage, and nothing was signed: put the dataset's newest manifest back",
		ErrStale, what, strings.Join(above, "; "))
}

// ReadManifest returns the dataset's manifest bytes, or nil when it has
// none.
func ReadManifest(ctx context.Context, st blob.Store) ([]byte, blob.Info, error) {
	info, err := st.Stat(ctx, crypto.ManifestName)
	if errors.Is(err, blob.ErrNotFound) {
		return nil, blob.Info{}, nil
	}
	if err != nil {
		return nil, blob.Info{}, err
	}
	if info.Size > crypto.MaxManifestSize {
		return nil, info, fmt.Errorf("%w: %s is %d bytes", crypto.ErrManifestMalformed, crypto.ManifestName, info.Size)
	}
	buf := make([]byte, info.Size)
	if n, err := st.ReadAt(ctx, info.Ref(), buf, 0); err != nil && !(err == io.EOF && int64(n) == info.Size) {
		return nil, info, err
	}
	return buf, info, nil
}

// Previous reads and verifies the dataset's manifest with v. It returns nil
// when the dataset has none; a manifest that does not verify is an error
// (never built on).
func Previous(ctx context.Context, st blob.Store, v *crypto.ManifestVerifier) (*crypto.Manifest, error) {
	b, _, err := ReadManifest(ctx, st)
	if err != nil || b == nil {
		return nil, err
	}
	m, err := crypto.VerifyManifest(b, v)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPrevious, err)
	}
	return m, nil
}

// StoredEntry describes the object stored under objName as the manifest
// entry for name: its header's digest and its plaintext size. The header
// must be sealed for name.
func StoredEntry(ctx context.Context, st blob.Store, objName, name string) (crypto.ManifestEntry, error) {
	info, err := st.Stat(ctx, objName)
	if err != nil {
		return crypto.ManifestEntry{}, err
	}
	buf := make([]byte, min(info.Size, crypto.MaxHeaderSize))
	if n, err := st.ReadAt(ctx, info.Ref(), buf, 0); err != nil && !(err == io.EOF && n == len(buf)) {
		return crypto.ManifestEntry{}, err
	}
	h, err := crypto.ParseHeader(buf)
	if err != nil {
		return crypto.ManifestEntry{}, err
	}
	if h.Name != name {
		return crypto.ManifestEntry{}, fmt.Errorf("%w: %s is sealed for %q", crypto.ErrNameMismatch, objName, h.Name)
	}
	size, err := h.PlainSize(info.Size)
	if err != nil {
		return crypto.ManifestEntry{}, err
	}
	return crypto.ManifestEntry{Name: name, Size: size, HeaderSHA256: crypto.HeaderDigest(h.Bytes())}, nil
}

// Collector gathers the entries of the objects a run seals (Options.Sealed).
type Collector struct {
	mu      sync.Mutex
	entries map[string]crypto.ManifestEntry
}

// Sealed is an Options.Sealed callback.
func (c *Collector) Sealed(f File, header []byte, plainSize int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[string]crypto.ManifestEntry{}
	}
	c.entries[f.Name] = crypto.ManifestEntry{Name: f.Name, Size: plainSize, HeaderSHA256: crypto.HeaderDigest(header)}
}

// Entries returns what was collected.
func (c *Collector) Entries() map[string]crypto.ManifestEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.entries)
}

// Unpinned returns the files of a run that it did not seal (skipped as
// unchanged) and whose stored object is not the one prev lists: their
// metadata claims they are current, but nothing proves it, so they must be
// uploaded again (Force) before they are signed.
func Unpinned(ctx context.Context, st blob.Store, files []File, sealed map[string]crypto.ManifestEntry, prev *crypto.Manifest, suffix string) ([]File, error) {
	var out []File
	for _, f := range files {
		if _, ok := sealed[f.Name]; ok {
			continue
		}
		var want crypto.ManifestEntry
		ok := false
		if prev != nil {
			want, ok = prev.Lookup(f.Name)
		}
		got, err := StoredEntry(ctx, st, f.Name+suffix, f.Name)
		if err != nil && !errors.Is(err, crypto.ErrFormat) && !errors.Is(err, crypto.ErrUnauthenticated) && !errors.Is(err, blob.ErrNotFound) {
			return nil, err
		}
		if err != nil || !ok || got != want {
			out = append(out, f)
		}
	}
	return out, nil
}

// NextManifest is prev (nil: none) with entries added or replaced, the
// next epoch, and the creation time now. id is the dataset id: "" keeps
// prev's (or draws a random UUID for a first publish); a different id than
// prev's is refused.
func NextManifest(prev *crypto.Manifest, id string, entries map[string]crypto.ManifestEntry, now time.Time) (*crypto.Manifest, error) {
	m := &crypto.Manifest{Dataset: id, Epoch: 1, Created: now.UTC().Truncate(time.Second)}
	merged := map[string]crypto.ManifestEntry{}
	if prev != nil {
		if id != "" && id != prev.Dataset {
			return nil, fmt.Errorf("%w: it is dataset %q, not %q", ErrPrevious, prev.Dataset, id)
		}
		m.Dataset, m.Epoch = prev.Dataset, prev.Epoch+1
		if !m.Created.After(prev.Created) {
			m.Created = prev.Created.Add(time.Second) // created never goes backwards
		}
		for _, e := range prev.Entries {
			merged[e.Name] = e
		}
	}
	if m.Dataset == "" {
		m.Dataset = NewDatasetID()
	}
	maps.Copy(merged, entries)
	m.Entries = slices.Collect(maps.Values(merged))
	if err := crypto.SortEntries(m.Entries); err != nil {
		return nil, err
	}
	return m, nil
}

// Refreshed is prev re-signed as is with a new creation time: same epoch,
// same entries (`skrfs manifest refresh`).
func Refreshed(prev *crypto.Manifest, now time.Time) *crypto.Manifest {
	m := *prev
	m.Entries = slices.Clone(prev.Entries)
	m.Created = now.UTC().Truncate(time.Second)
	if !m.Created.After(prev.Created) {
		m.Created = prev.Created.Add(time.Second)
	}
	return &m
}

// NewDatasetID is a random (version 4) UUID.
func NewDatasetID() string {
	var u [16]byte
	rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:])
}

// Publish signs m and writes it as the dataset's manifest.
func Publish(ctx context.Context, dst Destination, m *crypto.Manifest, s crypto.ManifestSigner) ([]byte, error) {
	tok, err := crypto.SignManifest(m, s)
	if err != nil {
		return nil, err
	}
	if err := dst.Upload(ctx, crypto.ManifestName, bytes.NewReader(tok), map[string]string{"skrfs_manifest_epoch": fmt.Sprint(m.Epoch)}); err != nil {
		return nil, fmt.Errorf("publishing the manifest: %w", err)
	}
	return tok, nil
}

// Mirror returns the entries of a mirror publish: exactly the run's files,
// each as sealed by the run or, when unchanged, as prev lists it (Unpinned
// has made sure it does). Entries of prev for other names are dropped; their
// objects stay in storage, unlisted, so mounts hide them.
func Mirror(prev *crypto.Manifest, files []File, sealed map[string]crypto.ManifestEntry) (map[string]crypto.ManifestEntry, error) {
	out := make(map[string]crypto.ManifestEntry, len(files))
	for _, f := range files {
		if e, ok := sealed[f.Name]; ok {
			out[f.Name] = e
			continue
		}
		var e crypto.ManifestEntry
		ok := false
		if prev != nil {
			e, ok = prev.Lookup(f.Name)
		}
		if !ok {
			return nil, fmt.Errorf("upload: %s was neither uploaded nor listed by the previous manifest", f.Name)
		}
		out[f.Name] = e
	}
	return out, nil
}

// WithoutEntries is prev's identity (dataset, epoch, time) with no entries:
// the base of a mirror publish.
func WithoutEntries(prev *crypto.Manifest) *crypto.Manifest {
	if prev == nil {
		return nil
	}
	m := *prev
	m.Entries = nil
	return &m
}
