package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/skrfs/skrfs/crypto"
)

type inspectOutput struct {
	Version       int    `json:"version"`
	ObjectID      string `json:"object_id"`
	KeyRef        string `json:"key_ref"`
	WrapAlgorithm string `json:"wrap_algorithm"`
	ChunkSize     int    `json:"chunk_size"`
	HeaderLength  int    `json:"header_length"`
	ObjectSize    int64  `json:"object_size"`
	PlaintextSize *int64 `json:"plaintext_size"`
	Chunks        int64  `json:"chunks,omitempty"`
	Name          string `json:"name"`
	SizeError     string `json:"size_error,omitempty"`
	// Version 2 only.
	BatchKeyID  string  `json:"batch_key_id,omitempty"`
	SealCount   *uint64 `json:"seal_count,omitempty"`
	TableDigest string  `json:"nonce_table_digest,omitempty"`
}

func newInspectCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect OBJ",
		Short: "Print an object's header without any key",
		Long: `Print the header of the skrfs object OBJ: format version, key reference,
wrap algorithm, chunk size, plaintext size and name. No key is needed, so the
values are unauthenticated claims until the object is opened with its key.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			h, size, err := readHeader(f)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			o := inspectOutput{Version: h.Version, ObjectID: hex.EncodeToString(h.ObjectID[:]),
				KeyRef: h.KeyRef, WrapAlgorithm: h.Wrap.String(), ChunkSize: h.ChunkSize,
				HeaderLength: h.Len(), ObjectSize: size, Name: h.Name}
			if h.Version == crypto.VersionV2 {
				id := crypto.BatchKeyID(h)
				q := h.SealCount
				o.BatchKeyID, o.SealCount, o.TableDigest = hex.EncodeToString(id[:]), &q, hex.EncodeToString(h.TableDigest[:])
			}
			if ps, err := h.PlainSize(size); err != nil {
				o.SizeError = err.Error()
			} else {
				o.PlaintextSize = &ps
				o.Chunks = crypto.NumChunks(ps, h.ChunkSize)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(o)
			}
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			plain := "invalid: " + o.SizeError
			if o.PlaintextSize != nil {
				plain = fmt.Sprintf("%d (%d chunks)", *o.PlaintextSize, o.Chunks)
			}
			keyRef := o.KeyRef
			if keyRef == "" {
				keyRef = "(none)"
			}
			fmt.Fprintf(tw, "format:\tskrfs object v%d\n", o.Version)
			fmt.Fprintf(tw, "name:\t%s\n", o.Name)
			fmt.Fprintf(tw, "key reference:\t%s\n", keyRef)
			fmt.Fprintf(tw, "wrap algorithm:\t%s\n", o.WrapAlgorithm)
			fmt.Fprintf(tw, "chunk size:\t%d\n", o.ChunkSize)
			fmt.Fprintf(tw, "plaintext size:\t%s\n", plain)
			fmt.Fprintf(tw, "object size:\t%d (header %d)\n", o.ObjectSize, o.HeaderLength)
			fmt.Fprintf(tw, "object ID:\t%s\n", o.ObjectID)
			if o.BatchKeyID != "" {
				fmt.Fprintf(tw, "batch:\t%s (objects sealed together share it)\n", o.BatchKeyID)
				fmt.Fprintf(tw, "seal count:\t%d\n", *o.SealCount)
				fmt.Fprintf(tw, "nonce table digest:\t%s\n", o.TableDigest)
			}
			fmt.Fprintf(tw, "authenticated:\tno (inspect uses no key)\n")
			if err := tw.Flush(); err != nil {
				return err
			}
			if o.SizeError != "" {
				return fmt.Errorf("%s: %w", args[0], crypto.ErrInvalidSize)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
