// Package metrics exports skrfs's counters to Prometheus and serves
// /metrics, /healthz and /readyz. The filesystem and the key-release
// packages do not import Prometheus: they keep their own counters (fs.Stats,
// cache.Stats, skr's attestation outcomes), read here at scrape time, and
// the filesystem reports fetch latencies and failed operations through the
// fs.Observer this package implements.
package metrics

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"

	"github.com/skrfs/skrfs/fs"
	"github.com/skrfs/skrfs/keyrelease/cache"
)

// Namespace prefixes every metric name.
const Namespace = "skrfs"

// Metrics is one process's registry and the collectors fed by events.
type Metrics struct {
	reg        *prometheus.Registry
	fetch      *prometheus.HistogramVec
	fuseErrors *prometheus.CounterVec
	api        *prometheus.CounterVec
	manifests  *prometheus.CounterVec
	epoch      *prometheus.GaugeVec
	ready      atomic.Bool
}

var (
	_ fs.Observer         = (*Metrics)(nil)
	_ fs.ManifestObserver = (*Metrics)(nil)
)

// New returns a registry with the Go runtime and process collectors and
// skrfs's event metrics.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.fetch = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "storage_fetch_duration_seconds",
		Help: "Duration of storage reads (a ranged read, or a streamed range from request to its last byte), by outcome.",
		// 1 ms .. ~33 s: local disks answer in under a millisecond, an
		// 8 MiB range from Azure takes tens to hundreds of milliseconds.
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	}, []string{"outcome"})
	m.fuseErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "fuse_errors_total",
		Help: "Filesystem operations answered with an error, by operation and errno.",
	}, []string{"op", "errno"})
	m.api = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "api_requests_total",
		Help: "Requests to the sidecar-compatible HTTP API, by path and status code.",
	}, []string{"path", "code"})
	m.manifests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "manifest_loads_total",
		Help: "Signed dataset manifest loads, by dataset and outcome (verified, refused).",
	}, []string{"dataset", "outcome"})
	m.epoch = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "manifest_epoch",
		Help: "Epoch of the manifest each dataset serves (last verified).",
	}, []string{"dataset"})
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.fetch, m.fuseErrors, m.api, m.manifests, m.epoch)
	return m
}

// Registry returns the registry, for tests and extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Fetched implements fs.Observer.
func (m *Metrics) Fetched(d time.Duration, err error) {
	outcome := "success"
	if err != nil {
		outcome = "error"
	}
	m.fetch.WithLabelValues(outcome).Observe(d.Seconds())
}

// Failed implements fs.Observer.
func (m *Metrics) Failed(op string, errno syscall.Errno) {
	name := unix.ErrnoName(errno)
	if name == "" {
		name = strconv.Itoa(int(errno))
	}
	m.fuseErrors.WithLabelValues(op, name).Inc()
}

// ManifestLoaded implements fs.ManifestObserver.
func (m *Metrics) ManifestLoaded(dataset string, epoch uint64, err error) {
	if err != nil {
		m.manifests.WithLabelValues(dataset, "refused").Inc()
		return
	}
	m.manifests.WithLabelValues(dataset, "verified").Inc()
	m.epoch.WithLabelValues(dataset).Set(float64(epoch))
}

// counterFunc registers a counter read from f at scrape time.
func (m *Metrics) counterFunc(name, help string, labels prometheus.Labels, f func() float64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: Namespace, Name: name, Help: help, ConstLabels: labels}, f))
}

