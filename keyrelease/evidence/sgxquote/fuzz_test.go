package sgxquote

import (
	"bytes"
	"testing"
)

// FuzzParse feeds untrusted quote bytes to Parse and Verify: no panic, no
// out-of-range slices, and whatever verifies carries exactly a genuine
// quote's signed bytes, attestation key, QE report and signatures, and its
// PCK certificate (only the PEM text around the certificates may differ).
func FuzzParse(f *testing.F) {
	var genuine []*Result
	for _, name := range []string{"release.quote", "debug.quote"} {
		q := readTestdata(f, name)
		f.Add(q)
		res, err := Verify(q, Options{Now: now})
		if err != nil {
			f.Fatal(err)
		}
		genuine = append(genuine, res)
	}
	f.Add(genuine[0].Quote.Raw[:SignedSize+4+minSignatureData])
	f.Add([]byte{3, 0, 2, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := Parse(b)
		if err != nil {
			if q != nil {
				t.Fatal("quote and error")
			}
			return
		}
		if len(q.ISVSignature) != 64 || len(q.AttestationKey) != 64 || len(q.QESignature) != 64 || len(q.QEReportRaw) != ReportBodySize {
			t.Fatalf("field sizes %d %d %d %d", len(q.ISVSignature), len(q.AttestationKey), len(q.QESignature), len(q.QEReportRaw))
		}
		res, err := Verify(b, Options{Now: now})
		if err != nil {
			return
		}
		// The lengths and the PEM text are not signed; everything else is.
		signed := func(r *Quote) []byte {
			return bytes.Join([][]byte{r.Raw[:SignedSize], r.ISVSignature, r.AttestationKey, r.QEReportRaw, r.QESignature, r.QEAuthData,
				{byte(r.CertDataType), byte(r.CertDataType >> 8)}}, nil)
		}
		for _, g := range genuine {
			if bytes.Equal(signed(res.Quote), signed(g.Quote)) && bytes.Equal(res.PCK.Raw, g.PCK.Raw) {
				return
			}
		}
		t.Fatalf("a mutated quote verified: %x", b)
	})
}
