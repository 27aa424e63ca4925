package fs

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/crypto"
)

// Manifest publishing by writable mounts (docs/writes.md, "Signed
// manifests"): when a dataset enforces a manifest and the mount holds a
// signing key (WriteSpec.Signer), every commit, unlink and rename publishes
// a new manifest (epoch + 1) before the operation returns. Concurrent
// changes are batched into one publish; the publish is conditional on the
// manifest version it was built on, and a conflict with another writer
// re-reads (verifies), merges and retries.

// maxPublishAttempts bounds the conflict retries of one publish.
const maxPublishAttempts = 8

// ErrManifestPublish: a change reached storage but no manifest listing it
// could be published; the change is retried with the next publish.
var ErrManifestPublish = errors.New("manifest publish failed")

// manifestChange is one name's new entry (nil: the name is removed). etag
// is the object version the change committed ("" for a removal); a merge
// after a conflict drops a change whose object storage no longer holds.
type manifestChange struct {
	name  string
	entry *crypto.ManifestEntry
	etag  string
}

type publishReq struct {
	changes []manifestChange
	done    chan error
}

// publish lists changes in a new signed manifest and returns when one is
// published (or failed). Callers that arrive while a publish is running
// are batched into the next one.
func (s *manifestState) publish(changes ...manifestChange) error {
	if s.fallback.Load() {
		// manifest: prefer, and the dataset has none: it is unsigned, and
		// a first manifest listing only this mount's files would hide
		// every other object.
		return nil
	}
	req := &publishReq{changes: changes, done: make(chan error, 1)}
	s.pubMu.Lock()
	s.pending = append(s.pending, req)
	if s.publishing {
		s.pubMu.Unlock()
		return <-req.done
	}
	s.publishing = true
	for len(s.pending) > 0 {
		batch := s.pending
		s.pending = nil
		s.pubMu.Unlock()
		var all []manifestChange
		all = append(all, s.carried...) // earlier changes whose publish failed
		for _, r := range batch {
			all = append(all, r.changes...)
		}
		err := s.publishBatch(all)
		s.pubMu.Lock()
		if err != nil {
			s.carried = all
		} else {
			s.carried = nil
		}
		for _, r := range batch {
			r.done <- err
		}
	}
	s.publishing = false
	s.pubMu.Unlock()
	return <-req.done
}

// publishBatch publishes changes (later ones win for a name).
func (s *manifestState) publishBatch(changes []manifestChange) (err error) {
	ctx, cancel := context.WithTimeout(s.root.bg, s.root.opts.OpTimeout)
	defer cancel()
	signer := s.ds.Write.Signer
	w := s.ds.raw.(blob.Writer)
	start := time.Now()
	var m *crypto.Manifest
	defer func() {
		s.root.counters.publishes.Add(1)
		if err != nil {
			s.root.counters.publishFailures.Add(1)
			s.root.log().Error().Err(err).Str("dataset", s.ds.Name).Int("changes", len(changes)).
				Msg("manifest publish failed: the changes are in storage but not listed; they are retried with the next publish")
			err = fmt.Errorf("%w: %s: %w", syscall.EIO, ErrManifestPublish, err)
			return
		}
		s.root.log().Info().Str("dataset", s.ds.Name).Uint64("epoch", m.Epoch).Int("changes", len(changes)).
			Int("entries", len(m.Entries)).Dur("took", time.Since(start)).Msg("manifest published")
	}()
	var prev *crypto.Manifest // the base of the previous attempt
	for attempt := 0; ; attempt++ {
		base, etag, berr := s.publishBase(ctx, attempt > 0)
		if berr != nil {
			return berr
		}
		effective := changes
		if prev != nil {
			// Another writer published meanwhile: keep a change only if
			// storage still holds the version it committed, where the
			// other writer's manifest changed that name.
			if effective, err = s.merge(ctx, prev, base, changes); err != nil {
				return err
			}
		}
		m = applyChanges(base, effective, s.spec.Now())
		jws, serr := crypto.SignManifest(m, signer)
		if serr != nil {
			return fmt.Errorf("signing epoch %d: %w", m.Epoch, serr)
		}
		cond := blob.Condition{IfNoneMatch: etag == ""}
		if etag != "" {
			cond.IfMatch = etag
		}
		info, cerr := w.Commit(ctx, crypto.ManifestName, bytes.NewReader(jws), nil, cond)
		clear(jws)
		if errors.Is(cerr, blob.ErrConditionNotMet) && attempt+1 < maxPublishAttempts {
			s.root.counters.publishConflicts.Add(1)
			s.root.log().Info().Str("dataset", s.ds.Name).Uint64("epoch", m.Epoch).
				Msg("manifest changed by another writer: re-reading, merging and retrying")
			prev = base
			continue
		}
		if cerr != nil {
			return fmt.Errorf("committing epoch %d: %w", m.Epoch, cerr)
		}
		s.accept(ctx, m, info.ETag)
		return nil
	}
}

