package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
)

// The epoch anchor (docs/threat-model.md): a Key Vault secret holding a
// dataset's current manifest epoch, read by mounts with their identity
// (secrets/get) over authenticated TLS and set by producers after each
// publish (secrets/set). A storage-only attacker cannot change it, so it
// stops whole-dataset rollback even on a fresh mount.

type vaultAnchor struct {
	client *azsecrets.Client
	name   string
}

func parseSecretURL(s string) (vault, name string, err error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", "", fmt.Errorf("anchor %q is not https://<vault>/secrets/<name>", s)
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if len(parts) < 2 || parts[0] != "secrets" || parts[1] == "" {
		return "", "", fmt.Errorf("anchor %q is not https://<vault>/secrets/<name>", s)
	}
	return "https://" + u.Host, parts[1], nil
}

func newVaultAnchor(secretURL string, cred azcore.TokenCredential, tr policy.Transporter) (*vaultAnchor, error) {
	vault, name, err := parseSecretURL(secretURL)
	if err != nil {
		return nil, err
	}
	if cred == nil {
		if cred, err = azidentity.NewDefaultAzureCredential(nil); err != nil {
			return nil, fmt.Errorf("azure credential: %w", err)
		}
	}
	opts := &azsecrets.ClientOptions{}
	if tr != nil {
		opts.Transport = tr
	}
	host := strings.Split(strings.TrimPrefix(vault, "https://"), ":")[0]
	if !strings.HasSuffix(host, ".vault.azure.net") && !strings.HasSuffix(host, ".managedhsm.azure.net") {
		opts.DisableChallengeResourceVerification = true
	}
	c, err := azsecrets.NewClient(vault, cred, opts)
	if err != nil {
		return nil, err
	}
	return &vaultAnchor{client: c, name: name}, nil
}

// Epoch reads the secret's current version: a decimal epoch.
func (a *vaultAnchor) Epoch(ctx context.Context) (uint64, error) {
	resp, err := a.client.GetSecret(ctx, a.name, "", nil)
	if err != nil {
		return 0, fmt.Errorf("reading the epoch anchor %s (needs secrets/get): %w", a.name, err)
	}
	if resp.Value == nil {
		return 0, fmt.Errorf("epoch anchor %s: empty secret", a.name)
	}
	e, err := strconv.ParseUint(strings.TrimSpace(*resp.Value), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("epoch anchor %s: %q is not an epoch", a.name, *resp.Value)
	}
	return e, nil
}

// floor is the anchor's epoch as a producer's floor: 0 while the secret
// does not exist yet (before the dataset's first anchored publish).
func (a *vaultAnchor) floor(ctx context.Context) (uint64, error) {
	e, err := a.Epoch(ctx)
	var re *azcore.ResponseError
	if errors.As(err, &re) && re.StatusCode == 404 {
		return 0, nil
	}
	return e, err
}

// set writes a new version holding epoch; it refuses to lower the anchor.
func (a *vaultAnchor) set(ctx context.Context, epoch uint64) error {
	cur, err := a.Epoch(ctx)
	var re *azcore.ResponseError
	if err != nil && !(errors.As(err, &re) && re.StatusCode == 404) {
		return err
	}
	if cur > epoch {
		return fmt.Errorf("epoch anchor %s is at %d, above the published epoch %d: another producer published meanwhile", a.name, cur, epoch)
	}
	v := strconv.FormatUint(epoch, 10)
	ct := "skrfs-manifest-epoch"
	if _, err := a.client.SetSecret(ctx, a.name, azsecrets.SetSecretParameters{Value: &v, ContentType: &ct}, nil); err != nil {
		return fmt.Errorf("setting the epoch anchor %s (needs secrets/set): %w", a.name, err)
	}
	return nil
}

// Advance moves the anchor up to epoch (fs.EpochAdvancer: a writable
// mount that publishes manifests keeps the anchor at its epoch).
func (a *vaultAnchor) Advance(ctx context.Context, epoch uint64) error { return a.set(ctx, epoch) }

// openAnchor opens the anchor of a producer command (--anchor) with the
// default Azure credential; tests replace it.
var openAnchor = func(secretURL string) (*vaultAnchor, error) {
	return newVaultAnchor(secretURL, nil, nil)
}
