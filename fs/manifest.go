package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/crypto"
)

// Signed dataset manifests (docs/format.md section 12): with a manifest,
// a dataset shows only the objects it lists, listings come from it, and an
// object is served only if the SHA-256 of its header equals its entry.

// ManifestMode says how a dataset uses its manifest.
type ManifestMode int

const (
	// ManifestOff: no manifest; the dataset is what storage lists.
	ManifestOff ManifestMode = iota
	// ManifestPrefer: enforce the manifest when the dataset has one; list
	// storage (unsigned) when it has none. A manifest that exists but
	// fails verification is never bypassed.
	ManifestPrefer
	// ManifestRequire: no verified manifest, no data (fail closed).
	ManifestRequire
)

func (m ManifestMode) String() string {
	switch m {
	case ManifestPrefer:
		return "prefer"
	case ManifestRequire:
		return "require"
	}
	return "off"
}

// EpochAnchor reports the dataset's current epoch from outside storage
// (a Key Vault secret): a manifest with a lower epoch is a rollback.
type EpochAnchor interface {
	Epoch(ctx context.Context) (uint64, error)
}

// ManifestSpec configures a dataset's manifest.
type ManifestSpec struct {
	Mode     ManifestMode
	Verifier *crypto.ManifestVerifier // pinned signer keys
	// ID is the dataset id the manifest must carry; "" accepts the first
	// id seen and refuses any other for the life of the mount.
	ID string
	// MinEpoch: manifests with a lower epoch are refused.
	MinEpoch uint64
	// MaxAge: manifests created longer ago are refused (0 = no limit).
	MaxAge time.Duration
	// Refresh is the re-read interval (0 = 1 min).
	Refresh time.Duration
	// Anchor, when set, is read at every load; its epoch is a floor.
	Anchor EpochAnchor
	// Now is the clock (nil = time.Now), for tests.
	Now func() time.Time
}

// ManifestObserver is told about every manifest load; an Options.Observer
// that implements it gets the calls (metrics).
type ManifestObserver interface {
	ManifestLoaded(dataset string, epoch uint64, err error)
}

// Errors of manifest enforcement. All of them give EIO.
var (
	ErrManifestUnavailable = errors.New("no verified manifest for this dataset (fail closed)")
	ErrManifestRollback    = errors.New("manifest epoch is lower than required (rollback refused)")
	ErrManifestDataset     = errors.New("manifest is for another dataset")
	ErrManifestExpired     = errors.New("manifest is older than max_age")
	ErrManifestMismatch    = errors.New("object does not match its manifest entry (forged or rolled back)")
	ErrManifestMissing     = errors.New("object listed in the manifest is missing from storage")
	ErrManifestDeltas      = errors.New("dataset has manifest deltas, which this version cannot apply")
)

// errUnlisted: the object is not in the manifest; it is invisible (ENOENT).
var errUnlisted = fmt.Errorf("%w: not listed in the dataset's manifest", blob.ErrNotFound)

// manifestView is one verified manifest, indexed by directory.
type manifestView struct {
	m    *crypto.Manifest
	dirs map[string][]viewChild // "" or "a/b/" -> children in name order
}

type viewChild struct {
	name  string
	entry int // index into m.Entries; -1 for a directory
}

func newManifestView(m *crypto.Manifest) *manifestView {
	v := &manifestView{m: m, dirs: map[string][]viewChild{"": nil}}
	for i, e := range m.Entries {
		// Every ancestor directory, then the file. Entries are sorted, so
		// a directory's children arrive in order and a directory is added
		// when its first descendant is seen.
		start := 0
		for {
			j := strings.IndexByte(e.Name[start:], '/')
			if j < 0 {
				break
			}
			parent, dir := e.Name[:start], e.Name[start:start+j]
			prefix := e.Name[:start+j+1]
			if _, ok := v.dirs[prefix]; !ok {
				v.dirs[prefix] = nil
				v.dirs[parent] = append(v.dirs[parent], viewChild{name: dir, entry: -1})
			}
			start += j + 1
		}
		v.dirs[e.Name[:start]] = append(v.dirs[e.Name[:start]], viewChild{name: e.Name[start:], entry: i})
	}
	return v
}