// publishBase returns the manifest to build on and the version of its
// blob ("" when the dataset has none yet). reload re-reads storage first.
func (s *manifestState) publishBase(ctx context.Context, reload bool) (*crypto.Manifest, string, error) {
	if reload || s.view.Load() == nil {
		// Inside an unlink or rename: no synchronous invalidation.
		err := s.loadWith(ctx, false)
		if err != nil && !errors.Is(err, blob.ErrNotFound) {
			// A manifest that does not verify is never built on (nor
			// overwritten): that is for its producer to fix.
			return nil, "", fmt.Errorf("the current manifest cannot be used: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.view.Load(); v != nil {
		return v.m, s.etag, nil
	}
	return nil, "", fmt.Errorf("%w: %s", ErrManifestUnavailable, s.ds.Name)
}

// merge drops the changes that a newer writer superseded: for each name
// whose entry the other writer's manifest (now) changed from the one this
// publish was built on (old), the change is kept only if storage still
// holds the version it committed (a removal: if storage holds none).
func (s *manifestState) merge(ctx context.Context, old, now *crypto.Manifest, changes []manifestChange) ([]manifestChange, error) {
	var out []manifestChange
	for _, c := range changes {
		o, inOld := old.Lookup(c.name)
		n, inNow := now.Lookup(c.name)
		if inOld == inNow && o == n {
			out = append(out, c)
			continue
		}
		info, err := s.ds.Store.Stat(ctx, c.name+s.ds.Suffix)
		keep := false
		switch {
		case errors.Is(err, blob.ErrNotFound):
			keep = c.entry == nil
		case err != nil:
			return nil, err
		default:
			keep = c.entry != nil && info.ETag == c.etag
		}
		if keep {
			out = append(out, c)
		} else {
			s.root.log().Info().Str("dataset", s.ds.Name).Str("object", c.name).
				Msg("manifest merge: another writer's newer change of this name is kept")
		}
	}
	return out, nil
}

// applyChanges returns base with changes applied, one epoch higher and
// created now (never before base).
func applyChanges(base *crypto.Manifest, changes []manifestChange, now time.Time) *crypto.Manifest {
	last := map[string]*crypto.ManifestEntry{}
	for _, c := range changes {
		last[c.name] = c.entry
	}
	entries := make([]crypto.ManifestEntry, 0, len(base.Entries)+len(last))
	for _, e := range base.Entries {
		if _, changed := last[e.Name]; !changed {
			entries = append(entries, e)
		}
	}
	for _, e := range last {
		if e != nil {
			entries = append(entries, *e)
		}
	}
	slices.SortFunc(entries, func(a, b crypto.ManifestEntry) int { return strings.Compare(a.Name, b.Name) })
	created := now.UTC().Truncate(time.Second)
	if created.Before(base.Created) {
		created = base.Created
	}
	return &crypto.Manifest{Dataset: base.Dataset, Epoch: base.Epoch + 1, Created: created, Entries: entries}
}

// accept makes m, just published as version etag, the dataset's view.
func (s *manifestState) accept(ctx context.Context, m *crypto.Manifest, etag string) {
	s.mu.Lock()
	s.highest, s.lastCreated, s.etag, s.lastErr = m.Epoch, m.Created, etag, nil
	if s.pinnedID == "" {
		s.pinnedID = m.Dataset
	}
	m.KeyID, _ = crypto.JWKThumbprint(s.ds.Write.Signer.Public())
	m.Alg = s.ds.Write.Signer.Alg()
	nv := newManifestView(m)
	s.view.Store(nv)
	s.fallback.Store(false)
	s.mu.Unlock()
	// The kernel may cache names that another writer's merged changes
	// made different. Not synchronously: the publish may run inside an
	// unlink or rename, which holds the directory that an invalidation
	// needs (and this mount's own changes are already in its nodes).
	s.report(ctx, m, nil)
	if a, ok := s.spec.Anchor.(EpochAdvancer); ok {
		if err := a.Advance(ctx, m.Epoch); err != nil {
			s.root.log().Warn().Err(err).Str("dataset", s.ds.Name).Uint64("epoch", m.Epoch).
				Msg("cannot advance the epoch anchor: readers accept the new manifest, but rollback to epochs below it is not refused")
		}
	}
	go s.invalidate(nv)
}

// newDatasetID returns a random dataset id for a first manifest.
func newDatasetID() string {
	var b [16]byte
	rand.Read(b[:])
	return "ds-" + hex.EncodeToString(b[:])
}

// EpochAdvancer is an EpochAnchor that a publishing mount can move up.
type EpochAdvancer interface {
	Advance(ctx context.Context, epoch uint64) error
}

// publishes reports whether commits of ds publish manifests.
func (ds *DatasetSpec) publishes() bool {
	return ds.man != nil && ds.Write != nil && ds.Write.Signer != nil
}

// publishCommit lists the version just committed (objName's version info,
// header digest hdr, plaintext size) under name, when ds publishes.
func (r *Root) publishCommit(ds *DatasetSpec, name string, info blob.Info, hdr [32]byte, size int64, removed ...string) error {
	if !ds.publishes() {
		return nil
	}
	changes := []manifestChange{{name: name, entry: &crypto.ManifestEntry{Name: name, Size: size, HeaderSHA256: hdr}, etag: info.ETag}}
	for _, old := range removed {
		changes = append(changes, manifestChange{name: old})
	}
	return ds.man.publish(changes...)
}

// listed reports whether ds publishes and its current manifest lists name.
func (ds *DatasetSpec) listed(name string) bool {
	if !ds.publishes() {
		return false
	}
	v := ds.man.view.Load()
	if v == nil {
		return false
	}
	_, ok := v.m.Lookup(name)
	return ok
}

// publishRemove unlists name, when ds publishes.
func (r *Root) publishRemove(ds *DatasetSpec, name string) error {
	if !ds.listed(name) {
		return nil
	}
	return ds.man.publish(manifestChange{name: name})
}
