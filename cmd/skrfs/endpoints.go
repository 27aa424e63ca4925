package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/fs"
	"github.com/skrfs/skrfs/internal/config"
	"github.com/skrfs/skrfs/internal/metrics"
	"github.com/skrfs/skrfs/internal/sidecar"
	"github.com/skrfs/skrfs/keyrelease"
)

// endpoints are a daemon's optional HTTP listeners: the sidecar API
// (serve.listen) and /metrics, /healthz, /readyz (metrics.listen); and its
// audit log.
type endpoints struct {
	metrics *metrics.Metrics // nil without metrics.listen
	audit   zerolog.Logger
	stack   *sidecar.Stack
	servers []*http.Server
	closers []func()
	// APIAddr and MetricsAddr are the bound addresses ("" = not listening).
	APIAddr, MetricsAddr string
}

// newEndpoints prepares metrics and the audit log of cfg; listening
// starts with listen, once the filesystem or API is wired.
func newEndpoints(cfg *config.Config) (*endpoints, error) {
	ep := &endpoints{audit: zerolog.Nop()}
	if cfg.Metrics.Listen != "" {
		ep.metrics = metrics.New()
	}
	switch {
	case cfg.Audit.Disabled:
	case cfg.Audit.File == "" && logConsole:
		ep.audit = zerolog.New(zerolog.ConsoleWriter{Out: blob.RedactWriter(os.Stderr)}).With().Timestamp().Logger()
	case cfg.Audit.File == "":
		ep.audit = zerolog.New(blob.RedactWriter(os.Stderr)).With().Timestamp().Logger()
	default:
		f, err := os.OpenFile(cfg.Path(cfg.Audit.File), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("audit.file: %w", err)
		}
		ep.closers = append(ep.closers, func() { f.Close() })
		ep.audit = zerolog.New(blob.RedactWriter(f)).With().Timestamp().Logger()
	}
	return ep, nil
}

// fsOptions adds the audit log and the metrics observer to opts.
func (ep *endpoints) fsOptions(opts *fs.Options) {
	opts.Audit = ep.audit
	if ep.metrics != nil {
		opts.Observer = ep.metrics
	}
}

// watch exports the counters of the filesystem (nil when serving only)
// and of the release stack.
func (ep *endpoints) watch(root *fs.Root, rt *runtime) {
	if ep.metrics == nil {
		return
	}
	if root != nil {
		ep.metrics.WatchFS(root.Stats)
	}
	if rt.cache != nil {
		ep.metrics.WatchKeyCache(rt.cache.Stats)
	}
	if rt.skr != nil {
		ep.metrics.WatchAttestations(rt.skr.AttestationOutcomes)
	}
}

// sidecarStack builds the sidecar API's backend on the daemon's release
// stack: the configured MAA instance shares the daemon's key cache.
func sidecarStack(cfg *config.Config, rt *runtime) *sidecar.Stack {
	st := &sidecar.Stack{TEE: rt.tee, HTTPClient: rt.http, MAA: cfg.Attestation.MAA, Default: rt.cache, DefaultSKR: rt.skr,
		Vault: rt.skr.Vault, Cache: rt.cacheOpt, Logger: log}
	if !cfg.Serve.AnyKey {
		st.Allowed = func(ref keyrelease.KeyRef) bool {
			for _, k := range cfg.Keys {
				if r, err := keyrelease.ParseKeyRef(k.Ref); err == nil && r.Matches(ref) {
					return true
				}
			}
			return false
		}
	}
	return st
}

// listen starts the API on apiAddr (when not "") and the metrics endpoints
// on metricsAddr (when not ""), and marks the daemon ready.
func (ep *endpoints) listen(cfg *config.Config, rt *runtime, apiAddr, metricsAddr string) error {
	if apiAddr != "" {
		if rt.skr == nil {
			return fmt.Errorf("the sidecar API needs attestation.maa")
		}
		ep.stack = sidecarStack(cfg, rt)
		var h http.Handler = sidecar.Handler(sidecar.Options{Backend: ep.stack, Logger: log, Audit: ep.audit,
			Attest: cfg.Serve.Attest || cfg.Serve.AnyKey, CombinedReport: cfg.Serve.CombinedReport})
		if ep.metrics != nil {
			h = ep.metrics.InstrumentAPI(h)
		}
		addr, err := ep.serve(apiAddr, h)
		if err != nil {
			return fmt.Errorf("sidecar API: %w", err)
		}
		ep.APIAddr = addr
		log.Info().Str("listen", addr).Bool("any_key", cfg.Serve.AnyKey).Bool("attest", cfg.Serve.Attest || cfg.Serve.AnyKey).Msg("serving the sidecar API")
	}
	if metricsAddr != "" && ep.metrics != nil {
		addr, err := ep.serve(metricsAddr, ep.metrics.Handler())
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		ep.MetricsAddr = addr
		log.Info().Str("listen", addr).Msg("serving /metrics, /healthz and /readyz")
	}
	if ep.metrics != nil {
		ep.metrics.SetReady(true)
	}
	return nil
}

func (ep *endpoints) serve(addr string, h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	ep.servers = append(ep.servers, srv)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Str("listen", addr).Msg("HTTP server stopped")
		}
	}()
	return ln.Addr().String(), nil
}

// close stops the listeners (letting requests in flight finish for a few
// seconds), wipes the keys of the API's other MAA instances, and closes
// the audit log.
func (ep *endpoints) close() {
	if ep.metrics != nil {
		ep.metrics.SetReady(false)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range ep.servers {
		s.Shutdown(ctx)
	}
	ep.servers = nil
	if ep.stack != nil {
		ep.stack.Close()
	}
	for _, c := range ep.closers {
		c()
	}
	ep.closers = nil
}
