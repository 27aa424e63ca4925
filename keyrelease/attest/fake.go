package attest

import (
	"context"

	"github.com/skrfs/skrfs/keyrelease/attest/fakesnp"
)

// Fake is the provider of the devstack's fake SEV-SNP device. It is used
// only when a configuration asks for it (attestation.provider: fake).
type Fake struct {
	Device *fakesnp.Device
	// Endorsements are sent with every report (none by default).
	Endorsements [][]byte
}

// Evidence signs a report for reportData with the fake chip.
func (f *Fake) Evidence(_ context.Context, reportData [64]byte) (*Evidence, error) {
	r, err := f.Device.Report(reportData)
	if err != nil {
		return nil, err
	}
	vcek, ask, ark := f.Device.Certs()
	return &Evidence{Report: r, VCEK: vcek, Chain: append(ask, ark...), Endorsements: f.Endorsements, Source: "fake SEV-SNP device"}, nil
}
