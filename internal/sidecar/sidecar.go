// Package sidecar serves the HTTP API of Microsoft's reference SKR sidecar
// (confidential-sidecar-containers; docs/sidecar.md) on top of
// skrfs's own attestation and key-release code: the same paths, request
// and response JSON and status codes, so containers written against the
// sidecar work unchanged. The machinery behind it is a Backend; Stack is
// the real one.
package sidecar

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/attest"
)

// Backend is what the API drives. Stack implements it.
type Backend interface {
	// Evidence returns SEV-SNP evidence whose REPORT_DATA is reportData.
	Evidence(ctx context.Context, reportData [64]byte) (*attest.Evidence, error)
	// Token attests at the MAA instance maaHost ("" = the configured one)
	// with evidence binding runtimeData, and returns the token.
	Token(ctx context.Context, maaHost string, runtimeData []byte) (string, error)
	// Release releases a key, attesting at maaHost ("" = the configured
	// one). A non-empty accessToken is the caller's bearer token for the
	// vault, used instead of skrfs's identity.
	Release(ctx context.Context, maaHost string, ref keyrelease.KeyRef, accessToken string) (*keyrelease.Key, error)
}

// ErrBadRequest marks requests the API refuses with 400.
var ErrBadRequest = errors.New("bad request")

// formatError is a malformed request (400): its message is upstream's,
// "invalid request format: ...", and it matches ErrBadRequest.
type formatError string

func (e formatError) Error() string        { return "invalid request format: " + string(e) }
func (e formatError) Is(target error) bool { return target == ErrBadRequest }

func badFormat(format string, args ...any) error { return formatError(fmt.Sprintf(format, args...)) }

// maxBody bounds request bodies (runtime data is a few KiB at most).
const maxBody = 1 << 20

// Options configure the handler.
type Options struct {
	// Backend attests and releases. Required.
	Backend Backend
	// Logger receives one debug line per request and warnings for
	// failures; never key material, tokens or runtime data.
	Logger zerolog.Logger
	// Audit receives one event per /key/release request: the caller's
	// address, the key and the outcome (docs/sidecar.md). The zero Logger
	// discards them.
	Audit zerolog.Logger
	// Attest turns on /attest/raw, /attest/combined and /attest/maa
	// (serve.attest, or serve.any_key). Off, they answer 403: evidence and
	// tokens bound to a caller's runtime data let the caller release keys
	// outside the allow-list with any token it can get from IMDS.
	Attest bool
	// CombinedReport makes /attest/combined answer the older upstream
	// shape, {"combined_report": "<the object as a JSON string>"}, instead
	// of the fields at the top level (serve.combined_report).
	CombinedReport bool
}

// ErrAttestOff is the 403 of the attest routes when they are off.
var ErrAttestOff = errors.New("the attestation endpoints are off: they hand out evidence and MAA tokens bound to the caller's " +
	"runtime data, with which a caller can release keys outside the allow-list; set serve.attest: true (or serve.any_key: true) to turn them on")

// Handler returns the sidecar API:
//
//	GET  /status           {"message":"Status OK"}
//	POST /attest/raw       {"runtime_data"} -> {"report"}
//	POST /attest/combined  {"runtime_data"} -> {"endorsed_tcb","endorsements","evidence","uvm_endorsements"}
//	POST /attest/maa       {"maa_endpoint","runtime_data"} -> {"token"}
//	POST /key/release      {"maa_endpoint","akv_endpoint","kid","access_token"} -> {"key": "<JWK as a string>"}
//
// Errors are {"error": "..."} with 400 (malformed request), 403
// (attestation or release failed, or the attest routes are off), 404 (no
// such path), 405 (wrong method) or 500.
func Handler(opts Options) http.Handler {
	h := &handler{b: opts.Backend, log: opts.Logger, audit: opts.Audit, combined: opts.CombinedReport}
	attest := func(f http.HandlerFunc) http.HandlerFunc {
		if opts.Attest {
			return f
		}
		return func(w http.ResponseWriter, r *http.Request) {
			h.fail(w, r, http.StatusForbidden, "", ErrAttestOff)
		}
	}
	mux := http.NewServeMux()
	route := func(method, path string, f http.HandlerFunc) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if r.Method != method {
				w.Header().Set("Allow", method)
				writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": fmt.Sprintf("method %s not allowed on %s (use %s)", r.Method, path, method)})
				return
			}
			f(w, r)
		})
	}
	route(http.MethodGet, "/status", h.status)
	route(http.MethodPost, "/attest/raw", attest(h.attestRaw))
	route(http.MethodPost, "/attest/combined", attest(h.attestCombined))
	route(http.MethodPost, "/attest/maa", attest(h.attestMAA))
	route(http.MethodPost, "/key/release", h.keyRelease)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such path: " + r.URL.Path})
	})
	return mux
}

