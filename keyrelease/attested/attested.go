// Package attested builds the attested key releaser that skrfs itself uses,
// for programs that embed skrfs as a Go library instead of mounting it: an
// app inside an SGX enclave under Gramine (where there is no FUSE), or any
// TEE program that wants one verified object in memory.
//
// New wires the release path of the skrfs binary: the TEE's attestation
// provider (SGX, Azure CVM or SEV-SNP) proves the TEE to Microsoft Azure
// Attestation, Key Vault or Managed HSM releases the key to the token's
// wrapping key (keyrelease/skr, keyrelease/akv), and a key cache
// (keyrelease/cache) shares one release between concurrent callers, keeps
// the key for its TTL and wipes it. The result is a keyrelease.Releaser:
// pass it to deliver.ReadObject or deliver.Fetch, or call Release.
//
//	r, err := attested.New(attested.Config{
//		TEE:        attested.SGX(sgx.Options{}), // Gramine's /dev/attestation
//		MAA:        "https://sharedweu.weu.attest.azure.net",
//		Credential: cred, // e.g. azidentity.NewWorkloadIdentityCredential
//	})
//	defer r.Close()
package attested

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/akv"
	"github.com/skrfs/skrfs/keyrelease/attest"
	"github.com/skrfs/skrfs/keyrelease/attest/cvm"
	"github.com/skrfs/skrfs/keyrelease/attest/sgx"
	"github.com/skrfs/skrfs/keyrelease/attest/snp"
	"github.com/skrfs/skrfs/keyrelease/cache"
	"github.com/skrfs/skrfs/keyrelease/maa"
	"github.com/skrfs/skrfs/keyrelease/skr"
)

// TEE opens the attestation provider of one kind of TEE around the MAA
// client and HTTP client that New made. SGX, CVM and SNP return one;
// any function that returns an attest.Provider will do.
type TEE func(mc *maa.Client, hc *http.Client) (attest.Provider, error)

// SGX is the provider of an Intel SGX enclave under Gramine: DCAP quotes
// from opts.Dir (default /dev/attestation, in DCAP mode), MAA's
// attest/SgxEnclave. opts.MAA is set by New.
func SGX(opts sgx.Options) TEE {
	return func(mc *maa.Client, _ *http.Client) (attest.Provider, error) {
		opts.MAA = mc
		return sgx.Open(opts)
	}
}

// CVM is the provider of an Azure confidential VM: the HCL report and a
// quote from the vTPM, MAA's attest/AzureGuest. opts.MAA is set by New,
// and opts.HTTPClient when nil.
func CVM(opts cvm.Options) TEE {
	return func(mc *maa.Client, hc *http.Client) (attest.Provider, error) {
		opts.MAA = mc
		if opts.HTTPClient == nil {
			opts.HTTPClient = hc
		}
		return cvm.Open(opts)
	}
}

// SNP is the provider of a SEV-SNP guest (ACI and AKS kata-cc confidential
// containers, SNP VMs): reports from the guest device found by
// attest.Detect, MAA's attest/SevSnpVm. opts.HTTPClient is set when nil.
func SNP(opts attest.Options) TEE {
	return func(mc *maa.Client, hc *http.Client) (attest.Provider, error) {
		if opts.HTTPClient == nil {
			opts.HTTPClient = hc
		}
		ev, err := attest.Detect(opts)
		if err != nil {
			return nil, err
		}
		return &snp.Provider{Evidence: Evidence(ev), MAA: mc}, nil
	}
}

// EvidenceReporter is what the SEV-SNP evidence sources of keyrelease/attest
// (attest.SNP, attest.Fake) have in common.
type EvidenceReporter interface {
	Evidence(ctx context.Context, reportData [64]byte) (*attest.Evidence, error)
}

// Evidence adapts a SEV-SNP evidence source of keyrelease/attest to the
// form snp.Provider sends to MAA.
func Evidence(r EvidenceReporter) snp.EvidenceSource { return evidence{r} }

type evidence struct{ r EvidenceReporter }

func (e evidence) Evidence(ctx context.Context, rd [64]byte) (maa.Evidence, error) {
	ev, err := e.r.Evidence(ctx, rd)
	if err != nil {
		return maa.Evidence{}, err
	}
	return maa.Evidence{Report: ev.Report, CertChainPEM: ev.CertChainPEM(), Endorsements: ev.Endorsements}, nil
}

