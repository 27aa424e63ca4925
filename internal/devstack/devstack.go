// Package devstack runs local, protocol-faithful stand-ins of Microsoft
// Azure Attestation, Azure Key Vault and IMDS on loopback with TLS, plus a
// fake SEV-SNP device identity, so that skrfs's production clients (MAA
// client, azkeys, azidentity) exercise Secure Key Release end to end
// without Azure or SEV-SNP hardware. State lives in a directory, so a
// restart keeps the keys and the trust roots.
package devstack

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/internal/devstack/fakecvm"
	"github.com/skrfs/skrfs/internal/devstack/identity"
	devmaa "github.com/skrfs/skrfs/internal/devstack/maa"
	"github.com/skrfs/skrfs/internal/devstack/vault"
	"github.com/skrfs/skrfs/keyrelease/attest/fakesnp"
	"github.com/skrfs/skrfs/keyrelease/evidence"
)

// Options configure a stack.
type Options struct {
	// Dir holds the state: PKI, keys, ports, the seeded world, and the
	// files written for clients (ca.pem, devstack.env, skrfs.yaml, ready).
	Dir string
	// Seed creates the demo world on first start (keys demo-rsa, demo-oct,
	// denied; dataset data).
	Seed bool
	// AzuriteConnectionString, when set, is written to devstack.env.
	AzuriteConnectionString string
	// TokenLifetime is the lifetime of MAA tokens (zero = 8h, as MAA).
	TokenLifetime time.Duration
	// TEE is the devstack's TEE: TEESNP (default, the fake SEV-SNP device,
	// attestation.provider fake) or TEECVM (a fake Azure confidential VM:
	// swtpm seeded as a paravisor's vTPM, attestation.provider azure-cvm).
	TEE    string
	Logger zerolog.Logger
}

// Devstack TEEs.
const (
	TEESNP = "snp"
	TEECVM = "cvm"
)

// CVMVMID is the vmUniqueId of the devstack's fake CVM.
const CVMVMID = "5C7F5000-0000-4000-8000-0000000C0F11"

// UVMFeed is the feed of the devstack's UVM endorsements.
const UVMFeed = "skrfs-devstack-fake-UVM"

// TenantID is the devstack's Entra tenant.
const TenantID = "5k7f5000-0000-4000-8000-00000000de00"

// ClientID is the user-assigned managed identity the devstack knows.
const ClientID = "5k7f5000-0000-4000-8000-0000000c1e47"

// Stack is a running devstack.
type Stack struct {
	Dir      string
	MAAURL   string // https://127.0.0.1:P
	VaultURL string // https://127.0.0.1:P
	IMDSURL  string // http://127.0.0.1:P
	EntraURL string // https://127.0.0.1:P (authority host; tenant TenantID)
	CAFile   string
	// FederatedTokenFile holds a service-account token for workload identity.
	FederatedTokenFile string

	// HTTPClient trusts the devstack's CA.
	HTTPClient *http.Client

	// SWTPM is the fake CVM's vTPM (TEE cvm only).
	SWTPM    *fakecvm.SWTPM
	Vault    *vault.Server
	MAA      *devmaa.Server
	Identity *identity.Server
	Device   *fakesnp.Device
	// TEE is the fake TEE's identity, as written into skrfs.yaml.
	TEE fakesnp.Config
	// Endorser is the devstack's fake UVM endorser, trusted by its MAA, and
	// Endorsement its UVM endorsement (COSE_Sign1) of the fake TEE.
	Endorser    evidence.Endorser
	Endorsement []byte

	servers  []*http.Server
	services map[string]*service // fault injection and request counts
	opts     Options
	secret   string // X-IDENTITY-HEADER of the App Service identity endpoint
}

// CCEPolicy is the stand-in for an ACI confidential computing enforcement
// policy; HOST_DATA of the fake TEE is its SHA-256, as on ACI.
const CCEPolicy = "package policy\n\n# skrfs devstack: the fake TEE's CCE policy.\napi_version := \"0.10.0\"\nframework_version := \"0.2.3\"\n"

// TEE returns the fake TEE identity: HOST_DATA = SHA-256(CCEPolicy), a
// fixed launch measurement, not debuggable, VMPL 0.
func TEE() fakesnp.Config {
	cfg := fakesnp.Config{HostData: fakesnp.HostDataFromPolicy([]byte(CCEPolicy)), GuestSVN: 1}
	m := sha512.Sum384([]byte("skrfs devstack fake utility VM"))
	copy(cfg.Measurement[:], m[:])
	return cfg
}

