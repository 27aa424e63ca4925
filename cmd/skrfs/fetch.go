package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/skrfs/skrfs/deliver"
	"github.com/skrfs/skrfs/fs"
	"github.com/skrfs/skrfs/internal/config"
	"github.com/skrfs/skrfs/internal/harden"
	"github.com/skrfs/skrfs/keyrelease"
)

// deliveryFlags are shared by `skrfs fetch` and `skrfs run --no-fuse`.
type deliveryFlags struct {
	allowDisk bool
	maxSize   string
}

func (f *deliveryFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.allowDisk, "allow-disk", false, "deliver into a directory that is not memory-backed (plaintext on disk: never in production)")
	cmd.Flags().StringVar(&f.maxSize, "max-size", "", "most plaintext to deliver, e.g. 512MiB (default: delivery.max_size, 1GiB)")
}

func newFetchCmd() *cobra.Command {
	var cfgFile string
	var f deliveryFlags
	cmd := &cobra.Command{
		Use:   "fetch --config FILE DIR",
		Short: "Release the keys and decrypt the datasets into DIR, without FUSE",
		Long: `Release the configured keys and decrypt the configured datasets into DIR,
with the mount's layout: DIR/keys/<view> and DIR/<dataset>/<path>. For TEEs
without FUSE: SGX enclaves (Gramine), pods without /dev/fuse, init containers.

Every object is authenticated chunk by chunk into a temporary name and
renamed into place only after its last chunk verified, so a file that exists
is whole and genuine. The same key allow-list as the mount applies. On any
failure everything delivered is overwritten and removed, and skrfs exits
non-zero: a fetch delivers all or nothing.

DIR must be empty or absent, and memory-backed (tmpfs or ramfs; refused
otherwise unless --allow-disk). Inside a Gramine enclave, statfs cannot be
trusted, so DIR must be delivery.enclave_dir (the manifest's in-enclave tmpfs)
or below it. The files stay until you remove them: 'skrfs run --no-fuse'
wipes them when the program exits.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cfgFile)
			if err != nil {
				return err
			}
			st, err := fetchInto(cmd.Context(), cfg, args[0], f)
			if err != nil {
				return err
			}
			log.Info().Str("dir", args[0]).Int("files", st.Files).Int64("bytes", st.Bytes).Msg("delivered")
			reportDenied(cmd, st)
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgFile, "config", "", "configuration file (docs/config.md)")
	f.register(cmd)
	return cmd
}

// gramineAttestationDir is Gramine's pseudo-filesystem: present exactly
// when running inside a Gramine SGX enclave.
const gramineAttestationDir = "/dev/attestation"

// inEnclave reports whether skrfs runs inside a Gramine enclave.
// SKRFS_ASSUME_ENCLAVE=1 forces the (stricter) enclave rules, for tests
// and for runtimes that expose no /dev/attestation.
func inEnclave() bool {
	if os.Getenv("SKRFS_ASSUME_ENCLAVE") == "1" {
		return true
	}
	_, err := os.Stat(gramineAttestationDir)
	return err == nil
}

// checkDeliveryDir applies the rules on where plaintext may go.
func checkDeliveryDir(cfg *config.Config, dir string, allowDisk bool) error {
	if inEnclave() {
		log.Info().Str("dir", dir).Str("enclave_dir", cfg.Delivery.EnclaveDir).Msg("enclave detected: delivery only into the configured in-enclave tmpfs")
		if err := deliver.CheckEnclaveDir(dir, cfg.Delivery.EnclaveDir); err != nil {
			return usageError{err}
		}
		return nil
	}
	if err := deliver.CheckMemoryBacked(dir); err != nil {
		if !allowDisk || !errors.Is(err, deliver.ErrDiskBacked) {
			return usageError{err}
		}
		log.Warn().Err(err).Msg("--allow-disk: plaintext goes to a disk-backed directory")
	}
	return nil
}

// fetchInto hardens the process, checks dir, releases and decrypts into
// it, and wipes every key from memory before returning.
func fetchInto(ctx context.Context, cfg *config.Config, dir string, f deliveryFlags) (deliver.Stats, error) {
	if r := harden.Apply(); r.Err() != nil {
		log.Warn().Err(r.Err()).Msg("some memory protections are unavailable")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return deliver.Stats{}, err
	}
	if err := checkDeliveryDir(cfg, abs, f.allowDisk); err != nil {
		return deliver.Stats{}, err
	}
	opts, rt, err := deliveryOptions(ctx, cfg)
	if err != nil {
		return deliver.Stats{}, err
	}
	defer rt.close()
	opts.MaxBytes = cfg.Delivery.MaxBytes()
	if f.maxSize != "" {
		if opts.MaxBytes, err = config.ParseSize(f.maxSize); err != nil || opts.MaxBytes <= 0 {
			return deliver.Stats{}, usageError{fmt.Errorf("--max-size: %q is not a positive size such as 512MiB", f.maxSize)}
		}
	}
	st, err := deliver.Fetch(ctx, abs, opts)
	if errors.Is(err, deliver.ErrNotEmpty) {
		err = usageError{err}
	}
	return st, err
}

// deliveryOptions wires cfg as buildFilesystem does for the mount: the
// same allow-listed releaser, key views, stores and per-dataset keys.
func deliveryOptions(ctx context.Context, cfg *config.Config) (deliver.Options, *runtime, error) {
	rt, err := newRuntime(ctx, cfg)
	if err != nil {
		return deliver.Options{}, nil, err
	}
	opts := deliver.Options{Releaser: rt.releaser, Logger: log}
	fm, _ := config.ParseMode(cfg.Mount.FileMode)
	dm, _ := config.ParseMode(cfg.Mount.DirMode)
	opts.FileMode, opts.DirMode = fm, dm
	if cfg.Mount.UID != nil || cfg.Mount.GID != nil {
		opts.Chown, opts.UID, opts.GID = true, -1, -1
		if cfg.Mount.UID != nil {
			opts.UID = *cfg.Mount.UID
		}
		if cfg.Mount.GID != nil {
			opts.GID = *cfg.Mount.GID
		}
	}
	refs := map[string]keyrelease.KeyRef{}
	for _, k := range cfg.Keys {
		ref, _ := keyrelease.ParseKeyRef(k.Ref) // validated by config
		refs[k.Name] = ref
		spec := deliver.Key{Name: k.Name, Ref: ref}
		for _, v := range k.Views {
			mode, _ := config.ParseMode(v.Mode)
			spec.Views = append(spec.Views, deliver.View{File: v.File, Format: v.Format, Mode: mode})
		}
		opts.Keys = append(opts.Keys, spec)
	}
	for _, d := range cfg.Datasets {
		target := d.Azure
		if target == "" {
			target = cfg.Path(d.Local)
		}
		st, err := openStore(ctx, target, false, rt.cred, rt.http)
		if err != nil {
			rt.close()
			return deliver.Options{}, nil, fmt.Errorf("dataset %s: %w", d.Name, err)
		}
		spec := deliver.Dataset{Name: d.Name, Store: st, Suffix: d.Suffix}
		names := d.Keys
		if len(names) == 0 {
			for _, k := range cfg.Keys {
				names = append(names, k.Name)
			}
		}
		for _, n := range names {
			spec.Keys = append(spec.Keys, refs[n])
		}
		ms, err := manifestSpec(ctx, cfg, d, rt)
		if err != nil {
			rt.close()
			return deliver.Options{}, nil, fmt.Errorf("dataset %s: %w", d.Name, err)
		}
		if ms != nil {
			// The same pinned keys and freshness rules as the mount; a
			// fetch is one-shot, so it remembers no epoch between runs.
			spec.Manifest = &deliver.Manifest{Require: ms.Mode == fs.ManifestRequire, Verifier: ms.Verifier,
				ID: ms.ID, MinEpoch: ms.MinEpoch, MaxAge: ms.MaxAge, Anchor: ms.Anchor}
		}
		opts.Datasets = append(opts.Datasets, spec)
	}
	return opts, rt, nil
}

// reportDenied says on stderr which keys were not delivered.
func reportDenied(cmd *cobra.Command, st deliver.Stats) {
	for _, k := range st.Denied {
		fmt.Fprintf(cmd.ErrOrStderr(), "skrfs: key %s: release denied, its files are not delivered (skrfs explain --config FILE %s says why)\n", k, k)
	}
}
