package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/akv"
	"github.com/skrfs/skrfs/keyrelease/attest"
	"github.com/skrfs/skrfs/keyrelease/cache"
	"github.com/skrfs/skrfs/keyrelease/maa"
	"github.com/skrfs/skrfs/keyrelease/skr"
)

// EvidenceProvider is what attest.SNP and attest.Fake have in common.
type EvidenceProvider interface {
	Evidence(ctx context.Context, reportData [64]byte) (*attest.Evidence, error)
}

// ErrTooManyInstances: callers named more MAA instances than Stack keeps.
var ErrTooManyInstances = errors.New("too many attestation instances")

// maxInstances bounds the MAA instances other than the configured one that
// a Stack keeps releasers and caches for.
const maxInstances = 8

// Stack is the Backend of skrfs: evidence from the TEE, tokens from MAA,
// keys from Key Vault through the key cache. The configured MAA instance
// uses Default (the daemon's releaser and cache, shared with a mount in the
// same process); other instances named by callers get their own releaser
// and cache, made on first use.
type Stack struct {
	// TEE produces SEV-SNP evidence. Required.
	TEE EvidenceProvider
	// HTTPClient talks to MAA instances (nil = http.DefaultClient).
	HTTPClient *http.Client
	// MAA is the configured instance URL, e.g. https://sharedeus.eus.attest.azure.net.
	MAA string
	// Default releases keys for tokens of the configured instance: the
	// daemon's cache (decorating DefaultSKR). Required.
	Default keyrelease.Releaser
	// DefaultSKR is the releaser behind Default; requests carrying an
	// access_token go to it directly (no caching across callers' tokens).
	DefaultSKR *skr.Releaser
	// Vault is the Key Vault client with skrfs's identity; its settings
	// (transport, roots) are reused with callers' tokens.
	Vault *akv.Client
	// Allowed reports whether a key may be released through the API
	// (nil = any key).
	Allowed func(keyrelease.KeyRef) bool
	// Cache configures the caches of other instances.
	Cache cache.Options
	// Logger is handed to the releasers of other instances.
	Logger zerolog.Logger

	mu     sync.Mutex
	others map[string]*instance
	maas   map[string]*maa.Client
}

var _ Backend = (*Stack)(nil)

// instance is the release machinery of one MAA instance.
type instance struct {
	releaser keyrelease.Releaser
	skr      *skr.Releaser
}

// Evidence implements Backend.
func (s *Stack) Evidence(ctx context.Context, reportData [64]byte) (*attest.Evidence, error) {
	ev, err := s.TEE.Evidence(ctx, reportData)
	if err != nil && !errors.Is(err, keyrelease.ErrAttestation) {
		err = fmt.Errorf("%w: %w", keyrelease.ErrAttestation, err)
	}
	return ev, err
}

// instanceURL turns a caller's maa_endpoint (a bare host, as the sidecar
// takes it; a URL is tolerated) into an instance URL, and reports whether
// it is the configured instance.
func (s *Stack) instanceURL(host string) (string, bool, error) {
	if host == "" {
		return s.MAA, true, nil
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "https://"), "/")
	u, err := url.Parse("https://" + host)
	if err != nil || u.Host == "" || u.Path != "" || u.User != nil || u.RawQuery != "" {
		return "", false, badFormat("maa_endpoint %q is not a host name", host)
	}
	conf, _ := url.Parse(s.MAA)
	if conf != nil && strings.EqualFold(conf.Host, u.Host) {
		return s.MAA, true, nil
	}
	return "https://" + strings.ToLower(u.Host), false, nil
}

func (s *Stack) maaClient(base string) *maa.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.maas == nil {
		s.maas = map[string]*maa.Client{}
	}
	c := s.maas[base]
	if c == nil {
		c = &maa.Client{BaseURL: base, HTTPClient: s.HTTPClient}
		s.maas[base] = c
	}
	return c
}

