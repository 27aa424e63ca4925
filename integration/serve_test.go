package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/internal/devstack"
	"github.com/skrfs/skrfs/keyrelease"
)

// These tests run `skrfs serve` and `skrfs mount` with their HTTP endpoints
// against the in-process devstack, and send requests exactly as
// protocol.md section 9.3 describes them.

// post sends a JSON body and returns the status and the decoded object.
func post(t *testing.T, url, body string) (int, map[string]string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("POST %s: %d: body is not a JSON object of strings: %v", url, resp.StatusCode, err)
	}
	return resp.StatusCode, out
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric returns the value of one series ("name" or `name{labels}`, labels
// in Prometheus's sorted order) from a /metrics page, failing if absent.
func metric(t *testing.T, page, series string) float64 {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(page))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", series, err)
			}
			return f
		}
	}
	t.Fatalf("no series %s on the metrics page", series)
	return 0
}

// freeAddr returns a loopback address with a port that was free a moment
// ago, for daemons that take a fixed address.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func hostOf(u string) string { return strings.TrimPrefix(u, "https://") }

func TestServeSidecarAPI(t *testing.T) {
	s := startDevstack(t)
	cfg := configWith(t, s, "serve:\n  attest: true\n")
	ready := filepath.Join(t.TempDir(), "ready")
	d := execDaemon(t, "serve", "--config", cfg, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--ready-file", ready)
	waitReady(t, ready, d)
	b, err := os.ReadFile(ready)
	if err != nil {
		t.Fatal(err)
	}
	addrs := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(addrs) != 2 {
		t.Fatalf("ready file %q", b)
	}
	api, mon := "http://"+addrs[0], "http://"+addrs[1]
	maaHost, vault := hostOf(s.MAAURL), hostOf(s.VaultURL)

	if code, body := get(t, api+"/status"); code != 200 || body != `{"message":"Status OK"}` {
		t.Fatalf("/status: %d %q", code, body)
	}
	rd := base64.StdEncoding.EncodeToString([]byte(`{"keys":[]}`))
	code, out := post(t, api+"/attest/raw", `{"runtime_data":"`+rd+`"}`)
	if report, err := hex.DecodeString(out["report"]); code != 200 || err != nil || len(report) != 1184 {
		t.Fatalf("/attest/raw: %d %v", code, out)
	}
	code, out = post(t, api+"/attest/maa", `{"maa_endpoint":"`+maaHost+`","runtime_data":"`+rd+`"}`)
	if code != 200 || strings.Count(out["token"], ".") != 2 {
		t.Fatalf("/attest/maa: %d %v", code, out)
	}
	// The released key opens the objects sealed for it.
	code, out = post(t, api+"/key/release", `{"maa_endpoint":"`+maaHost+`","akv_endpoint":"`+vault+`","kid":"demo-rsa","access_token":""}`)
	if code != 200 {
		t.Fatalf("/key/release: %d %v", code, out)
	}
	k, err := keyrelease.ParseKey([]byte(out["key"]))
	if err != nil {
		t.Fatalf("key is not a JWK string: %v", err)
	}
	// key_ops come from the release payload, as upstream's do.
	if !strings.Contains(out["key"], `"key_ops":["encrypt","decrypt","sign","verify","wrapKey","unwrapKey"]`) || len(k.Ops) != 6 {
		t.Fatalf("released JWK without the vault key's key_ops: ops %v", k.Ops)
	}
	obj, _ := os.ReadFile(filepath.Join(s.Dir, "store", "data", "hello.txt"))
	want, _ := os.ReadFile(filepath.Join(s.Dir, "plain", "data", "hello.txt"))
	if got, err := crypto.Open(obj, k.KEK(), "hello.txt"); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("released key does not open hello.txt: %v", err)
	}
	code, out = post(t, api+"/key/release", `{"maa_endpoint":"`+maaHost+`","akv_endpoint":"`+vault+`","kid":"denied"}`)
	if code != 403 || !strings.HasPrefix(out["error"], "secure key release failed: ") || !strings.Contains(out["error"], "claim x-ms-sevsnpvm-hostdata") {
		t.Fatalf("denied key: %d %v", code, out)
	}
	// A second release comes from the cache: one vault release in all.
	if code, out = post(t, api+"/key/release", `{"maa_endpoint":"`+maaHost+`","akv_endpoint":"`+vault+`","kid":"demo-rsa"}`); code != 200 {
		t.Fatalf("/key/release again: %d %v", code, out)
	}
	if n := s.Vault.Stats("demo-rsa").Allowed; n != 1 {
		t.Fatalf("vault released demo-rsa %d times, want 1 (cached)", n)
	}

	if code, _ := get(t, mon+"/readyz"); code != 200 {
		t.Fatalf("/readyz: %d", code)
	}
	code, page := get(t, mon+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for series, want := range map[string]float64{
		`skrfs_api_requests_total{code="200",path="/key/release"}`: 2,
		`skrfs_api_requests_total{code="403",path="/key/release"}`: 1,
		`skrfs_api_requests_total{code="200",path="/status"}`:      1,
		`skrfs_key_cache_lookups_total{result="hit"}`:              1,
		`skrfs_key_releases_total{outcome="success"}`:              1,
		`skrfs_key_releases_total{outcome="denied"}`:               1,
	} {
		if got := metric(t, page, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if metric(t, page, `skrfs_attestations_total{outcome="success"}`) < 1 {
		t.Error("no successful attestation counted")
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-d.exited; err != nil {
		t.Fatalf("serve exited with %v:\n%s", err, d.out.Bytes())
	}
}

func TestServeRefusesNetworkAddress(t *testing.T) {
	s := startDevstack(t)
	r := run(t, skrfsBin(t), "serve", "--config", filepath.Join(s.Dir, devstack.ConfigFile), "--listen", "0.0.0.0:0")
	if r.code != 2 || !strings.Contains(r.stderr, "not a loopback address") {
		t.Fatalf("serve on 0.0.0.0: %d %s", r.code, r.stderr)
	}
}

// auditEvent is one line of the audit log.
type auditEvent struct {
	Event, Path, Key, KeyVersion, Outcome, Errno string
	UID, PID, TID                                int
	Message                                      string `json:"message"`
}

func (e *auditEvent) UnmarshalJSON(b []byte) error {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	str := func(k string) string { s, _ := m[k].(string); return s }
	num := func(k string) int { f, _ := m[k].(float64); return int(f) }
	*e = auditEvent{Event: str("event"), Path: str("path"), Key: str("key"), KeyVersion: str("key_version"),
		Outcome: str("outcome"), Errno: str("errno"), UID: num("uid"), PID: num("pid"), TID: num("tid"), Message: str("message")}
	return nil
}

func TestMountAuditMetricsAndAPI(t *testing.T) {
	requireFUSE(t)
	s := startDevstack(t)
	auditFile := filepath.Join(t.TempDir(), "audit.jsonl")
	apiAddr, monAddr := freeAddr(t), freeAddr(t)
	cfg := configWith(t, s, fmt.Sprintf("audit:\n  file: %s\nmetrics:\n  listen: %s\nserve:\n  listen: %s\n", auditFile, monAddr, apiAddr))
	d := mountDaemon(t, cfg)

	octKey, err := os.ReadFile(filepath.Join(d.mnt, "keys", "demo-oct"))
	if err != nil || len(octKey) != 32 {
		t.Fatalf("keys/demo-oct: %d bytes, %v", len(octKey), err)
	}
	jwk, err := os.ReadFile(filepath.Join(d.mnt, "keys", "demo-rsa.jwk"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(filepath.Join(d.mnt, "keys", "denied")); errnoOf(err) != syscall.EACCES {
		t.Fatalf("keys/denied: %v, want EACCES", err)
	}
	// Two handles open at once: one first open of the object.
	f1, err := os.Open(filepath.Join(d.mnt, "data", "hello.txt"))
	if err != nil {
		t.Fatal(err)
	}
	f2, err := os.Open(filepath.Join(d.mnt, "data", "hello.txt"))
	if err != nil {
		t.Fatal(err)
	}
	hello, err := io.ReadAll(f2)
	if err != nil {
		t.Fatal(err)
	}
	f2.Close()
	f1.Close()

	// The API in the mount's process shares its key cache: demo-oct was
	// released for keys/demo-oct, and is not released again.
	before := s.Vault.Stats("demo-oct").Allowed
	code, out := post(t, "http://"+apiAddr+"/key/release", `{"maa_endpoint":"`+hostOf(s.MAAURL)+`","akv_endpoint":"`+hostOf(s.VaultURL)+`","kid":"demo-oct"}`)
	if code != 200 {
		t.Fatalf("/key/release through the mount: %d %v", code, out)
	}
	if k, err := keyrelease.ParseKey([]byte(out["key"])); err != nil || !bytes.Equal(k.Oct, octKey) {
		t.Fatalf("the API's key differs from keys/demo-oct: %v", err)
	}
	if after := s.Vault.Stats("demo-oct").Allowed; after != before {
		t.Fatalf("the API released demo-oct again (%d -> %d): the cache is not shared", before, after)
	}

	// Audit events: who opened what with which key, and nothing secret.
	raw, err := os.ReadFile(auditFile)
	if err != nil {
		t.Fatal(err)
	}
	var events []auditEvent
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var e auditEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit line is not JSON: %q", line)
		}
		// pid is the opening process; tid the thread, when it differs.
		if e.Message != "audit" || (e.Event != "api_key_release" && (e.UID != os.Getuid() || e.PID != os.Getpid() || e.TID == 0)) {
			t.Errorf("audit event without the caller: %s", line)
		}
		events = append(events, e)
	}
	wantEvents := []auditEvent{
		{Event: "key_open", Path: "keys/demo-oct", Key: s.VaultURL + "/keys/demo-oct", Outcome: "allowed"},
		{Event: "key_open", Path: "keys/demo-rsa.jwk", Key: s.VaultURL + "/keys/demo-rsa", Outcome: "allowed"},
		{Event: "key_open", Path: "keys/denied", Key: s.VaultURL + "/keys/denied", Outcome: "denied", Errno: "EACCES"},
		{Event: "object_open", Path: "data/hello.txt", Key: s.VaultURL + "/keys/demo-rsa", Outcome: "allowed"},
		{Event: "api_key_release", Key: s.VaultURL + "/keys/demo-oct", Outcome: "allowed"}, // the API shares the audit log
	}
	if len(events) != len(wantEvents) {
		t.Fatalf("%d audit events, want %d:\n%s", len(events), len(wantEvents), raw)
	}
	for i, w := range wantEvents {
		e := events[i]
		if e.Event != w.Event || e.Path != w.Path || e.Key != w.Key || e.Outcome != w.Outcome || e.Errno != w.Errno {
			t.Errorf("audit event %d: %+v, want %+v", i, e, w)
		}
		if w.Outcome == "allowed" && e.KeyVersion == "" {
			t.Errorf("audit event %d has no key version", i)
		}
	}
	var rsa struct{ D, P, Q string }
	json.Unmarshal(jwk, &rsa)
	if rsa.D == "" {
		t.Fatal("demo-rsa.jwk has no private exponent")
	}
	for name, secret := range map[string][]byte{
		"oct key": octKey, "oct key hex": []byte(hex.EncodeToString(octKey)),
		"oct key base64": []byte(base64.StdEncoding.EncodeToString(octKey)), "oct key base64url": []byte(base64.RawURLEncoding.EncodeToString(octKey)),
		"RSA d": []byte(rsa.D), "RSA p": []byte(rsa.P), "plaintext": hello,
	} {
		if bytes.Contains(raw, secret) {
			t.Errorf("the %s appears in the audit log", name)
		}
	}

	// Metrics of the mount.
	mon := "http://" + monAddr
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _ := get(t, mon+p); code != 200 {
			t.Fatalf("%s: %d", p, code)
		}
	}
	_, page := get(t, mon+"/metrics")
	if got := metric(t, page, `skrfs_fuse_errors_total{errno="EACCES",op="open"}`); got != 1 {
		t.Errorf("EACCES opens counted %v, want 1", got)
	}
	if got := metric(t, page, "skrfs_served_bytes_total"); got != float64(len(hello)) {
		t.Errorf("served bytes %v, want %d", got, len(hello))
	}
	if metric(t, page, "skrfs_storage_fetched_bytes_total") < float64(len(hello)) || metric(t, page, "skrfs_storage_fetches_total") < 1 {
		t.Error("storage fetches not counted")
	}
	if metric(t, page, `skrfs_storage_fetch_duration_seconds_count{outcome="success"}`) != metric(t, page, "skrfs_storage_fetches_total") {
		t.Error("not every storage fetch was timed")
	}
	if metric(t, page, `skrfs_key_cache_lookups_total{result="miss"}`) < 3 || metric(t, page, `skrfs_key_releases_total{outcome="denied"}`) != 1 {
		t.Errorf("key cache counters wrong:\n%s", grepLines(page, "skrfs_key_"))
	}
}

func grepLines(page, prefix string) string {
	var b strings.Builder
	for _, l := range strings.Split(page, "\n") {
		if strings.HasPrefix(l, prefix) {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// startServe runs `skrfs serve` on a free port with cfg and returns the
// API's base URL.
func startServe(t *testing.T, cfg string) (*daemonProc, string) {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	d := execDaemon(t, "serve", "--config", cfg, "--listen", "127.0.0.1:0", "--ready-file", ready)
	waitReady(t, ready, d)
	b, err := os.ReadFile(ready)
	if err != nil {
		t.Fatal(err)
	}
	return d, "http://" + strings.SplitN(string(b), "\n", 2)[0]
}

func TestServeAnyKey(t *testing.T) {
	s := startDevstack(t)
	// A releasable key that the configuration does not list.
	kc, err := s.KeysClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	ct := "application/json; charset=utf-8"
	if _, err := kc.CreateKey(context.Background(), "unlisted", azkeys.CreateKeyParameters{Kty: to(azkeys.KeyTypeOctHSM), KeySize: to(int32(256)),
		KeyAttributes: &azkeys.KeyAttributes{Exportable: to(true)},
		ReleasePolicy: &azkeys.KeyReleasePolicy{ContentType: &ct, EncodedPolicy: s.Policy(hex.EncodeToString(s.TEE.HostData[:]))}}, nil); err != nil {
		t.Fatal(err)
	}
	req := `{"maa_endpoint":"` + hostOf(s.MAAURL) + `","akv_endpoint":"` + hostOf(s.VaultURL) + `","kid":"unlisted"}`
	rd := base64.StdEncoding.EncodeToString([]byte(`{"keys":[]}`))
	for _, tc := range []struct {
		name, extra  string
		status       int
		inBody       string
		attestStatus int // of /attest/raw: off unless serve.attest or serve.any_key
	}{
		{"configured keys only (default)", "", 403, "key not allowed by configuration", 403},
		{"serve.attest", "serve:\n  attest: true\n", 403, "key not allowed by configuration", 200},
		{"serve.any_key", "serve:\n  any_key: true\n", 200, `"kty":"oct"`, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, api := startServe(t, configWith(t, s, tc.extra))
			code, out := post(t, api+"/key/release", req)
			if code != tc.status || !strings.Contains(out["error"]+out["key"], tc.inBody) {
				t.Fatalf("%d %v, want %d with %q", code, out, tc.status, tc.inBody)
			}
			code, out = post(t, api+"/attest/raw", `{"runtime_data":"`+rd+`"}`)
			if code != tc.attestStatus || (code == 403 && !strings.Contains(out["error"], "set serve.attest: true")) {
				t.Fatalf("/attest/raw: %d %v, want %d", code, out, tc.attestStatus)
			}
			d.stop(t)
		})
	}
}

func to[T any](v T) *T { return &v }
