package akv

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/skrfs/skrfs/keyrelease"
)

func TestAzureScope(t *testing.T) {
	for _, tc := range []struct{ host, scope string }{
		{"myvault.vault.azure.net", "https://vault.azure.net/.default"},
		{"MyVault.Vault.Azure.Net:443", "https://vault.azure.net/.default"},
		{"myhsm.managedhsm.azure.net", "https://managedhsm.azure.net/.default"},
		{"v.vault.azure.cn", "https://vault.azure.cn/.default"},
		{"h.managedhsm.azure.cn", "https://managedhsm.azure.cn/.default"},
		{"v.vault.usgovcloudapi.net", "https://vault.usgovcloudapi.net/.default"},
		{"h.managedhsm.usgovcloudapi.net", "https://managedhsm.usgovcloudapi.net/.default"},
		{"v.vault.microsoftazure.de", "https://vault.microsoftazure.de/.default"},
		{"v.vault.cloudapi.eaglex.ic.gov", "https://vault.cloudapi.eaglex.ic.gov/.default"},
		{"v.vault.cloudapi.microsoft.scloud", "https://vault.cloudapi.microsoft.scloud/.default"},
		// Not vaults: a bare suffix, a look-alike, a suffix as a label.
		{"vault.azure.net", ""},
		{"evilvault.azure.net", ""},
		{"myvault.vault.azure.net.evil.example", ""},
		{"management.azure.com", ""},
		{"127.0.0.1:8443", ""},
		{"localhost", ""},
	} {
		scope, ok := AzureScope(tc.host)
		if scope != tc.scope || ok != (tc.scope != "") {
			t.Errorf("AzureScope(%q) = %q, %v; want %q", tc.host, scope, ok, tc.scope)
		}
	}
	c := &Client{Hosts: []string{"127.0.0.1:8443"}}
	if s, err := c.Scope("127.0.0.1:8443"); err != nil || s != DefaultScope {
		t.Errorf("configured host: %q %v", s, err)
	}
	for _, h := range []string{"127.0.0.1:8444", "127.0.0.1", "evil.example"} {
		if _, err := c.Scope(h); !errors.Is(err, ErrVaultHost) || !errors.Is(err, keyrelease.ErrNotAllowed) {
			t.Errorf("Scope(%q) = %v, want ErrVaultHost", h, err)
		}
	}
}

// recordingCred records the scopes it is asked for.
type recordingCred struct {
	mu     sync.Mutex
	scopes [][]string
}

func (c *recordingCred) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.scopes = append(c.scopes, slices.Clone(o.Scopes))
	return azcore.AccessToken{Token: "tok-" + strings.Join(o.Scopes, ","), ExpiresOn: time.Now().Add(time.Hour)}, nil
}

func (c *recordingCred) asked() [][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.scopes)
}

// challengeVault answers every request with a 401 challenge naming
// resource and records the Authorization headers it sees.
type challengeVault struct {
	srv   *httptest.Server
	mu    sync.Mutex
	reqs  int
	authz []string
}

