// Package maa is a small client of Microsoft Azure Attestation for SEV-SNP
// containers (protocol.md section 3): it sends evidence and runtime data to
// POST /attest/SevSnpVm and verifies the token it gets back against the
// instance's signing keys. There is no Azure SDK for this call.
package maa

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/skrfs/skrfs/keyrelease"
)

// APIVersion is the attestation API version sent by default.
const APIVersion = "2022-08-01"

// Evidence is what the client sends: the raw 1184-byte SEV-SNP report, the
// "VCEK||ASK||ARK" PEM chain, and the UVM endorsements (raw COSE_Sign1).
type Evidence struct {
	Report       []byte
	CertChainPEM []byte
	Endorsements [][]byte
}

// Client talks to one MAA instance.
type Client struct {
	// BaseURL is the instance, e.g. https://sharedeus.eus.attest.azure.net.
	// It is the expected token issuer and the only host keys are fetched from.
	BaseURL string
	// HTTPClient sends requests (nil = http.DefaultClient).
	HTTPClient *http.Client
	// APIVersion overrides APIVersion.
	APIVersion string
	// Now is the clock for token validation (nil = time.Now).
	Now func() time.Time

	mu     sync.Mutex
	keys   map[string]any // kid -> public key
	keysAt time.Time
}

// keysMaxAge is how long the instance's signing keys are used before they
// are fetched again, so that a key MAA withdraws stops being trusted
// within a day; an unknown kid refetches sooner (at most once a minute).
const keysMaxAge = 24 * time.Hour

// Token is a verified attestation token.
type Token struct {
	Raw     string
	Claims  map[string]any
	Expires time.Time
}

func (c *Client) http() *http.Client {
	if c.HTTPClient != nil {
		return c.HTTPClient
	}
	return http.DefaultClient
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Client) base() string { return strings.TrimSuffix(c.BaseURL, "/") }

// b64u is the padded base64url the reference sidecar uses in every layer.
var b64u = base64.URLEncoding

// request builds the layered body of protocol.md section 3.2.
func request(ev Evidence, runtimeData []byte) ([]byte, error) {
	inner := map[string]string{
		"SnpReport":     b64u.EncodeToString(ev.Report),
		"VcekCertChain": b64u.EncodeToString(ev.CertChainPEM),
	}
	if len(ev.Endorsements) > 0 {
		uvm := make([]string, len(ev.Endorsements))
		for i, e := range ev.Endorsements {
			uvm[i] = b64u.EncodeToString(e)
		}
		end, err := json.Marshal(map[string][]string{"Uvm": uvm})
		if err != nil {
			return nil, err
		}
		inner["Endorsements"] = b64u.EncodeToString(end)
	}
	innerJSON, err := json.Marshal(inner)
	if err != nil {
		return nil, err
	}
	var nonce [8]byte
	rand.Read(nonce[:])
	type data struct {
		Data     string `json:"data"`
		DataType string `json:"dataType"`
	}
	return json.Marshal(struct {
		Report       string `json:"report"`
		RuntimeData  data   `json:"runtimeData"`
		InitTimeData data   `json:"initTimeData"`
		Nonce        uint64 `json:"nonce"`
	}{
		Report:       b64u.EncodeToString(innerJSON),
		RuntimeData:  data{Data: b64u.EncodeToString(runtimeData), DataType: "JSON"},
		InitTimeData: data{},
		Nonce:        binary.BigEndian.Uint64(nonce[:]),
	})
}

// Attest sends the evidence and runtime data and returns the verified token.
// Rejected evidence wraps keyrelease.ErrAttestation; an unreachable or
// failing service wraps keyrelease.ErrUnavailable.
func (c *Client) Attest(ctx context.Context, ev Evidence, runtimeData []byte) (*Token, error) {
	body, err := request(ev, runtimeData)
	if err != nil {
		return nil, err
	}
	v := c.APIVersion
	if v == "" {
		v = APIVersion
	}
	u := c.base() + "/attest/SevSnpVm?api-version=" + url.QueryEscape(v)
	tok, err := c.post(ctx, u, body)
	if err != nil {
		return nil, err
	}
	return c.Verify(ctx, tok, runtimeData)
}

// post POSTs an attestation request body to u and returns the "token" of
// MAA's answer. Rejected evidence wraps keyrelease.ErrAttestation; an
// unreachable or failing service wraps keyrelease.ErrUnavailable.
func (c *Client) post(ctx context.Context, u string, body []byte) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "skrfs")
	resp, err := c.http().Do(req)
	if err != nil {
		return "", fmt.Errorf("%w: MAA %s: %v", keyrelease.ErrUnavailable, c.base(), err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("%w: MAA %s: %v", keyrelease.ErrUnavailable, c.base(), err)
	}
	if resp.StatusCode/100 != 2 {
		return "", serviceError(resp, rb)
	}
	var out struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(rb, &out); err != nil || out.Token == "" {
		return "", fmt.Errorf("%w: MAA returned no token", keyrelease.ErrAttestation)
	}
	return out.Token, nil
}

// serviceError turns a non-2xx response into an error: 400-class answers
// reject the evidence, throttling and 5xx are unavailability.
func serviceError(resp *http.Response, body []byte) error {
	var ce struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &ce) == nil && ce.Error.Message != "" {
		msg = ce.Error.Code + ": " + ce.Error.Message
	}
	if len(msg) > 500 {
		msg = msg[:500]
	}
	class := keyrelease.ErrAttestation
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		class = keyrelease.ErrUnavailable
	}
	return fmt.Errorf("%w: MAA answered %d (request id %s): %s", class, resp.StatusCode, resp.Header.Get("x-ms-request-id"), msg)
}