// manifestState is a dataset's manifest enforcement.
type manifestState struct {
	spec ManifestSpec
	ds   *DatasetSpec
	root *Root

	view     atomic.Pointer[manifestView]
	fallback atomic.Bool // prefer, and the dataset has no manifest: list storage

	mu          sync.Mutex // serializes loads; guards the fields below
	tried       bool
	highest     uint64    // highest epoch accepted
	lastCreated time.Time // created of the accepted manifest at highest
	pinnedID    string
	lastErr     error
	logged      map[string]bool // unlisted or missing names already logged
	etag        string          // version of the manifest blob of the view

	// Publishing (publish.go).
	pubMu      sync.Mutex
	publishing bool
	pending    []*publishReq
	carried    []manifestChange // changes whose publish failed, retried next
}

func newManifestState(r *Root, ds *DatasetSpec) *manifestState {
	s := &manifestState{spec: *ds.Manifest, ds: ds, root: r, highest: ds.Manifest.MinEpoch, pinnedID: ds.Manifest.ID, logged: map[string]bool{}}
	if s.spec.Refresh == 0 {
		s.spec.Refresh = time.Minute
	}
	if s.spec.Now == nil {
		s.spec.Now = time.Now
	}
	return s
}

// current returns the view to serve: a verified manifest, or nil with
// fallback = true when the dataset lists storage instead (prefer, no
// manifest). With neither it returns ErrManifestUnavailable.
func (s *manifestState) current(ctx context.Context) (*manifestView, bool, error) {
	if v := s.view.Load(); v != nil {
		return v, false, nil
	}
	if s.fallback.Load() {
		return nil, true, nil
	}
	s.mu.Lock()
	tried := s.tried
	s.mu.Unlock()
	if !tried {
		// First use before any load: load now (the refresh loop retries
		// failures; accesses do not).
		_ = s.load(ctx)
		if v := s.view.Load(); v != nil {
			return v, false, nil
		}
		if s.fallback.Load() {
			return nil, true, nil
		}
	}
	s.mu.Lock()
	err := s.lastErr
	s.mu.Unlock()
	return nil, false, fmt.Errorf("%w: %s: %w", ErrManifestUnavailable, s.ds.Name, err)
}

// unlistedCheckDelay is how long after a new manifest the dataset is
// listed to log unlisted and missing objects (an atomic for tests).
var unlistedCheckDelay atomic.Int64

func init() { unlistedCheckDelay.Store(int64(10 * time.Second)) }

// maxManifestRead bounds what a load reads.
const maxManifestRead = crypto.MaxManifestSize

// load reads, verifies and applies the dataset's manifest, and swaps the
// view when it is accepted. A refused manifest keeps the last good view.
// The kernel's cached names are invalidated before it returns.
func (s *manifestState) load(ctx context.Context) error { return s.loadWith(ctx, true) }

