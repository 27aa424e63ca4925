package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/spf13/cobra"

	"github.com/skrfs/skrfs/internal/config"
	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/policy"
)

func newKeyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "key", Short: "Create and release Secure Key Release keys"}
	cmd.AddCommand(newKeyCreateCmd(), newKeyReleaseCmd())
	return cmd
}

// aciPolicy is the recommended release policy for an ACI confidential
// container group (protocol.md section 6, with the vmpl check of the
// reference sidecar's PR #167).
func aciPolicy(authority, hostData string) []byte {
	return []byte(`{"version":"1.0.0","anyOf":[{"authority":"` + strings.TrimSuffix(authority, "/") + `","allOf":[` +
		`{"claim":"x-ms-attestation-type","equals":"sevsnpvm"},` +
		`{"claim":"x-ms-sevsnpvm-hostdata","equals":"` + hostData + `"},` +
		`{"claim":"x-ms-compliance-status","equals":"azure-compliant-uvm"},` +
		`{"claim":"x-ms-sevsnpvm-is-debuggable","equals":"false"},` +
		`{"claim":"x-ms-sevsnpvm-vmpl","equals":"0"}]}]}`)
}

func newKeyCreateCmd() *cobra.Command {
	var vault, name, kty, policyFile, ccePolicy, authority, curve, vmID string
	var size int
	var sgx sgxPolicyFlags
	var ops []string
	var forCVM bool
	cmd := &cobra.Command{
		Use:   "create --vault URL --name NAME --kty RSA-HSM|EC-HSM|oct-HSM [--policy FILE | --cce-policy FILE --authority URL | --cvm [--vm-id GUID] --authority URL | --sgx-mrsigner HEX --sgx-product-id N --sgx-min-svn N [--sgx-mrenclave HEX] --authority URL] [--ops OP,...]",
		Short: "Create an exportable key with a release policy",
		Long: `Create an exportable, HSM-backed key in Key Vault Premium or Managed HSM with a
release policy, and print its key identifier.

--policy FILE uses a policy document as is (validated first). --cce-policy
FILE derives HOST_DATA from an ACI confidential computing enforcement policy
(the ccePolicy of the ARM template, Rego or base64, as 'az confcom
acipolicygen' writes it) and writes the recommended ACI policy: that
host_data, azure-compliant-uvm, not debuggable, VMPL 0, for tokens of the MAA
instance --authority. --cvm writes the policy for attested Azure confidential
VMs: the nested claims x-ms-isolation-tee.x-ms-attestation-type sevsnpvm,
.x-ms-compliance-status azure-compliant-cvm and not debuggable, and with
--vm-id also x-ms-azurevm-vmid (pin it: azure-compliant-cvm alone admits any
Azure CVM whose identity may release). Credentials: azidentity's
DefaultAzureCredential.

--sgx-mrsigner HEX --sgx-product-id N --sgx-min-svn N [--sgx-mrenclave HEX]
writes the policy for SGX enclaves attested by MAA's attest/SgxEnclave at
--authority: that signer (and enclave), product id, ISV SVN at least N, and
never a debuggable enclave.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if vault == "" || name == "" || kty == "" {
				return usageError{fmt.Errorf("--vault, --name and --kty are required")}
			}
			var err error
			if kty, err = checkKeySpec(kty, curve, size); err != nil {
				return usageError{err}
			}
			var doc []byte
			switch {
			case sgx.set() && (policyFile != "" || ccePolicy != "" || forCVM):
				return usageError{fmt.Errorf("use one of --policy, --cce-policy, --cvm and the --sgx-* flags")}
			case sgx.set():
				b, err := sgxPolicy(authority, sgx)
				if err != nil {
					return usageError{err}
				}
				doc = b
			case policyFile != "" && ccePolicy != "", forCVM && (policyFile != "" || ccePolicy != ""):
				return usageError{fmt.Errorf("use one of --policy, --cce-policy and --cvm")}
			case vmID != "" && !forCVM:
				return usageError{fmt.Errorf("--vm-id goes with --cvm")}
			case forCVM:
				if authority == "" {
					return usageError{fmt.Errorf("--cvm needs --authority (the MAA instance URL)")}
				}
				var err error
				if doc, err = cvmPolicy(authority, vmID); err != nil {
					return usageError{err}
				}
				if vmID == "" {
					fmt.Fprintln(cmd.ErrOrStderr(), "warning: no --vm-id: any Azure confidential VM whose identity may release this key can release it")
				}
			case policyFile != "":
				b, err := os.ReadFile(policyFile)
				if err != nil {
					return err
				}
				doc = b
			case ccePolicy != "":
				if authority == "" {
					return usageError{fmt.Errorf("--cce-policy needs --authority (the MAA instance URL)")}
				}
				b, err := os.ReadFile(ccePolicy)
				if err != nil {
					return err
				}
				doc = aciPolicy(authority, hex.EncodeToString(hostData(b)))
			default:
				return usageError{fmt.Errorf("a release policy is required: --policy, --cce-policy or --cvm")}
			}
			if _, err := policy.Parse(doc); err != nil {
				return usageError{err}
			}
			ref, err := keyrelease.ParseKeyRef(strings.TrimSuffix(vault, "/") + "/keys/" + name)
			if err != nil {
				return usageError{err}
			}
			kc, err := keysClient(ref)
			if err != nil {
				return err
			}
			ct := "application/json; charset=utf-8"
			params := azkeys.CreateKeyParameters{Kty: to(azkeys.KeyType(kty)), KeyAttributes: &azkeys.KeyAttributes{Exportable: to(true)},
				ReleasePolicy: &azkeys.KeyReleasePolicy{ContentType: &ct, EncodedPolicy: doc}}
			if size != 0 {
				params.KeySize = to(int32(size))
			}
			if curve != "" {
				params.Curve = to(azkeys.CurveName(curve))
			}
			if params.KeyOps, err = keyOps(ops); err != nil {
				return usageError{err}
			}
			resp, err := kc.CreateKey(cmd.Context(), name, params, nil)
			if err != nil {
				return vaultError("create", ref, err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), string(*resp.Key.KID))
			return nil
		},
	}
	cmd.Flags().StringVar(&vault, "vault", "", "vault URL, e.g. https://myvault.vault.azure.net")
	cmd.Flags().StringVar(&name, "name", "", "key name")
	cmd.Flags().StringVar(&kty, "kty", "", "RSA-HSM, EC-HSM or oct-HSM")
	cmd.Flags().IntVar(&size, "size", 0, "key size in bits (RSA-HSM 2048/3072/4096, oct-HSM 256)")
	cmd.Flags().StringVar(&curve, "curve", "", "EC-HSM curve: P-256 (Key Vault's default) or P-384")
	cmd.Flags().StringVar(&policyFile, "policy", "", "release policy JSON")
	cmd.Flags().StringVar(&ccePolicy, "cce-policy", "", "ACI CCE policy to derive the recommended release policy from")
	cmd.Flags().StringVar(&authority, "authority", "", "MAA instance URL for --cce-policy, --cvm or the --sgx-* policy")
	sgx.register(cmd)
	cmd.Flags().StringSliceVar(&ops, "ops", nil, "permitted key operations, comma-separated ("+strings.Join(keyOpNames, ", ")+
		"; default: all the key type permits); released JWKs carry them as key_ops")
	cmd.Flags().BoolVar(&forCVM, "cvm", false, "release policy for attested Azure confidential VMs (nested x-ms-isolation-tee claims)")
	cmd.Flags().StringVar(&vmID, "vm-id", "", "with --cvm: pin the VM (x-ms-azurevm-vmid)")
	return cmd
}

func to[T any](v T) *T { return &v }

// checkKeySpec refuses, before anything is created, a key that Secure Key
// Release or the skrfs object format cannot use, and returns the key type
// as Key Vault spells it.
func checkKeySpec(kty, curve string, size int) (string, error) {
	var canon string
	for _, k := range []string{"RSA-HSM", "EC-HSM", "oct-HSM"} {
		if strings.EqualFold(kty, k) {
			canon = k
		}
	}
	if canon == "" {
		for _, k := range []string{"RSA", "EC", "oct"} {
			if strings.EqualFold(kty, k) {
				return "", fmt.Errorf("--kty %s: Key Vault releases only HSM-backed exportable keys (Secure Key Release), so a software %s key could never be released: use %s-HSM (Key Vault Premium or Managed HSM)", kty, k, k)
			}
		}
		return "", fmt.Errorf("--kty %s: want RSA-HSM, EC-HSM or oct-HSM", kty)
	}
	switch canon {
	case "EC-HSM":
		if curve != "" && curve != "P-256" && curve != "P-384" {
			return "", fmt.Errorf("--curve %s: skrfs objects can be sealed for P-256 and P-384 keys only", curve)
		}
		if size != 0 {
			return "", fmt.Errorf("--size is for RSA-HSM and oct-HSM keys; EC-HSM keys take --curve")
		}
	case "RSA-HSM":
		if size != 0 && size != 2048 && size != 3072 && size != 4096 {
			return "", fmt.Errorf("--size %d: RSA-HSM keys are 2048, 3072 or 4096 bits", size)
		}
	case "oct-HSM":
		if size != 0 && size != 256 {
			return "", fmt.Errorf("--size %d: skrfs objects need 256-bit (AES-256) oct keys", size)
		}
	}
	if curve != "" && canon != "EC-HSM" {
		return "", fmt.Errorf("--curve is for EC-HSM keys only")
	}
	return canon, nil
}

// vaultError turns an error of a Key Vault call into one line, as key
// release reports it: the status, the service's error code and message,
// never the SDK's multi-line dump of the request and response. A missing
// key is keyrelease.ErrNotFound.
func vaultError(op string, ref keyrelease.KeyRef, err error) error {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return fmt.Errorf("%s %s: %w", op, ref, err)
	}
	msg := re.ErrorCode
	if re.RawResponse != nil && re.RawResponse.Body != nil {
		var body struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.NewDecoder(re.RawResponse.Body).Decode(&body) == nil && body.Error.Message != "" {
			msg = body.Error.Code + ": " + body.Error.Message
		}
	}
	msg = strings.Join(strings.Fields(msg), " ") // one line
	if msg == "" {
		msg = http.StatusText(re.StatusCode)
	}
	if re.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%w: %s %s: HTTP 404: %s", keyrelease.ErrNotFound, op, ref, msg)
	}
	return fmt.Errorf("%s %s: HTTP %d: %s", op, ref, re.StatusCode, msg)
}

// keysClient returns an azkeys client for ref's vault with
// DefaultAzureCredential.
func keysClient(ref keyrelease.KeyRef) (*azkeys.Client, error) {
	cred, err := azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		return nil, fmt.Errorf("azure credential: %w", err)
	}
	return vaultClient(ref, cred, nil)
}

func vaultClient(ref keyrelease.KeyRef, cred azcore.TokenCredential, tr *azcore.ClientOptions) (*azkeys.Client, error) {
	opts := &azkeys.ClientOptions{}
	if tr != nil {
		opts.ClientOptions = *tr
	}
	// The token's audience comes from the vault's domain, never from its
	// 401 challenge (a host that is not Key Vault would get a token for
	// whatever resource it names).
	cred, azure := pinVaultScope(cred, ref.Vault)
	opts.DisableChallengeResourceVerification = !azure
	return azkeys.NewClient("https://"+ref.Vault, cred, opts)
}

// keyRuntime loads a configuration, resolves the configured key name, and
// wires the release stack.
func keyRuntime(ctx context.Context, cfgFile, name string) (*runtime, keyrelease.KeyRef, error) {
	cfg, err := loadConfig(cfgFile)
	if err != nil {
		return nil, keyrelease.KeyRef{}, err
	}
	ref, err := configuredKey(cfg, name)
	if err != nil {
		return nil, keyrelease.KeyRef{}, err
	}
	rt, err := newRuntime(ctx, cfg)
	return rt, ref, err
}

// configuredKey returns the reference of a configured key by name.
func configuredKey(cfg *config.Config, name string) (keyrelease.KeyRef, error) {
	k, ok := cfg.KeyByName(name)
	if !ok {
		var names []string
		for _, k := range cfg.Keys {
			names = append(names, k.Name)
		}
		return keyrelease.KeyRef{}, usageError{fmt.Errorf("no key %q in the configuration (have: %s)", name, strings.Join(names, ", "))}
	}
	return keyrelease.ParseKeyRef(k.Ref)
}

func newKeyReleaseCmd() *cobra.Command {
	var cfgFile string
	cmd := &cobra.Command{
		Use:   "release --config FILE NAME",
		Short: "Release a configured key once and describe it (never its private part)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, ref, err := keyRuntime(cmd.Context(), cfgFile, args[0])
			if err != nil {
				return err
			}
			defer rt.close()
			k, err := rt.skr.Release(cmd.Context(), ref)
			if err != nil {
				return err
			}
			defer k.Wipe()
			return describeKey(cmd.OutOrStdout(), k)
		},
	}
	cmd.Flags().StringVar(&cfgFile, "config", "", "configuration file (docs/config.md)")
	return cmd
}

func describeKey(w io.Writer, k *keyrelease.Key) error {
	fmt.Fprintf(w, "key:     %s\ntype:    %s\nsize:    %d bits\n", k.Ref, k.Type, k.Bits())
	if k.Type == keyrelease.KeyTypeOct {
		fmt.Fprintln(w, "public:  none (symmetric key)")
		return nil
	}
	pub, err := k.Marshal(keyrelease.FormatPubPEM)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "public:\n%s", pub)
	return err
}

func newExplainCmd() *cobra.Command {
	var cfgFile string
	cmd := &cobra.Command{
		Use:   "explain --config FILE NAME",
		Short: "Say claim by claim why a key's release passes or fails",
		Long: `Fetch the release policy of a configured key from its vault and a fresh
attestation token, and print, condition by condition, which claims pass and
which fail: the answer to "why was my release denied?". Nothing is released.
Exits 0 when the release would be allowed, 20 when it would be denied.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, ref, err := keyRuntime(cmd.Context(), cfgFile, args[0])
			if err != nil {
				return err
			}
			defer rt.close()
			kc, err := vaultClient(ref, rt.cred, &azcore.ClientOptions{Transport: rt.http})
			if err != nil {
				return err
			}
			resp, err := kc.GetKey(cmd.Context(), ref.Name, ref.Version, nil)
			if err != nil {
				return vaultError("get", ref, err)
			}
			if resp.ReleasePolicy == nil || len(resp.ReleasePolicy.EncodedPolicy) == 0 {
				return fmt.Errorf("%s has no release policy: it cannot be released", ref)
			}
			pol, err := policy.Parse(resp.ReleasePolicy.EncodedPolicy)
			if err != nil {
				return fmt.Errorf("%s: %w", ref, err)
			}
			tok, err := rt.skr.Attest(cmd.Context())
			if err != nil {
				return fmt.Errorf("attestation failed, so no claims to compare: %w", err)
			}
			iss, _ := tok.Claims["iss"].(string)
			res := pol.Evaluate(iss, tok.Claims)
			if err := printExplanation(cmd.OutOrStdout(), ref, iss, res); err != nil {
				return err
			}
			if !res.Allow {
				return exitError{exitDenied} // for scripts; the reasons are printed
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgFile, "config", "", "configuration file (docs/config.md)")
	return cmd
}

func printExplanation(w io.Writer, ref keyrelease.KeyRef, issuer string, res policy.Result) error {
	verdict := "RELEASE WOULD BE DENIED"
	if res.Allow {
		verdict = "release would be allowed"
	}
	fmt.Fprintf(w, "key %s\ntoken issuer %s\n%s\n", ref, issuer, verdict)
	for _, a := range res.Authorities {
		if !a.Matched {
			fmt.Fprintf(w, "  authority %s: not the token's issuer, skipped\n", a.URL)
			continue
		}
		fmt.Fprintf(w, "  authority %s:\n", a.URL)
		printOutcome(w, a.Outcome, "    ")
	}
	if !res.Allow {
		fmt.Fprintf(w, "reason: %s\n", res.Reason)
	}
	return nil
}

func printOutcome(w io.Writer, o policy.Outcome, indent string) {
	mark := "FAIL"
	if o.Pass {
		mark = "ok  "
	}
	if o.Node.Group != "" {
		fmt.Fprintf(w, "%s%s %s:\n", indent, mark, o.Node.Group)
		for _, c := range o.Children {
			printOutcome(w, c, indent+"  ")
		}
		return
	}
	fmt.Fprintf(w, "%s%s %s\n", indent, mark, policy.Describe(o))
	if hint := sgxHint(o); hint != "" {
		fmt.Fprintf(w, "%s     %s\n", indent, hint)
	}
}
