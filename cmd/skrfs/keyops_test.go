package main

import (
	"strings"
	"testing"
)

func TestKeyOps(t *testing.T) {
	got, err := keyOps([]string{"WrapKey", " unwrapkey", "encrypt"})
	if err != nil || len(got) != 3 || *got[0] != "wrapKey" || *got[1] != "unwrapKey" || *got[2] != "encrypt" {
		t.Fatalf("keyOps = %v, %v", got, err)
	}
	if got, err := keyOps(nil); got != nil || err != nil {
		t.Fatalf("no --ops: %v, %v", got, err)
	}
	for _, bad := range [][]string{{"frobnicate"}, {"sign", "SIGN"}, {""}} {
		if _, err := keyOps(bad); err == nil || !strings.Contains(err.Error(), "--ops") {
			t.Errorf("keyOps(%q) = %v", bad, err)
		}
	}
}
