package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/attest"
)

// refusingBackend records what the handler asks of it and refuses
// everything; the fuzz target checks the handler's parsing of hostile
// requests, not the release machinery (internal/sidecar/sidecar_test.go runs
// that against the devstack).
type refusingBackend struct {
	evidence, token, release int
	refs                     []keyrelease.KeyRef
}

var errRefused = errors.New("refused")

func (b *refusingBackend) Evidence(context.Context, [64]byte) (*attest.Evidence, error) {
	b.evidence++
	return nil, errRefused
}

func (b *refusingBackend) Token(context.Context, string, []byte) (string, error) {
	b.token++
	return "", errRefused
}

func (b *refusingBackend) Release(_ context.Context, _ string, ref keyrelease.KeyRef, _ string) (*keyrelease.Key, error) {
	b.release++
	b.refs = append(b.refs, ref)
	return nil, errRefused
}

// FuzzAPIRequest sends arbitrary methods, paths and bodies to the API.
// Properties: no panic; every answer is a JSON object (an "error" on every
// failure) with a known status; the backend is asked for evidence only
// with runtime_data present, and releases only well-formed key references;
// with the attest routes off, it is never asked for evidence or tokens.
func FuzzAPIRequest(f *testing.F) {
	for _, s := range [][3]string{
		{"POST", "/attest/raw", `{"runtime_data":"e30="}`},
		{"POST", "/attest/raw", `{}`},
		{"POST", "/attest/combined", `{"runtime_data":"-_8"}`},
		{"POST", "/attest/maa", `{"maa_endpoint":"x.attest.azure.net","runtime_data":"e30="}`},
		{"POST", "/key/release", `{"akv_endpoint":"v.vault.azure.net","kid":"k/0123abcd","access_token":"t"}`},
		{"POST", "/key/release", `{"akv_endpoint":"https://v:1/x","kid":"../k"}`},
		{"GET", "/status", ``},
		{"DELETE", "/key/release", `x`},
		{"GET", "/nope", ``},
	} {
		f.Add(s[0], s[1], s[2], true)
	}
	f.Fuzz(func(t *testing.T, method, path, body string, attestOn bool) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " ?#\r\n\t") {
			return
		}
		req, err := http.NewRequest(method, "http://sidecar"+path, strings.NewReader(body))
		if err != nil {
			return
		}
		b := &refusingBackend{}
		rec := httptest.NewRecorder()
		Handler(Options{Backend: b, Attest: attestOn}).ServeHTTP(rec, req)
		if rec.Code == http.StatusMovedPermanently || rec.Code == http.StatusTemporaryRedirect || rec.Code == http.StatusPermanentRedirect {
			// ServeMux redirects unclean paths (/./status) to clean ones.
			if b.evidence+b.token+b.release > 0 {
				t.Fatal("a redirected request reached the backend")
			}
			return
		}
		var out map[string]string
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s %s: %d answer is not a JSON object of strings: %q", method, path, rec.Code, rec.Body.Bytes())
		}
		switch rec.Code {
		case 200:
			if path != "/status" {
				t.Fatalf("%s %s answered 200 with a refusing backend: %v", method, path, out)
			}
		case 400, 403, 404, 405, 500:
			if out["error"] == "" {
				t.Fatalf("%d without an error: %v", rec.Code, out)
			}
		default:
			t.Fatalf("status %d", rec.Code)
		}
		if !attestOn && (b.evidence > 0 || b.token > 0) {
			t.Fatal("the attest routes are off but the backend was asked for evidence or a token")
		}
		if b.evidence > 0 && !strings.Contains(body, "runtime_data") {
			t.Fatal("evidence asked for without runtime_data")
		}
		for _, ref := range b.refs {
			if _, err := keyrelease.ParseKeyRef(ref.String()); err != nil {
				t.Fatalf("release asked for a malformed reference %v: %v", ref, err)
			}
		}
	})
}
