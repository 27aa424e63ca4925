package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/skrfs/skrfs/integration/azurite"
	"github.com/skrfs/skrfs/internal/devstack"
)

func newDevstackCmd() *cobra.Command {
	var dir, tee string
	var withAzurite, noSeed bool
	cmd := &cobra.Command{
		Use:   "devstack [--tee snp|cvm] --dir DIR [--azurite]",
		Short: "Run local MAA, Key Vault and IMDS stand-ins with a fake SEV-SNP TEE",
		Long: `Run protocol-faithful local stand-ins of Microsoft Azure Attestation, Azure
Key Vault (Secure Key Release) and IMDS on loopback with TLS, so skrfs's real
clients can attest and release keys without Azure or SEV-SNP hardware.

DIR keeps the state (CA, keys, ports), so a restart keeps everything. When
ready, DIR holds ca.pem, devstack.env (shell exports), skrfs.yaml (a mount
configuration for the seeded world) and, last, ready. The seeded world: keys
demo-rsa (RSA-HSM 3072), demo-oct (oct-HSM 256) whose release policies match
the fake TEE, and denied (a policy for another TEE); dataset data encrypted
in DIR/store/data with the originals in DIR/plain/data. With --azurite it
also starts Azurite and exports AZURE_STORAGE_CONNECTION_STRING.

--tee cvm makes the TEE a fake Azure confidential VM instead of the fake
SEV-SNP device: a vTPM in its own process (swtpm, which must be installed)
seeded with an attestation key at 0x81000003 and an HCL report in NV
0x01400001 whose SNP report the fake chip signs; skrfs.yaml then uses
attestation.provider azure-cvm against it (attest/AzureGuest, a TPM-resident
wrapping key), and the keys' policies pin the fake VM's x-ms-azurevm-vmid.
A DIR is seeded for one TEE.
Runs until SIGTERM or SIGINT.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return usageError{fmt.Errorf("--dir is required")}
			}
			if tee != devstack.TEESNP && tee != devstack.TEECVM {
				return usageError{fmt.Errorf("--tee %q is not one of snp, cvm", tee)}
			}
			opts := devstack.Options{Dir: dir, Seed: !noSeed, Logger: log, TEE: tee}
			if withAzurite {
				inst, stop, err := azurite.StartMain(azurite.Options{})
				if err != nil {
					return err
				}
				defer stop()
				opts.AzuriteConnectionString = inst.ConnectionString()
			}
			s, err := devstack.Start(cmd.Context(), opts)
			if err != nil {
				return err
			}
			defer s.Close()
			fmt.Fprintf(cmd.OutOrStdout(), "devstack ready in %s\n  MAA   %s\n  vault %s\n  IMDS  %s\nsource %s for the environment; mount with\n  skrfs mount --config %s MOUNTPOINT\n",
				s.Dir, s.MAAURL, s.VaultURL, s.IMDSURL, filepath.Join(s.Dir, devstack.EnvFile), filepath.Join(s.Dir, devstack.ConfigFile))
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
			<-sig
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "state directory")
	cmd.Flags().BoolVar(&withAzurite, "azurite", false, "also start Azurite (installed by make azurite)")
	cmd.Flags().BoolVar(&noSeed, "no-seed", false, "do not create the demo keys and dataset")
	cmd.Flags().StringVar(&tee, "tee", devstack.TEESNP, "the TEE: snp (fake SEV-SNP device) or cvm (fake Azure confidential VM, swtpm)")
	return cmd
}

func newDemoCmd() *cobra.Command {
	var stateDir, tee string
	cmd := &cobra.Command{
		Use:   "demo [--tee snp|cvm] [DIR]",
		Short: "The embedded default: devstack in-process, mounted at ./skrfs-demo",
		Long: `Start the devstack in-process with its seeded world, mount it at DIR (default
./skrfs-demo), print what to try, and stay until Ctrl-C. No Azure, no TEE.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			mnt := "skrfs-demo"
			if len(args) == 1 {
				mnt = args[0]
			}
			if tee != devstack.TEESNP && tee != devstack.TEECVM {
				return usageError{fmt.Errorf("--tee %q is not one of snp, cvm", tee)}
			}
			if stateDir == "" {
				stateDir = defaultDemoState()
				if tee == devstack.TEECVM {
					stateDir += "-cvm"
				}
			}
			if err := checkOwnDir(stateDir); err != nil {
				return err
			}
			_, statErr := os.Stat(filepath.Join(stateDir, "ca.pem"))
			reused := statErr == nil
			s, err := devstack.Start(cmd.Context(), devstack.Options{Dir: stateDir, Seed: true, Logger: log, TEE: tee})
			if err != nil {
				return err
			}
			defer s.Close()
			cfg, err := loadConfig(filepath.Join(s.Dir, devstack.ConfigFile))
			if err != nil {
				return err
			}
			if err := os.MkdirAll(mnt, 0o755); err != nil {
				return err
			}
			m, err := startMount(cmd.Context(), cfg, mnt, false)
			if err != nil {
				return err
			}
			defer m.stop()
			state := "new"
			if reused {
				state = "reused from an earlier run (same CA, keys and data; remove it or pass --state DIR for a fresh start)"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "devstack state: %s, %s\n", s.Dir, state)
			fmt.Fprintf(cmd.OutOrStdout(), `skrfs demo mounted at %[1]s (fake TEE, local devstack in %[2]s). Try, in another shell:

  ls -l %[1]s/keys %[1]s/data            # no attestation needed to list
  cat %[1]s/keys/demo-rsa                # attests, releases the key: a PEM private key
  cat %[1]s/data/hello.txt               # decrypted on read
  sha256sum %[1]s/data/random-64m.bin %[2]s/plain/data/random-64m.bin
  cat %[1]s/keys/denied                  # Permission denied: its policy wants another TEE
  %[3]s inspect %[2]s/store/data/hello.txt

Ctrl-C to unmount and stop.
`, m.dir, s.Dir, os.Args[0])
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
			<-sig
			return nil
		},
	}
	cmd.Flags().StringVar(&stateDir, "state", "", "devstack state directory (default: per user, $XDG_STATE_HOME/skrfs/demo-state or ~/.local/state/skrfs/demo-state; -cvm for --tee cvm)")
	cmd.Flags().StringVar(&tee, "tee", devstack.TEESNP, "the TEE: snp (fake SEV-SNP device) or cvm (fake Azure confidential VM, swtpm)")
	return cmd
}

// defaultDemoState is the demo's devstack state directory: per user, never
// a path that every user of the machine shares (another user could plant a
// CA or keys there, or find ours). $XDG_STATE_HOME/skrfs/demo-state, else
// ~/.local/state/skrfs/demo-state, else a directory named after the uid
// under $TMPDIR (devstack creates its files 0600 in a 0700 directory).
func defaultDemoState() string {
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "skrfs", "demo-state")
	}
	if h, err := os.UserHomeDir(); err == nil && filepath.IsAbs(h) {
		return filepath.Join(h, ".local", "state", "skrfs", "demo-state")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("skrfs-demo-state-%d", os.Getuid()))
}

// checkOwnDir refuses a state directory that exists but belongs to another
// user or is writable by others: its CA and keys would not be ours.
func checkOwnDir(dir string) error {
	st, err := os.Lstat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !st.IsDir() || !ok || int(sys.Uid) != os.Getuid() || st.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("demo state %s is not a directory of yours that only you can write: remove it or pass --state DIR", dir)
	}
	return nil
}