// loadWith is load; with syncInvalidate false the kernel's cached names
// are invalidated in the background, as a load inside an unlink or rename
// needs (the kernel holds the directory that an invalidation locks).
func (s *manifestState) loadWith(ctx context.Context, syncInvalidate bool) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tried = true
	var m *crypto.Manifest
	defer func() {
		s.report(ctx, m, err)
	}()
	st := s.ds.Store
	info, err := st.Stat(ctx, crypto.ManifestName)
	if errors.Is(err, blob.ErrNotFound) && s.spec.Mode == ManifestPrefer && s.view.Load() == nil {
		if !s.fallback.Swap(true) {
			s.root.log().Warn().Str("dataset", s.ds.Name).Msg("dataset has no manifest: listing storage, unsigned (manifest: prefer)")
		}
		s.lastErr = nil
		return nil
	}
	if errors.Is(err, blob.ErrNotFound) && s.spec.Mode == ManifestRequire && s.view.Load() == nil && s.ds.publishes() {
		if berr := s.bootstrap(ctx); berr != nil {
			return berr
		}
		s.lastErr = nil
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", crypto.ManifestName, err)
	}
	// The dataset has a manifest now: from here on, prefer never falls
	// back to an unsigned listing, whatever this one's verification gives.
	s.fallback.Store(false)
	if info.Size > maxManifestRead {
		return fmt.Errorf("%w: %d bytes", crypto.ErrManifestMalformed, info.Size)
	}
	if err := s.checkNoDeltas(ctx); err != nil {
		return err
	}
	buf := make([]byte, info.Size)
	if n, err := st.ReadAt(ctx, info.Ref(), buf, 0); err != nil && !(errors.Is(err, io.EOF) && int64(n) == info.Size) {
		return fmt.Errorf("reading %s: %w", crypto.ManifestName, err)
	}
	m, err = crypto.VerifyManifest(buf, s.spec.Verifier)
	if err != nil {
		return err
	}
	if err := s.checkPolicy(ctx, m); err != nil {
		return err
	}
	changed := m.Epoch != s.highest || !m.Created.Equal(s.lastCreated) || s.view.Load() == nil
	s.highest, s.lastCreated, s.lastErr, s.etag = m.Epoch, m.Created, nil, info.ETag
	if s.pinnedID == "" {
		s.pinnedID = m.Dataset
		s.root.log().Warn().Str("dataset", s.ds.Name).Str("dataset_id", m.Dataset).
			Msg("manifest dataset id accepted on first sight and pinned for this mount; set datasets[].id to pin it for good")
	}
	nv := newManifestView(m)
	old := s.view.Swap(nv)
	s.fallback.Store(false)
	if changed {
		go s.checkUnlisted(m)
	}
	if old != nil && changed {
		// Names the kernel still caches may now show something else or
		// nothing: have it look them up again (before the reload returns).
		// Not during the first load,
		// which may run inside a lookup.
		if syncInvalidate {
			s.invalidate(nv)
		} else {
			go s.invalidate(nv)
		}
	}
	return nil
}

// bootstrap serves an empty dataset to a mount that may publish its first
// manifest: the dataset has none, and nothing says it ever had one (no
// min_epoch, no epoch anchor above 0). The caller holds s.mu.
func (s *manifestState) bootstrap(ctx context.Context) error {
	if s.highest > 0 {
		return fmt.Errorf("%w: the dataset has no manifest, but min_epoch is %d: not starting a new one", ErrManifestUnavailable, s.highest)
	}
	if s.spec.Anchor != nil {
		a, err := s.spec.Anchor.Epoch(ctx)
		if err == nil && a > 0 {
			return fmt.Errorf("%w: the dataset has no manifest, but its epoch anchor is at %d: it was deleted; not starting a new one", ErrManifestUnavailable, a)
		}
	}
	id := s.pinnedID
	if id == "" {
		id = newDatasetID()
		s.pinnedID = id
	}
	s.etag = ""
	s.view.Store(newManifestView(&crypto.Manifest{Dataset: id}))
	s.root.log().Warn().Str("dataset", s.ds.Name).Str("dataset_id", id).
		Msg("dataset has no manifest: serving it empty; this mount publishes its first manifest at its first write")
	return nil
}

// invalidate tells the kernel to drop cached entries of the dataset whose
// listing differs in view v.
func (s *manifestState) invalidate(v *manifestView) {
	ds := s.root.GetChild(s.ds.Name)
	if ds == nil {
		return
	}
	var walk func(dir *fusefs.Inode, prefix string)
	walk = func(dir *fusefs.Inode, prefix string) {
		for name, ch := range dir.Children() {
			path := prefix + name
			if ch.IsDir() {
				if _, ok := v.dirs[path+"/"]; !ok {
					dir.NotifyEntry(name)
					continue
				}
				walk(ch, path+"/")
				continue
			}
			obj, ok := ch.Operations().(*objectNode)
			if !ok {
				continue
			}
			e, listed := v.m.Lookup(path)
			obj.mu.Lock()
			same := listed && obj.listedDigest == e.HeaderSHA256
			obj.mu.Unlock()
			if !same {
				dir.NotifyEntry(name)
			}
		}
	}
	walk(ds, "")
}

