package identity

import (
	"crypto/rsa"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// Microsoft Entra-like token service for workload identity (protocol.md
// 7.2): OpenID discovery and the client-credentials grant with a federated
// client assertion (a Kubernetes service-account token), as MSAL and
// azidentity's WorkloadIdentityCredential use them.

// FederatedAudience is the audience of projected service-account tokens.
const FederatedAudience = "api://AzureADTokenExchange"

// FederationIssuer is the issuer of the devstack's service-account tokens.
const FederationIssuer = "https://oidc.skrfs-devstack.local/"

// EntraHandler serves the Entra endpoints under /{tenant}/. base is the
// authority host as clients see it (https://127.0.0.1:PORT).
func (s *Server) EntraHandler(base string) http.Handler {
	base = strings.TrimSuffix(base, "/")
	mux := http.NewServeMux()
	tenant := "/" + s.opts.TenantID
	mux.HandleFunc("GET "+tenant+"/v2.0/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{
			"issuer":                   base + tenant + "/v2.0",
			"token_endpoint":           base + tenant + "/oauth2/v2.0/token",
			"authorization_endpoint":   base + tenant + "/oauth2/v2.0/authorize",
			"jwks_uri":                 base + tenant + "/discovery/v2.0/keys",
			"response_types_supported": []string{"code", "id_token", "token"},
		})
	})
	mux.HandleFunc("POST "+tenant+"/oauth2/v2.0/token", s.entraToken)
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	encodeJSON(w, v)
}

func (s *Server) entraToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		imdsError(w, 400, "invalid_request", "form body expected")
		return
	}
	f := r.PostForm
	if f.Get("grant_type") != "client_credentials" {
		imdsError(w, 400, "unsupported_grant_type", "only client_credentials is supported")
		return
	}
	if f.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
		imdsError(w, 400, "invalid_request", "a jwt-bearer client assertion is required")
		return
	}
	clientID := f.Get("client_id")
	if !s.known(clientID) || clientID == "" {
		imdsError(w, 400, "invalid_client", fmt.Sprintf("AADSTS700016: application %q was not found in tenant %s", clientID, s.opts.TenantID))
		return
	}
	if s.opts.FederationKey == nil {
		imdsError(w, 400, "invalid_client", "no federated credential is configured")
		return
	}
	if _, err := jwt.Parse([]byte(f.Get("client_assertion")), jwt.WithKey(jwa.RS256, &s.opts.FederationKey.PublicKey), jwt.WithValidate(true),
		jwt.WithAudience(FederatedAudience), jwt.WithIssuer(FederationIssuer), jwt.WithClock(jwt.ClockFunc(s.opts.Now))); err != nil {
		imdsError(w, 401, "invalid_client", "AADSTS700211: the client assertion is not valid: "+err.Error())
		return
	}
	var resource string
	for _, sc := range strings.Fields(f.Get("scope")) {
		if strings.HasSuffix(sc, "/.default") {
			resource = strings.TrimSuffix(sc, "/.default")
		}
	}
	if resource == "" {
		imdsError(w, 400, "invalid_scope", "a <resource>/.default scope is required")
		return
	}
	tok, exp, err := s.Mint(resource, clientID)
	if err != nil {
		imdsError(w, 500, "server_error", err.Error())
		return
	}
	writeJSON(w, 200, map[string]any{"token_type": "Bearer", "expires_in": int(exp.Sub(s.opts.Now()).Seconds()), "ext_expires_in": 3599, "access_token": tok})
}

// MintFederatedToken issues a projected service-account token for
// subject (system:serviceaccount:<ns>:<sa>), as the AKS workload-identity
// webhook mounts it, signed with the federation key.
func MintFederatedToken(key *rsa.PrivateKey, subject string, now time.Time) (string, error) {
	tok := jwt.New()
	for k, v := range map[string]any{"iss": FederationIssuer, "sub": subject, "aud": FederatedAudience,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(24 * time.Hour).Unix()} {
		tok.Set(k, v)
	}
	b, err := jwt.Sign(tok, jwt.WithKey(jwa.RS256, key))
	return string(b), err
}
