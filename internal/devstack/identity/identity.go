// Package identity is the devstack's stand-in for Azure's token services:
// the IMDS managed-identity endpoint (protocol.md 7.1), the App Service
// style endpoint that azidentity uses when IDENTITY_ENDPOINT and
// IDENTITY_HEADER are set, and IMDS's THIM certificate endpoint (2.3).
// Tokens are RS256 JWTs with Entra-like claims, verifiable with Verify.
package identity

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/rs/zerolog"
)

// Options configure the service.
type Options struct {
	TenantID string
	// Key signs access tokens.
	Key *rsa.PrivateKey
	// ClientIDs are the user-assigned identities that exist; a request for
	// any other client_id is refused. The system-assigned identity always
	// exists.
	ClientIDs []string
	// Secret is the X-IDENTITY-HEADER value of the App Service endpoint.
	Secret string
	// THIM is the JSON served at /metadata/THIM/amd/certification.
	THIM []byte
	// FederationKey verifies workload-identity client assertions (the
	// devstack's service-account token issuer).
	FederationKey *rsa.PrivateKey
	Now           func() time.Time
	Logger        zerolog.Logger
}

// Server is the token service.
type Server struct {
	opts   Options
	mux    *http.ServeMux
	issued atomic.Int64
}

// New returns the service.
func New(opts Options) (*Server, error) {
	if opts.Key == nil || opts.TenantID == "" {
		return nil, errors.New("identity: Key and TenantID are required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{opts: opts, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /metadata/identity/oauth2/token", s.imds)
	s.mux.HandleFunc("GET /msi/token", s.appService)
	s.mux.HandleFunc("GET /metadata/THIM/amd/certification", s.thim)
	return s, nil
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Issued returns how many tokens were issued.
func (s *Server) Issued() int64 { return s.issued.Load() }

func imdsError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

func encodeJSON(w http.ResponseWriter, v any) { json.NewEncoder(w).Encode(v) }

func (s *Server) known(clientID string) bool {
	if clientID == "" {
		return true
	}
	for _, c := range s.opts.ClientIDs {
		if strings.EqualFold(c, clientID) {
			return true
		}
	}
	return false
}

func (s *Server) imds(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Metadata") != "true" {
		imdsError(w, 400, "invalid_request", "Required metadata header not specified")
		return
	}
	s.token(w, r, "2018-02-01")
}

func (s *Server) appService(w http.ResponseWriter, r *http.Request) {
	if s.opts.Secret == "" || r.Header.Get("X-IDENTITY-HEADER") != s.opts.Secret {
		imdsError(w, 401, "unauthorized", "X-IDENTITY-HEADER is missing or wrong")
		return
	}
	s.token(w, r, "2019-08-01")
}

func (s *Server) token(w http.ResponseWriter, r *http.Request, apiVersion string) {
	q := r.URL.Query()
	if q.Get("api-version") != apiVersion {
		imdsError(w, 400, "invalid_request", "api-version "+apiVersion+" is required")
		return
	}
	resource := q.Get("resource")
	if resource == "" {
		imdsError(w, 400, "invalid_request", "resource is required")
		return
	}
	clientID := q.Get("client_id")
	if clientID == "" {
		clientID = q.Get("msi_res_id")
	}
	if !s.known(clientID) {
		imdsError(w, 400, "invalid_request", "Identity not found")
		return
	}
	if clientID == "" {
		clientID = "00000000-0000-0000-0000-00000000d3f0" // the system-assigned identity
	}
	tok, exp, err := s.Mint(resource, clientID)
	if err != nil {
		imdsError(w, 500, "server_error", err.Error())
		return
	}
	now := s.opts.Now()
	w.Header().Set("Content-Type", "application/json")
	// IMDS answers with every value as a string.
	json.NewEncoder(w).Encode(map[string]string{"access_token": tok, "refresh_token": "",
		"expires_in": strconv.Itoa(int(exp.Sub(now).Seconds())), "expires_on": strconv.FormatInt(exp.Unix(), 10),
		"not_before": strconv.FormatInt(now.Unix(), 10), "resource": resource, "token_type": "Bearer"})
}

// Mint issues an access token for resource to clientID.
func (s *Server) Mint(resource, clientID string) (string, time.Time, error) {
	now := s.opts.Now()
	exp := now.Add(time.Hour)
	aud := strings.TrimSuffix(resource, "/.default")
	oid := make([]byte, 16)
	rand.Read(oid)
	tok := jwt.New()
	for k, v := range map[string]any{"aud": aud, "iss": "https://sts.windows.net/" + s.opts.TenantID + "/", "tid": s.opts.TenantID,
		"appid": clientID, "azp": clientID, "oid": hex.EncodeToString(oid), "sub": clientID,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": exp.Unix()} {
		tok.Set(k, v)
	}
	tok.Options().Enable(jwt.FlattenAudience) // Azurite wants a string aud
	b, err := jwt.Sign(tok, jwt.WithKey(jwa.RS256, s.opts.Key))
	if err != nil {
		return "", time.Time{}, err
	}
	s.issued.Add(1)
	return string(b), exp, nil
}

// Verify checks a token issued by this service for audience (the resource
// with or without a trailing slash).
func (s *Server) Verify(_ context.Context, token, audience string) error {
	t, err := jwt.Parse([]byte(token), jwt.WithKey(jwa.RS256, &s.opts.Key.PublicKey), jwt.WithValidate(true),
		jwt.WithClock(jwt.ClockFunc(s.opts.Now)))
	if err != nil {
		return err
	}
	for _, a := range t.Audience() {
		if strings.TrimSuffix(a, "/") == strings.TrimSuffix(audience, "/") {
			return nil
		}
	}
	return fmt.Errorf("token audience %v is not %s", t.Audience(), audience)
}

func (s *Server) thim(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Metadata") != "true" {
		imdsError(w, 400, "invalid_request", "Required metadata header not specified")
		return
	}
	if s.opts.THIM == nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(s.opts.THIM)
}
