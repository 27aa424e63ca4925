package sidecar_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/internal/azauth"
	"github.com/skrfs/skrfs/internal/config"
	"github.com/skrfs/skrfs/internal/devstack"
	"github.com/skrfs/skrfs/internal/sidecar"
	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/akv"
	"github.com/skrfs/skrfs/keyrelease/attest"
	"github.com/skrfs/skrfs/keyrelease/cache"
	"github.com/skrfs/skrfs/keyrelease/evidence"
	"github.com/skrfs/skrfs/keyrelease/maa"
	"github.com/skrfs/skrfs/keyrelease/skr"
)

// world is a devstack and the sidecar API in front of a Stack wired to it
// the way cmd/skrfs wires it: fake SEV-SNP device, MAA, managed identity
// through IMDS, Key Vault, key cache.
type world struct {
	dev   *devstack.Stack
	url   string
	stack *sidecar.Stack
	audit *syncBuf
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// events returns the audit events written so far.
func (s *syncBuf) events(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// dev is one devstack for all tests: azidentity's managed identity keeps a
// process-wide token cache, so tokens of one devstack would be sent to
// another.
var dev *devstack.Stack

func TestMain(m *testing.M) {
	// Fuzzing (FuzzAPIRequest) needs no devstack: its workers would each
	// start one.
	flag.Parse()
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		os.Exit(m.Run())
	}
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "sidecar-test-")
	if err != nil {
		panic(err)
	}
	dev, err = devstack.Start(context.Background(), devstack.Options{Dir: dir, Seed: true, Logger: zerolog.Nop()})
	if err != nil {
		panic(err)
	}
	code := m.Run()
	dev.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

func newWorld(t *testing.T, allowed func(keyrelease.KeyRef) bool) *world {
	t.Helper()
	return newWorldWith(t, allowed, sidecar.Options{Attest: true})
}

// newWorldWith is newWorld with handler options (Backend, Logger and Audit
// are filled in).
func newWorldWith(t *testing.T, allowed func(keyrelease.KeyRef) bool, opts sidecar.Options, extraCAs ...string) *world {
	t.Helper()
	cfg, err := config.Load(filepath.Join(dev.Dir, devstack.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	hc, pool, err := azauth.HTTPClient(append([]string{dev.CAFile}, extraCAs...))
	if err != nil {
		t.Fatal(err)
	}
	cred, err := azauth.Credential(cfg.Identity, hc)
	if err != nil {
		t.Fatal(err)
	}
	tee := &attest.Fake{Device: dev.Device, Endorsements: [][]byte{dev.Endorsement}}
	// The devstack's vault is a configured key's vault, as in skrfs.yaml.
	vault := &akv.Client{Credential: cred, Transport: hc, Roots: pool, Hosts: []string{hostOf(dev.VaultURL)}}
	r := &skr.Releaser{Evidence: evidenceSource{tee}, MAA: &maa.Client{BaseURL: dev.MAAURL, HTTPClient: hc}, Vault: vault}
	c := cache.New(r, cache.Options{})
	st := &sidecar.Stack{TEE: tee, HTTPClient: hc, MAA: dev.MAAURL, Default: c, DefaultSKR: r, Vault: vault, Allowed: allowed}
	t.Cleanup(func() { st.Close(); c.Close(); r.Close() })
	audit := &syncBuf{}
	opts.Backend, opts.Logger, opts.Audit = st, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel), zerolog.New(audit)
	srv := httptest.NewServer(sidecar.Handler(opts))
	t.Cleanup(srv.Close)
	return &world{dev: dev, url: srv.URL, stack: st, audit: audit}
}

type evidenceSource struct{ p *attest.Fake }

func (e evidenceSource) Evidence(ctx context.Context, rd [64]byte) (maa.Evidence, error) {
	ev, err := e.p.Evidence(ctx, rd)
	if err != nil {
		return maa.Evidence{}, err
	}
	return maa.Evidence{Report: ev.Report, CertChainPEM: ev.CertChainPEM(), Endorsements: ev.Endorsements}, nil
}

// call sends a request and returns the status and the decoded JSON object.
func (w *world) call(t *testing.T, method, path, body string) (int, map[string]string) {
	t.Helper()
	req, err := http.NewRequest(method, w.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]string
	// Every answer, errors included (404 and 405 too), is a JSON object.
	if json.Unmarshal(b, &out) != nil || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("%s %s: %d: body is not a JSON object of strings (%s): %s", method, path, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	return resp.StatusCode, out
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func hostOf(u string) string { return strings.TrimPrefix(u, "https://") }

// wantReportData checks REPORT_DATA (offset 0x50) of a raw report.
func wantReportData(t *testing.T, report, runtimeData []byte) {
	t.Helper()
	if len(report) != 1184 {
		t.Fatalf("report of %d bytes", len(report))
	}
	h := sha256.Sum256(runtimeData)
	want := append(h[:], make([]byte, 32)...)
	if got := report[0x50:0x90]; !bytes.Equal(got, want) {
		t.Fatalf("REPORT_DATA %x, want %x", got, want)
	}
}

func TestStatusAndErrors(t *testing.T) {
	w := newWorld(t, nil)
	vault := hostOf(w.dev.VaultURL)
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		want                     map[string]string // exact body, or nil
		wantErr                  string            // substring of "error"
	}{
		{name: "status", method: "GET", path: "/status", status: 200, want: map[string]string{"message": "Status OK"}},
		{name: "raw bad JSON", method: "POST", path: "/attest/raw", body: `{"runtime_data":`, status: 400, wantErr: "invalid JSON"},
		{name: "raw bad base64", method: "POST", path: "/attest/raw", body: `{"runtime_data":"%%%"}`, status: 400, wantErr: "not base64"},
		{name: "combined bad base64", method: "POST", path: "/attest/combined", body: `{"runtime_data":"%%%"}`, status: 400, wantErr: "not base64"},
		{name: "maa not JSON", method: "POST", path: "/attest/maa", body: `{"maa_endpoint":"` + hostOf(w.dev.MAAURL) + `","runtime_data":"` + b64("not json") + `"}`,
			status: 400, wantErr: "must be base64 of JSON"},
		{name: "maa bad endpoint", method: "POST", path: "/attest/maa", body: `{"maa_endpoint":"a/b","runtime_data":"` + b64("{}") + `"}`,
			status: 400, wantErr: "not a host name"},
		{name: "release missing kid", method: "POST", path: "/key/release", body: `{"maa_endpoint":"` + hostOf(w.dev.MAAURL) + `","akv_endpoint":"` + vault + `"}`,
			status: 400, wantErr: "akv_endpoint and kid are required"},
		{name: "release bad kid", method: "POST", path: "/key/release", body: `{"akv_endpoint":"` + vault + `","kid":"a b"}`,
			status: 400, wantErr: "invalid key reference"},
		{name: "release denied names the claim", method: "POST", path: "/key/release",
			body:   `{"maa_endpoint":"` + hostOf(w.dev.MAAURL) + `","akv_endpoint":"` + vault + `","kid":"denied","access_token":""}`,
			status: 403, wantErr: "secure key release failed: keyrelease: release denied"},
		{name: "release unknown key", method: "POST", path: "/key/release",
			body:   `{"maa_endpoint":"` + hostOf(w.dev.MAAURL) + `","akv_endpoint":"` + vault + `","kid":"no-such-key"}`,
			status: 403, wantErr: "keyrelease: key not found"},
		{name: "release with a bad caller token", method: "POST", path: "/key/release",
			body:   `{"maa_endpoint":"` + hostOf(w.dev.MAAURL) + `","akv_endpoint":"` + vault + `","kid":"demo-oct","access_token":"not-a-token"}`,
			status: 403, wantErr: "HTTP 401"},
		{name: "raw without runtime_data", method: "POST", path: "/attest/raw", body: `{}`, status: 400,
			want: map[string]string{"error": "invalid request format: runtime_data is required"}},
		{name: "raw with empty runtime_data", method: "POST", path: "/attest/raw", body: `{"runtime_data":""}`, status: 400,
			want: map[string]string{"error": "invalid request format: runtime_data is required"}},
		{name: "combined without runtime_data", method: "POST", path: "/attest/combined", body: `{"maa_endpoint":"x"}`, status: 400,
			want: map[string]string{"error": "invalid request format: runtime_data is required"}},
		{name: "wrong method", method: "GET", path: "/key/release", status: 405, wantErr: "method GET not allowed on /key/release"},
		{name: "wrong method status", method: "POST", path: "/status", status: 405, wantErr: "use GET"},
		{name: "unknown path", method: "GET", path: "/key/other", status: 404, want: map[string]string{"error": "no such path: /key/other"}},
		{name: "root", method: "POST", path: "/", status: 404, wantErr: "no such path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := w.call(t, tc.method, tc.path, tc.body)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %v", status, tc.status, body)
			}
			if tc.want != nil && !mapsEqual(body, tc.want) {
				t.Fatalf("body %v, want %v", body, tc.want)
			}
			if tc.wantErr != "" && (len(body) != 1 || !strings.Contains(body["error"], tc.wantErr)) {
				t.Fatalf("body %v, want only an error containing %q", body, tc.wantErr)
			}
		})
	}
	// The denial carries the vault's reason, which names the failing claim.
	_, body := w.call(t, "POST", "/key/release", `{"maa_endpoint":"`+hostOf(w.dev.MAAURL)+`","akv_endpoint":"`+vault+`","kid":"denied"}`)
	if !strings.Contains(body["error"], "x-ms-sevsnpvm-hostdata") {
		t.Fatalf("denial does not name the claim: %v", body)
	}
	// Refused releases are audited with their reason; malformed requests,
	// which name no key, are not.
	events := w.audit.events(t)
	last := events[len(events)-1]
	if len(events) != 4 || last["outcome"] != "denied" || last["key"] != w.dev.VaultURL+"/keys/denied" ||
		!strings.Contains(last["reason"].(string), "x-ms-sevsnpvm-hostdata") {
		t.Fatalf("audit events of refused releases: %v", events)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestAttestEndpoints(t *testing.T) {
	w := newWorld(t, nil)
	runtime := []byte(`{"keys":[{"kty":"oct","k":"AAAA"}],"x":"-_"}`)
	// Standard base64 as documented, and URL-safe as the sidecar's own
	// tests send it.
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		rd := enc.EncodeToString(runtime)

		status, body := w.call(t, "POST", "/attest/raw", `{"runtime_data":"`+rd+`"}`)
		if status != 200 || len(body) != 1 {
			t.Fatalf("/attest/raw: %d %v", status, body)
		}
		report, err := hex.DecodeString(body["report"])
		if err != nil {
			t.Fatal(err)
		}
		wantReportData(t, report, runtime)

		status, body = w.call(t, "POST", "/attest/combined", `{"runtime_data":"`+rd+`"}`)
		if status != 200 || len(body) != 4 {
			t.Fatalf("/attest/combined: %d %v", status, body)
		}
		report, err = base64.StdEncoding.DecodeString(body["evidence"])
		if err != nil {
			t.Fatal(err)
		}
		wantReportData(t, report, runtime)
		pemChain, err := base64.StdEncoding.DecodeString(body["endorsements"])
		if err != nil {
			t.Fatal(err)
		}
		chain, err := evidence.ParseChainPEM(pemChain)
		if err != nil {
			t.Fatal(err)
		}
		// The report verifies against the certificates given with it.
		if _, err := evidence.Verify(report, chain, evidence.Options{ExtraRoots: w.dev.Device.Roots(), RuntimeData: runtime}); err != nil {
			t.Fatalf("combined evidence does not verify: %v", err)
		}
		if got := body["endorsed_tcb"]; len(got) != 16 || got != reportedTCB(report) {
			t.Fatalf("endorsed_tcb %q, report says %s", got, reportedTCB(report))
		}
		if body["uvm_endorsements"] != base64.StdEncoding.EncodeToString(w.dev.Endorsement) {
			t.Fatal("uvm_endorsements is not the base64 of the UVM endorsement")
		}

		status, body = w.call(t, "POST", "/attest/maa", `{"maa_endpoint":"`+hostOf(w.dev.MAAURL)+`","runtime_data":"`+rd+`"}`)
		if status != 200 || len(body) != 1 {
			t.Fatalf("/attest/maa: %d %v", status, body)
		}
		mc := &maa.Client{BaseURL: w.dev.MAAURL, HTTPClient: w.dev.HTTPClient}
		tok, err := mc.Verify(context.Background(), body["token"], runtime)
		if err != nil {
			t.Fatalf("token: %v", err)
		}
		h := sha256.Sum256(runtime)
		if got := tok.Claims["x-ms-sevsnpvm-reportdata"]; got != hex.EncodeToString(append(h[:], make([]byte, 32)...)) {
			t.Fatalf("x-ms-sevsnpvm-reportdata %v", got)
		}
	}
}

func reportedTCB(report []byte) string {
	var b [8]byte
	for i := range 8 {
		b[7-i] = report[0x180+i]
	}
	return hex.EncodeToString(b[:])
}

// decodeKey parses the double-encoded JWK of a /key/release answer.
func decodeKey(t *testing.T, s string) *keyrelease.Key {
	t.Helper()
	var jwk map[string]any
	if err := json.Unmarshal([]byte(s), &jwk); err != nil {
		t.Fatalf("key is not a JWK serialised as a string: %v", err)
	}
	k, err := keyrelease.ParseKey([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// openObject opens a seeded object with a key and compares it with the
// original.
func openObject(t *testing.T, dev *devstack.Stack, name string, k *keyrelease.Key) {
	t.Helper()
	obj, err := os.ReadFile(filepath.Join(dev.Dir, "store", "data", name))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(dev.Dir, "plain", "data", name))
	if err != nil {
		t.Fatal(err)
	}
	got, err := crypto.Open(obj, k.KEK(), name)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%s does not open with the released key: %v", name, err)
	}
}

func TestKeyRelease(t *testing.T) {
	w := newWorld(t, nil)
	vault := hostOf(w.dev.VaultURL)
	maaHost := hostOf(w.dev.MAAURL)
	for _, tc := range []struct {
		name, kid string
		kty       string
	}{
		{"rsa", "demo-rsa", "RSA"},
		{"oct", "demo-oct", "oct"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := w.call(t, "POST", "/key/release",
				`{"maa_endpoint":"`+maaHost+`","akv_endpoint":"`+vault+`","kid":"`+tc.kid+`","access_token":""}`)
			if status != 200 || len(body) != 1 {
				t.Fatalf("%d %v", status, body)
			}
			k := decodeKey(t, body["key"])
			if string(k.Type) != tc.kty || !k.IsPrivate() || k.Ref.Name != tc.kid || k.Ref.Version == "" {
				t.Fatalf("released %s %s private=%v", k.Type, k.Ref, k.IsPrivate())
			}
			// key_ops are copied from the release payload, as upstream
			// does: they are the vault key's (upstream's tests/skr/test.py
			// asserts exactly this).
			var jwk struct {
				KeyOps []string `json:"key_ops"`
			}
			json.Unmarshal([]byte(body["key"]), &jwk)
			if want := vaultKeyOps(t, w.dev, tc.kid); len(want) == 0 || !slices.Equal(jwk.KeyOps, want) {
				t.Fatalf("released JWK has key_ops %v, the vault key %v", jwk.KeyOps, want)
			}
			if tc.kid == "demo-rsa" {
				openObject(t, w.dev, "hello.txt", k)
			}
		})
	}
	// Released keys are cached: asking again does not call the vault.
	before := w.dev.Vault.Stats("demo-oct").Allowed
	for range 3 {
		if status, body := w.call(t, "POST", "/key/release", `{"maa_endpoint":"`+maaHost+`","akv_endpoint":"`+vault+`","kid":"demo-oct"}`); status != 200 {
			t.Fatalf("%d %v", status, body)
		}
	}
	if after := w.dev.Vault.Stats("demo-oct").Allowed; after != before {
		t.Fatalf("cached key released again: %d -> %d vault releases", before, after)
	}
	// A caller's own token is used for the vault, and bypasses the cache.
	tok, _, err := w.dev.Identity.Mint("https://vault.azure.net", devstack.ClientID)
	if err != nil {
		t.Fatal(err)
	}
	status, body := w.call(t, "POST", "/key/release", `{"maa_endpoint":"`+maaHost+`","akv_endpoint":"`+vault+`","kid":"demo-oct","access_token":"`+tok+`"}`)
	if status != 200 {
		t.Fatalf("with a caller token: %d %v", status, body)
	}
	if after := w.dev.Vault.Stats("demo-oct").Allowed; after != before+1 {
		t.Fatalf("a release with a caller token was not sent to the vault: %d -> %d", before, after)
	}

	// One audit event per release request, naming the key and its version
	// and whether the caller brought a token; never the key or the token.
	events := w.audit.events(t)
	if len(events) != 6 {
		t.Fatalf("%d audit events, want 6: %v", len(events), events)
	}
	for i, e := range events {
		wantKey := w.dev.VaultURL + "/keys/demo-oct"
		if i == 0 {
			wantKey = w.dev.VaultURL + "/keys/demo-rsa"
		}
		if e["event"] != "api_key_release" || e["outcome"] != "allowed" || e["key"] != wantKey || e["key_version"] == "" ||
			e["caller_token"] != (i == 5) || !strings.HasPrefix(e["remote"].(string), "127.0.0.1:") {
			t.Errorf("audit event %d: %v", i, e)
		}
	}
	w.audit.mu.Lock()
	raw := w.audit.b.String()
	w.audit.mu.Unlock()
	if strings.Contains(raw, tok) || strings.Contains(raw, `"k"`) || strings.Contains(raw, `"d"`) {
		t.Fatal("the audit log holds a token or key material")
	}
}

func TestAllowList(t *testing.T) {
	w := newWorld(t, func(r keyrelease.KeyRef) bool { return r.Name == "demo-oct" })
	vault := hostOf(w.dev.VaultURL)
	before := w.dev.Vault.Stats("demo-rsa")
	status, body := w.call(t, "POST", "/key/release", `{"akv_endpoint":"`+vault+`","kid":"demo-rsa"}`)
	if status != 403 || !strings.Contains(body["error"], "not allowed by configuration") {
		t.Fatalf("key outside the allow-list: %d %v", status, body)
	}
	if w.dev.Vault.Stats("demo-rsa") != before {
		t.Fatal("a refused key reached the vault")
	}
	// An empty maa_endpoint means the configured instance.
	if status, body := w.call(t, "POST", "/key/release", `{"akv_endpoint":"`+vault+`","kid":"demo-oct"}`); status != 200 {
		t.Fatalf("allowed key: %d %v", status, body)
	}
}

// TestOtherInstance names the devstack's MAA by another host name: skrfs
// treats it as another instance, with its own releaser and cache, and
// verifies its tokens against that name, so the devstack's tokens (issued
// as https://127.0.0.1:P) are refused rather than trusted.
func TestOtherInstance(t *testing.T) {
	w := newWorld(t, nil)
	other := strings.Replace(hostOf(w.dev.MAAURL), "127.0.0.1", "localhost", 1)
	rd := b64(`{"keys":[]}`)
	status, body := w.call(t, "POST", "/attest/maa", `{"maa_endpoint":"`+other+`","runtime_data":"`+rd+`"}`)
	if status != 403 || !strings.Contains(body["error"], "attestation failed: ") || !strings.Contains(body["error"], `"iss" not satisfied`) {
		t.Fatalf("token of another issuer: %d %v", status, body)
	}
	before := w.dev.Vault.Stats("demo-oct")
	status, body = w.call(t, "POST", "/key/release", `{"maa_endpoint":"`+other+`","akv_endpoint":"`+hostOf(w.dev.VaultURL)+`","kid":"demo-oct"}`)
	if status != 403 || !strings.Contains(body["error"], "secure key release failed: keyrelease: attestation failed") {
		t.Fatalf("release through another instance: %d %v", status, body)
	}
	if w.dev.Vault.Stats("demo-oct") != before {
		t.Fatal("a release without a valid token reached the vault")
	}
	// The configured instance, named by its own host or left empty, still works.
	for _, maaHost := range []string{hostOf(w.dev.MAAURL), strings.ToUpper(hostOf(w.dev.MAAURL)), ""} {
		if status, body := w.call(t, "POST", "/key/release", `{"maa_endpoint":"`+maaHost+`","akv_endpoint":"`+hostOf(w.dev.VaultURL)+`","kid":"demo-oct"}`); status != 200 {
			t.Fatalf("maa_endpoint %q: %d %v", maaHost, status, body)
		}
	}
}

// TestAttestOff: without serve.attest (or any_key), the attest routes,
// which would let a caller get evidence and tokens bound to its own key and
// release keys outside the allow-list, answer 403 saying how to turn them
// on; /status and /key/release still work.
func TestAttestOff(t *testing.T) {
	w := newWorldWith(t, nil, sidecar.Options{})
	rd := b64(`{"keys":[]}`)
	for _, path := range []string{"/attest/raw", "/attest/combined", "/attest/maa"} {
		status, body := w.call(t, "POST", path, `{"maa_endpoint":"`+hostOf(w.dev.MAAURL)+`","runtime_data":"`+rd+`"}`)
		if status != 403 || len(body) != 1 || !strings.Contains(body["error"], "set serve.attest: true (or serve.any_key: true)") {
			t.Fatalf("%s with the attest routes off: %d %v", path, status, body)
		}
	}
	if status, body := w.call(t, "GET", "/status", ""); status != 200 {
		t.Fatalf("/status: %d %v", status, body)
	}
	if status, body := w.call(t, "POST", "/key/release", `{"akv_endpoint":"`+hostOf(w.dev.VaultURL)+`","kid":"demo-oct"}`); status != 200 {
		t.Fatalf("/key/release: %d %v", status, body)
	}
}

// TestCombinedReportShape: serve.combined_report answers the older
// upstream shape, the same four fields as a JSON string under
// combined_report.
func TestCombinedReportShape(t *testing.T) {
	w := newWorldWith(t, nil, sidecar.Options{Attest: true, CombinedReport: true})
	runtime := []byte(`{"keys":[]}`)
	status, body := w.call(t, "POST", "/attest/combined", `{"runtime_data":"`+base64.StdEncoding.EncodeToString(runtime)+`"}`)
	if status != 200 || len(body) != 1 || body["combined_report"] == "" {
		t.Fatalf("%d %v", status, body)
	}
	var inner map[string]string
	if err := json.Unmarshal([]byte(body["combined_report"]), &inner); err != nil {
		t.Fatalf("combined_report is not a JSON string of an object: %v", err)
	}
	report, err := base64.StdEncoding.DecodeString(inner["evidence"])
	if err != nil {
		t.Fatal(err)
	}
	wantReportData(t, report, runtime)
	for _, f := range []string{"endorsed_tcb", "endorsements", "uvm_endorsements"} {
		if inner[f] == "" {
			t.Fatalf("combined_report lacks %s: %v", f, inner)
		}
	}
}

// fakeVault is a vault on loopback that is not Key Vault: it answers every
// request with a 401 challenge naming resource, and counts the requests
// and the Authorization headers it sees.
type fakeVault struct {
	srv             *httptest.Server
	caFile          string
	requests, authz int
	mu              sync.Mutex
}

func newFakeVault(t *testing.T, resource string) *fakeVault {
	f := &fakeVault{}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests++
		if r.Header.Get("Authorization") != "" {
			f.authz++
		}
		f.mu.Unlock()
		w.Header().Set("WWW-Authenticate", `Bearer authorization="https://login.microsoftonline.com/`+devstack.TenantID+`" resource="`+resource+`"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(f.srv.Close)
	// Trusted by skrfs's HTTP client, so that only skrfs's own checks
	// stand between the fake and a token.
	f.caFile = filepath.Join(t.TempDir(), "fake-vault.pem")
	if err := os.WriteFile(f.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fakeVault) counts() (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests, f.authz
}

// TestCallerVaultGetsNoToken: with any_key, a caller names the vault. A
// vault that is neither a configured key's vault nor in an Azure vault
// domain is refused with 403 before anything is sent to it, whatever its
// challenge would name: the reviewer received an MI token for Azure
// Resource Manager at such a vault.
func TestCallerVaultGetsNoToken(t *testing.T) {
	for _, resource := range []string{"https://management.azure.com", "https://vault.azure.net"} {
		t.Run(resource, func(t *testing.T) {
			f := newFakeVault(t, resource)
			w := newWorldWith(t, nil, sidecar.Options{Attest: true}, f.caFile)
			host := strings.TrimPrefix(f.srv.URL, "https://")
			for _, tokenField := range []string{"", "caller-token"} {
				status, body := w.call(t, "POST", "/key/release",
					`{"maa_endpoint":"`+hostOf(w.dev.MAAURL)+`","akv_endpoint":"`+host+`","kid":"k","access_token":"`+tokenField+`"}`)
				if status != 403 || !strings.Contains(body["error"], "neither the vault of a configured key nor in an Azure Key Vault") {
					t.Fatalf("release at a caller-chosen vault: %d %v", status, body)
				}
			}
			if requests, authz := f.counts(); requests != 0 || authz != 0 {
				t.Fatalf("the caller's vault saw %d requests, %d with a token", requests, authz)
			}
		})
	}
}

// vaultKeyOps reads a key's key_ops from the devstack's vault.
func vaultKeyOps(t *testing.T, dev *devstack.Stack, name string) []string {
	t.Helper()
	tok, _, err := dev.Identity.Mint("https://vault.azure.net", devstack.ClientID)
	if err != nil {
		t.Fatal(err)
	}
	hc, _, err := azauth.HTTPClient([]string{dev.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", dev.VaultURL+"/keys/"+name+"?api-version=7.4", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var bundle struct {
		Key struct {
			KeyOps []string `json:"key_ops"`
		} `json:"key"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&bundle); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET key %s: %d %v", name, resp.StatusCode, err)
	}
	return bundle.Key.KeyOps
}