func newChallengeVault(t *testing.T, resource string) *challengeVault {
	v := &challengeVault{}
	v.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v.mu.Lock()
		v.reqs++
		if a := r.Header.Get("Authorization"); a != "" {
			v.authz = append(v.authz, a)
		}
		v.mu.Unlock()
		w.Header().Set("WWW-Authenticate", `Bearer authorization="https://login.microsoftonline.com/tenant" resource="`+resource+`"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(v.srv.Close)
	return v
}

// transport sends every host to the fake vault (test only: the fake's
// certificate is not checked, so that it can stand for an Azure host).
func (v *challengeVault) transport() *http.Client {
	addr := v.srv.Listener.Addr().String()
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
}

func (v *challengeVault) seen() (int, []string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.reqs, slices.Clone(v.authz)
}

// TestTokenScopePinned: the token scope comes from the vault's DNS suffix
// (or DefaultScope for a configured host), never from the 401 challenge; a
// host that is neither gets no request at all.
func TestTokenScopePinned(t *testing.T) {
	const foreign = "https://management.azure.com"
	for _, tc := range []struct {
		name, host, resource string
		hosts                []string
		wantScope            string // "" = no token may be asked for
		wantRequests         bool
	}{
		{name: "configured host, foreign challenge", host: "fake", resource: foreign, hosts: []string{"fake"},
			wantScope: DefaultScope, wantRequests: true},
		{name: "azure vault, foreign challenge", host: "myvault.vault.azure.net", resource: foreign,
			wantRequests: true}, // azkeys' own challenge check refuses; no token
		{name: "azure vault, vault challenge", host: "myvault.vault.azure.net", resource: "https://vault.azure.net",
			wantScope: "https://vault.azure.net/.default", wantRequests: true},
		{name: "china vault, its challenge", host: "v.vault.azure.cn", resource: "https://vault.azure.cn",
			wantScope: "https://vault.azure.cn/.default", wantRequests: true},
		{name: "managed hsm, challenge with a wider resource", host: "h.managedhsm.azure.net", resource: "https://azure.net",
			wantScope: "https://managedhsm.azure.net/.default", wantRequests: true},
		{name: "unlisted host, vault challenge", host: "fake", resource: "https://vault.azure.net"},
		{name: "unlisted host, foreign challenge", host: "other", resource: foreign, hosts: []string{"fake"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newChallengeVault(t, tc.resource)
			// "fake" is the fake's loopback address, "other" another name of it.
			loop := map[string]string{"fake": strings.TrimPrefix(v.srv.URL, "https://"),
				"other": "localhost:" + strings.TrimPrefix(v.srv.URL, "https://127.0.0.1:")}
			host := tc.host
			if h, ok := loop[host]; ok {
				host = h
			}
			var hosts []string
			for _, h := range tc.hosts {
				hosts = append(hosts, loop[h])
			}
			cred := &recordingCred{}
			c := &Client{Credential: cred, Transport: v.transport(), Hosts: hosts, Retry: policy.RetryOptions{MaxRetries: -1}}
			ref := keyrelease.KeyRef{Vault: host, Name: "k"}
			_, err := c.Release(context.Background(), ref, "maa-token", nil)
			if err == nil {
				t.Fatal("release at a fake vault succeeded")
			}
			reqs, authz := v.seen()
			asked := cred.asked()
			if tc.wantScope == "" {
				if len(asked) != 0 || len(authz) != 0 {
					t.Fatalf("tokens asked for %v, sent %d times", asked, len(authz))
				}
			} else {
				for _, s := range asked {
					if len(s) != 1 || s[0] != tc.wantScope {
						t.Fatalf("token scopes asked for %v, want only %s", asked, tc.wantScope)
					}
				}
				if len(asked) == 0 {
					t.Fatalf("no token asked for (err %v)", err)
				}
			}
			if (reqs > 0) != tc.wantRequests {
				t.Fatalf("%d requests reached the vault (err %v)", reqs, err)
			}
			if !tc.wantRequests && !errors.Is(err, ErrVaultHost) {
				t.Fatalf("err %v, want ErrVaultHost", err)
			}
		})
	}
}

// TestReleaseBoundToRequest: a correctly signed response that releases
// another key (or another version than the pinned one) is refused;
// key_ops of the payload are carried onto the key.
func TestReleaseBoundToRequest(t *testing.T) {
	w := newWorld(t)
	const v1 = "0123456789abcdef"
	kid := func(name, version string) string {
		s := "https://" + fuzzVault + "/keys/" + name
		if version != "" {
			s += "/" + version
		}
		return s
	}
	ops := []string{"encrypt", "decrypt", "wrapKey", "unwrapKey", "import"}
	for _, tc := range []struct {
		name    string
		ref     keyrelease.KeyRef
		kid     string
		ops     []string
		wantErr string
	}{
		{name: "same key", ref: w.ref, kid: kid("k1", v1), ops: ops},
		{name: "same key, name in other case", ref: w.ref, kid: kid("K1", v1)},
		{name: "pinned version", ref: keyrelease.KeyRef{Vault: fuzzVault, Name: "k1", Version: v1}, kid: kid("k1", v1)},
		{name: "another key", ref: w.ref, kid: kid("k2", v1), wantErr: "released https://vault.fuzz.example/keys/k2/" + v1 + ", asked for"},
		{name: "another version", ref: keyrelease.KeyRef{Vault: fuzzVault, Name: "k1", Version: "fedcba9876543210"}, kid: kid("k1", v1),
			wantErr: "asked for https://vault.fuzz.example/keys/k1/fedcba9876543210"},
		{name: "no version", ref: w.ref, kid: kid("k1", ""), wantErr: "has no version"},
		{name: "no kid", ref: w.ref, kid: "", wantErr: "is not a key identifier"},
		{name: "not a key id", ref: w.ref, kid: "k1", wantErr: "is not a key identifier"},
		{name: "bad key_ops", ref: w.ref, kid: kid("k1", v1), ops: []string{"encrypt", "<script>"}, wantErr: "is not an operation name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			compact := w.sign(t, w.payloadWith(t, "oct-HSM", w.oct, tc.kid, tc.ops), w.chain)
			payload, err := w.client.verify(compact, fuzzVault)
			if err != nil {
				t.Fatal(err)
			}
			k, err := decode(tc.ref, payload, w.wk.Private, "")
			if tc.wantErr != "" {
				if !errors.Is(err, ErrBadResponse) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("decode = %v, want ErrBadResponse containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			w.released(t, k)
			if k.Ref.Version != v1 || !slices.Equal(k.Ops, tc.ops) {
				t.Fatalf("released %s with ops %v, want version %s, ops %v", k.Ref, k.Ops, v1, tc.ops)
			}
		})
	}
}

// TestPinScope: the key CLIs' credential asks for the vault domain's scope
// (DefaultScope outside Azure's domains) whatever scope azkeys requests.
func TestPinScope(t *testing.T) {
	for host, want := range map[string]string{"v.managedhsm.azure.cn": "https://managedhsm.azure.cn/.default", "127.0.0.1:8443": DefaultScope} {
		rec := &recordingCred{}
		cred, azure := PinScope(rec, host)
		if _, err := cred.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{"https://management.azure.com/.default"}}); err != nil {
			t.Fatal(err)
		}
		if got := rec.asked(); len(got) != 1 || !slices.Equal(got[0], []string{want}) || azure != (want != DefaultScope) {
			t.Errorf("%s: asked for %v (azure domain %v), want %s", host, got, azure, want)
		}
	}
}