// Start starts the services and, when asked, seeds the demo world. It
// writes DIR/ready last.
func Start(ctx context.Context, opts Options) (_ *Stack, retErr error) {
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	os.Remove(filepath.Join(dir, "ready"))
	p, err := loadPKI(filepath.Join(dir, "pki"))
	if err != nil {
		return nil, fmt.Errorf("devstack pki: %w", err)
	}
	ports, listeners, err := bindPorts(dir)
	if err != nil {
		return nil, err
	}
	// Listeners not yet serving are closed when Start fails.
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	s := &Stack{Dir: dir, opts: opts, TEE: TEE(),
		MAAURL:             fmt.Sprintf("https://127.0.0.1:%d", ports.MAA),
		VaultURL:           fmt.Sprintf("https://127.0.0.1:%d", ports.Vault),
		IMDSURL:            fmt.Sprintf("http://127.0.0.1:%d", ports.IMDS),
		EntraURL:           fmt.Sprintf("https://127.0.0.1:%d", ports.Entra),
		FederatedTokenFile: filepath.Join(dir, "federated-token"),
		CAFile:             filepath.Join(dir, "ca.pem")}
	if err := os.WriteFile(s.CAFile, p.caPEM(), 0o644); err != nil {
		return nil, err
	}
	if s.Device, err = fakesnp.New(s.TEE); err != nil {
		return nil, err
	}
	switch opts.TEE {
	case "", TEESNP:
		opts.TEE, s.opts.TEE = TEESNP, TEESNP
	case TEECVM:
		if err := s.startCVM(); err != nil {
			return nil, err
		}
		defer func() {
			if retErr != nil {
				s.SWTPM.Close() // idempotent: s.Close may have stopped it
			}
		}()

	default:
		return nil, fmt.Errorf("devstack: TEE %q is not one of snp, cvm", opts.TEE)
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.pool()}}}
	s.HTTPClient = client
	s.secret = secret(p)
	if s.Identity, err = identity.New(identity.Options{TenantID: TenantID, Key: p.tokenKey, ClientIDs: []string{ClientID},
		Secret: s.secret, FederationKey: p.fedKey, THIM: s.Device.THIM(), Logger: opts.Logger.With().Str("service", "imds").Logger()}); err != nil {
		return nil, err
	}
	s.Endorser = evidence.Endorser{Issuer: evidence.DID(p.uvm[1]), Feed: UVMFeed}
	if s.Endorsement, err = evidence.SignEndorsement(p.uvmKey, p.uvm, UVMFeed, s.TEE.Measurement[:], int(s.TEE.GuestSVN)); err != nil {
		return nil, err
	}
	if s.MAA, err = devmaa.New(devmaa.Options{Issuer: s.MAAURL, Key: p.maaKey, Chain: p.maa, ExtraRoots: s.Device.Roots(),
		Endorsers: []evidence.Endorser{s.Endorser}, Lifetime: opts.TokenLifetime,
		Logger: opts.Logger.With().Str("service", "maa").Logger()}); err != nil {
		return nil, err
	}
	if s.Vault, err = vault.New(vault.Options{StateDir: filepath.Join(dir, "vault"), Signer: p.vaultKey, Chain: p.vault,
		Audience: "https://vault.azure.net", Authority: "https://login.microsoftonline.com/" + TenantID, HTTPClient: client,
		VerifyBearer: func(ctx context.Context, tok string) error {
			return s.Identity.Verify(ctx, tok, "https://vault.azure.net")
		},
		Logger: opts.Logger.With().Str("service", "vault").Logger()}); err != nil {
		return nil, err
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{p.tls}, MinVersion: tls.VersionTLS12}
	for _, svc := range []struct {
		name string
		h    http.Handler
		tls  bool
	}{{ServiceMAA, s.MAA, true}, {ServiceVault, s.Vault, true}, {ServiceIMDS, s.Identity, false},
		{ServiceEntra, s.Identity.EntraHandler(s.EntraURL), true}} {
		l := listeners[svc.name]
		delete(listeners, svc.name) // served: closed by s.Close
		if svc.tls {
			l = tls.NewListener(l, tlsCfg)
		}
		if s.services == nil {
			s.services = map[string]*service{}
		}
		h := &service{name: svc.name, h: svc.h}
		s.services[svc.name] = h
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		s.servers = append(s.servers, srv)
		go srv.Serve(l)
	}
	fed, err := identity.MintFederatedToken(p.fedKey, "system:serviceaccount:default:skrfs", time.Now())
	if err != nil {
		s.Close()
		return nil, err
	}
	if err := os.WriteFile(s.FederatedTokenFile, []byte(fed), 0o600); err != nil {
		s.Close()
		return nil, err
	}
	if opts.Seed {
		if err := s.checkSeededTEE(); err != nil {
			s.Close()
			return nil, err
		}
		if err := s.seed(ctx, client); err != nil {
			s.Close()
			return nil, fmt.Errorf("devstack seed: %w", err)
		}
	}
	if err := s.writeClientFiles(); err != nil {
		s.Close()
		return nil, err
	}
	if s.opts.TEE == TEECVM {
		if err := s.writeCVMConfig(); err != nil {
			s.Close()
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "ready"), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		s.Close()
		return nil, err
	}
	opts.Logger.Info().Str("dir", dir).Str("maa", s.MAAURL).Str("vault", s.VaultURL).Str("imds", s.IMDSURL).Msg("devstack ready")
	return s, nil
}

// secret derives the App Service identity header value from the PKI, so
// it survives restarts.
func secret(p *pki) string {
	h := sha256.Sum256(append([]byte("identity-header"), p.tokenKey.D.Bytes()...))
	return hex.EncodeToString(h[:16])
}

// Close stops the services.
func (s *Stack) Close() error {
	os.Remove(filepath.Join(s.Dir, "ready"))
	var errs []error
	for _, srv := range s.servers {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, srv.Shutdown(ctx))
		cancel()
	}
	if s.SWTPM != nil {
		s.SWTPM.Close()
	}
	return errors.Join(errs...)
}

// VaultHost returns host:port of the vault, as key references name it.
func (s *Stack) VaultHost() string { return strings.TrimPrefix(s.VaultURL, "https://") }
