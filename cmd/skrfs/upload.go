package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/internal/upload"
	"github.com/skrfs/skrfs/keyrelease"
)

type uploadDest interface {
	Stat(ctx context.Context, name string) (blob.Info, error)
	Upload(ctx context.Context, name string, r io.Reader, metadata map[string]string) error
}

func newUploadCmd() *cobra.Command {
	var keyArg, to, keyRef, suffix, fpKeyFile, sign, datasetID, anchor string
	var chunkSize, parallel, formatVersion, batchSize int
	var force, mirror bool
	var gf epochGuardFlags
	cmd := &cobra.Command{
		Use:   "upload --key KEY --to URL SRC...",
		Short: "Encrypt files and upload them to a container, prefix or directory",
		Long: `Seal each SRC (files, or directories recursively) in the skrfs object format
and upload it under the destination URL.

KEY is a local key file (as for encrypt) or a Key Vault key URL
https://<vault>/keys/<name>[/<version>], whose public part is fetched with
azidentity credentials (RSA and EC keys; oct keys cannot be fetched and need
the key file). URL is an Azure container or prefix URL
(https://<account>.blob.core.windows.net/<container>[/<prefix>]), optionally
with a SAS, or a local directory. Storage credentials: a SAS in the URL,
AZURE_STORAGE_CONNECTION_STRING, or azidentity (managed identity, workload
identity, Azure CLI).

Objects are named by their path relative to each SRC directory (a file SRC by
its base name) and sealed for that name. The run is idempotent: an object
whose metadata records the same keyed fingerprint (HMAC-SHA256 of the
plaintext, name, key reference and chunk size), key reference and chunk size
is skipped. The fingerprint key never leaves the producer: with an oct key it
is derived from the key; with an RSA or EC key it is a random secret kept in
--fingerprint-key (default $XDG_STATE_HOME/skrfs/upload-fingerprint.key,
created with mode 0600). Files are uploaded in parallel with bounded memory.

Objects are written in format version 2 (docs/format.md section 11): one
run draws one batch key, wraps it once for KEY, and wraps each object's data
key under it, so that readers make one RSA or EC private-key operation per
batch instead of one per object. --batch-size N starts a new batch key every
N objects (a leaked batch key exposes its batch only; 1 is version 1's
exposure). --format-version 1 writes version 1. Objects already uploaded in
either version count as unchanged; use --force to rewrite them.

With --sign KEY (a private key file, or a Key Vault key URL used through
its Sign operation), the run then publishes the dataset's signed manifest
(.skrfs/manifest): the previous manifest, verified with KEY's public part,
plus the objects of this run, at the next epoch. Objects are written first
and the manifest last, so a failed run never publishes a manifest naming
missing objects. Unchanged objects are signed only if storage still holds
the version the previous manifest lists; others are uploaded again. Entries
are only added or replaced; with --mirror the manifest lists exactly SRC
(entries of files no longer in SRC are removed; their objects stay in
storage, unlisted, and mounts hide them).

Before uploading anything, a signed run refuses a previous manifest whose
epoch is below what this producer knows of the dataset: an older, genuinely
signed manifest put back in storage (or the newest one deleted) would make
it sign stale entries at a new epoch. The floor is the highest of the Key
Vault anchor (--anchor, read first), --min-epoch, and the state file
(--state, default $XDG_STATE_HOME/skrfs/manifest-epochs.json, mode 0600) in
which signed runs and manifest refresh record the highest epoch they
published per dataset id. --min-epoch only raises the floor; --allow-rollback
sets aside the state file's epoch for a deliberate rollback (the file then
records the epoch published), never the anchor's or --min-epoch.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyArg == "" || to == "" {
				return usageError{fmt.Errorf("--key and --to are required")}
			}
			if formatVersion != crypto.Version && formatVersion != crypto.VersionV2 {
				return usageError{fmt.Errorf("--format-version must be 1 or 2, not %d", formatVersion)}
			}
			if batchSize < 0 {
				return usageError{fmt.Errorf("--batch-size must be 0 (the whole run) or more")}
			}
			ctx := cmd.Context()
			if sign == "" && (datasetID != "" || anchor != "" || gf.changed(cmd)) {
				return usageError{fmt.Errorf("--dataset-id, --anchor, --min-epoch, --state and --allow-rollback need --sign")}
			}
			key, ref, err := loadUploadKey(ctx, keyArg, keyRef)
			if err != nil {
				return err
			}
			defer key.Wipe()
			fpKey, err := uploadFingerprintKey(fpKeyFile, key)
			if err != nil {
				return err
			}
			defer clear(fpKey)
			var sp *signedPublish
			if sign != "" {
				if sp, err = newSignedPublish(ctx, sign, datasetID, anchor, gf); err != nil {
					return err
				}
				sp.mirror = mirror
			} else if mirror {
				return usageError{fmt.Errorf("--mirror needs --sign")}
			}
			files, err := upload.Collect(args)
			if err != nil {
				return err
			}
			dst, err := openStoreURL(ctx, to, true)
			if err != nil {
				return err
			}
			if sp != nil {
				if err := sp.before(ctx, dst); err != nil {
					return err
				}
			}
			prog := newProgressPrinter(os.Stderr)
			uopts := upload.Options{
				KEK: key.KEK(), KeyRef: ref, ChunkSize: chunkSize, Suffix: suffix,
				Parallel: parallel, Force: force, Progress: prog.update, Logger: log, FingerprintKey: fpKey,
				FormatVersion: formatVersion, BatchSize: batchSize,
			}
			if sp != nil {
				uopts.Sealed = sp.collected.Sealed
			}
			res := upload.Run(ctx, dst, files, uopts)
			prog.done()
			fmt.Fprintf(cmd.OutOrStdout(), "%d uploaded, %d unchanged, %d failed (%d files, %s)\n",
				res.Uploaded, res.Skipped, res.Failed, res.Files, humanBytes(res.Bytes))
			if len(res.Errors) > 0 {
				for _, e := range res.Errors {
					fmt.Fprintf(os.Stderr, "skrfs: %v\n", e)
				}
				if sp != nil {
					fmt.Fprintln(os.Stderr, "skrfs: manifest not published: some objects failed")
				}
				return errors.Join(res.Errors...)
			}
			if sp != nil {
				return sp.publish(ctx, cmd.OutOrStdout(), dst, files, uopts)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&keyArg, "key", "", "key file, or Key Vault key URL https://<vault>/keys/<name>[/<version>]")
	cmd.Flags().StringVar(&to, "to", "", "destination: container/prefix URL, or a local directory")
	cmd.Flags().StringVar(&keyRef, "key-ref", "", "key reference for the headers (default: the key URL, or the JWK's kid)")
	cmd.Flags().StringVar(&suffix, "suffix", "", "suffix appended to object names in the store, e.g. .skrfs")
	cmd.Flags().IntVar(&chunkSize, "chunk-size", crypto.DefaultChunkSize, "plaintext chunk size in bytes")
	cmd.Flags().IntVar(&parallel, "parallel", 4, "files uploaded at once")
	cmd.Flags().IntVar(&formatVersion, "format-version", crypto.VersionV2, "object format version to write: 2 (per-batch wrapping key) or 1")
	cmd.Flags().IntVar(&batchSize, "batch-size", 0, "objects per batch key in format version 2 (0 = the whole run)")
	cmd.Flags().BoolVar(&force, "force", false, "upload even when an identical object exists")
	cmd.Flags().StringVar(&fpKeyFile, "fingerprint-key", "", "file of the secret that keys the change-detection fingerprints (default: derived from an oct key; else $XDG_STATE_HOME/skrfs/upload-fingerprint.key, created if missing)")
	cmd.Flags().StringVar(&sign, "sign", "", "publish a signed manifest with this key: private key file, or Key Vault key URL (signs in the HSM)")
	cmd.Flags().StringVar(&datasetID, "dataset-id", "", "dataset id of the first signed publish (default: a random UUID, kept by later publishes)")
	cmd.Flags().BoolVar(&mirror, "mirror", false, "with --sign: the manifest lists exactly SRC (removes entries of files not in SRC)")
	cmd.Flags().StringVar(&anchor, "anchor", "", "Key Vault secret URL https://<vault>/secrets/<name>: a floor read before the manifest, set to the new epoch after publishing")
	gf.register(cmd)
	return cmd
}

// fingerprintKeySize is the size of a fingerprint key file.
const fingerprintKeySize = 32

// uploadFingerprintKey returns the key of the change-detection
// fingerprints: the file's when one is named; else, for an oct key, one
// derived from it; else the default state file's, created with a random
// secret if missing. A key file must be a regular file of 32 bytes that
// only its owner may access.
func uploadFingerprintKey(file string, key *keyrelease.Key) ([]byte, error) {
	if file == "" && key.Oct != nil {
		return upload.DeriveFingerprintKey(key.Oct), nil
	}
	create := file == ""
	if create {
		dir := os.Getenv("XDG_STATE_HOME")
		if dir == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return nil, fmt.Errorf("fingerprint key: no home directory for the state file; use --fingerprint-key: %w", err)
			}
			dir = filepath.Join(home, ".local", "state")
		}
		file = filepath.Join(dir, "skrfs", "upload-fingerprint.key")
	}
	b, err := readFingerprintKey(file)
	if errors.Is(err, fs.ErrNotExist) && create {
		return createFingerprintKey(file)
	}
	return b, err
}

func readFingerprintKey(file string) ([]byte, error) {
	f, err := os.OpenFile(file, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("fingerprint key %s: must be a regular file that only its owner can access (mode 0600), is %v", file, st.Mode())
	}
	b := make([]byte, fingerprintKeySize+1)
	n, err := io.ReadFull(f, b)
	if n != fingerprintKeySize || err != io.ErrUnexpectedEOF {
		clear(b)
		return nil, fmt.Errorf("fingerprint key %s: want exactly %d bytes", file, fingerprintKeySize)
	}
	return b[:n], nil
}

// createFingerprintKey writes a fresh random key, mode 0600 in a
// directory of mode 0700; a concurrent creator's key wins.
func createFingerprintKey(file string) ([]byte, error) {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return nil, fmt.Errorf("fingerprint key: %w", err)
	}
	b := make([]byte, fingerprintKeySize)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if errors.Is(err, fs.ErrExist) {
		clear(b)
		return readFingerprintKey(file)
	}
	if err != nil {
		return nil, fmt.Errorf("fingerprint key: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(file)
		return nil, fmt.Errorf("fingerprint key: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(file)
		return nil, fmt.Errorf("fingerprint key: %w", err)
	}
	log.Info().Str("file", file).Msg("created the upload fingerprint key; keep it to skip unchanged files in later uploads")
	return b, nil
}

// loadUploadKey loads the sealing key from a file or from Key Vault and
// settles the key reference written into the headers.
func loadUploadKey(ctx context.Context, keyArg, keyRef string) (*keyrelease.Key, string, error) {
	var key *keyrelease.Key
	if strings.HasPrefix(keyArg, "https://") {
		ref, err := keyrelease.ParseKeyRef(keyArg)
		if err != nil {
			return nil, "", usageError{fmt.Errorf("--key: %w", err)}
		}
		if key, err = fetchPublicKey(ctx, ref); err != nil {
			return nil, "", err
		}
	} else {
		var err error
		if key, err = loadKey(keyArg); err != nil {
			return nil, "", err
		}
	}
	if keyRef == "" && key.Ref != (keyrelease.KeyRef{}) {
		keyRef = key.Ref.String()
	}
	if keyRef != "" {
		ref, err := keyrelease.ParseKeyRef(keyRef)
		if err != nil {
			key.Wipe()
			return nil, "", usageError{fmt.Errorf("--key-ref: %w", err)}
		}
		keyRef = ref.String()
	}
	return key, keyRef, nil
}

// fetchPublicKey gets the public part of a Key Vault key with azkeys.
func fetchPublicKey(ctx context.Context, ref keyrelease.KeyRef) (*keyrelease.Key, error) {
	cred, err := azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		return nil, fmt.Errorf("azure credential: %w", err)
	}
	return getVaultKey(ctx, ref, cred, nil)
}

func getVaultKey(ctx context.Context, ref keyrelease.KeyRef, cred azcore.TokenCredential, opts *azkeys.ClientOptions) (*keyrelease.Key, error) {
	var co *azcore.ClientOptions
	if opts != nil {
		co = &opts.ClientOptions
	}
	c, err := vaultClient(ref, cred, co)
	if err != nil {
		return nil, err
	}
	resp, err := c.GetKey(ctx, ref.Name, ref.Version, nil)
	if err != nil {
		return nil, vaultError("get key", ref, err)
	}
	if resp.Key == nil || resp.Key.KID == nil {
		return nil, fmt.Errorf("get key %s: empty response", ref)
	}
	if resp.Key.Kty != nil && (*resp.Key.Kty == azkeys.KeyTypeOct || *resp.Key.Kty == azkeys.KeyTypeOctHSM) {
		// Key Vault returns no k for them: say so before the JWK parser
		// complains that k is missing.
		return nil, fmt.Errorf("%w: %s is an oct key: oct keys cannot be fetched; pass the key file (--key FILE --key-ref %s)", crypto.ErrKeyType, ref, ref)
	}
	raw, err := resp.Key.MarshalJSON()
	if err != nil {
		return nil, err
	}
	key, err := keyrelease.ParseKey(raw)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", ref, err)
	}
	if key.Type == keyrelease.KeyTypeOct {
		return nil, fmt.Errorf("%w: %s is an oct key; Key Vault never returns its bytes, so seal with the key file", crypto.ErrKeyType, ref)
	}
	return key, nil
}

// progressPrinter draws a one-line progress display on a terminal, at most
// ten times a second, and nothing when stderr is not a terminal.
type progressPrinter struct {
	w     *os.File
	tty   bool
	mu    sync.Mutex
	last  time.Time
	start time.Time
	drawn bool
}

func newProgressPrinter(w *os.File) *progressPrinter {
	return &progressPrinter{w: w, tty: term.IsTerminal(int(w.Fd())), start: time.Now()}
}

func (p *progressPrinter) update(pr upload.Progress) {
	if !p.tty {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.last) < 100*time.Millisecond && pr.Done != pr.Files {
		return
	}
	p.last = time.Now()
	rate := float64(pr.BytesDone) / max(time.Since(p.start).Seconds(), 0.001)
	fmt.Fprintf(p.w, "\r\x1b[Kupload: %d/%d files (%d unchanged, %d failed), %s/%s, %s/s",
		pr.Done, pr.Files, pr.Skipped, pr.Failed, humanBytes(pr.BytesDone), humanBytes(pr.Bytes), humanBytes(int64(rate)))
	p.drawn = true
}

func (p *progressPrinter) done() {
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// signedPublish is the manifest part of `skrfs upload --sign`.
type signedPublish struct {
	signer    crypto.ManifestSigner
	verifier  *crypto.ManifestVerifier
	datasetID string
	guard     *epochGuard
	mirror    bool
	prev      *crypto.Manifest
	collected upload.Collector
}

func newSignedPublish(ctx context.Context, sign, datasetID, anchor string, gf epochGuardFlags) (*signedPublish, error) {
	if datasetID != "" {
		if err := crypto.CheckDatasetID(datasetID); err != nil {
			return nil, usageError{fmt.Errorf("--dataset-id: %w", err)}
		}
	}
	guard, err := newEpochGuard(gf, anchor)
	if err != nil {
		return nil, err
	}
	s, err := loadSigner(ctx, sign, nil, nil)
	if err != nil {
		return nil, err
	}
	v, err := crypto.NewManifestVerifier(s.Public())
	if err != nil {
		return nil, err
	}
	return &signedPublish{signer: s, verifier: v, datasetID: datasetID, guard: guard}, nil
}

// before reads and verifies the current manifest, before any upload: a
// dataset whose manifest does not verify with the signing key, or is
// below the epoch the producer knows (epochGuard), is not touched.
func (sp *signedPublish) before(ctx context.Context, st blob.Store) error {
	if err := sp.guard.readAnchor(ctx); err != nil {
		return err
	}
	prev, err := upload.Previous(ctx, st, sp.verifier)
	if err != nil {
		return fmt.Errorf("%w (it must verify with the --sign key's public part)", err)
	}
	if prev != nil && sp.datasetID != "" && prev.Dataset != sp.datasetID {
		return fmt.Errorf("%w: the dataset's id is %q, not --dataset-id %q", upload.ErrPrevious, prev.Dataset, sp.datasetID)
	}
	id := sp.datasetID
	if prev != nil {
		id = prev.Dataset
	}
	if err := sp.guard.check(prev, id); err != nil {
		return err
	}
	sp.prev = prev
	return nil
}

// publish re-uploads unchanged objects that the previous manifest does not
// pin, then signs and writes the new manifest, then sets the anchor.
func (sp *signedPublish) publish(ctx context.Context, out io.Writer, dst storeTarget, files []upload.File, uopts upload.Options) error {
	again, err := upload.Unpinned(ctx, dst, files, sp.collected.Entries(), sp.prev, uopts.Suffix)
	if err != nil {
		return err
	}
	if len(again) > 0 {
		log.Info().Int("objects", len(again)).Msg("uploading again: unchanged in metadata but not pinned by the previous manifest")
		uopts.Force, uopts.Progress = true, nil
		if res := upload.Run(ctx, dst, again, uopts); len(res.Errors) > 0 {
			fmt.Fprintln(os.Stderr, "skrfs: manifest not published: some objects failed")
			return errors.Join(res.Errors...)
		}
	}
	base, entries := sp.prev, sp.collected.Entries()
	if sp.mirror {
		if entries, err = upload.Mirror(sp.prev, files, entries); err != nil {
			return err
		}
		base = upload.WithoutEntries(sp.prev)
	}
	m, err := upload.NextManifest(base, sp.datasetID, entries, time.Now())
	if err != nil {
		return err
	}
	if _, err := upload.Publish(ctx, dst, m, sp.signer); err != nil {
		return err
	}
	if err := sp.guard.published(ctx, m.Dataset, m.Epoch); err != nil {
		return fmt.Errorf("manifest epoch %d published, but: %w", m.Epoch, err)
	}
	fmt.Fprintf(out, "manifest published: dataset %s, epoch %d, %d entries, signer %s\n", m.Dataset, m.Epoch, len(m.Entries), m.KeyID)
	return nil
}
