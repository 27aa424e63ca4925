package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// defaultListen is the reference sidecar's address: localhost, port 8080.
const defaultListen = "127.0.0.1:8080"

func newServeCmd() *cobra.Command {
	var cfgFile, listen, metricsAddr, readyFile string
	cmd := &cobra.Command{
		Use:   "serve --config FILE [--listen ADDR]",
		Short: "Serve the reference SKR sidecar's HTTP API",
		Long: `Serve the HTTP API of Microsoft's SKR sidecar (confidential-sidecar-containers)
with the same paths and JSON: GET /status, POST /attest/raw, /attest/combined,
/attest/maa and /key/release. Containers written against the sidecar work
unchanged; skrfs adds key caching, errors that name the failing claim, and
a key allow-list (docs/sidecar.md). The /attest/* routes are off (403)
unless serve.attest or serve.any_key is set: they would let callers release
keys outside the allow-list.

The address defaults to serve.listen, else 127.0.0.1:8080. Addresses that are
not loopback are refused unless serve.allow_remote is set: whoever reaches
the API gets keys. With --ready-file, the bound API address, and on a second
line the metrics address (empty without), are written to that file once
listening. SIGTERM or SIGINT stops the server and wipes keys.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cfgFile)
			if err != nil {
				return err
			}
			if listen == "" {
				listen = cfg.Serve.Listen
			}
			if listen == "" {
				listen = defaultListen
			}
			if err := listenFlags(cfg, listen, metricsAddr); err != nil {
				return err
			}
			if cfg.Attestation.MAA == "" {
				return usageError{errors.New("attestation.maa is required to serve the sidecar API")}
			}
			rt, err := newRuntimeFor(cmd.Context(), cfg, true)
			if err != nil {
				return err
			}
			defer rt.close()
			ep, err := newEndpoints(cfg)
			if err != nil {
				return err
			}
			defer ep.close() // first: no request in flight when keys are wiped
			sig := make(chan os.Signal, 2)
			signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
			defer signal.Stop(sig)
			ep.watch(nil, rt)
			if err := ep.listen(cfg, rt, cfg.Serve.Listen, cfg.Metrics.Listen); err != nil {
				return err
			}
			if readyFile != "" {
				if err := writeReadyFile(readyFile, []byte(ep.APIAddr+"\n"+ep.MetricsAddr+"\n")); err != nil {
					return err
				}
				defer os.Remove(readyFile)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "skrfs: serving the SKR sidecar API on http://%s\n", ep.APIAddr)
			s := <-sig
			log.Info().Str("signal", s.String()).Msg("stopping")
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgFile, "config", "", "configuration file (docs/config.md)")
	cmd.Flags().StringVar(&listen, "listen", "", "address of the API (default serve.listen, else "+defaultListen+")")
	cmd.Flags().StringVar(&metricsAddr, "metrics-listen", "", "serve /metrics, /healthz and /readyz on this address (default: metrics.listen)")
	cmd.Flags().StringVar(&readyFile, "ready-file", "", "write the bound addresses (API, metrics) to this file once listening; removed at exit")
	return cmd
}
