package sgxquote

import (
	"bytes"
	"testing"
)

// FuzzParse feeds untrusted quote bytes to Parse and Verify: no panic, no
// out-of-range slices, and nothing but the genuine quotes verifies.
func FuzzParse(f *testing.F) {
	release := readTestdata(f, "release.quote")
	debug := readTestdata(f, "debug.quote")
	f.Add(release)
	f.Add(debug)
	f.Add(release[:SignedSize+4+minSignatureData])
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
		if _, err := Verify(b, Options{Now: now}); err == nil && !bytes.Equal(b, release) && !bytes.Equal(b, debug) {
			t.Fatalf("a mutated quote verified: %x", b)
		}
	})
}
