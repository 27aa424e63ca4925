package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/internal/upload"
)

// skrfs manifest show|verify|refresh URL (docs/format.md section 12).

func newManifestCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "manifest",
		Short: "Show, verify or re-sign a dataset's signed manifest",
	}
	cmd.AddCommand(newManifestShowCmd(), newManifestVerifyCmd(), newManifestRefreshCmd())
	return cmd
}

type manifestJSON struct {
	Dataset  string              `json:"dataset"`
	Epoch    uint64              `json:"epoch"`
	Created  string              `json:"created"`
	Alg      string              `json:"alg"`
	Signer   string              `json:"signer_kid"`
	Verified bool                `json:"verified"`
	Entries  []manifestEntryJSON `json:"entries,omitempty"`
	Count    int                 `json:"entry_count"`
}

type manifestEntryJSON struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

func printManifest(w io.Writer, m *crypto.Manifest, verified, asJSON, entries bool) error {
	if asJSON {
		j := manifestJSON{Dataset: m.Dataset, Epoch: m.Epoch, Created: m.Created.Format(time.RFC3339), Alg: m.Alg,
			Signer: m.KeyID, Verified: verified, Count: len(m.Entries)}
		if entries {
			for _, e := range m.Entries {
				j.Entries = append(j.Entries, manifestEntryJSON{e.Name, e.Size, hex.EncodeToString(e.HeaderSHA256[:])})
			}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(j)
	}
	state := "VERIFIED against the pinned signer keys"
	if !verified {
		state = "NOT VERIFIED (no --signer given): these are claims"
	}
	fmt.Fprintf(w, "dataset:  %s\nepoch:    %d\ncreated:  %s\nsigner:   %s (%s)\nentries:  %d\nstatus:   %s\n",
		m.Dataset, m.Epoch, m.Created.Format(time.RFC3339), m.KeyID, m.Alg, len(m.Entries), state)
	if entries && len(m.Entries) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "\nSIZE\tHEADER SHA-256\tNAME")
		for _, e := range m.Entries {
			fmt.Fprintf(tw, "%d\t%s\t%s\n", e.Size, hex.EncodeToString(e.HeaderSHA256[:]), e.Name)
		}
		return tw.Flush()
	}
	return nil
}

func newManifestShowCmd() *cobra.Command {
	var signers []string
	var asJSON, noEntries bool
	cmd := &cobra.Command{
		Use:   "show URL",
		Short: "Print a dataset's manifest (verified when --signer is given)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			st, err := openStoreURL(ctx, args[0], false)
			if err != nil {
				return err
			}
			b, _, err := upload.ReadManifest(ctx, st)
			if err != nil {
				return err
			}
			if b == nil {
				return fmt.Errorf("%s has no manifest (%s)", args[0], crypto.ManifestName)
			}
			var m *crypto.Manifest
			if len(signers) > 0 {
				v, err := pinnedKeys(ctx, signers, nil, nil, nil)
				if err != nil {
					return err
				}
				if m, err = crypto.VerifyManifest(b, v); err != nil {
					return err
				}
			} else if m, err = crypto.InspectManifest(b); err != nil {
				return err
			}
			return printManifest(cmd.OutOrStdout(), m, len(signers) > 0, asJSON, !noEntries)
		},
	}
	cmd.Flags().StringSliceVar(&signers, "signer", nil, "pinned signer key: PEM or JWK file, or Key Vault key URL (repeatable)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&noEntries, "no-entries", false, "print the summary only")
	return cmd
}

// verifyReport is what `manifest verify` found in storage.
type verifyReport struct {
	mismatched, missing, unlisted []string
}

// checkStorage compares every listed object's header with its entry and
// finds objects that storage has and the manifest does not.
func checkStorage(ctx context.Context, st blob.Store, m *crypto.Manifest, suffix string) (verifyReport, error) {
	var r verifyReport
	seen := map[string]bool{}
	err := st.List(ctx, blob.ListOptions{}, func(i blob.Info) error {
		if strings.HasPrefix(i.Name, crypto.ManifestPrefix) {
			return nil
		}
		name, ok := strings.CutSuffix(i.Name, suffix)
		if !ok {
			return nil
		}
		if _, listed := m.Lookup(name); !listed {
			r.unlisted = append(r.unlisted, i.Name)
		} else {
			seen[name] = true
		}
		return nil
	})
	if err != nil {
		return r, err
	}
	for _, e := range m.Entries {
		if !seen[e.Name] {
			r.missing = append(r.missing, e.Name)
			continue
		}
		got, err := upload.StoredEntry(ctx, st, e.Name+suffix, e.Name)
		if err != nil || got != e {
			r.mismatched = append(r.mismatched, e.Name)
		}
	}
	return r, nil
}

