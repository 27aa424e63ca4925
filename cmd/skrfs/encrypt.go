package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/keyrelease"
)

func newEncryptCmd() *cobra.Command {
	var keyFile, keyRef, name string
	var chunkSize int
	cmd := &cobra.Command{
		Use:   "encrypt --key KEYFILE [--key-ref URL] [--name NAME] IN OUT",
		Short: "Seal one file in the skrfs object format",
		Long: `Seal IN into the skrfs object format (docs/format.md) and write it to OUT.

KEYFILE is the key-encryption key: a PEM public or private RSA (2048-4096 bit)
or EC (P-256, P-384) key, a JWK, or a raw 32-byte AES-256 key. Only the public
part of an RSA or EC key is used. --key-ref is the Key Vault key identifier
written into the header so that readers know which key to release; it
defaults to the JWK's kid when that is a Key Vault key URL. NAME is the
logical name the object is sealed for (default: the base name of IN); readers
must expect the same name. IN may be - for standard input (then --name is
required) and OUT may be - for standard output. OUT is written atomically.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyFile == "" {
				return usageError{fmt.Errorf("--key is required")}
			}
			in, out := args[0], args[1]
			if name == "" {
				if in == "-" {
					return usageError{fmt.Errorf("--name is required when reading standard input")}
				}
				name = filepath.Base(in)
			}
			key, err := loadKey(keyFile)
			if err != nil {
				return err
			}
			defer key.Wipe()
			if keyRef == "" && key.Ref != (keyrelease.KeyRef{}) {
				keyRef = key.Ref.String()
			}
			if keyRef != "" {
				ref, err := keyrelease.ParseKeyRef(keyRef)
				if err != nil {
					return usageError{fmt.Errorf("--key-ref: %w", err)}
				}
				keyRef = ref.String() // canonical form (docs/format.md 2.2)
			}
			var src io.Reader = os.Stdin
			if in != "-" {
				f, err := os.Open(in)
				if err != nil {
					return err
				}
				defer f.Close()
				src = f
			}
			opts := crypto.SealOptions{Name: name, KeyRef: keyRef, ChunkSize: chunkSize}
			return atomicWrite(out, 0o644, func(w io.Writer) error {
				bw := bufio.NewWriterSize(w, 1<<20)
				sw, err := crypto.NewWriter(bw, key.KEK(), opts)
				if err != nil {
					return err
				}
				n, err := io.Copy(sw, src)
				if err != nil {
					return fmt.Errorf("reading %s: %w", in, err)
				}
				if err := sw.Close(); err != nil {
					return err
				}
				log.Info().Str("name", name).Str("key_ref", keyRef).Int64("plaintext_bytes", n).Msg("sealed")
				return bw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "key-encryption key file (PEM, JWK, or raw 32-byte AES key)")
	cmd.Flags().StringVar(&keyRef, "key-ref", "", "Key Vault key identifier https://<vault>/keys/<name>[/<version>] for the header")
	cmd.Flags().StringVar(&name, "name", "", "logical object name (default: base name of IN)")
	cmd.Flags().IntVar(&chunkSize, "chunk-size", crypto.DefaultChunkSize, fmt.Sprintf("plaintext chunk size in bytes (%d to %d)", crypto.MinChunkSize, crypto.MaxChunkSize))
	return cmd
}
