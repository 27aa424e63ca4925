// Command skrfs is the skrfs daemon and tool: one binary with subcommands
// (docs/cli.md, ../shared/docs/cli-contract.md). This package parses flags
// and wires concrete types; the work is done by the library packages.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"golang.org/x/term"
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
			return setupLogging(g)
		},
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	root.PersistentFlags().BoolVar(&g.logJSON, "log-json", false, "log JSON lines instead of console text (default when stderr is not a terminal)")
	root.AddCommand(newEncryptCmd(), newDecryptCmd(), newInspectCmd(), newUploadCmd(), newLsCmd(), newManifestCmd(),
		newMountCmd(), newRunCmd(), newDevstackCmd(), newDemoCmd(), newAttestCmd(), newKeyCmd(), newExplainCmd(),
		newServeCmd())
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
	if g.logJSON || !term.IsTerminal(int(os.Stderr.Fd())) {
		log = zerolog.New(os.Stderr).Level(lvl).With().Timestamp().Logger()
	} else {
		log = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).Level(lvl).With().Timestamp().Logger()
		logConsole = true
	}
	return nil
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
	fmt.Fprintf(os.Stderr, "skrfs: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		fmt.Fprintf(os.Stderr, "Run 'skrfs %s --help' for usage.\n", subcommandName(cmd))
	}
	os.Exit(exitCode(err))
}

// subcommandName returns the name of the subcommand in os.Args, if any.
func subcommandName(root *cobra.Command) string {
	if c, _, err := root.Find(os.Args[1:]); err == nil && c != root {
		return c.Name()
	}
	return ""
}
