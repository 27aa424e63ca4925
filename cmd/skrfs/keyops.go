package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/skrfs/skrfs/keyrelease/akv"
)

// keyOpNames are Key Vault's key operations (JsonWebKeyOperation).
var keyOpNames = []string{"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey", "import", "export"}

// keyOps turns `key create --ops` into Key Vault's key_ops: known
// operations only (matched case-insensitively, written as Key Vault spells
// them), no duplicates; nil (the vault's default: every operation the key
// type permits) when none were given.
func keyOps(ops []string) ([]*azkeys.KeyOperation, error) {
	var out []*azkeys.KeyOperation
	var seen []string
	for _, op := range ops {
		op = strings.TrimSpace(op)
		i := slices.IndexFunc(keyOpNames, func(n string) bool { return strings.EqualFold(n, op) })
		if i < 0 {
			return nil, fmt.Errorf("--ops: %q is not a key operation (%s)", op, strings.Join(keyOpNames, ", "))
		}
		if slices.Contains(seen, keyOpNames[i]) {
			return nil, fmt.Errorf("--ops: %s given twice", keyOpNames[i])
		}
		seen = append(seen, keyOpNames[i])
		out = append(out, to(azkeys.KeyOperation(keyOpNames[i])))
	}
	return out, nil
}

// pinVaultScope is akv.PinScope for the key CLIs' azkeys clients.
func pinVaultScope(cred azcore.TokenCredential, host string) (azcore.TokenCredential, bool) {
	return akv.PinScope(cred, host)
}
