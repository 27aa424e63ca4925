// Package azauth builds the HTTP client and the Microsoft Entra credential
// that skrfs uses for Key Vault, MAA and storage, from the configuration:
// extra trusted roots, and managed identity, workload identity, a static
// token, or azidentity's DefaultAzureCredential.
package azauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/skrfs/skrfs/internal/config"
)

// HTTPClient returns a client that trusts the system roots plus the PEM
// files in caFiles, with connection pooling sized for parallel reads.
func HTTPClient(caFiles []string) (*http.Client, *x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	for _, f := range caFiles {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, fmt.Errorf("tls.ca_files: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("tls.ca_files: %s holds no PEM certificate", f)
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	tr.MaxIdleConnsPerHost = 64
	return &http.Client{Transport: tr, Timeout: 5 * time.Minute}, pool, nil
}

// imdsHost is where azidentity sends managed-identity requests; it cannot
// be changed by configuration (harness-notes section 3).
const imdsHost = "169.254.169.254"

// rewriteIMDS sends requests for the IMDS address to endpoint instead (the
// devstack), and everything else through next.
type rewriteIMDS struct {
	endpoint *url.URL
	next     policy.Transporter
}

func (r rewriteIMDS) Do(req *http.Request) (*http.Response, error) {
	if req.URL.Hostname() == imdsHost {
		req = req.Clone(req.Context())
		req.URL.Scheme, req.URL.Host = r.endpoint.Scheme, r.endpoint.Host
		req.Host = r.endpoint.Host
	}
	return r.next.Do(req)
}

// Credential returns the credential that cfg selects.
func Credential(cfg config.Identity, hc *http.Client) (azcore.TokenCredential, error) {
	opts := azcore.ClientOptions{Transport: hc}
	switch cfg.Kind {
	case config.IdentityManaged:
		if cfg.IMDSEndpoint != "" {
			u, err := url.Parse(cfg.IMDSEndpoint)
			if err != nil {
				return nil, fmt.Errorf("identity.imds_endpoint: %w", err)
			}
			opts.Transport = rewriteIMDS{endpoint: u, next: hc}
		}
		mo := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: opts}
		if cfg.ClientID != "" {
			mo.ID = azidentity.ClientID(cfg.ClientID)
		}
		return azidentity.NewManagedIdentityCredential(mo)
	case config.IdentityWorkload:
		wo := &azidentity.WorkloadIdentityCredentialOptions{ClientOptions: opts,
			ClientID: cfg.ClientID, TenantID: cfg.TenantID, TokenFilePath: cfg.TokenFile}
		authority := cfg.AuthorityHost
		if authority == "" {
			authority = os.Getenv("AZURE_AUTHORITY_HOST")
		}
		if authority != "" {
			wo.Cloud.ActiveDirectoryAuthorityHost = authority
			// Instance discovery asks login.microsoftonline.com about the
			// authority; skip it for hosts that are not Microsoft's.
			if u, err := url.Parse(authority); err == nil && !strings.HasSuffix(u.Hostname(), ".microsoftonline.com") &&
				!strings.HasSuffix(u.Hostname(), ".microsoftonline.us") && !strings.HasSuffix(u.Hostname(), ".chinacloudapi.cn") {
				wo.DisableInstanceDiscovery = true
			}
		}
		return azidentity.NewWorkloadIdentityCredential(wo)
	case config.IdentityToken:
		return &fileToken{path: cfg.TokenFile}, nil
	case config.IdentityDefault, "":
		return azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{ClientOptions: opts})
	}
	return nil, fmt.Errorf("identity.kind %q", cfg.Kind)
}

// fileToken is a bearer token read from a file at every request, so an
// external refresher can replace it.
type fileToken struct {
	path string
	mu   sync.Mutex
}

// GetToken implements azcore.TokenCredential.
func (f *fileToken) GetToken(ctx context.Context, _ policy.TokenRequestOptions) (azcore.AccessToken, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, err := os.ReadFile(f.path)
	if err != nil {
		return azcore.AccessToken{}, fmt.Errorf("identity.token_file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return azcore.AccessToken{}, errors.New("identity.token_file is empty")
	}
	// The expiry is unknown; a short one makes azcore ask again soon.
	return azcore.AccessToken{Token: tok, ExpiresOn: time.Now().Add(5 * time.Minute)}, nil
}
