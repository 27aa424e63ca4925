package main

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/skrfs/skrfs/internal/azauth"
	"github.com/skrfs/skrfs/internal/config"
	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/attest"
	"github.com/skrfs/skrfs/keyrelease/attest/fakesnp"
	"github.com/skrfs/skrfs/keyrelease/attested"
	"github.com/skrfs/skrfs/keyrelease/cache"
	"github.com/skrfs/skrfs/keyrelease/maa"
	"github.com/skrfs/skrfs/keyrelease/skr"
)

// runtime holds the wired key-release stack of a configuration.
type runtime struct {
	releaser keyrelease.Releaser
	skr      *skr.Releaser
	cache    *cache.Cache
	cred     azcore.TokenCredential
	http     *http.Client
	roots    *x509.CertPool
	tee      evidenceProvider // nil without skr
	cacheOpt cache.Options
	close    func()
}

// evidenceProvider is what attest.SNP and attest.Fake have in common.
type evidenceProvider = attested.EvidenceReporter

func newEvidence(cfg *config.Config, hc *http.Client) (evidenceProvider, error) {
	a := cfg.Attestation
	switch a.Provider {
	case config.ProviderFake:
		tee := fakesnp.Config{}
		if a.Fake.Measurement != "" {
			b, _ := hex.DecodeString(a.Fake.Measurement)
			copy(tee.Measurement[:], b)
		}
		switch {
		case a.Fake.HostData != "":
			b, _ := hex.DecodeString(a.Fake.HostData)
			copy(tee.HostData[:], b)
		case a.Fake.HostDataPolicy != "":
			pol, err := os.ReadFile(cfg.Path(a.Fake.HostDataPolicy))
			if err != nil {
				return nil, fmt.Errorf("attestation.fake.host_data_policy: %w", err)
			}
			tee.HostData = fakesnp.HostDataFromPolicy(pol)
		}
		tee.Debug = a.Fake.Debug
		d, err := fakesnp.New(tee)
		if err != nil {
			return nil, err
		}
		log.Warn().Msg("attestation uses the FAKE SEV-SNP device (attestation.provider: fake): development only")
		var endorsements [][]byte
		if a.SecurityContextDir != "" {
			endorsements = attest.UVMEndorsements(cfg.Path(a.SecurityContextDir))
		}
		return &attest.Fake{Device: d, Endorsements: endorsements}, nil
	default:
		return attest.Detect(attest.Options{SecurityContextDir: cfg.Path(a.SecurityContextDir), HTTPClient: hc, Logger: log})
	}
}

// newRuntime wires HTTP trust, identity and the releaser (evidence -> MAA
// -> Key Vault, behind the cache: keyrelease/attested, as library users
// wire it) behind the configuration's key allow-list.
func newRuntime(ctx context.Context, cfg *config.Config) (*runtime, error) {
	return newRuntimeFor(ctx, cfg, false)
}

// newRuntimeFor is newRuntime; withSKR wires attestation and Secure Key
// Release even when no key is configured (skrfs serve releases the keys
// its callers name).
func newRuntimeFor(ctx context.Context, cfg *config.Config, withSKR bool) (*runtime, error) {
	var cas []string
	for _, f := range cfg.TLS.CAFiles {
		cas = append(cas, cfg.Path(f))
	}
	hc, _, err := azauth.HTTPClient(cas) // its roots are for transport only
	if err != nil {
		return nil, err
	}
	cred, err := azauth.Credential(cfg.Identity, hc)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	roots, err := releaseRoots(cfg)
	if err != nil {
		return nil, err
	}
	rt := &runtime{cred: cred, http: hc, roots: roots, close: func() {}}
	if len(cfg.Keys) == 0 && !withSKR {
		rt.releaser = keyrelease.NewStatic()
		return rt, nil
	}
	rt.cacheOpt = cache.Options{TTL: time.Duration(cfg.Cache.TTL), MaxStale: time.Duration(cfg.Cache.MaxStale), Logger: log}
	ar, err := attested.New(attested.Config{
		TEE: func(mc *maa.Client, hc *http.Client) (attest.Provider, error) {
			prov, ev, err := newProvider(cfg, hc, mc)
			rt.tee = ev
			return prov, err
		},
		MAA: cfg.Attestation.MAA, Credential: cred, HTTPClient: hc, ReleaseRoots: roots, VaultHosts: vaultHosts(cfg),
		Cache: rt.cacheOpt, Logger: log})
	if err != nil {
		return nil, err
	}
	rt.skr, rt.cache = ar.SKR(), ar.Cache()
	rt.releaser = &allowList{inner: rt.cache, cfg: cfg}
	rt.close = ar.Close
	return rt, nil
}

// releaseRoots returns the roots trusted to sign Key Vault's release
// responses: the system roots plus tls.release_ca_files only. A CA in
// tls.ca_files (a TLS-inspecting proxy's) must not be able to sign a
// release of its own.
func releaseRoots(cfg *config.Config) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	for _, f := range cfg.TLS.ReleaseCAFiles {
		pem, err := os.ReadFile(cfg.Path(f))
		if err != nil {
			return nil, fmt.Errorf("tls.release_ca_files: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.release_ca_files: %s holds no PEM certificate", f)
		}
	}
	return pool, nil
}

// vaultHosts lists the vaults of the configured keys: the only hosts
// outside Azure's Key Vault and Managed HSM domains that the releaser (and
// the sidecar API, whose callers name vaults) may talk to.
func vaultHosts(cfg *config.Config) []string {
	var hosts []string
	for _, k := range cfg.Keys {
		if r, err := keyrelease.ParseKeyRef(k.Ref); err == nil {
			hosts = append(hosts, r.Vault)
		}
	}
	return hosts
}

// allowList refuses keys that are not configured: whoever controls storage
// cannot make skrfs release a key of their choosing.
type allowList struct {
	inner keyrelease.Releaser
	cfg   *config.Config
}

func (a *allowList) Release(ctx context.Context, ref keyrelease.KeyRef) (*keyrelease.Key, error) {
	if err := a.allowed(ref); err != nil {
		return nil, err
	}
	return a.inner.Release(ctx, ref)
}

// ReleaseBatchKeys passes the key cache's light release through the same
// allow-list (fs uses it for version 2 objects of a cached batch).
func (a *allowList) ReleaseBatchKeys(ctx context.Context, ref keyrelease.KeyRef) (*keyrelease.Key, error) {
	if err := a.allowed(ref); err != nil {
		return nil, err
	}
	if c, ok := a.inner.(interface {
		ReleaseBatchKeys(context.Context, keyrelease.KeyRef) (*keyrelease.Key, error)
	}); ok {
		return c.ReleaseBatchKeys(ctx, ref)
	}
	return a.inner.Release(ctx, ref)
}

func (a *allowList) allowed(ref keyrelease.KeyRef) error {
	for _, k := range a.cfg.Keys {
		if r, err := keyrelease.ParseKeyRef(k.Ref); err == nil && r.Matches(ref) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s", keyrelease.ErrNotAllowed, ref)
}
