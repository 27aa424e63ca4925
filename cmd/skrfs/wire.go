package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"golang.org/x/sys/unix"

	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/fs"
	"github.com/skrfs/skrfs/internal/config"
	"github.com/skrfs/skrfs/keyrelease"
)

// buildFilesystem wires the filesystem of cfg: HTTP client and identity,
// the releaser (attestation, MAA, Key Vault, cache), the stores, and the
// key and dataset specs, with ep's audit log and metrics. The runtime's
// close wipes keys.
func buildFilesystem(ctx context.Context, cfg *config.Config, ep *endpoints, withSKR bool) (*fs.Root, *runtime, error) {
	rt, err := newRuntimeFor(ctx, cfg, withSKR)
	if err != nil {
		return nil, nil, err
	}
	if err := refuseInSGX(rt, "a FUSE mount"); err != nil {
		rt.close()
		return nil, nil, err
	}
	opts := fs.Options{Releaser: rt.releaser, Logger: log}
	ep.fsOptions(&opts)
	if cfg.Mount.UID != nil {
		opts.UID = uint32(*cfg.Mount.UID)
	} else {
		opts.UID = uint32(os.Getuid())
	}
	if cfg.Mount.GID != nil {
		opts.GID = uint32(*cfg.Mount.GID)
	} else {
		opts.GID = uint32(os.Getgid())
	}
	fm, _ := config.ParseMode(cfg.Mount.FileMode)
	dm, _ := config.ParseMode(cfg.Mount.DirMode)
	opts.FileMode, opts.DirMode = uint32(fm), uint32(dm)
	opts.StagingBytes, opts.SpillDir = cfg.Write.StagingBytes, cfg.Write.SpillDir
	refs := map[string]keyrelease.KeyRef{}
	for _, k := range cfg.Keys {
		ref, _ := keyrelease.ParseKeyRef(k.Ref) // validated by config
		refs[k.Name] = ref
		spec := fs.KeySpec{Name: k.Name, Ref: ref}
		for _, v := range k.Views {
			mode, _ := config.ParseMode(v.Mode)
			spec.Views = append(spec.Views, fs.ViewSpec{File: v.File, Format: v.Format, Mode: uint32(mode)})
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
			return nil, nil, fmt.Errorf("dataset %s: %w", d.Name, err)
		}
		spec := fs.DatasetSpec{Name: d.Name, Store: st, Suffix: d.Suffix}
		names := d.Keys
		if len(names) == 0 {
			for _, k := range cfg.Keys {
				names = append(names, k.Name)
			}
		}
		for _, n := range names {
			spec.Keys = append(spec.Keys, refs[n])
			if k, _ := cfg.KeyByName(n); len(k.Versions) > 0 {
				if spec.Versions == nil {
					spec.Versions = map[keyrelease.KeyRef][]string{}
				}
				spec.Versions[refs[n]] = k.Versions
			}
		}
		if spec.Manifest, err = manifestSpec(ctx, cfg, d, rt); err != nil {
			rt.close()
			return nil, nil, fmt.Errorf("dataset %s: %w", d.Name, err)
		}
		if d.Writable {
			spec.Write = writeSpec(refs[d.WriteKey], rt)
			if d.SignKey != "" && spec.Manifest != nil {
				if spec.Write.Signer, err = datasetSigner(ctx, cfg, d, rt); err != nil {
					rt.close()
					return nil, nil, fmt.Errorf("dataset %s: sign_key: %w", d.Name, err)
				}
			}
			log.Info().Str("dataset", d.Name).Str("write_key", d.WriteKey).Bool("publishes_manifests", spec.Write.Signer != nil).Msg("dataset is writable")
		}
		opts.Datasets = append(opts.Datasets, spec)
	}
	root, err := fs.NewRoot(opts)
	if err != nil {
		rt.close()
		return nil, nil, err
	}
	for _, d := range cfg.Datasets {
		if d.Writable {
			warnMemlock(cfg.Write.StagingBytes)
			break
		}
	}
	return root, rt, nil
}

