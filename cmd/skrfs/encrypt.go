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
	var chunkSize, formatVersion int
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
required) and OUT may be - for standard output. OUT is written atomically.

--format-version 2 (the default) writes format version 2 (docs/format.md
section 11): the data key is wrapped under a fresh batch key, and that batch
key for KEYFILE. --format-version 1 writes version 1, which every skrfs
release reads.`,
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
			switch formatVersion {
			case crypto.Version:
			case crypto.VersionV2:
				return encryptV2(in, out, src, key.KEK(), opts)
			default:
				return usageError{fmt.Errorf("--format-version must be 1 or 2, not %d", formatVersion)}
			}
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
	cmd.Flags().IntVar(&formatVersion, "format-version", crypto.VersionV2, "object format version to write: 2 (per-batch wrapping key) or 1")
	cmd.Flags().IntVar(&chunkSize, "chunk-size", crypto.DefaultChunkSize, fmt.Sprintf("plaintext chunk size in bytes (%d to %d)", crypto.MinChunkSize, crypto.MaxChunkSize))
	return cmd
}

// encryptV2 seals src as a version 2 object (a batch of one). The header is
// written last, over a placeholder, so OUT must be seekable: standard
// output gets the object through an unlinked temporary file (ciphertext
// only).
func encryptV2(in, out string, src io.Reader, kek any, opts crypto.SealOptions) error {
	b, err := crypto.NewBatch(kek, opts.KeyRef, nil)
	if err != nil {
		return err
	}
	defer b.Destroy()
	seal := func(f *os.File) error {
		bw := bufio.NewWriterSize(f, 1<<20)
		sw, err := crypto.NewWriterV2(bw, b, opts)
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
		if err := bw.Flush(); err != nil {
			return err
		}
		if _, err := f.WriteAt(sw.Header(), 0); err != nil {
			return err
		}
		log.Info().Str("name", opts.Name).Str("key_ref", opts.KeyRef).Int64("plaintext_bytes", n).Int("format_version", 2).Msg("sealed")
		return nil
	}
	if out != "-" {
		return atomicWrite(out, 0o644, func(w io.Writer) error {
			f, ok := w.(*os.File)
			if !ok {
				return fmt.Errorf("internal error: %T is not a file", w)
			}
			return seal(f)
		})
	}
	tmp, err := os.CreateTemp("", ".skrfs-enc-*")
	if err != nil {
		return err
	}
	os.Remove(tmp.Name())
	defer tmp.Close()
	if err := seal(tmp); err != nil {
		return err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	_, err = io.Copy(os.Stdout, tmp)
	return err
}