type handler struct {
	b        Backend
	log      zerolog.Logger
	audit    zerolog.Logger
	combined bool
}

// auditRelease writes the audit event of a key release request.
func (h *handler) auditRelease(r *http.Request, ref keyrelease.KeyRef, k *keyrelease.Key, callerToken bool, err error) {
	e := h.audit.Info()
	if e == nil {
		return
	}
	e.Str("event", "api_key_release").Str("remote", r.RemoteAddr).Bool("caller_token", callerToken)
	v := ref
	v.Version = ""
	version := ref.Version
	if k != nil && k.Ref.Version != "" {
		version = k.Ref.Version
	}
	e.Str("key", v.String()).Str("key_version", version)
	if err != nil {
		e.Str("outcome", "denied").Str("reason", err.Error()).Msg("audit")
		return
	}
	e.Str("outcome", "allowed").Msg("audit")
}

// writeJSON writes v as the sidecar (gin) does: compact JSON without a
// trailing newline.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(b)
}

// fail writes {"error": prefix + err}: 400 for ErrBadRequest, else status.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, status int, prefix string, err error) {
	if errors.Is(err, ErrBadRequest) {
		status = http.StatusBadRequest
	}
	h.log.Warn().Str("path", r.URL.Path).Int("status", status).Err(err).Msg("sidecar request failed")
	writeJSON(w, status, map[string]string{"error": prefix + err.Error()})
}

// decode reads a JSON body into v; unknown fields are ignored, as gin does.
func decode(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return badFormat("reading body: %v", err)
	}
	if len(body) > maxBody {
		return badFormat("body larger than %d bytes", maxBody)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return badFormat("invalid JSON: %v", err)
	}
	return nil
}

// decodeRuntimeData decodes runtime_data. The sidecar documents standard
// base64; its own tests send URL-safe base64, so both alphabets are
// accepted, padded or not.
func decodeRuntimeData(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, badFormat("runtime_data is not base64")
}

// reportData is SHA-256(runtime data) followed by 32 zero bytes, as the
// sidecar binds runtime data into a report.
func reportData(runtimeData []byte) [64]byte {
	var rd [64]byte
	h := sha256.Sum256(runtimeData)
	copy(rd[:], h[:])
	return rd
}

func (h *handler) status(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"message": "Status OK"})
}

type runtimeDataRequest struct {
	RuntimeData *string `json:"runtime_data"`
}

// errNoRuntimeData is the 400 of a request without runtime_data, worded as
// the reference sidecar (gin's binding) words it.
var errNoRuntimeData = badFormat("runtime_data is required")

// evidence decodes a runtime_data request and returns evidence for it.
// runtime_data is required (as upstream): a report over the SHA-256 of
// nothing binds nothing.
func (h *handler) evidence(r *http.Request) (*attest.Evidence, error) {
	var req runtimeDataRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if req.RuntimeData == nil || *req.RuntimeData == "" {
		return nil, errNoRuntimeData
	}
	rd, err := decodeRuntimeData(*req.RuntimeData)
	if err != nil {
		return nil, err
	}
	return h.b.Evidence(r.Context(), reportData(rd))
}

func (h *handler) attestRaw(w http.ResponseWriter, r *http.Request) {
	ev, err := h.evidence(r)
	if err != nil {
		h.fail(w, r, http.StatusForbidden, "", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"report": hex.EncodeToString(ev.Report)})
}

// combinedResponse is the shape Azure's Privacy Sandbox KMS expects.
type combinedResponse struct {
	EndorsedTCB     string `json:"endorsed_tcb"`
	Endorsements    string `json:"endorsements"`
	Evidence        string `json:"evidence"`
	UVMEndorsements string `json:"uvm_endorsements"`
}

