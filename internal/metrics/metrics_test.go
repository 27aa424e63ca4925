package metrics

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/skrfs/skrfs/fs"
	"github.com/skrfs/skrfs/keyrelease/cache"
)

func scrape(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

func TestExportedSeries(t *testing.T) {
	m := New()
	st := fs.Stats{Fetches: 3, BytesFetched: 3000, Reads: 5, BytesServed: 2500, ChunksLoaded: 2, ChunkHits: 4, ChunkMisses: 1,
		Commits: 11, CommitConflicts: 2, SpilledChunks: 13, StagedBytes: 3 << 18,
		ManifestPublishes: 9, ManifestPublishFailures: 1, ManifestPublishConflicts: 4}
	m.WatchFS(func() fs.Stats { return st })
	cs := cache.Stats{Hits: 7, Misses: 2, NegativeHits: 1, Keys: 2, Refreshes: 1}
	cs.Releases.Succeeded = 2
	cs.Releases.Failed[cache.ClassDenied] = 1
	cs.Releases.Failed[cache.ClassTransient] = 3
	m.WatchKeyCache(func() cache.Stats { return cs })
	m.WatchAttestations(func() (int64, int64) { return 4, 1 })
	m.Fetched(20*time.Millisecond, nil)
	m.Fetched(time.Second, errors.New("boom"))
	m.Failed("open", syscall.EACCES)
	m.Failed("open", syscall.EACCES)
	m.Failed("read", syscall.EIO)
	m.ManifestLoaded("data", 7, nil)
	m.ManifestLoaded("data", 6, errors.New("rollback"))
	m.ManifestLoaded("data", 8, nil)

	_, page := scrape(t, m.Handler(), "/metrics")
	for _, tc := range []struct{ series, value string }{
		{"skrfs_storage_fetches_total", "3"},
		{`skrfs_manifest_loads_total{dataset="data",outcome="verified"}`, "2"},
		{`skrfs_manifest_loads_total{dataset="data",outcome="refused"}`, "1"},
		{`skrfs_manifest_epoch{dataset="data"}`, "8"},
		{"skrfs_storage_fetched_bytes_total", "3000"},
		{"skrfs_served_bytes_total", "2500"},
		{"skrfs_reads_total", "5"},
		{"skrfs_chunks_loaded_total", "2"},
		{`skrfs_chunk_cache_lookups_total{result="hit"}`, "4"},
		{`skrfs_chunk_cache_lookups_total{result="miss"}`, "1"},
		{"skrfs_commits_total", "11"},
		{"skrfs_commit_conflicts_total", "2"},
		{"skrfs_spilled_chunks_total", "13"},
		{"skrfs_staged_bytes", "786432"},
		{"skrfs_manifest_publishes_total", "9"},
		{"skrfs_manifest_publish_failures_total", "1"},
		{"skrfs_manifest_publish_conflicts_total", "4"},
		{`skrfs_key_cache_lookups_total{result="hit"}`, "7"},
		{`skrfs_key_cache_lookups_total{result="miss"}`, "2"},
		{`skrfs_key_cache_lookups_total{result="negative_hit"}`, "1"},
		{"skrfs_key_cache_keys", "2"},
		{"skrfs_key_cache_refreshes_total", "1"},
		{`skrfs_key_releases_total{outcome="success"}`, "2"},
		{`skrfs_key_releases_total{outcome="denied"}`, "1"},
		{`skrfs_key_releases_total{outcome="transient"}`, "3"},
		{`skrfs_key_releases_total{outcome="not_found"}`, "0"},
		{`skrfs_attestations_total{outcome="success"}`, "4"},
		{`skrfs_attestations_total{outcome="failure"}`, "1"},
		{`skrfs_storage_fetch_duration_seconds_count{outcome="success"}`, "1"},
		{`skrfs_storage_fetch_duration_seconds_count{outcome="error"}`, "1"},
		{`skrfs_storage_fetch_duration_seconds_bucket{outcome="success",le="0.032"}`, "1"},
		{`skrfs_storage_fetch_duration_seconds_bucket{outcome="success",le="0.016"}`, "0"},
		{`skrfs_fuse_errors_total{errno="EACCES",op="open"}`, "2"},
		{`skrfs_fuse_errors_total{errno="EIO",op="read"}`, "1"},
	} {
		if !strings.Contains(page, "\n"+tc.series+" "+tc.value+"\n") {
			t.Errorf("want %s %s", tc.series, tc.value)
		}
	}
	// Counters read at scrape time follow their source; the staging gauge
	// goes down as well as up.
	st.BytesServed = 9000
	st.Commits, st.StagedBytes = 12, 0
	_, page = scrape(t, m.Handler(), "/metrics")
	for _, want := range []string{"skrfs_served_bytes_total 9000", "skrfs_commits_total 12", "skrfs_staged_bytes 0"} {
		if !strings.Contains(page, "\n"+want+"\n") {
			t.Errorf("want %s: the series did not follow fs.Stats", want)
		}
	}
	for _, want := range []string{"# TYPE skrfs_staged_bytes gauge", "# TYPE skrfs_commits_total counter", "# TYPE skrfs_manifest_publish_conflicts_total counter"} {
		if !strings.Contains(page, "\n"+want+"\n") {
			t.Errorf("want %q", want)
		}
	}
	if !strings.Contains(page, "\ngo_goroutines ") || !strings.Contains(page, "\nprocess_resident_memory_bytes ") {
		t.Error("runtime and process metrics missing")
	}
	if n, err := testutil.GatherAndCount(m.Registry()); err != nil || n == 0 {
		t.Fatalf("registry does not gather: %v", err)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	m := New()
	h := m.Handler()
	for _, tc := range []struct {
		ready      bool
		path       string
		wantStatus int
	}{
		{false, "/healthz", 200},
		{false, "/readyz", 503},
		{true, "/readyz", 200},
		{true, "/healthz", 200},
		{false, "/readyz", 503}, // shutting down
	} {
		m.SetReady(tc.ready)
		if code, body := scrape(t, h, tc.path); code != tc.wantStatus {
			t.Errorf("ready=%v %s: %d %q, want %d", tc.ready, tc.path, code, body, tc.wantStatus)
		}
	}
}

func TestInstrumentAPI(t *testing.T) {
	m := New()
	h := m.InstrumentAPI(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/key/release":
			w.WriteHeader(http.StatusForbidden)
		case "/status":
			w.Write([]byte("{}")) // implicit 200
		default:
			http.NotFound(w, r)
		}
	}))
	for _, p := range []string{"/status", "/key/release", "/key/release", "/nope", "/random/path"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, p, nil))
	}
	_, page := scrape(t, m.Handler(), "/metrics")
	for _, want := range []string{
		`skrfs_api_requests_total{code="200",path="/status"} 1`,
		`skrfs_api_requests_total{code="403",path="/key/release"} 2`,
		`skrfs_api_requests_total{code="404",path="other"} 2`, // unknown paths do not grow the label set
	} {
		if !strings.Contains(page, want) {
			t.Errorf("want %s", want)
		}
	}
}

