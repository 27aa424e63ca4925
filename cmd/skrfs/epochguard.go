package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/internal/upload"
)

// The producer's epoch guard (docs/threat-model.md, "Signed manifests").
// `upload --sign` and `manifest refresh` build on the dataset's manifest as
// storage holds it, and a signature check cannot tell an older, genuinely
// signed manifest put back in storage from the current one. So before
// signing anything they refuse a manifest below the highest epoch the
// producer knows from outside storage: the Key Vault anchor (--anchor),
// --min-epoch, and the state file in which this producer records, per
// dataset id, the highest epoch it published (--state).

// stateNone is the --state value that disables the state file.
const stateNone = "none"

// epochGuardFlags are the guard's flags shared by upload and refresh
// (--anchor is declared by each command, with its own help).
type epochGuardFlags struct {
	minEpoch      uint64
	state         string
	allowRollback bool
}

func (f *epochGuardFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.Uint64Var(&f.minEpoch, "min-epoch", 0, "refuse to build on a manifest below this epoch (raises the floor; never lowers the anchor's or the state file's)")
	fl.StringVar(&f.state, "state", "", `file recording the highest epoch published per dataset id, a floor for the next run (default $XDG_STATE_HOME/skrfs/manifest-epochs.json, mode 0600; "none": no state file)`)
	fl.BoolVar(&f.allowRollback, "allow-rollback", false, "accept a manifest below the state file's epoch (a deliberate rollback; the state file then records the epoch published); never overrides --anchor or --min-epoch")
}

// changed reports whether any guard flag other than --anchor was given.
func (f *epochGuardFlags) changed(cmd *cobra.Command) bool {
	fl := cmd.Flags()
	return fl.Changed("min-epoch") || fl.Changed("state") || fl.Changed("allow-rollback")
}

// epochGuard is one run's guard.
type epochGuard struct {
	epochGuardFlags
	anchorURL   string
	anchor      *vaultAnchor // nil without --anchor
	anchorEpoch uint64
	statePath   string // "" with --state none
}

// newEpochGuard checks the flags and opens the anchor's client (no request
// yet).
func newEpochGuard(f epochGuardFlags, anchorURL string) (*epochGuard, error) {
	g := &epochGuard{epochGuardFlags: f, anchorURL: anchorURL}
	if anchorURL != "" {
		if _, _, err := parseSecretURL(anchorURL); err != nil {
			return nil, usageError{fmt.Errorf("--anchor: %w", err)}
		}
		a, err := openAnchor(anchorURL)
		if err != nil {
			return nil, err
		}
		g.anchor = a
	}
	if f.allowRollback && f.state == stateNone {
		return nil, usageError{errors.New("--allow-rollback overrides the state file, and --state none has none")}
	}
	p, err := manifestStatePath(f.state)
	if err != nil {
		return nil, err
	}
	g.statePath = p
	return g, nil
}

// manifestStatePath is the state file named by --state: the default is
// $XDG_STATE_HOME/skrfs/manifest-epochs.json, else
// ~/.local/state/skrfs/manifest-epochs.json, beside the upload fingerprint
// key; "none" is no file.
func manifestStatePath(flag string) (string, error) {
	switch {
	case flag == stateNone:
		return "", nil
	case flag != "":
		return flag, nil
	}
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "skrfs", "manifest-epochs.json"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil || !filepath.IsAbs(home) {
		return "", fmt.Errorf("manifest state file: no home directory for it; pass --state FILE (or --state none): %v", err)
	}
	return filepath.Join(home, ".local", "state", "skrfs", "manifest-epochs.json"), nil
}

// readAnchor reads the anchor's epoch. It comes before the manifest is
// read: a producer publishes, then sets the anchor, so an anchor read
// first is never above the manifest a concurrent publish leaves.
func (g *epochGuard) readAnchor(ctx context.Context) error {
	if g.anchor == nil {
		return nil
	}
	e, err := g.anchor.floor(ctx)
	if err != nil {
		return err
	}
	g.anchorEpoch = e
	return nil
}