func (h *handler) attestCombined(w http.ResponseWriter, r *http.Request) {
	ev, err := h.evidence(r)
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "", err)
		return
	}
	tcb, err := reportedTCB(ev.Report)
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "", err)
		return
	}
	out := combinedResponse{
		EndorsedTCB:  tcb,
		Endorsements: base64.StdEncoding.EncodeToString(ev.CertChainPEM()),
		Evidence:     base64.StdEncoding.EncodeToString(ev.Report),
	}
	if len(ev.Endorsements) > 0 {
		// reference-info-base64 holds the standard base64 of the COSE_Sign1.
		out.UVMEndorsements = base64.StdEncoding.EncodeToString(ev.Endorsements[0])
	}
	if h.combined {
		// The older upstream shape: the same object, serialised as a JSON
		// string under combined_report.
		b, err := json.Marshal(out)
		if err != nil {
			h.fail(w, r, http.StatusInternalServerError, "", err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"combined_report": string(b)})
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// reportedTCB returns REPORTED_TCB (offset 0x180, little-endian uint64) as
// the 16 hex digits THIM calls tcbm. Evidence providers only return
// certificates whose tcbm equals it, so it is the endorsed TCB.
func reportedTCB(report []byte) (string, error) {
	const off = 0x180
	if len(report) < off+8 {
		return "", fmt.Errorf("report of %d bytes", len(report))
	}
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(report[off+i])
	}
	return fmt.Sprintf("%016x", v), nil
}

type maaRequest struct {
	MAAEndpoint string `json:"maa_endpoint"`
	RuntimeData string `json:"runtime_data"`
}

func (h *handler) attestMAA(w http.ResponseWriter, r *http.Request) {
	var req maaRequest
	err := decode(r, &req)
	var rd []byte
	if err == nil {
		rd, err = decodeRuntimeData(req.RuntimeData)
	}
	if err == nil && !json.Valid(rd) {
		err = badFormat("runtime_data must be base64 of JSON (MAA is sent it with dataType JSON)")
	}
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "", err)
		return
	}
	tok, err := h.b.Token(r.Context(), req.MAAEndpoint, rd)
	if err != nil {
		h.fail(w, r, http.StatusForbidden, "attestation failed: ", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"token": tok})
}

type releaseRequest struct {
	MAAEndpoint string `json:"maa_endpoint"`
	AKVEndpoint string `json:"akv_endpoint"`
	KID         string `json:"kid"`
	AccessToken string `json:"access_token"`
}

// keyRef builds the key reference of a release request: akv_endpoint is a
// bare host (https:// tolerated), kid a key name, optionally name/version.
func (q releaseRequest) keyRef() (keyrelease.KeyRef, error) {
	if q.AKVEndpoint == "" || q.KID == "" {
		return keyrelease.KeyRef{}, badFormat("akv_endpoint and kid are required")
	}
	host := strings.TrimSuffix(strings.TrimPrefix(q.AKVEndpoint, "https://"), "/")
	ref, err := keyrelease.ParseKeyRef("https://" + host + "/keys/" + q.KID)
	if err != nil {
		return keyrelease.KeyRef{}, badFormat("%v", err)
	}
	return ref, nil
}

func (h *handler) keyRelease(w http.ResponseWriter, r *http.Request) {
	var req releaseRequest
	err := decode(r, &req)
	var ref keyrelease.KeyRef
	if err == nil {
		ref, err = req.keyRef()
	}
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "", err)
		return
	}
	k, err := h.b.Release(r.Context(), req.MAAEndpoint, ref, req.AccessToken)
	h.auditRelease(r, ref, k, req.AccessToken != "", err)
	if err != nil {
		h.fail(w, r, http.StatusForbidden, "secure key release failed: ", err)
		return
	}
	jwk, err := k.Marshal(keyrelease.FormatJWK)
	k.Wipe()
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "", err)
		return
	}
	// The sidecar returns the JWK serialised as a JSON string inside the
	// JSON object ("double-encoded"); callers parse it a second time. The
	// body is built in one buffer so that it can be wiped after writing.
	body := make([]byte, 0, 2*len(jwk)+16)
	body = append(body, `{"key":"`...)
	body = appendJSONString(body, bytes.TrimSpace(jwk))
	body = append(body, `"}`...)
	clear(jwk)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	w.Write(body)
	clear(body)
	h.log.Debug().Str("key", ref.String()).Msg("key released to a sidecar API caller")
}

// appendJSONString appends the contents of a JSON string literal holding
// b (without the quotes).
func appendJSONString(dst, b []byte) []byte {
	const hexDigits = "0123456789abcdef"
	for _, c := range b {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return dst
}