// TestMetricsDocumented: every skrfs_ metric family the registry exports
// (with every Watch* source attached) has a row in docs/sidecar.md's
// table, and the table names no family that is not exported.
func TestMetricsDocumented(t *testing.T) {
	m := New()
	m.WatchFS(func() fs.Stats { return fs.Stats{} })
	m.WatchKeyCache(func() cache.Stats { return cache.Stats{} })
	m.WatchAttestations(func() (int64, int64) { return 0, 0 })
	// Vectors appear once they have a series.
	m.Fetched(time.Millisecond, nil)
	m.Failed("open", syscall.EIO)
	m.ManifestLoaded("data", 1, nil)
	m.InstrumentAPI(http.NotFoundHandler()).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/status", nil))
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "sidecar.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, row := range regexp.MustCompile("(?m)^\\| `(skrfs_[a-z_]+)` \\|").FindAllStringSubmatch(string(doc), -1) {
		documented[row[1]] = true
	}
	exported := map[string]bool{}
	for _, f := range families {
		if name := f.GetName(); strings.HasPrefix(name, Namespace+"_") {
			exported[name] = true
			if !documented[name] {
				t.Errorf("%s is exported but has no row in docs/sidecar.md", name)
			}
		}
	}
	for name := range documented {
		if !exported[name] {
			t.Errorf("docs/sidecar.md documents %s, which is not exported", name)
		}
	}
}
