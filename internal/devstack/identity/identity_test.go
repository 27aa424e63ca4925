package identity

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/skrfs/skrfs/internal/azauth"
	"github.com/skrfs/skrfs/internal/config"
)

func newServer(t *testing.T) (*Server, *httptest.Server) {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	s, err := New(Options{TenantID: "tenant-1", Key: key, ClientIDs: []string{"11111111-2222-3333-4444-555555555555"}, Secret: "s3cret", THIM: []byte(`{"tcbm":"x"}`)})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return s, ts
}

// The real azidentity managed-identity credential, with IMDS redirected to
// the stand-in (MSAL caches tokens per process: every test uses its own
// resource).
func TestManagedIdentityWithAzidentity(t *testing.T) {
	s, ts := newServer(t)
	for _, tc := range []struct {
		clientID, resource string
		ok                 bool
	}{
		{"", "https://vault.azure.net", true},
		{"11111111-2222-3333-4444-555555555555", "https://managedhsm.azure.net", true},
		{"99999999-2222-3333-4444-555555555555", "https://storage.azure.com", false},
	} {
		cred, err := azauth.Credential(config.Identity{Kind: config.IdentityManaged, ClientID: tc.clientID, IMDSEndpoint: ts.URL}, http.DefaultClient)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := cred.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{tc.resource + "/.default"}})
		if !tc.ok {
			if err == nil {
				t.Fatalf("unknown client id %s got a token", tc.clientID)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.resource, err)
		}
		if err := s.Verify(context.Background(), tok.Token, tc.resource); err != nil {
			t.Fatalf("issued token does not verify: %v", err)
		}
		if err := s.Verify(context.Background(), tok.Token, "https://other.example"); err == nil {
			t.Fatal("token verified for another audience")
		}
	}
}

func TestIMDSProtocol(t *testing.T) {
	_, ts := newServer(t)
	get := func(path string, hdr map[string]string) *http.Response {
		req, _ := http.NewRequest("GET", ts.URL+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if r := get("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net", nil); r.StatusCode != 400 {
		t.Fatalf("without Metadata header: %d", r.StatusCode)
	}
	if r := get("/msi/token?api-version=2019-08-01&resource=x", map[string]string{"X-IDENTITY-HEADER": "wrong"}); r.StatusCode != 401 {
		t.Fatalf("App Service endpoint with a wrong secret: %d", r.StatusCode)
	}
	if r := get("/msi/token?api-version=2019-08-01&resource=x", map[string]string{"X-IDENTITY-HEADER": "s3cret"}); r.StatusCode != 200 {
		t.Fatalf("App Service endpoint: %d", r.StatusCode)
	}
	r := get("/metadata/THIM/amd/certification", map[string]string{"Metadata": "true"})
	var b strings.Builder
	buf := make([]byte, 100)
	n, _ := r.Body.Read(buf)
	b.Write(buf[:n])
	if r.StatusCode != 200 || !strings.Contains(b.String(), "tcbm") {
		t.Fatalf("THIM: %d %s", r.StatusCode, b.String())
	}
}

func TestWorkloadIdentityWithAzidentity(t *testing.T) {
	fedKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	s, err := New(Options{TenantID: "tenant-w", Key: key, FederationKey: fedKey, ClientIDs: []string{"aaaaaaaa-2222-3333-4444-555555555555"}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(nil)
	ts.StartTLS()
	defer ts.Close()
	ts.Config.Handler = s.EntraHandler(ts.URL)
	dir := t.TempDir()
	tokFile := dir + "/token"
	good, _ := MintFederatedToken(fedKey, "system:serviceaccount:default:app", time.Now())
	os.WriteFile(tokFile, []byte(good), 0o600)
	cred, err := azauth.Credential(config.Identity{Kind: config.IdentityWorkload, ClientID: "aaaaaaaa-2222-3333-4444-555555555555",
		TenantID: "tenant-w", TokenFile: tokFile, AuthorityHost: ts.URL + "/"}, ts.Client())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := cred.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(context.Background(), tok.Token, "https://vault.azure.net"); err != nil {
		t.Fatal(err)
	}
	// A service-account token from another issuer is refused.
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	bad, _ := MintFederatedToken(other, "system:serviceaccount:default:app", time.Now())
	os.WriteFile(tokFile, []byte(bad), 0o600)
	cred2, _ := azauth.Credential(config.Identity{Kind: config.IdentityWorkload, ClientID: "aaaaaaaa-2222-3333-4444-555555555555",
		TenantID: "tenant-w", TokenFile: tokFile, AuthorityHost: ts.URL + "/"}, ts.Client())
	if _, err := cred2.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{"https://managedhsm.azure.net/.default"}}); err == nil ||
		!strings.Contains(err.Error(), "AADSTS700211") {
		t.Fatalf("forged assertion: %v", err)
	}
}
