// Package vault is the devstack's Azure Key Vault / Managed HSM stand-in
// for Secure Key Release (protocol.md sections 5 and 6), speaking the wire
// format of the Azure SDK's azkeys client: create, import, get, update and
// release of exportable keys with release policies, Bearer authentication
// with the 401 challenge azkeys expects, MAA tokens verified through the
// JWKS of the authority the policy names, the CKM_RSA_AES_KEY_WRAP family
// of wraps, and a JWS response signed with an x5c chain.
package vault

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/cert"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/crypto/keywrap"
	"github.com/skrfs/skrfs/keyrelease/maa"
	"github.com/skrfs/skrfs/keyrelease/policy"
)

// Options configure the service.
type Options struct {
	// StateDir keeps the keys (JSON, mode 0600) so a restart keeps them.
	StateDir string
	// Signer signs release responses; Chain[0] is its certificate (valid for
	// the vault's host name), followed by its issuers, sent as x5c.
	Signer crypto.Signer
	Chain  []*x509.Certificate
	// Audience is the token audience, "https://vault.azure.net" or
	// "https://managedhsm.azure.net".
	Audience string
	// Authority is the Entra authority named in the 401 challenge.
	Authority string
	// VerifyBearer checks an access token (nil = accept any non-empty one).
	VerifyBearer func(ctx context.Context, token string) error
	// HTTPClient fetches attestation authorities' signing keys.
	HTTPClient *http.Client
	Now        func() time.Time
	Logger     zerolog.Logger
}

// Server is the Key Vault stand-in.
type Server struct {
	opts Options
	mu   sync.Mutex
	keys map[string]*storedKey
	maa  map[string]*maa.Client // per authority, caching its JWKS
	stat map[string]*Stats
}

// Stats counts releases of one key.
type Stats struct{ Allowed, Denied int }

type storedKey struct {
	Name     string       `json:"name"`
	Versions []keyVersion `json:"versions"`
}

type keyVersion struct {
	Version    string          `json:"version"`
	JWK        json.RawMessage `json:"jwk"` // with private members
	KeyOps     []string        `json:"key_ops,omitempty"`
	HSM        bool            `json:"hsm"`
	Exportable bool            `json:"exportable"`
	Enabled    bool            `json:"enabled"`
	Created    int64           `json:"created"`
	Updated    int64           `json:"updated"`
	Policy     *releasePolicy  `json:"release_policy,omitempty"`
}

type releasePolicy struct {
	ContentType string `json:"contentType,omitempty"`
	Data        string `json:"data"` // base64url, as on the wire
	Immutable   bool   `json:"immutable,omitempty"`
}

// New loads the keys in StateDir and returns the service.
func New(opts Options) (*Server, error) {
	if opts.Signer == nil || len(opts.Chain) == 0 || opts.StateDir == "" {
		return nil, errors.New("vault: StateDir, Signer and Chain are required")
	}
	if opts.Audience == "" {
		opts.Audience = "https://vault.azure.net"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = http.DefaultClient
	}
	if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
		return nil, err
	}
	s := &Server{opts: opts, keys: map[string]*storedKey{}, maa: map[string]*maa.Client{}, stat: map[string]*Stats{}}
	files, _ := filepath.Glob(filepath.Join(opts.StateDir, "*.json"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var k storedKey
		if err := json.Unmarshal(b, &k); err != nil {
			return nil, fmt.Errorf("vault: %s: %w", f, err)
		}
		s.keys[k.Name] = &k
	}
	return s, nil
}

// Stats returns release counters per key name.
func (s *Server) Stats(name string) Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.stat[name]; st != nil {
		return *st
	}
	return Stats{}
}

