package vault

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

// The Key Vault sign operation (POST /keys/{name}[/{version}]/sign) for
// ES256, ES384 and PS256, as azkeys Sign calls it: the request carries the
// digest (base64url), the response the signature in JWS form (R || S for
// ECDSA). Used by signed manifests (skrfs upload --sign <key URL>).
func (s *Server) sign(w http.ResponseWriter, r *http.Request, name, version string) {
	var req struct {
		Alg   string `json:"alg"`
		Value string `json:"value"`
	}
	if err := decodeBody(r, &req); err != nil {
		kvError(w, 400, "BadParameter", err.Error())
		return
	}
	digest, err := decodePolicyData(req.Value)
	if err != nil {
		kvError(w, 400, "BadParameter", "value is not base64url")
		return
	}
	s.mu.Lock()
	kv, ok := s.version(name, version)
	var raw []byte
	var kid string
	if ok {
		raw, kid = append([]byte(nil), kv.JWK...), s.kid(r, name, kv.Version)
	}
	s.mu.Unlock()
	if !ok {
		kvError(w, 404, "KeyNotFound", fmt.Sprintf("A key with (name/id) %s was not found in this key vault.", name))
		return
	}
	jk, err := jwk.ParseKey(raw)
	if err != nil {
		kvError(w, 500, "InternalError", err.Error())
		return
	}
	var priv any
	if err := jk.Raw(&priv); err != nil {
		kvError(w, 500, "InternalError", err.Error())
		return
	}
	var sig []byte
	switch k := priv.(type) {
	case *ecdsa.PrivateKey:
		size := (k.Curve.Params().BitSize + 7) / 8
		want := map[int]string{32: "ES256", 48: "ES384", 66: "ES512"}[size]
		if req.Alg != want || len(digest) != map[int]int{32: 32, 48: 48, 66: 64}[size] {
			kvError(w, 400, "BadParameter", fmt.Sprintf("algorithm %s or digest length %d does not fit the key", req.Alg, len(digest)))
			return
		}
		rr, ss, err := ecdsa.Sign(rand.Reader, k, digest)
		if err != nil {
			kvError(w, 500, "InternalError", err.Error())
			return
		}
		sig = make([]byte, 2*size)
		rr.FillBytes(sig[:size])
		ss.FillBytes(sig[size:])
	case *rsa.PrivateKey:
		h := map[string]crypto.Hash{"PS256": crypto.SHA256, "PS384": crypto.SHA384, "PS512": crypto.SHA512, "RS256": crypto.SHA256}[req.Alg]
		if h == 0 || len(digest) != h.Size() {
			kvError(w, 400, "BadParameter", fmt.Sprintf("algorithm %s or digest length %d does not fit the key", req.Alg, len(digest)))
			return
		}
		if req.Alg[0] == 'R' {
			sig, err = rsa.SignPKCS1v15(rand.Reader, k, h, digest)
		} else {
			sig, err = rsa.SignPSS(rand.Reader, k, h, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		}
		if err != nil {
			kvError(w, 500, "InternalError", err.Error())
			return
		}
	default:
		kvError(w, 400, "BadParameter", "the key cannot sign")
		return
	}
	writeJSON(w, 200, map[string]string{"kid": kid, "value": base64.RawURLEncoding.EncodeToString(sig)})
}

// Secrets: GET /secrets/{name}[/{version}] and PUT /secrets/{name}, in
// memory, as azsecrets calls them (the epoch anchor of signed manifests).
type secretStore struct {
	mu       sync.Mutex
	versions map[string][]secretVersion
}

type secretVersion struct {
	version, value, contentType string
	created                     int64
}

var secrets sync.Map // *Server -> *secretStore

func (s *Server) secretStore() *secretStore {
	v, _ := secrets.LoadOrStore(s, &secretStore{versions: map[string][]secretVersion{}})
	return v.(*secretStore)
}

func (s *Server) secret(w http.ResponseWriter, r *http.Request, name string, rest []string) {
	st := s.secretStore()
	st.mu.Lock()
	defer st.mu.Unlock()
	bundle := func(sv secretVersion) map[string]any {
		return map[string]any{"value": sv.value, "contentType": sv.contentType,
			"id":         "https://" + r.Host + "/secrets/" + name + "/" + sv.version,
			"attributes": map[string]any{"enabled": true, "created": sv.created, "updated": sv.created}}
	}
	switch {
	case r.Method == http.MethodPut && len(rest) == 0:
		var req struct {
			Value       *string `json:"value"`
			ContentType string  `json:"contentType"`
		}
		if err := decodeBody(r, &req); err != nil || req.Value == nil {
			kvError(w, 400, "BadParameter", "value is required")
			return
		}
		sv := secretVersion{version: strconv.FormatInt(time.Now().UnixNano(), 16), value: *req.Value, contentType: req.ContentType, created: time.Now().Unix()}
		st.versions[name] = append(st.versions[name], sv)
		writeJSON(w, 200, bundle(sv))
	case r.Method == http.MethodGet && len(rest) <= 1:
		vs := st.versions[name]
		for i := len(vs) - 1; i >= 0; i-- {
			if len(rest) == 0 || rest[0] == "" || vs[i].version == rest[0] {
				writeJSON(w, 200, bundle(vs[i]))
				return
			}
		}
		kvError(w, 404, "SecretNotFound", fmt.Sprintf("A secret with (name/id) %s was not found in this key vault.", name))
	default:
		kvError(w, 405, "BadParameter", fmt.Sprintf("%s %s is not supported", r.Method, r.URL.Path))
	}
}