// WatchFS exports a filesystem's counters (fs.Stats): reads, and the
// writes to writable datasets (docs/writes.md).
func (m *Metrics) WatchFS(stats func() fs.Stats) {
	for _, c := range []struct {
		name, help string
		f          func(fs.Stats) int64
	}{
		{"storage_fetches_total", "Storage reads (headers, preambles, chunk ranges).", func(s fs.Stats) int64 { return s.Fetches }},
		{"storage_fetched_bytes_total", "Ciphertext bytes read from storage.", func(s fs.Stats) int64 { return s.BytesFetched }},
		{"reads_total", "Read requests on dataset files.", func(s fs.Stats) int64 { return s.Reads }},
		{"served_bytes_total", "Plaintext bytes returned to readers of dataset files.", func(s fs.Stats) int64 { return s.BytesServed }},
		{"chunks_loaded_total", "Chunks authenticated and decrypted.", func(s fs.Stats) int64 { return s.ChunksLoaded }},
		{"commits_total", "Objects committed to storage by writes (conditional uploads of new versions, renames included).",
			func(s fs.Stats) int64 { return s.Commits }},
		{"commit_conflicts_total", "Commits lost to another writer (the object changed since it was opened); the close or fsync got EIO.",
			func(s fs.Stats) int64 { return s.CommitConflicts }},
		{"spilled_chunks_total", "Staged 256 KiB chunks sealed and spilled to write.spill_dir because staging was over write.staging_bytes.",
			func(s fs.Stats) int64 { return s.SpilledChunks }},
		{"manifest_publishes_total", "Signed manifests published by writes (one per batch of changes), failed ones included.",
			func(s fs.Stats) int64 { return s.ManifestPublishes }},
		{"manifest_publish_failures_total", "Manifest publishes that failed (the operations got EIO; the changes are retried with the next publish).",
			func(s fs.Stats) int64 { return s.ManifestPublishFailures }},
		{"manifest_publish_conflicts_total", "Manifest publishes retried because another writer published first (re-read, verified, merged).",
			func(s fs.Stats) int64 { return s.ManifestPublishConflicts }},
	} {
		m.counterFunc(c.name, c.help, nil, func() float64 { return float64(c.f(stats())) })
	}
	m.counterFunc("chunk_cache_lookups_total", "Chunks readers needed, by whether the decrypted-chunk cache had them (hit) or they had to wait (miss).",
		prometheus.Labels{"result": "hit"}, func() float64 { return float64(stats().ChunkHits) })
	m.counterFunc("chunk_cache_lookups_total", "Chunks readers needed, by whether the decrypted-chunk cache had them (hit) or they had to wait (miss).",
		prometheus.Labels{"result": "miss"}, func() float64 { return float64(stats().ChunkMisses) })
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "staged_bytes",
		Help: "Memory holding staged (written, not yet committed) plaintext now, all files together, in 256 KiB buffers; bounded by write.staging_bytes plus one buffer per file being written."},
		func() float64 { return float64(stats().StagedBytes) }))
}

// WatchKeyCache exports the key cache's counters (cache.Stats): lookups by
// result, and calls of the releaser behind it by outcome.
func (m *Metrics) WatchKeyCache(stats func() cache.Stats) {
	lookups := "Key requests, by whether the key cache had the key (hit), had to release it (miss), or remembered a permanent failure (negative_hit)."
	for result, f := range map[string]func(cache.Stats) uint64{
		"hit":          func(s cache.Stats) uint64 { return s.Hits },
		"miss":         func(s cache.Stats) uint64 { return s.Misses },
		"negative_hit": func(s cache.Stats) uint64 { return s.NegativeHits },
	} {
		m.counterFunc("key_cache_lookups_total", lookups, prometheus.Labels{"result": result}, func() float64 { return float64(f(stats())) })
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "key_cache_keys",
		Help: "Keys held by the key cache."}, func() float64 { return float64(stats().Keys) }))
	m.counterFunc("key_cache_refreshes_total", "Background refreshes of cached keys started.", nil,
		func() float64 { return float64(stats().Refreshes) })
	releases := "Key releases (attestation, when needed, and Secure Key Release), retries included, by outcome: success or the failure class."
	m.counterFunc("key_releases_total", releases, prometheus.Labels{"outcome": "success"},
		func() float64 { return float64(stats().Releases.Succeeded) })
	for c := cache.ClassTransient; c.String() != "unknown"; c++ {
		m.counterFunc("key_releases_total", releases, prometheus.Labels{"outcome": c.String()},
			func() float64 { return float64(stats().Releases.Failed[c]) })
	}
}

// WatchAttestations exports attestation outcomes (skr.Releaser's).
func (m *Metrics) WatchAttestations(outcomes func() (ok, failed int64)) {
	help := "Attestations (SEV-SNP evidence traded for an MAA token), by outcome."
	m.counterFunc("attestations_total", help, prometheus.Labels{"outcome": "success"}, func() float64 { ok, _ := outcomes(); return float64(ok) })
	m.counterFunc("attestations_total", help, prometheus.Labels{"outcome": "failure"}, func() float64 { _, f := outcomes(); return float64(f) })
}

// SetReady sets what /readyz answers: ready once the filesystem is
// mounted or the API listens, not ready again while shutting down.
func (m *Metrics) SetReady(ready bool) { m.ready.Store(ready) }

// Handler serves /metrics, /healthz (the process answers) and /readyz
// (503 until SetReady(true)).
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !m.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	return mux
}

// apiPaths are the paths counted by name; others count as "other", so
// that callers cannot grow the label set.
var apiPaths = map[string]bool{"/status": true, "/attest/raw": true, "/attest/combined": true, "/attest/maa": true, "/key/release": true}

// InstrumentAPI counts the requests h answers, by path and status.
func (m *Metrics) InstrumentAPI(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(sw, r)
		path := r.URL.Path
		if !apiPaths[path] {
			path = "other"
		}
		m.api.WithLabelValues(path, strconv.Itoa(sw.code)).Inc()
	})
}

type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wrote {
		s.code, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}