// Verify checks a token: RS256 signature by a key of this instance's JWKS
// (keys published with x5c only are supported), issuer, validity period,
// and, when runtimeData is given, that x-ms-runtime carries exactly that
// key set.
func (c *Client) Verify(ctx context.Context, token string, runtimeData []byte) (*Token, error) {
	msg, err := jws.Parse([]byte(token))
	if err != nil || len(msg.Signatures()) != 1 {
		return nil, fmt.Errorf("%w: malformed token: %v", keyrelease.ErrAttestation, err)
	}
	hdr := msg.Signatures()[0].ProtectedHeaders()
	if hdr.Algorithm() != jwa.RS256 {
		return nil, fmt.Errorf("%w: token algorithm %s, want RS256", keyrelease.ErrAttestation, hdr.Algorithm())
	}
	key, err := c.signingKey(ctx, hdr.KeyID())
	if err != nil {
		return nil, err
	}
	tok, err := jwt.Parse([]byte(token), jwt.WithKey(jwa.RS256, key), jwt.WithValidate(true),
		jwt.WithClock(jwt.ClockFunc(c.now)), jwt.WithAcceptableSkew(2*time.Minute), jwt.WithIssuer(c.base()))
	if err != nil {
		// Azure's issuer sometimes carries a trailing slash.
		tok, err = jwt.Parse([]byte(token), jwt.WithKey(jwa.RS256, key), jwt.WithValidate(true),
			jwt.WithClock(jwt.ClockFunc(c.now)), jwt.WithAcceptableSkew(2*time.Minute), jwt.WithIssuer(c.base()+"/"))
		if err != nil {
			return nil, fmt.Errorf("%w: token rejected: %v", keyrelease.ErrAttestation, err)
		}
	}
	// jwt validates exp only when present; a token without one would be
	// valid forever.
	if tok.Expiration().IsZero() {
		return nil, fmt.Errorf("%w: token rejected: no exp claim", keyrelease.ErrAttestation)
	}
	claims, err := tok.AsMap(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: token claims: %v", keyrelease.ErrAttestation, err)
	}
	if runtimeData != nil {
		if err := checkRuntime(claims, runtimeData); err != nil {
			return nil, err
		}
	}
	return &Token{Raw: token, Claims: claims, Expires: tok.Expiration()}, nil
}

// checkRuntime verifies that x-ms-runtime is the runtime data we sent.
func checkRuntime(claims map[string]any, runtimeData []byte) error {
	var want, got any
	if err := json.Unmarshal(runtimeData, &want); err != nil {
		return err
	}
	rt, ok := claims["x-ms-runtime"]
	if !ok {
		return fmt.Errorf("%w: token has no x-ms-runtime claim", keyrelease.ErrAttestation)
	}
	b, _ := json.Marshal(rt)
	json.Unmarshal(b, &got)
	wb, _ := json.Marshal(want)
	gb, _ := json.Marshal(got)
	if !bytes.Equal(wb, gb) {
		return fmt.Errorf("%w: x-ms-runtime does not carry our wrapping key", keyrelease.ErrAttestation)
	}
	return nil
}

// signingKey returns the public key with kid from the instance's JWKS,
// refetching the set once it is a day old, and at most once a minute when
// an unknown kid appears.
func (c *Client) signingKey(ctx context.Context, kid string) (any, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	age := c.now().Sub(c.keysAt)
	if k, ok := c.keys[kid]; ok && age < keysMaxAge && age >= 0 {
		return k, nil
	}
	if _, ok := c.keys[kid]; !ok && c.keys != nil && age < time.Minute && age >= 0 {
		return nil, fmt.Errorf("%w: token signed by unknown key %q", keyrelease.ErrAttestation, kid)
	}
	keys, err := c.fetchKeys(ctx)
	if err != nil {
		return nil, err
	}
	c.keys, c.keysAt = keys, c.now()
	if k, ok := keys[kid]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("%w: token signed by unknown key %q", keyrelease.ErrAttestation, kid)
}

// fetchKeys reads {BaseURL}/certs. MAA publishes {kid, kty, x5c} entries,
// often without n and e, so keys are taken from the x5c certificate when
// present and from n/e otherwise.
func (c *Client) fetchKeys(ctx context.Context) (map[string]any, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base()+"/certs", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: MAA signing keys: %v", keyrelease.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: MAA signing keys: HTTP %d", keyrelease.ErrUnavailable, resp.StatusCode)
	}
	var set struct {
		Keys []struct {
			Kid string   `json:"kid"`
			Kty string   `json:"kty"`
			X5c []string `json:"x5c"`
			N   string   `json:"n"`
			E   string   `json:"e"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return nil, fmt.Errorf("%w: MAA signing keys: %v", keyrelease.ErrUnavailable, err)
	}
	keys := map[string]any{}
	for _, k := range set.Keys {
		if len(k.X5c) > 0 {
			der, err := base64.StdEncoding.DecodeString(k.X5c[0])
			if err != nil {
				continue
			}
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				continue
			}
			if pub, ok := cert.PublicKey.(*rsa.PublicKey); ok {
				keys[k.Kid] = pub
			}
			continue
		}
		if k.Kty == "RSA" && k.N != "" && k.E != "" {
			n, err1 := base64.RawURLEncoding.DecodeString(k.N)
			e, err2 := base64.RawURLEncoding.DecodeString(k.E)
			if err1 == nil && err2 == nil && len(e) <= 4 {
				var ev int
				for _, b := range e {
					ev = ev<<8 | int(b)
				}
				keys[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: ev}
			}
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: MAA signing keys: the JWKS has no usable RSA key", keyrelease.ErrUnavailable)
	}
	return keys, nil
}
