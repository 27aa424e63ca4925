// Package maa is the devstack's Microsoft Azure Attestation stand-in for
// SEV-SNP containers: POST /attest/SevSnpVm with the exact layered request
// of protocol.md section 3.2, evidence verified with go-sev-guest (AMD's
// genuine roots always, plus configured fake roots), and an RS256 token
// with the claims of section 3.5; GET /certs and the OpenID metadata.
package maa

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-sev-guest/verify/trust"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/keyrelease/evidence"
)

// Options configure the service.
type Options struct {
	// Issuer is the service's own URL (https://127.0.0.1:PORT): the token
	// issuer and the base of jku.
	Issuer string
	// Key signs tokens; Chain[0] is its certificate, published in x5c.
	Key   *rsa.PrivateKey
	Chain []*x509.Certificate
	// ExtraRoots are trusted besides AMD's genuine roots (the fake device).
	ExtraRoots map[string][]*trust.AMDRootCerts
	// Endorsers are the trusted UVM endorsement issuers, besides
	// Microsoft's (the devstack's fake UVM endorser).
	Endorsers []evidence.Endorser
	// Lifetime of tokens (default 8h, as MAA).
	Lifetime time.Duration
	// Now is the clock (nil = time.Now).
	Now    func() time.Time
	Logger zerolog.Logger
}

// Server is the MAA stand-in.
type Server struct {
	opts         Options
	kid          string
	ok, rejected atomic.Int64
	mux          *http.ServeMux
}