func newManifestVerifyCmd() *cobra.Command {
	var signers []string
	var id, suffix string
	var minEpoch uint64
	var noObjects bool
	cmd := &cobra.Command{
		Use:   "verify --signer KEY URL",
		Short: "Verify a dataset's manifest and check every listed object against it",
		Long: `Verify the manifest's signature against the pinned signer keys (PEM or JWK
files, or Key Vault key URLs), optionally its dataset id and minimum epoch,
then check every listed object in storage: its header must hash to its
entry. Objects in storage that the manifest does not list are reported (a
mount hides them). Exit status 0 only if everything matches.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(signers) == 0 {
				return usageError{errors.New("--signer is required (the keys to verify against)")}
			}
			ctx := cmd.Context()
			v, err := pinnedKeys(ctx, signers, nil, nil, nil)
			if err != nil {
				return err
			}
			st, err := openStoreURL(ctx, args[0], false)
			if err != nil {
				return err
			}
			b, _, err := upload.ReadManifest(ctx, st)
			if err != nil {
				return err
			}
			if b == nil {
				return fmt.Errorf("%s has no manifest (%s)", args[0], crypto.ManifestName)
			}
			m, err := crypto.VerifyManifest(b, v)
			if err != nil {
				return err
			}
			if id != "" && m.Dataset != id {
				return fmt.Errorf("manifest is for dataset %q, not %q", m.Dataset, id)
			}
			if m.Epoch < minEpoch {
				return fmt.Errorf("manifest epoch %d is below --min-epoch %d (rollback?)", m.Epoch, minEpoch)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "signature ok: dataset %s, epoch %d, created %s, signer %s, %d entries\n",
				m.Dataset, m.Epoch, m.Created.Format(time.RFC3339), m.KeyID, len(m.Entries))
			if noObjects {
				return nil
			}
			r, err := checkStorage(ctx, st, m, suffix)
			if err != nil {
				return err
			}
			for _, n := range r.mismatched {
				fmt.Fprintf(out, "MISMATCH  %s (header differs from the manifest: forged, replaced or rolled back)\n", n)
			}
			for _, n := range r.missing {
				fmt.Fprintf(out, "MISSING   %s\n", n)
			}
			for _, n := range r.unlisted {
				fmt.Fprintf(out, "UNLISTED  %s (hidden by mounts)\n", n)
			}
			if len(r.mismatched)+len(r.missing) > 0 {
				return fmt.Errorf("%d mismatched, %d missing objects", len(r.mismatched), len(r.missing))
			}
			fmt.Fprintf(out, "objects ok: %d listed objects match (%d unlisted)\n", len(m.Entries), len(r.unlisted))
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&signers, "signer", nil, "pinned signer key: PEM or JWK file, or Key Vault key URL (repeatable)")
	cmd.Flags().StringVar(&id, "dataset-id", "", "require this dataset id")
	cmd.Flags().Uint64Var(&minEpoch, "min-epoch", 0, "require at least this epoch")
	cmd.Flags().StringVar(&suffix, "suffix", "", "suffix of object names in the store, as uploaded")
	cmd.Flags().BoolVar(&noObjects, "signature-only", false, "verify the manifest only, not the objects")
	return cmd
}

// maxClockSkew is how far in the future a manifest's created time may be
// before refresh refuses it.
const maxClockSkew = 5 * time.Minute

func newManifestRefreshCmd() *cobra.Command {
	var sign, anchor string
	var gf epochGuardFlags
	cmd := &cobra.Command{
		Use:   "refresh --sign KEY URL",
		Short: "Re-sign the last verified manifest with a new creation time (for max_age)",
		Long: `Read the dataset's manifest, verify it with the public part of KEY, and
re-sign exactly its content (same dataset id, epoch and entries) with the
current time. It never rebuilds the manifest from storage, which would sign
objects planted there. Run it periodically when readers set max_age.

A signature check cannot tell an older, genuinely signed manifest put back in
storage from the current one, and re-signing it would make a stale state
look fresh to readers' max_age. So before signing, refresh refuses a
manifest whose epoch is below what this producer knows: the Key Vault anchor
(--anchor, read first), --min-epoch, and the state file (--state, default
$XDG_STATE_HOME/skrfs/manifest-epochs.json) in which upload --sign and
refresh record the highest epoch they published per dataset id. The floor is
the highest of them: --min-epoch only raises it; --allow-rollback sets aside
the state file's epoch for a deliberate rollback, never the anchor's. It also
refuses a manifest created more than 5 minutes in the future (a wrong
clock), whose time it would carry forward.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if sign == "" {
				return usageError{errors.New("--sign is required")}
			}
			ctx := cmd.Context()
			guard, err := newEpochGuard(gf, anchor)
			if err != nil {
				return err
			}
			s, err := loadSigner(ctx, sign, nil, nil)
			if err != nil {
				return err
			}
			st, err := openStoreURL(ctx, args[0], false)
			if err != nil {
				return err
			}
			v, err := crypto.NewManifestVerifier(s.Public())
			if err != nil {
				return err
			}
			if err := guard.readAnchor(ctx); err != nil {
				return err
			}
			prev, err := upload.Previous(ctx, st, v)
			if err != nil {
				return err
			}
			id := ""
			if prev != nil {
				id = prev.Dataset
			}
			if err := guard.check(prev, id); err != nil {
				return err
			}
			if prev == nil {
				return fmt.Errorf("%s has no manifest to refresh (publish one with skrfs upload --sign)", args[0])
			}
			now := time.Now()
			if prev.Created.After(now.Add(maxClockSkew)) {
				return fmt.Errorf("%w: it was created at %s, later than now (%s) by more than %s: a clock is wrong (this machine's or the signer's); refresh would carry that time forward, and nothing was signed",
					upload.ErrPrevious, prev.Created.Format(time.RFC3339), now.UTC().Format(time.RFC3339), maxClockSkew)
			}
			m := upload.Refreshed(prev, now)
			if _, err := upload.Publish(ctx, st, m, s); err != nil {
				return err
			}
			if err := guard.published(ctx, m.Dataset, m.Epoch); err != nil {
				return fmt.Errorf("manifest epoch %d refreshed, but: %w", m.Epoch, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "refreshed: dataset %s, epoch %d, created %s, %d entries\n",
				m.Dataset, m.Epoch, m.Created.Format(time.RFC3339), len(m.Entries))
			return nil
		},
	}
	cmd.Flags().StringVar(&sign, "sign", "", "signing key: private key file, or Key Vault key URL (signs in the HSM)")
	cmd.Flags().StringVar(&anchor, "anchor", "", "Key Vault secret URL holding the epoch anchor: a floor read before the manifest, set after publishing")
	gf.register(cmd)
	return cmd
}
