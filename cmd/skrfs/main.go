// Command skrfs is the skrfs daemon and tool: one binary with subcommands
// (the command table in README.md). This package parses flags
// and wires concrete types; the work is done by the library packages.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/skrfs/skrfs/blob"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type globalFlags struct {
	logLevel string
	logJSON  bool
}

func newRootCmd() *cobra.Command {
	var g globalFlags
	root := &cobra.Command{
		Use:   "skrfs",
		Short: "Attested key release and transparently decrypted Azure blobs as files",
		Long: `skrfs mounts a directory inside a confidential container (SEV-SNP) where
opening a file attests the TEE, releases a key from Azure Key Vault or Managed
HSM (Secure Key Release), and serves keys and decrypted blobs as plain files.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if err := setupLogging(g); err != nil {
				return err
			}
			// Before any key, token or plaintext enters the process.
			if hardened(cmd) {
				hardenProcess(cmd.Name() == "serve" || cmd.Name() == "mount")
			}
			return nil
		},
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	root.PersistentFlags().BoolVar(&g.logJSON, "log-json", false, "log JSON lines instead of console text (default when stderr is not a terminal)")
	// inspect and ls read only public headers and metadata; the devstack
	// stands in for Azure services and its keys are throwaway.
	root.AddCommand(newEncryptCmd(), newDecryptCmd(), noHarden(newInspectCmd()), newUploadCmd(), noHarden(newLsCmd()),
		newMountCmd(), newRunCmd(), noHarden(newDevstackCmd()), newDemoCmd(), newAttestCmd(), newKeyCmd(), newExplainCmd(),
		newServeCmd(), newFetchCmd(), newManifestCmd())
	return root
}

var log = zerolog.Nop()

// logConsole: the log is human-readable text on a terminal (else JSON).
var logConsole bool

func setupLogging(g globalFlags) error {
	lvl, err := zerolog.ParseLevel(g.logLevel)
	if err != nil {
		return usageError{fmt.Errorf("--log-level: %v", err)}
	}
	log = newLogger(os.Stderr, lvl, !g.logJSON && term.IsTerminal(int(os.Stderr.Fd())))
	logConsole = !g.logJSON && term.IsTerminal(int(os.Stderr.Fd()))
	return nil
}

// newLogger returns the process logger: JSON lines, or console text, with
// every line passed through blob.Redact so that no SAS (a URL query, a
// sig= parameter) reaches the log, whatever error a line quotes.
func newLogger(w io.Writer, lvl zerolog.Level, console bool) zerolog.Logger {
	w = blob.RedactWriter(w)
	if console {
		w = zerolog.ConsoleWriter{Out: w}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

func main() {
	cmd := newRootCmd()
	err := cmd.Execute()
	if err == nil {
		return
	}
	var ee exitError
	if errors.As(err, &ee) { // skrfs run: the child's status, already reported by the child
		os.Exit(ee.code)
	}
	fmt.Fprintf(os.Stderr, "skrfs: %v\n", blob.Redact(err.Error()))
	var ue usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		fmt.Fprintln(os.Stderr, usageHint(cmd, os.Args[1:]))
	}
	os.Exit(exitCode(err))
}

// usageHint names the help of the (sub)command that args select, by its
// full path ("skrfs key create"), or the root's help when none matches.
func usageHint(root *cobra.Command, args []string) string {
	path := root.CommandPath()
	if c, _, err := root.Find(args); err == nil && c != nil {
		path = c.CommandPath()
	}
	return fmt.Sprintf("Run '%s --help' for usage.", path)
}