// Token implements Backend: evidence binding runtimeData, sent to the
// instance, and the token verified against the instance's keys.
func (s *Stack) Token(ctx context.Context, maaHost string, runtimeData []byte) (string, error) {
	base, _, err := s.instanceURL(maaHost)
	if err != nil {
		return "", err
	}
	ev, err := s.Evidence(ctx, reportData(runtimeData))
	if err != nil {
		return "", err
	}
	tok, err := s.maaClient(base).Attest(ctx, maa.Evidence{Report: ev.Report, CertChainPEM: ev.CertChainPEM(), Endorsements: ev.Endorsements}, runtimeData)
	if err != nil {
		return "", err
	}
	return tok.Raw, nil
}

// instance returns the machinery of an instance, making it on first use.
func (s *Stack) instance(base string, configured bool) (*instance, error) {
	if configured {
		return &instance{releaser: s.Default, skr: s.DefaultSKR}, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if in := s.others[base]; in != nil {
		return in, nil
	}
	if len(s.others) >= maxInstances {
		return nil, fmt.Errorf("%w: more than %d besides the configured one", ErrTooManyInstances, maxInstances)
	}
	if s.others == nil {
		s.others = map[string]*instance{}
	}
	r := &skr.Releaser{Evidence: evidenceSource{s.TEE}, MAA: &maa.Client{BaseURL: base, HTTPClient: s.HTTPClient},
		Vault: s.Vault, Logger: s.Logger}
	in := &instance{releaser: cache.New(r, s.Cache), skr: r}
	s.others[base] = in
	return in, nil
}

// Release implements Backend.
func (s *Stack) Release(ctx context.Context, maaHost string, ref keyrelease.KeyRef, accessToken string) (*keyrelease.Key, error) {
	if s.Allowed != nil && !s.Allowed(ref) {
		return nil, fmt.Errorf("%w: %s (list it under keys: or set serve.any_key)", keyrelease.ErrNotAllowed, ref)
	}
	// A vault the caller named gets nothing, not even a request, unless it
	// is a configured key's vault or in an Azure vault domain (whose token
	// audience is then pinned by the domain): a caller must not be able to
	// point skrfs's identity at a host of its choosing.
	if s.Vault == nil {
		return nil, fmt.Errorf("%w: no Key Vault client", keyrelease.ErrUnavailable)
	}
	if _, err := s.Vault.Scope(ref.Vault); err != nil {
		return nil, err
	}
	base, configured, err := s.instanceURL(maaHost)
	if err != nil {
		return nil, err
	}
	in, err := s.instance(base, configured)
	if err != nil {
		return nil, err
	}
	if accessToken == "" {
		return in.releaser.Release(ctx, ref)
	}
	// A caller's token authorises this call only: no cache, whose keys
	// were released with skrfs's identity (and would be served to callers
	// without one).
	vault := *s.Vault
	vault.Credential = staticToken(accessToken)
	return in.skr.ReleaseWith(ctx, ref, &vault)
}

// Close wipes the keys and wrapping keys of the other instances (the
// daemon closes Default).
func (s *Stack) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, in := range s.others {
		if c, ok := in.releaser.(*cache.Cache); ok {
			c.Close()
		}
		in.skr.Close()
	}
	s.others = nil
}

// evidenceSource adapts an EvidenceProvider to skr.
type evidenceSource struct{ p EvidenceProvider }

func (e evidenceSource) Evidence(ctx context.Context, rd [64]byte) (maa.Evidence, error) {
	ev, err := e.p.Evidence(ctx, rd)
	if err != nil {
		return maa.Evidence{}, err
	}
	return maa.Evidence{Report: ev.Report, CertChainPEM: ev.CertChainPEM(), Endorsements: ev.Endorsements}, nil
}

// staticToken is a caller-supplied bearer token (protocol.md section 7.3).
type staticToken string

func (t staticToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	// The expiry is unknown; a short one makes azcore ask again soon.
	return azcore.AccessToken{Token: string(t), ExpiresOn: time.Now().Add(5 * time.Minute)}, nil
}
