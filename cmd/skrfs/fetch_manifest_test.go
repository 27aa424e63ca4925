package main

import (
	"context"
	"errors"
	"testing"

	"github.com/skrfs/skrfs/internal/config"
)

// TestFetchRefusesManifestDatasets: FUSE-free delivery does not enforce
// signed manifests, so it refuses datasets that require or prefer one
// instead of delivering what a mount would refuse.
func TestFetchRefusesManifestDatasets(t *testing.T) {
	for _, mode := range []string{config.ManifestRequire, config.ManifestPrefer} {
		cfg := &config.Config{Datasets: []config.Dataset{{Name: "d", Local: "x", Manifest: mode, Signers: []string{"a.pem"}}}}
		if _, _, err := deliveryOptions(context.Background(), cfg); !errors.Is(err, errManifestNotEnforced) {
			t.Fatalf("manifest: %s: %v", mode, err)
		}
	}
}