// datasetSigner loads a writable dataset's manifest signing key: a key
// file (relative to the config) or a Key Vault key URL (azkeys Sign).
func datasetSigner(ctx context.Context, cfg *config.Config, d config.Dataset, rt *runtime) (crypto.ManifestSigner, error) {
	arg := d.SignKey
	if !strings.HasPrefix(arg, "https://") {
		arg = cfg.Path(arg)
	}
	var opts *azcore.ClientOptions
	if rt.http != nil {
		opts = &azcore.ClientOptions{Transport: rt.http}
	}
	return loadSigner(ctx, arg, rt.cred, opts)
}

// warnMemlock warns when the daemon's locked memory (mlockall) cannot hold
// the write staging bound besides the read cache and its own use: without
// CAP_IPC_LOCK, locked pages count against RLIMIT_MEMLOCK, and allocations
// past it fail (docs/writes.md, "Memory").
func warnMemlock(staging int64) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY || hasCapIPCLock() {
		return
	}
	need := uint64(staging) + 64<<20 + 64<<20 // staging, the read cache, the daemon
	if rl.Cur < need {
		log.Warn().Uint64("memlock_limit", rl.Cur).Uint64("needed", need).
			Msg("RLIMIT_MEMLOCK is below the write staging bound plus the read cache: raise ulimit -l, grant CAP_IPC_LOCK, or lower write.staging_bytes")
	}
}

// hasCapIPCLock reports whether the process holds CAP_IPC_LOCK, which
// lifts RLIMIT_MEMLOCK.
func hasCapIPCLock() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<unix.CAP_IPC_LOCK) != 0
		}
	}
	return false
}

// writeSpec is the write configuration of a writable dataset sealing for
// ref: the public part of an RSA or EC key comes from Key Vault (keys/get),
// so a mount that only writes needs no release; for an oct key, or
// without keys/get, the filesystem releases the key at the first write.
func writeSpec(ref keyrelease.KeyRef, rt *runtime) *fs.WriteSpec {
	return &fs.WriteSpec{Key: ref, PublicKey: func(ctx context.Context) (any, string, error) {
		cred := rt.cred
		if cred == nil {
			var err error
			if cred, err = azidentity.NewDefaultAzureCredential(nil); err != nil {
				return nil, "", fmt.Errorf("azure credential: %w", err)
			}
		}
		var opts *azkeys.ClientOptions
		if rt.http != nil {
			opts = &azkeys.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: rt.http}}
		}
		k, err := getVaultKey(ctx, ref, cred, opts)
		if err != nil {
			return nil, "", err
		}
		pub, version := k.Public, k.Ref.Version
		k.Wipe()
		if pub == nil {
			return nil, "", fmt.Errorf("key %s has no public part", ref)
		}
		return pub, version, nil
	}}
}

// manifestSpec builds a dataset's manifest enforcement: pinned signer keys
// (files, or Key Vault keys fetched once now) and the optional anchor.
func manifestSpec(ctx context.Context, cfg *config.Config, d config.Dataset, rt *runtime) (*fs.ManifestSpec, error) {
	var mode fs.ManifestMode
	switch d.Manifest {
	case config.ManifestRequire:
		mode = fs.ManifestRequire
	case config.ManifestPrefer:
		mode = fs.ManifestPrefer
	default:
		return nil, nil
	}
	v, err := pinnedKeys(ctx, d.Signers, rt.cred, rt.http, cfg.Path)
	if err != nil {
		return nil, err
	}
	spec := &fs.ManifestSpec{Mode: mode, Verifier: v, ID: d.ID, MinEpoch: d.MinEpoch,
		MaxAge: time.Duration(d.MaxAge), Refresh: time.Duration(d.ManifestRefresh)}
	if d.Anchor != "" {
		a, err := newVaultAnchor(d.Anchor, rt.cred, rt.http)
		if err != nil {
			return nil, err
		}
		spec.Anchor = a
	}
	log.Info().Str("dataset", d.Name).Str("manifest", d.Manifest).Strs("signer_kids", v.KeyIDs()).
		Str("id", d.ID).Uint64("min_epoch", d.MinEpoch).Bool("anchor", d.Anchor != "").Msg("manifest enforced")
	return spec, nil
}