func (s *manifestState) checkNoDeltas(ctx context.Context) error {
	stop := errors.New("stop")
	found := ""
	err := s.ds.Store.List(ctx, blob.ListOptions{Prefix: crypto.ManifestDeltaPrefix}, func(i blob.Info) error {
		found = i.Name
		return stop
	})
	if err != nil && !errors.Is(err, stop) && !errors.Is(err, blob.ErrNotFound) {
		return err
	}
	if found != "" {
		return fmt.Errorf("%w (%s)", ErrManifestDeltas, found)
	}
	return nil
}

func (s *manifestState) checkPolicy(ctx context.Context, m *crypto.Manifest) error {
	if s.pinnedID != "" && m.Dataset != s.pinnedID {
		return fmt.Errorf("%w: %q, expected %q", ErrManifestDataset, m.Dataset, s.pinnedID)
	}
	floor, why := s.highest, "the highest epoch seen or min_epoch"
	if s.spec.Anchor != nil {
		a, err := s.spec.Anchor.Epoch(ctx)
		if err != nil {
			return fmt.Errorf("reading the epoch anchor: %w", err)
		}
		if a > floor {
			floor, why = a, "the Key Vault anchor's epoch"
		}
	}
	if m.Epoch < floor {
		return fmt.Errorf("%w: epoch %d < %d (%s)", ErrManifestRollback, m.Epoch, floor, why)
	}
	if m.Epoch == s.highest && m.Created.Before(s.lastCreated) {
		return fmt.Errorf("%w: epoch %d re-signed earlier (%s) than the one accepted (%s)", ErrManifestRollback, m.Epoch,
			m.Created.Format(time.RFC3339), s.lastCreated.Format(time.RFC3339))
	}
	if s.spec.MaxAge > 0 {
		if age := s.spec.Now().Sub(m.Created); age > s.spec.MaxAge {
			return fmt.Errorf("%w: created %s, %s ago (max_age %s)", ErrManifestExpired, m.Created.Format(time.RFC3339), age.Round(time.Second), s.spec.MaxAge)
		}
	}
	return nil
}

// report logs, audits and counts a load.
func (s *manifestState) report(ctx context.Context, m *crypto.Manifest, err error) {
	var epoch uint64
	if m != nil {
		epoch = m.Epoch
	}
	if o, ok := s.root.opts.Observer.(ManifestObserver); ok {
		o.ManifestLoaded(s.ds.Name, epoch, err)
	}
	path := s.ds.Name + "/" + crypto.ManifestName
	if err != nil {
		s.lastErr = err
		kept := "none: the dataset fails closed"
		if v := s.view.Load(); v != nil {
			kept = fmt.Sprintf("epoch %d", v.m.Epoch)
		}
		s.root.log().Error().Err(err).Str("dataset", s.ds.Name).Uint64("epoch", epoch).Str("kept_view", kept).Msg("manifest refused")
		s.root.auditManifest(path, epoch, "", err)
		return
	}
	if m != nil {
		s.root.log().Info().Str("dataset", s.ds.Name).Uint64("epoch", m.Epoch).Int("entries", len(m.Entries)).
			Str("signer", m.KeyID).Msg("manifest verified")
		s.root.auditManifest(path, m.Epoch, m.KeyID, nil)
	}
}

// checkUnlisted lists the dataset once per new manifest and logs, once per
// name, objects that storage has and the manifest does not (they stay
// invisible) and entries that storage lacks (they give EIO).
func (s *manifestState) checkUnlisted(m *crypto.Manifest) {
	// Not at once: a full listing of a large dataset competes with the
	// first listings of the mount, which the manifest just made cheap.
	select {
	case <-s.root.bg.Done():
		return
	case <-time.After(time.Duration(unlistedCheckDelay.Load())):
	}
	ctx, cancel := context.WithTimeout(s.root.bg, s.root.opts.OpTimeout)
	defer cancel()
	seen := make(map[string]bool, len(m.Entries))
	err := s.ds.Store.List(ctx, blob.ListOptions{}, func(i blob.Info) error {
		name, ok := strings.CutSuffix(i.Name, s.ds.Suffix)
		if !ok || name == "" || strings.HasPrefix(i.Name, crypto.ManifestPrefix) {
			return nil
		}
		if _, listed := m.Lookup(name); listed {
			seen[name] = true
			return nil
		}
		s.logOnce("unlisted:"+name, func() {
			s.root.log().Warn().Str("dataset", s.ds.Name).Str("object", name).Uint64("epoch", m.Epoch).
				Msg("object in storage is not listed in the manifest: hidden")
		})
		return nil
	})
	if err != nil {
		s.root.log().Debug().Err(err).Str("dataset", s.ds.Name).Msg("listing for unlisted objects failed")
		return
	}
	for _, e := range m.Entries {
		if !seen[e.Name] {
			s.logOnce("missing:"+e.Name, func() {
				s.root.log().Warn().Str("dataset", s.ds.Name).Str("object", e.Name).Uint64("epoch", m.Epoch).
					Msg("object listed in the manifest is missing from storage")
			})
		}
	}
}