// Config configures New.
type Config struct {
	// TEE opens the attestation provider (required): SGX, CVM or SNP.
	TEE TEE
	// MAA is the Microsoft Azure Attestation instance (required), e.g.
	// https://sharedweu.weu.attest.azure.net: the only accepted token
	// issuer, and the only host its signing keys are fetched from. The
	// keys' release policies must name it as their authority.
	MAA string
	// Credential is the Entra identity that Key Vault or Managed HSM
	// authorizes to release the keys (required): a managed or workload
	// identity credential of azidentity, for example.
	Credential azcore.TokenCredential
	// HTTPClient sends every request: to MAA, Key Vault and, for CVM and
	// SNP, the AMD certificate services (nil = a client trusting the
	// system roots). Add a TLS-inspecting proxy's CA here, never to
	// ReleaseRoots.
	HTTPClient *http.Client
	// ReleaseRoots verify the certificate that signs Key Vault's release
	// responses (nil = the system roots): only CAs allowed to sign a
	// release, such as a test vault's.
	ReleaseRoots *x509.CertPool
	// VaultHosts are vault hosts (host[:port]) outside Azure's Key Vault
	// and Managed HSM domains that keys may be released from, such as a
	// test vault. Every other host outside those domains is refused before
	// anything is sent to it.
	VaultHosts []string
	// Cache configures the key cache; zero fields take the defaults of
	// cache.DefaultOptions (TTL 1h, no stale keys, 5 attempts with
	// backoff). Set Cache.Logger to log the cache's events.
	Cache cache.Options
	// Logger receives the releaser's events (attestations, releases, never
	// key material; zero value = no logging).
	Logger zerolog.Logger
}

// Releaser is an attested, caching keyrelease.Releaser. It is safe for
// concurrent use; Close wipes every key it holds.
type Releaser struct {
	skr   *skr.Releaser
	cache *cache.Cache
}

var _ keyrelease.Releaser = (*Releaser)(nil)

// New opens the TEE's attestation provider, prepares its first wrapping
// key, and returns the releaser. Nothing is attested or released until the
// first Release (or Attest). An error opening the provider wraps
// keyrelease.ErrAttestation.
func New(cfg Config) (*Releaser, error) {
	switch {
	case cfg.TEE == nil:
		return nil, errors.New("attested: Config.TEE is required (attested.SGX, CVM or SNP)")
	case cfg.MAA == "":
		return nil, errors.New("attested: Config.MAA (the attestation instance URL) is required")
	case cfg.Credential == nil:
		return nil, errors.New("attested: Config.Credential (the identity Key Vault authorizes) is required")
	}
	hc := cfg.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		hc = &http.Client{Transport: tr, Timeout: 5 * time.Minute}
	}
	mc := &maa.Client{BaseURL: cfg.MAA, HTTPClient: hc}
	prov, err := cfg.TEE(mc, hc)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", keyrelease.ErrAttestation, err)
	}
	s := &skr.Releaser{Provider: prov, MAA: mc, Logger: cfg.Logger,
		Vault: &akv.Client{Credential: cfg.Credential, Transport: hc, Roots: cfg.ReleaseRoots, Hosts: cfg.VaultHosts}}
	s.PrepareNow() // the first release need not wait for RSA key generation
	return &Releaser{skr: s, cache: cache.New(s, cfg.Cache)}, nil
}

// Release returns the key ref names, released to this TEE's attestation
// (from the cache while it is fresh). The caller owns the key and must
// Wipe it. A release policy that refuses this TEE gives an error wrapping
// keyrelease.ErrDenied; a failed attestation, keyrelease.ErrAttestation.
func (r *Releaser) Release(ctx context.Context, ref keyrelease.KeyRef) (*keyrelease.Key, error) {
	return r.cache.Release(ctx, ref)
}

// ReleaseBatchKeys is the cache's light release (cache.ReleaseBatchKeys):
// a key without its private material, carrying only the batch keys
// already unwrapped, for version 2 objects (fs uses it when present).
func (r *Releaser) ReleaseBatchKeys(ctx context.Context, ref keyrelease.KeyRef) (*keyrelease.Key, error) {
	return r.cache.ReleaseBatchKeys(ctx, ref)
}

// Attest attests now, without releasing anything, and returns the
// verified MAA token (its claims say what MAA saw of this TEE). The token
// is kept for the next release.
func (r *Releaser) Attest(ctx context.Context) (*maa.Token, error) { return r.skr.Attest(ctx) }

// Provider returns the attestation provider (its Name is "sgx",
// "azure-cvm", "snp", ...).
func (r *Releaser) Provider() attest.Provider { return r.skr.Provider }

// SKR returns the uncached releaser behind the cache (statistics, or
// releases through another vault client).
func (r *Releaser) SKR() *skr.Releaser { return r.skr }

// Cache returns the key cache (statistics, Forget).
func (r *Releaser) Cache() *cache.Cache { return r.cache }

// Close wipes the cached keys and the attestation's wrapping keys. The
// releaser must not be used afterwards.
func (r *Releaser) Close() {
	r.cache.Close()
	r.skr.Close()
}
