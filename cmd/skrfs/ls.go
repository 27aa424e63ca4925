package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/crypto"
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
}

func newLsCmd() *cobra.Command {
	var asJSON bool
	var parallel int
	cmd := &cobra.Command{
		Use:   "ls URL",
		Short: "List objects with plaintext size, key reference and chunk size",
		Long: `List the objects under a container/prefix URL or local directory with their
plaintext size, chunk size and key reference, read from each object's header.
No key is needed; the values are the headers' unauthenticated claims.
Credentials as for upload.`,
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
			return printLs(cmd.OutOrStdout(), entries, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().IntVar(&parallel, "parallel", 16, "headers read at once")
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
		if e.Error != "" {
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
