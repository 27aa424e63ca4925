package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/blob/azblob"
	"github.com/skrfs/skrfs/blob/localdir"
)

// storeTarget is what upload and ls need of a store.
type storeTarget interface {
	uploadDest
	listStore
}

// openStoreURL opens a store from a URL or path:
//   - http(s)://account.../container[/prefix][?SAS]: Azure Blob Storage.
//     Credentials: a SAS in the URL; else AZURE_STORAGE_CONNECTION_STRING
//     (its AccountKey or SharedAccessSignature); else, for https, azidentity's
//     DefaultAzureCredential (managed identity, workload identity, az CLI...);
//     else anonymous access to a public container.
//   - anything else: a local directory (created when create is true).
func openStoreURL(ctx context.Context, target string, create bool) (storeTarget, error) {
	return openStore(ctx, target, create, nil, nil)
}

// openStore is openStoreURL with an explicit credential for https URLs
// (nil = DefaultAzureCredential) and transport (nil = the default).
func openStore(ctx context.Context, target string, create bool, cred azcore.TokenCredential, tr policy.Transporter) (storeTarget, error) {
	if !strings.HasPrefix(target, "https://") && !strings.HasPrefix(target, "http://") {
		if create {
			if err := os.MkdirAll(target, 0o755); err != nil {
				return nil, err
			}
		}
		return localdir.New(target)
	}
	u, err := url.Parse(target)
	if err != nil {
		return nil, usageError{fmt.Errorf("store URL: %v", blob.RedactError(err))}
	}
	cfg := azblob.Config{ContainerURL: target, Transport: tr}
	switch cs := os.Getenv("AZURE_STORAGE_CONNECTION_STRING"); {
	case u.Query().Get("sig") != "":
		// SAS in the URL.
	case cs != "":
		fields := parseConnectionString(cs)
		switch {
		case fields["accountkey"] != "":
			cfg.AccountName, cfg.AccountKey = fields["accountname"], fields["accountkey"]
		case fields["sharedaccesssignature"] != "":
			u.RawQuery = strings.TrimPrefix(fields["sharedaccesssignature"], "?")
			cfg.ContainerURL = u.String()
		default:
			return nil, usageError{fmt.Errorf("AZURE_STORAGE_CONNECTION_STRING has neither AccountKey nor SharedAccessSignature")}
		}
	case u.Scheme == "https" && cred != nil:
		cfg.Credential = cred
	case u.Scheme == "https":
		dc, err := azidentity.NewDefaultAzureCredential(nil)
		if err != nil {
			return nil, fmt.Errorf("azure credential: %w", err)
		}
		cfg.Credential = dc
	}
	return azblob.Open(ctx, cfg)
}

// parseConnectionString splits "K1=V1;K2=V2" with lower-cased keys.
func parseConnectionString(s string) map[string]string {
	out := map[string]string{}
	for _, part := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(part, "=")
		if ok {
			out[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
		}
	}
	return out
}