// New returns the service.
func New(opts Options) (*Server, error) {
	if opts.Key == nil || len(opts.Chain) == 0 || opts.Issuer == "" {
		return nil, fmt.Errorf("maa: Issuer, Key and Chain are required")
	}
	if opts.Lifetime == 0 {
		opts.Lifetime = 8 * time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.Issuer = strings.TrimSuffix(opts.Issuer, "/")
	sum := sha256.Sum256(opts.Chain[0].Raw)
	s := &Server{opts: opts, kid: base64.RawURLEncoding.EncodeToString(sum[:12]), mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /certs", s.certs)
	s.mux.HandleFunc("GET /.well-known/openid-configuration", s.openid)
	s.mux.HandleFunc("POST /attest/{kind}", s.attest)
	return s, nil
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Stats returns accepted and rejected attestations.
func (s *Server) Stats() (ok, rejected int64) { return s.ok.Load(), s.rejected.Load() }

func (s *Server) certs(w http.ResponseWriter, r *http.Request) {
	var x5c []string
	for _, c := range s.opts.Chain {
		x5c = append(x5c, base64.StdEncoding.EncodeToString(c.Raw))
	}
	// MAA publishes x5c-only entries, without n and e.
	writeJSON(w, 200, map[string]any{"keys": []map[string]any{{"kid": s.kid, "kty": "RSA", "x5c": x5c}}})
}

func (s *Server) openid(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, map[string]any{"issuer": s.opts.Issuer, "jwks_uri": s.opts.Issuer + "/certs",
		"response_types_supported": []string{"token"}, "id_token_signing_alg_values_supported": []string{"RS256"},
		"claims_supported": []string{"x-ms-attestation-type", "x-ms-sevsnpvm-hostdata", "x-ms-runtime"}})
}

// cloudError answers like Azure: {"error":{"code","message"}} and a request id.
func (s *Server) cloudError(w http.ResponseWriter, status int, code, msg string) {
	s.rejected.Add(1)
	id := make([]byte, 8)
	rand.Read(id)
	w.Header().Set("x-ms-request-id", hex.EncodeToString(id))
	s.opts.Logger.Info().Str("code", code).Str("reason", msg).Msg("attestation rejected")
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// b64 decodes base64url with or without padding (MAA accepts both; the
// reference sidecar pads).
func b64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

type attestRequest struct {
	Report      string `json:"report"`
	RuntimeData struct {
		Data     string `json:"data"`
		DataType string `json:"dataType"`
	} `json:"runtimeData"`
	InitTimeData json.RawMessage `json:"initTimeData"`
	Nonce        json.RawMessage `json:"nonce"`
}

var apiVersions = map[string]bool{"2020-10-01": true, "2022-08-01": true, "2025-06-01": true}

func (s *Server) attest(w http.ResponseWriter, r *http.Request) {
	kind := r.PathValue("kind")
	if !strings.EqualFold(kind, "SevSnpVm") && !strings.EqualFold(kind, "AzureGuest") {
		s.cloudError(w, 404, "NotFound", "only SevSnpVm and AzureGuest attestation are served")
		return
	}
	if v := r.URL.Query().Get("api-version"); !apiVersions[v] {
		s.cloudError(w, 400, "InvalidApiVersion", fmt.Sprintf("unsupported or missing api-version %q", v))
		return
	}
	if strings.EqualFold(kind, "AzureGuest") {
		s.attestAzureGuest(w, r)
		return
	}
	var req attestRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		s.cloudError(w, 400, "InvalidRequest", "request body is not JSON: "+err.Error())
		return
	}
	innerJSON, err := b64(req.Report)
	if err != nil {
		s.cloudError(w, 400, "InvalidRequest", "report is not base64url")
		return
	}
	var inner struct {
		SnpReport, VcekCertChain, Endorsements string
	}
	if err := json.Unmarshal(innerJSON, &inner); err != nil {
		s.cloudError(w, 400, "InvalidRequest", "decoded report is not the JSON {SnpReport, VcekCertChain, Endorsements}")
		return
	}
	report, err1 := b64(inner.SnpReport)
	chainPEM, err2 := b64(inner.VcekCertChain)
	if err1 != nil || err2 != nil {
		s.cloudError(w, 400, "InvalidRequest", "SnpReport or VcekCertChain is not base64url")
		return
	}
	if req.RuntimeData.DataType != "JSON" {
		s.cloudError(w, 400, "InvalidRequest", fmt.Sprintf("runtimeData.dataType %q: this service accepts JSON", req.RuntimeData.DataType))
		return
	}
	runtime, err := b64(req.RuntimeData.Data)
	if err != nil {
		s.cloudError(w, 400, "InvalidRequest", "runtimeData.data is not base64url")
		return
	}
	var runtimeClaim any
	if err := json.Unmarshal(runtime, &runtimeClaim); err != nil {
		s.cloudError(w, 400, "InvalidRequest", "runtime data of type JSON is not JSON")
		return
	}
	chain, err := evidence.ParseChainPEM(chainPEM)
	if err != nil {
		s.cloudError(w, 400, "InvalidCertificateChain", err.Error())
		return
	}
	var endorsements [][]byte
	if inner.Endorsements != "" {
		ej, err := b64(inner.Endorsements)
		var e struct{ Uvm []string }
		if err == nil {
			err = json.Unmarshal(ej, &e)
		}
		if err != nil {
			s.cloudError(w, 400, "InvalidRequest", "Endorsements is not base64url of {\"Uvm\": [...]}")
			return
		}
		for _, u := range e.Uvm {
			b, err := b64(u)
			if err != nil {
				s.cloudError(w, 400, "InvalidRequest", "a UVM endorsement is not base64url")
				return
			}
			endorsements = append(endorsements, b)
		}
	}
	now := s.opts.Now()
	claims, err := evidence.Verify(report, chain, evidence.Options{ExtraRoots: s.opts.ExtraRoots, RuntimeData: runtime, Now: now,
		Endorsements: endorsements, Endorsers: append([]evidence.Endorser{evidence.MicrosoftUVM}, s.opts.Endorsers...)})
	if err != nil {
		s.cloudError(w, 400, "InvalidEvidence", err.Error())
		return
	}
	tok := jwt.New()
	for k, v := range claims {
		tok.Set(k, v)
	}
	jti := make([]byte, 16)
	rand.Read(jti)
	for k, v := range map[string]any{
		jwt.IssuerKey: s.opts.Issuer, jwt.IssuedAtKey: now.Unix(), jwt.NotBeforeKey: now.Unix(),
		jwt.ExpirationKey: now.Add(s.opts.Lifetime).Unix(), jwt.JwtIDKey: hex.EncodeToString(jti),
		"x-ms-ver": "1.0", "x-ms-policy-hash": "skrfs-devstack-default-policy", "x-ms-runtime": runtimeClaim,
	} {
		tok.Set(k, v)
	}
	hdr := jws.NewHeaders()
	hdr.Set(jws.KeyIDKey, s.kid)
	hdr.Set(jws.JWKSetURLKey, s.opts.Issuer+"/certs")
	hdr.Set(jws.TypeKey, "JWT")
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.RS256, s.opts.Key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		s.cloudError(w, 500, "InternalError", err.Error())
		return
	}
	s.ok.Add(1)
	writeJSON(w, 200, map[string]string{"token": string(signed)})
}