func (s *Server) save(k *storedKey) error {
	b, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(s.opts.StateDir, k.Name+".json")
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// kvError is Key Vault's error body.
func kvError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

var nameRE = regexp.MustCompile(`^[0-9A-Za-z-]{1,127}$`)

// ServeHTTP routes /keys/... and /secrets/... requests.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "Bearer ") {
		// The challenge azkeys answers by getting a token for the resource.
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer authorization="%s", resource="%s"`, s.opts.Authority, s.opts.Audience))
		kvError(w, 401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
		return
	}
	if s.opts.VerifyBearer != nil {
		if err := s.opts.VerifyBearer(r.Context(), strings.TrimPrefix(auth, "Bearer ")); err != nil {
			kvError(w, 401, "Unauthorized", "AKV10022: Invalid audience or token: "+err.Error())
			return
		}
	}
	if r.URL.Query().Get("api-version") == "" {
		kvError(w, 400, "BadParameter", "The api-version query parameter is required")
		return
	}
	var parts []string
	for _, p := range strings.Split(r.URL.Path, "/") {
		if p != "" {
			parts = append(parts, p)
		}
	}
	if len(parts) >= 2 && parts[0] == "secrets" && nameRE.MatchString(parts[1]) {
		s.secret(w, r, parts[1], parts[2:])
		return
	}
	if len(parts) < 2 || parts[0] != "keys" || !nameRE.MatchString(parts[1]) {
		kvError(w, 404, "NotFound", "unknown path "+r.URL.Path)
		return
	}
	name, rest := parts[1], parts[2:]
	switch {
	case r.Method == http.MethodPost && len(rest) == 1 && rest[0] == "create":
		s.create(w, r, name)
	case r.Method == http.MethodPut && len(rest) == 0:
		s.importKey(w, r, name)
	case r.Method == http.MethodGet && len(rest) <= 1:
		s.get(w, r, name, strings.Join(rest, ""))
	case r.Method == http.MethodPatch && len(rest) <= 1:
		s.update(w, r, name, strings.Join(rest, ""))
	case r.Method == http.MethodPost && len(rest) >= 1 && rest[len(rest)-1] == "sign" && len(rest) <= 2:
		s.sign(w, r, name, strings.Join(rest[:len(rest)-1], ""))
	case r.Method == http.MethodPost && len(rest) >= 1 && rest[len(rest)-1] == "release" && len(rest) <= 2:
		s.release(w, r, name, strings.Join(rest[:len(rest)-1], ""))
	default:
		kvError(w, 405, "BadParameter", fmt.Sprintf("%s %s is not supported", r.Method, r.URL.Path))
	}
}

type keyRequest struct {
	Kty        string          `json:"kty"`
	KeySize    int             `json:"key_size"`
	Crv        string          `json:"crv"`
	KeyOps     []string        `json:"key_ops"`
	Key        json.RawMessage `json:"key"`
	HSM        *bool           `json:"hsm"`
	Attributes *struct {
		Enabled    *bool `json:"enabled"`
		Exportable *bool `json:"exportable"`
	} `json:"attributes"`
	ReleasePolicy *releasePolicy `json:"release_policy"`
}

func decodeBody(r *http.Request, v any) error {
	return json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(v)
}

func (s *Server) create(w http.ResponseWriter, r *http.Request, name string) {
	var req keyRequest
	if err := decodeBody(r, &req); err != nil {
		kvError(w, 400, "BadParameter", "invalid JSON: "+err.Error())
		return
	}
	var raw any
	base := strings.TrimSuffix(req.Kty, "-HSM")
	switch base {
	case "RSA":
		size, ok := keySize(w, req.KeySize, 2048, 3072, 4096)
		if !ok {
			return
		}
		raw, _ = rsa.GenerateKey(rand.Reader, size)
	case "EC":
		curves := map[string]elliptic.Curve{"P-256": elliptic.P256(), "P-384": elliptic.P384(), "P-521": elliptic.P521(), "": elliptic.P256()}
		c, ok := curves[req.Crv]
		if !ok {
			kvError(w, 400, "BadParameter", "unsupported crv "+req.Crv)
			return
		}
		raw, _ = ecdsa.GenerateKey(c, rand.Reader)
	case "oct":
		size, ok := keySize(w, req.KeySize, 256, 128, 192)
		if !ok {
			return
		}
		b := make([]byte, size/8)
		rand.Read(b)
		raw = b
	default:
		kvError(w, 400, "BadParameter", "unsupported kty "+req.Kty)
		return
	}
	jk, err := jwk.FromRaw(raw)
	if err != nil {
		kvError(w, 500, "InternalError", err.Error())
		return
	}
	s.store(w, r, name, jk, req, strings.HasSuffix(req.Kty, "-HSM"))
}

// keySize returns the requested size, or def when none was given, if it is
// one of def and allowed; otherwise it answers 400.
func keySize(w http.ResponseWriter, size, def int, allowed ...int) (int, bool) {
	if size == 0 {
		return def, true
	}
	for _, a := range append(allowed, def) {
		if size == a {
			return size, true
		}
	}
	kvError(w, 400, "BadParameter", fmt.Sprintf("key_size %d is not one of %v", size, append([]int{def}, allowed...)))
	return 0, false
}

func (s *Server) importKey(w http.ResponseWriter, r *http.Request, name string) {
	var req keyRequest
	if err := decodeBody(r, &req); err != nil || len(req.Key) == 0 {
		kvError(w, 400, "BadParameter", "invalid import request")
		return
	}
	var m map[string]any
	json.Unmarshal(req.Key, &m)
	kty, _ := m["kty"].(string)
	hsm := strings.HasSuffix(kty, "-HSM") || (req.HSM != nil && *req.HSM)
	m["kty"] = strings.TrimSuffix(kty, "-HSM")
	if ops, ok := m["key_ops"].([]any); ok && req.KeyOps == nil {
		req.KeyOps = []string{}
		for _, o := range ops {
			req.KeyOps = append(req.KeyOps, fmt.Sprint(o))
		}
	}
	for _, k := range []string{"key_hsm", "kid", "key_ops"} {
		delete(m, k)
	}
	b, _ := json.Marshal(m)
	jk, err := jwk.ParseKey(b)
	if err != nil {
		kvError(w, 400, "BadParameter", "invalid key: "+err.Error())
		return
	}
	if jk.KeyType() == "oct" {
		var k []byte
		jk.Raw(&k)
		if len(k) > 64 {
			kvError(w, 400, "BadParameter", "k property of oct key is too large")
			return
		}
	}
	s.store(w, r, name, jk, req, hsm)
}

func (s *Server) store(w http.ResponseWriter, r *http.Request, name string, jk jwk.Key, req keyRequest, hsm bool) {
	if req.ReleasePolicy != nil && !validPolicy(w, req.ReleasePolicy) {
		return
	}
	exportable := req.Attributes != nil && req.Attributes.Exportable != nil && *req.Attributes.Exportable
	if exportable && req.ReleasePolicy == nil {
		kvError(w, 400, "BadParameter", "an exportable key needs a release policy")
		return
	}
	b, _ := json.Marshal(jk)
	v := make([]byte, 16)
	rand.Read(v)
	now := s.opts.Now().Unix()
	kv := keyVersion{Version: hex.EncodeToString(v), JWK: b, KeyOps: req.KeyOps, HSM: hsm, Exportable: exportable,
		Enabled: true, Created: now, Updated: now, Policy: req.ReleasePolicy}
	s.mu.Lock()
	k := s.keys[name]
	if k == nil {
		k = &storedKey{Name: name}
		s.keys[name] = k
	}
	k.Versions = append(k.Versions, kv)
	err := s.save(k)
	s.mu.Unlock()
	if err != nil {
		kvError(w, 500, "InternalError", err.Error())
		return
	}
	s.opts.Logger.Info().Str("key", name).Str("version", kv.Version).Str("kty", jk.KeyType().String()).Msg("key stored")
	writeJSON(w, 200, s.bundle(r, name, &kv))
}

// validPolicy answers 400 and returns false for a policy that does not parse.
func validPolicy(w http.ResponseWriter, rp *releasePolicy) bool {
	doc, err := decodePolicyData(rp.Data)
	if err == nil {
		_, err = policy.Parse(doc)
	}
	if err != nil {
		kvError(w, 400, "BadParameter", "release_policy: "+err.Error())
		return false
	}
	return true
}

func decodePolicyData(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if b, err := base64.RawURLEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(s)
}

// version returns the requested version ("" = latest).
func (s *Server) version(name, version string) (*keyVersion, bool) {
	k := s.keys[name]
	if k == nil || len(k.Versions) == 0 {
		return nil, false
	}
	if version == "" {
		return &k.Versions[len(k.Versions)-1], true
	}
	for i := range k.Versions {
		if k.Versions[i].Version == version {
			return &k.Versions[i], true
		}
	}
	return nil, false
}

func (s *Server) kid(r *http.Request, name, version string) string {
	return "https://" + r.Host + "/keys/" + name + "/" + version
}

// bundle renders a KeyBundle: the public key, attributes and policy, never
// private material.
func (s *Server) bundle(r *http.Request, name string, kv *keyVersion) map[string]any {
	pub := publicJWK(kv)
	pub["kid"] = s.kid(r, name, kv.Version)
	pub["key_ops"] = keyOps(kv)
	out := map[string]any{"key": pub, "attributes": map[string]any{"enabled": kv.Enabled, "exportable": kv.Exportable,
		"created": kv.Created, "updated": kv.Updated, "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 7}}
	if kv.Policy != nil {
		out["release_policy"] = map[string]any{"contentType": "application/json; charset=utf-8", "data": kv.Policy.Data, "immutable": kv.Policy.Immutable}
	}
	return out
}

// keyOps returns the key's operations: those it was created or imported
// with, or, as Key Vault does when none were given, every operation its
// type permits.
func keyOps(kv *keyVersion) []string {
	if kv.KeyOps != nil {
		return kv.KeyOps
	}
	var m struct {
		Kty string `json:"kty"`
	}
	json.Unmarshal(kv.JWK, &m)
	switch m.Kty {
	case "RSA":
		return []string{"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"}
	case "EC":
		return []string{"sign", "verify"}
	}
	return []string{"encrypt", "decrypt", "wrapKey", "unwrapKey"}
}

func publicJWK(kv *keyVersion) map[string]any {
	var m map[string]any
	json.Unmarshal(kv.JWK, &m)
	for _, k := range []string{"d", "p", "q", "dp", "dq", "qi", "k"} {
		delete(m, k)
	}
	if kv.HSM {
		m["kty"] = fmt.Sprint(m["kty"]) + "-HSM"
	}
	return m
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, name, version string) {
	s.mu.Lock()
	kv, ok := s.version(name, version)
	var b map[string]any
	if ok {
		b = s.bundle(r, name, kv)
	}
	s.mu.Unlock()
	if !ok {
		kvError(w, 404, "KeyNotFound", fmt.Sprintf("A key with (name/id) %s was not found in this key vault.", name))
		return
	}
	writeJSON(w, 200, b)
}

func (s *Server) update(w http.ResponseWriter, r *http.Request, name, version string) {
	var req keyRequest
	if err := decodeBody(r, &req); err != nil {
		kvError(w, 400, "BadParameter", "invalid JSON")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	kv, ok := s.version(name, version)
	if !ok {
		kvError(w, 404, "KeyNotFound", "no such key "+name)
		return
	}
	if req.ReleasePolicy != nil {
		if kv.Policy != nil && kv.Policy.Immutable {
			kvError(w, 403, "Forbidden", "the release policy of this key is immutable")
			return
		}
		if !validPolicy(w, req.ReleasePolicy) {
			return
		}
		kv.Policy = req.ReleasePolicy
	}
	if req.Attributes != nil && req.Attributes.Enabled != nil {
		kv.Enabled = *req.Attributes.Enabled
	}
	if req.KeyOps != nil {
		kv.KeyOps = req.KeyOps
	}
	kv.Updated = s.opts.Now().Unix()
	if err := s.save(s.keys[name]); err != nil {
		kvError(w, 500, "InternalError", err.Error())
		return
	}
	writeJSON(w, 200, s.bundle(r, name, kv))
}

// authority returns the MAA client of an authority, caching its keys.
func (s *Server) authority(url string) *maa.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.maa[url]
	if c == nil {
		c = &maa.Client{BaseURL: url, HTTPClient: s.opts.HTTPClient, Now: s.opts.Now}
		s.maa[url] = c
	}
	return c
}

func (s *Server) deny(w http.ResponseWriter, name, msg string) {
	s.mu.Lock()
	if s.stat[name] == nil {
		s.stat[name] = &Stats{}
	}
	s.stat[name].Denied++
	s.mu.Unlock()
	s.opts.Logger.Info().Str("key", name).Str("reason", msg).Msg("release denied")
	kvError(w, 403, "Forbidden", msg)
}

func (s *Server) release(w http.ResponseWriter, r *http.Request, name, version string) {
	var req struct {
		Target string `json:"target"`
		Nonce  string `json:"nonce"`
		Enc    string `json:"enc"`
	}
	if err := decodeBody(r, &req); err != nil || req.Target == "" {
		kvError(w, 400, "BadParameter", "a target attestation token is required")
		return
	}
	s.mu.Lock()
	kvp, ok := s.version(name, version)
	var kv keyVersion
	if ok {
		kv = *kvp
	}
	s.mu.Unlock()
	if !ok {
		kvError(w, 404, "KeyNotFound", fmt.Sprintf("A key with (name/id) %s was not found in this key vault.", name))
		return
	}
	if !kv.Exportable || kv.Policy == nil {
		s.deny(w, name, "the key is not exportable")
		return
	}
	if !kv.Enabled {
		s.deny(w, name, "the key is disabled")
		return
	}
	var h func() hash.Hash
	switch req.Enc {
	case "", "CKM_RSA_AES_KEY_WRAP":
		req.Enc, h = "CKM_RSA_AES_KEY_WRAP", sha1.New
	case "RSA_AES_KEY_WRAP_256":
		h = sha256.New
	case "RSA_AES_KEY_WRAP_384":
		h = sha512.New384
	default:
		kvError(w, 400, "BadParameter", "unsupported enc "+req.Enc)
		return
	}
	doc, _ := decodePolicyData(kv.Policy.Data)
	pol, err := policy.Parse(doc)
	if err != nil {
		s.deny(w, name, "the key's release policy is invalid: "+err.Error())
		return
	}
	// Which authority issued the token? Only authorities named by the
	// policy are asked for signing keys.
	unverified, err := jwt.Parse([]byte(req.Target), jwt.WithVerify(false), jwt.WithValidate(false))
	if err != nil {
		s.deny(w, name, "target is not a JWT: "+err.Error())
		return
	}
	issuer := unverified.Issuer()
	var authorityURL string
	for _, a := range pol.Authorities {
		if strings.EqualFold(strings.TrimSuffix(a.URL, "/"), strings.TrimSuffix(issuer, "/")) {
			authorityURL = a.URL
		}
	}
	if authorityURL == "" {
		s.deny(w, name, fmt.Sprintf("the token issuer %q is not an authority of the key's release policy", issuer))
		return
	}
	tok, err := s.authority(strings.TrimSuffix(authorityURL, "/")).Verify(r.Context(), req.Target, nil)
	if err != nil {
		s.deny(w, name, "attestation token rejected: "+err.Error())
		return
	}
	if res := pol.Evaluate(issuer, tok.Claims); !res.Allow {
		s.deny(w, name, "release policy not satisfied: "+res.Reason)
		return
	}
	wrapTo, kid, err := runtimeKey(tok.Claims)
	if err != nil {
		s.deny(w, name, err.Error())
		return
	}
	target, err := material(&kv)
	if err != nil {
		kvError(w, 500, "InternalError", err.Error())
		return
	}
	ct, err := wrap(wrapTo, h, target)
	clear(target)
	if err != nil {
		kvError(w, 500, "InternalError", err.Error())
		return
	}
	jws, err := s.signRelease(r, name, &kv, req.Enc, kid, ct)
	if err != nil {
		kvError(w, 500, "InternalError", err.Error())
		return
	}
	s.mu.Lock()
	if s.stat[name] == nil {
		s.stat[name] = &Stats{}
	}
	s.stat[name].Allowed++
	s.mu.Unlock()
	s.opts.Logger.Info().Str("key", name).Str("version", kv.Version).Msg("key released")
	writeJSON(w, 200, map[string]string{"value": jws})
}

// runtimeKey finds the RSA key to wrap to in x-ms-runtime.keys: the first
// RSA key whose key_ops allow encrypt (or that has no key_ops).
func runtimeKey(claims map[string]any) (*rsa.PublicKey, string, error) {
	rt, _ := claims["x-ms-runtime"].(map[string]any)
	keys, _ := rt["keys"].([]any)
	for _, k := range keys {
		m, _ := k.(map[string]any)
		if m["kty"] != "RSA" {
			continue
		}
		if ops, ok := m["key_ops"].([]any); ok {
			enc := false
			for _, o := range ops {
				enc = enc || o == "encrypt"
			}
			if !enc {
				continue
			}
		}
		b, _ := json.Marshal(m)
		jk, err := jwk.ParseKey(b)
		if err != nil {
			continue
		}
		var pub rsa.PublicKey
		if err := jk.Raw(&pub); err != nil {
			continue
		}
		if pub.N.BitLen() < 2048 {
			return nil, "", fmt.Errorf("the runtime key is %d bits; at least 2048 are required", pub.N.BitLen())
		}
		kid, _ := m["kid"].(string)
		return &pub, kid, nil
	}
	return nil, "", errors.New("the token's x-ms-runtime claim holds no RSA key to wrap the released key to")
}

// material is what is released: raw bytes for oct, PKCS#8 DER otherwise.
func material(kv *keyVersion) ([]byte, error) {
	jk, err := jwk.ParseKey(kv.JWK)
	if err != nil {
		return nil, err
	}
	var raw any
	if err := jk.Raw(&raw); err != nil {
		return nil, err
	}
	if b, ok := raw.([]byte); ok {
		return b, nil
	}
	return x509.MarshalPKCS8PrivateKey(raw)
}

// wrap is CKM_RSA_AES_KEY_WRAP: OAEP(pub, fresh AES-256 key) || KWP(key, target).
func wrap(pub *rsa.PublicKey, h func() hash.Hash, target []byte) ([]byte, error) {
	aesKey := make([]byte, 32)
	rand.Read(aesKey)
	defer clear(aesKey)
	c1, err := rsa.EncryptOAEP(h(), rand.Reader, pub, aesKey, nil)
	if err != nil {
		return nil, err
	}
	c2, err := keywrap.WrapPad(aesKey, target)
	if err != nil {
		return nil, err
	}
	return append(c1, c2...), nil
}

func (s *Server) signRelease(r *http.Request, name string, kv *keyVersion, enc, wrapKID string, ct []byte) (string, error) {
	b64 := base64.RawURLEncoding.EncodeToString
	hsm, _ := json.Marshal(map[string]any{"schema_version": "1.0",
		"header": map[string]string{"kid": wrapKID, "alg": "dir", "enc": enc}, "ciphertext": b64(ct)})
	key := publicJWK(kv)
	key["kid"] = s.kid(r, name, kv.Version)
	key["key_hsm"] = b64(hsm)
	key["key_ops"] = keyOps(kv) // Key Vault copies them into the release payload
	payload, _ := json.Marshal(map[string]any{
		"request": map[string]string{"api-version": r.URL.Query().Get("api-version"), "enc": enc, "kid": s.kid(r, name, kv.Version)},
		"response": map[string]any{"key": map[string]any{
			"attributes":     map[string]any{"enabled": kv.Enabled, "exportable": kv.Exportable, "created": kv.Created, "updated": kv.Updated, "recoveryLevel": "Recoverable+Purgeable"},
			"key":            key,
			"release_policy": map[string]string{"contentType": "application/json; charset=utf-8", "data": kv.Policy.Data},
		}},
	})
	hdr := jws.NewHeaders()
	chain := &cert.Chain{}
	for _, c := range s.opts.Chain {
		chain.AddString(base64.StdEncoding.EncodeToString(c.Raw))
	}
	if err := hdr.Set(jws.X509CertChainKey, chain); err != nil {
		return "", err
	}
	sum := sha256.Sum256(s.opts.Chain[0].Raw)
	hdr.Set(jws.X509CertThumbprintS256Key, b64(sum[:]))
	sig, err := jws.Sign(payload, jws.WithKey(jwa.RS256, s.opts.Signer, jws.WithProtectedHeaders(hdr)))
	return string(sig), err
}