func (s *manifestState) logOnce(key string, f func()) {
	s.mu.Lock()
	done := s.logged[key]
	s.logged[key] = true
	s.mu.Unlock()
	if !done {
		f()
	}
}

// check compares an object's header with its manifest entry.
func (s *manifestState) check(v *manifestView, name string, h *crypto.Header) error {
	e, ok := v.m.Lookup(name)
	if !ok {
		return errUnlisted
	}
	if crypto.HeaderDigest(h.Bytes()) != e.HeaderSHA256 {
		err := fmt.Errorf("%w: %s: header digest differs from manifest epoch %d", ErrManifestMismatch, name, v.m.Epoch)
		s.root.log().Warn().Str("dataset", s.ds.Name).Str("object", name).Uint64("epoch", v.m.Epoch).
			Msg("object refused: its header does not match the manifest (forged, replaced or rolled back)")
		return err
	}
	return nil
}

// ReloadManifests re-reads every dataset's manifest now (SIGHUP). It
// returns the first error; refused manifests keep the last good view.
func (r *Root) ReloadManifests(ctx context.Context) error {
	var first error
	for i := range r.opts.Datasets {
		if s := r.opts.Datasets[i].man; s != nil {
			lctx, cancel := context.WithTimeout(ctx, r.opts.OpTimeout)
			if err := s.load(lctx); err != nil && first == nil {
				first = fmt.Errorf("%s: %w", r.opts.Datasets[i].Name, err)
			}
			cancel()
		}
	}
	return first
}

// RunManifestRefresh re-reads each dataset's manifest on its interval until
// ctx is done.
func (r *Root) RunManifestRefresh(ctx context.Context) {
	var wg sync.WaitGroup
	for i := range r.opts.Datasets {
		s := r.opts.Datasets[i].man
		if s == nil {
			continue
		}
		wg.Go(func() {
			t := time.NewTicker(s.spec.Refresh)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					lctx, cancel := context.WithTimeout(ctx, r.opts.OpTimeout)
					_ = s.load(lctx)
					cancel()
				}
			}
		})
	}
	wg.Wait()
}

// ManifestEpoch reports the epoch of a dataset's current view (0 = none).
func (r *Root) ManifestEpoch(dataset string) uint64 {
	for i := range r.opts.Datasets {
		if ds := &r.opts.Datasets[i]; ds.Name == dataset && ds.man != nil {
			if v := ds.man.view.Load(); v != nil {
				return v.m.Epoch
			}
		}
	}
	return 0
}

// checkOpened checks an opened version against view: header digest and the
// authenticated plaintext size.
func (s *manifestState) checkOpened(v *manifestView, name string, d *crypto.Decryptor) error {
	if err := s.check(v, name, d.Header()); err != nil {
		return err
	}
	if e, _ := v.m.Lookup(name); e.Size != d.PlainSize() {
		s.root.log().Warn().Str("dataset", s.ds.Name).Str("object", name).Int64("listed", e.Size).Int64("actual", d.PlainSize()).
			Msg("object refused: its size differs from the manifest entry")
		return fmt.Errorf("%w: %s: size %d, listed %d", ErrManifestMismatch, name, d.PlainSize(), e.Size)
	}
	return nil
}
