package main

import (
	"context"
	"errors"
	"testing"

	"github.com/skrfs/skrfs/internal/config"
	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/cache"
)

// The light release of version 2 opens goes through the same allow-list
// as Release, and reaches the key cache's light path (no key material).
func TestAllowListLightRelease(t *testing.T) {
	ok := keyrelease.KeyRef{Vault: "v.vault.azure.net", Name: "ok"}
	other := keyrelease.KeyRef{Vault: "v.vault.azure.net", Name: "other"}
	k, err := keyrelease.ParseKey(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	k.Ref = ok
	c := cache.New(keyrelease.NewStatic(k), cache.Options{})
	defer c.Close()
	a := &allowList{inner: c, cfg: &config.Config{Keys: []config.Key{{Name: "ok", Ref: ok.String()}}}}
	if _, err := a.ReleaseBatchKeys(context.Background(), other); !errors.Is(err, keyrelease.ErrNotAllowed) {
		t.Fatalf("not allowed: %v", err)
	}
	got, err := a.ReleaseBatchKeys(context.Background(), ok)
	if err != nil {
		t.Fatal(err)
	}
	if got.Oct != nil || got.Private != nil || got.Batch == nil {
		t.Fatalf("light release: oct %v private %v batch %v", got.Oct != nil, got.Private != nil, got.Batch != nil)
	}
}
