package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/internal/upload"
)

type listStore interface {
	blob.Store
}

type lsEntry struct {
	Name          string `json:"name"`
	ObjectSize    int64  `json:"object_size"`
	PlaintextSize *int64 `json:"plaintext_size"`
	ChunkSize     int    `json:"chunk_size,omitempty"`
	KeyRef        string `json:"key_ref,omitempty"`
	SealedName    string `json:"sealed_name,omitempty"`
	Error         string `json:"error,omitempty"`
	// Manifest is the object's standing in the dataset's manifest, when
	// the dataset has one: "listed", "unlisted" (a mount hides it) or
	// "mismatch" (its header is not the listed one: a mount gives EIO).
	Manifest string `json:"manifest,omitempty"`

	headerDigest [32]byte
}

func newLsCmd() *cobra.Command {
	var asJSON bool
	var parallel int
	var signers []string
	cmd := &cobra.Command{
		Use:   "ls URL",
		Short: "List objects with plaintext size, key reference and chunk size",
		Long: `List the objects under a container/prefix URL or local directory with their
plaintext size, chunk size and key reference, read from each object's header.
No key is needed; the values are the headers' unauthenticated claims.
Credentials as for upload.

When the dataset has a signed manifest (.skrfs/manifest), each object is
marked: unlisted (a mount hides it) or mismatch (its header is not the one
the manifest lists: forged, replaced or rolled back; a mount gives EIO).
With --signer the manifest is verified first; without, its claims are used
and the output says so.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			st, err := openStoreURL(ctx, args[0], false)
			if err != nil {
				return err
			}
			var infos []blob.Info
			if err := st.List(ctx, blob.ListOptions{}, func(i blob.Info) error {
				infos = append(infos, i)
				return nil
			}); err != nil {
				return err
			}
			entries := make([]lsEntry, len(infos))
			sem := make(chan struct{}, max(parallel, 1))
			var wg sync.WaitGroup
			for i, info := range infos {
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer func() { <-sem; wg.Done() }()
					entries[i] = describe(ctx, st, info)
				}()
			}
			wg.Wait()
			note, err := markManifest(ctx, st, entries, signers)
			if err != nil {
				return err
			}
			if note != "" && !asJSON {
				fmt.Fprintln(cmd.OutOrStdout(), note)
			}
			return printLs(cmd.OutOrStdout(), entries, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().IntVar(&parallel, "parallel", 16, "headers read at once")
	cmd.Flags().StringSliceVar(&signers, "signer", nil, "verify the manifest with these pinned keys (PEM or JWK files, Key Vault key URLs)")
	return cmd
}

// describe reads one object's header (one ranged read of the first 4 KiB,
// a second one only for longer headers).
func describe(ctx context.Context, st blob.Store, info blob.Info) lsEntry {
	e := lsEntry{Name: info.Name, ObjectSize: info.Size}
	buf := make([]byte, min(info.Size, 4096))
	if _, err := st.ReadAt(ctx, info.Ref(), buf, 0); err != nil && err != io.EOF {
		e.Error = err.Error()
		return e
	}
	if p, err := crypto.ParsePreamble(buf); err == nil && p.HeaderLen > len(buf) && int64(p.HeaderLen) <= info.Size {
		buf = make([]byte, p.HeaderLen)
		if _, err := st.ReadAt(ctx, info.Ref(), buf, 0); err != nil && err != io.EOF {
			e.Error = err.Error()
			return e
		}
	}
	h, err := crypto.ParseHeader(buf)
	if err != nil {
		e.Error = err.Error()
		return e
	}
	e.ChunkSize, e.KeyRef, e.SealedName = h.ChunkSize, h.KeyRef, h.Name
	e.headerDigest = crypto.HeaderDigest(h.Bytes())
	if ps, err := h.PlainSize(info.Size); err != nil {
		e.Error = err.Error()
	} else {
		e.PlaintextSize = &ps
	}
	return e
}

func printLs(w io.Writer, entries []lsEntry, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if entries == nil {
			entries = []lsEntry{}
		}
		return enc.Encode(entries)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SIZE\tCHUNK\tKEY\tNAME")
	for _, e := range entries {
		size, chunk, key := "-", "-", e.KeyRef
		if e.PlaintextSize != nil {
			size = fmt.Sprint(*e.PlaintextSize)
		}
		if e.ChunkSize != 0 {
			chunk = fmt.Sprint(e.ChunkSize)
		}
		if key == "" {
			key = "-"
		}
		name := e.Name
		if e.Manifest == "unlisted" || e.Manifest == "mismatch" {
			name += "  [" + strings.ToUpper(e.Manifest) + "]"
		}
		if e.Manifest == "manifest" {
			name += "  (the dataset's signed manifest)"
		} else if e.Error != "" {
			name += "  (" + e.Error + ")"
		} else if e.SealedName != "" && !nameMatches(e.Name, e.SealedName) {
			name += "  (sealed for " + fmt.Sprintf("%q", e.SealedName) + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", size, chunk, key, name)
	}
	return tw.Flush()
}

// nameMatches reports whether a stored name is the sealed name, possibly
// with a suffix such as ".skrfs".
func nameMatches(stored, sealed string) bool {
	return strings.HasPrefix(stored, sealed)
}

// markManifest marks entries against the dataset's manifest, if it has
// one, and drops the manifest itself from the listing. It returns a line
// describing the manifest.
func markManifest(ctx context.Context, st blob.Store, entries []lsEntry, signers []string) (string, error) {
	b, _, err := upload.ReadManifest(ctx, st)
	if err != nil || b == nil {
		return "", err
	}
	var m *crypto.Manifest
	status := "verified"
	if len(signers) > 0 {
		v, err := pinnedKeys(ctx, signers, nil, nil, nil)
		if err != nil {
			return "", err
		}
		if m, err = crypto.VerifyManifest(b, v); err != nil {
			return "", fmt.Errorf("manifest: %w", err)
		}
	} else {
		if m, err = crypto.InspectManifest(b); err != nil {
			return fmt.Sprintf("manifest: unreadable (%v)", err), nil
		}
		status = "NOT verified (no --signer)"
	}
	for i := range entries {
		e := &entries[i]
		if strings.HasPrefix(e.Name, crypto.ManifestPrefix) {
			e.Manifest, e.Error, e.PlaintextSize = "manifest", "", nil
			continue
		}
		name := e.Name
		if e.SealedName != "" && nameMatches(e.Name, e.SealedName) {
			name = e.SealedName
		}
		le, ok := m.Lookup(name)
		switch {
		case !ok:
			e.Manifest = "unlisted"
		case e.Error != "" || le.HeaderSHA256 != e.headerDigest:
			e.Manifest = "mismatch"
		default:
			e.Manifest = "listed"
		}
	}
	return fmt.Sprintf("manifest: dataset %s, epoch %d, %d entries, created %s, %s",
		m.Dataset, m.Epoch, len(m.Entries), m.Created.Format(time.RFC3339), status), nil
}