// check refuses prev (nil: none in storage) when it is below a floor. id
// is the dataset: prev's, or --dataset-id when storage has no manifest
// ("": a new dataset, which the state file cannot know).
func (g *epochGuard) check(prev *crypto.Manifest, id string) error {
	var floors []upload.Floor
	if g.anchor != nil {
		floors = append(floors, upload.Floor{Epoch: g.anchorEpoch, Source: "the Key Vault anchor " + g.anchorURL,
			Override: "skrfs never lowers it, and anchored readers refuse lower epochs; if the rollback is deliberate: set the secret by hand"})
	}
	if g.minEpoch > 0 {
		floors = append(floors, upload.Floor{Epoch: g.minEpoch, Source: fmt.Sprintf("--min-epoch %d", g.minEpoch)})
	}
	if g.statePath != "" {
		st, err := loadManifestState(g.statePath) // a bad file fails now, not after the publish
		if err != nil {
			return err
		}
		if e, ok := st.Datasets[id]; ok && id != "" && !g.allowRollback {
			floors = append(floors, upload.Floor{Epoch: e.Epoch, Source: "this producer's state file " + g.statePath,
				Override: "if the rollback is deliberate: --allow-rollback"})
		}
	}
	return upload.CheckFloors(prev, floors...)
}

// published records a publish: the state file first (it is this
// machine's, and the manifest is out), then the anchor.
func (g *epochGuard) published(ctx context.Context, id string, epoch uint64) error {
	var errs []error
	if g.statePath != "" {
		if err := recordManifestEpoch(g.statePath, id, epoch, g.allowRollback); err != nil {
			errs = append(errs, err)
		}
	}
	if g.anchor != nil {
		if err := g.anchor.set(ctx, epoch); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// manifestState is the state file: per dataset id, the highest epoch this
// producer published (or, after --allow-rollback, the last).
type manifestState struct {
	Datasets map[string]stateEntry `json:"datasets"`
}

type stateEntry struct {
	Epoch   uint64    `json:"epoch"`
	Updated time.Time `json:"updated"`
}

// maxStateSize bounds the state file.
const maxStateSize = 16 << 20

// loadManifestState reads the state file; a missing one is empty. As the
// fingerprint key, it must be a regular file that only its owner can
// access: whoever can lower its epochs can disarm the check.
func loadManifestState(path string) (*manifestState, error) {
	st := &manifestState{Datasets: map[string]stateEntry{}}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("manifest state file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("manifest state file: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("manifest state file %s: must be a regular file that only its owner can access (mode 0600), is %v", path, fi.Mode())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxStateSize+1))
	if err != nil {
		return nil, fmt.Errorf("manifest state file: %w", err)
	}
	if len(b) > maxStateSize {
		return nil, fmt.Errorf("manifest state file %s: larger than %d bytes", path, maxStateSize)
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("manifest state file %s: %v (it records the epochs this producer published: repair it, or pass --state none)", path, err)
	}
	if st.Datasets == nil {
		st.Datasets = map[string]stateEntry{}
	}
	return st, nil
}

// recordManifestEpoch records epoch for dataset id: the highest of it and
// the recorded one, or exactly epoch after a deliberate rollback. The file
// is replaced whole (a temporary file renamed over it), mode 0600 in a
// directory created with mode 0700.
func recordManifestEpoch(path, id string, epoch uint64, exact bool) error {
	st, err := loadManifestState(path)
	if err != nil {
		return err
	}
	if cur, ok := st.Datasets[id]; ok && cur.Epoch > epoch && !exact {
		epoch = cur.Epoch
	}
	st.Datasets[id] = stateEntry{Epoch: epoch, Updated: time.Now().UTC().Truncate(time.Second)}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("manifest state file: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".manifest-epochs-*.tmp") // mode 0600
	if err != nil {
		return fmt.Errorf("manifest state file: %w", err)
	}
	_, err = tmp.Write(append(b, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("manifest state file: %w", err)
	}
	return nil
}
