package cvm_test

import (
	"errors"
	"os"
	"testing"

	"github.com/skrfs/skrfs/keyrelease/attest/cvm"
)

// FuzzVerifyTPM: the AzureGuest request parser and the vTPM evidence
// checks (the devstack's MAA runs them on whatever a client sends) never
// panic, classify every failure, and accept a request only with the
// recorded request's AK, nonce and encryption key: a mutation that
// verifies has changed nothing that is signed. The seed is a request made
// against swtpm (testdata/azureguest-request.json, from the same code as
// TestTPMSteps).
func FuzzVerifyTPM(f *testing.F) {
	body, err := os.ReadFile("testdata/azureguest-request.json")
	if err != nil {
		f.Fatal(err)
	}
	ai, err := cvm.ParseRequest(body)
	if err != nil {
		f.Fatal(err)
	}
	want, err := cvm.VerifyTPM(ai)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(body)
	f.Add([]byte(`{"AttestationInfo":""}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ai, err := cvm.ParseRequest(b)
		if err != nil {
			if !errors.Is(err, cvm.ErrTPMEvidence) {
				t.Fatalf("unclassified: %v", err)
			}
			return
		}
		v, err := cvm.VerifyTPM(ai)
		if err != nil {
			if !errors.Is(err, cvm.ErrTPMEvidence) {
				t.Fatalf("unclassified: %v", err)
			}
			return
		}
		if v.Nonce != want.Nonce || v.AK.N.Cmp(want.AK.N) != 0 || v.EncKey.N.Cmp(want.EncKey.N) != 0 {
			t.Fatalf("verified evidence that was never signed: nonce %q", v.Nonce)
		}
	})
}
