package main

import (
	"bufio"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/skrfs/skrfs/crypto"
)

func newDecryptCmd() *cobra.Command {
	var keyFile, name string
	cmd := &cobra.Command{
		Use:   "decrypt --key KEYFILE [--name NAME] IN OUT",
		Short: "Open one skrfs object",
		Long: `Authenticate and decrypt the skrfs object IN into OUT.

KEYFILE must hold the private key (RSA, EC) or the AES-256 key. With --name,
the object must have been sealed for exactly NAME; without it, the name in the
header is accepted and reported with --log-level info. On any failure skrfs
exits non-zero and OUT is left untouched: plaintext is written to a temporary
file and renamed over OUT only after every chunk authenticated. OUT may be -
for standard output; then the whole object is authenticated once before the
first byte is written, and decrypted again while writing.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyFile == "" {
				return usageError{fmt.Errorf("--key is required")}
			}
			in, out := args[0], args[1]
			key, err := loadKey(keyFile)
			if err != nil {
				return err
			}
			defer key.Wipe()
			if !key.IsPrivate() {
				return fmt.Errorf("%w: %s holds a public key; decrypting needs the private key", crypto.ErrKeyType, keyFile)
			}
			f, err := os.Open(in)
			if err != nil {
				return err
			}
			defer f.Close()
			d, err := openObject(f, key.KEK(), name)
			if err != nil {
				return fmt.Errorf("%s: %w", in, err)
			}
			if out == "-" {
				// Authenticate everything before the first byte leaves.
				if _, err := d.Stream(io.Discard, f); err != nil {
					return fmt.Errorf("%s: %w", in, err)
				}
			}
			return atomicWrite(out, 0o600, func(w io.Writer) error {
				bw := bufio.NewWriterSize(w, 1<<20)
				if _, err := d.Stream(bw, f); err != nil {
					return fmt.Errorf("%s: %w", in, err)
				}
				return bw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "private key file (PEM, JWK, or raw 32-byte AES key)")
	cmd.Flags().StringVar(&name, "name", "", "the logical name the object must have been sealed for")
	return cmd
}

// openObject reads the header of the object in f and returns a verified
// decryptor. An empty name accepts the header's name.
func openObject(f *os.File, kek any, name string) (*crypto.Decryptor, error) {
	h, size, err := readHeader(f)
	if err != nil {
		return nil, err
	}
	if name == "" {
		name = h.Name
		log.Info().Str("name", name).Msg("object name not checked (no --name)")
	}
	var opts crypto.OpenOptions
	if h.Version == crypto.VersionV2 {
		off, n, err := h.TableRange(size)
		if err != nil {
			return nil, err
		}
		if n > 1<<30 {
			return nil, fmt.Errorf("%w: nonce table of %d bytes", crypto.ErrInvalidSize, n)
		}
		opts.Table = make([]byte, n)
		if k, err := f.ReadAt(opts.Table, off); int64(k) != n {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return crypto.NewDecryptorOpts(h, kek, name, size, opts)
}

// readHeader parses the header at the start of f and returns it with the
// object size.
func readHeader(f *os.File) (*crypto.Header, int64, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	buf := make([]byte, min(st.Size(), crypto.MaxHeaderSize))
	if _, err := f.ReadAt(buf, 0); err != nil && err != io.EOF {
		return nil, 0, err
	}
	h, err := crypto.ParseHeader(buf)
	return h, st.Size(), err
}
