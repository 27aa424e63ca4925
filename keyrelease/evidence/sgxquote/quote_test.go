package sgxquote

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"
)

// The genuine quotes (testdata/README.md) are copies of
// ../shared/testdata/sgx: Azure SGX hardware, Intel SDK sample enclave.
var now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestIntelRootPinned(t *testing.T) {
	r, err := IntelRoot()
	if err != nil {
		t.Fatal(err)
	}
	if r.Subject.CommonName != "Intel SGX Root CA" || !r.IsCA {
		t.Fatalf("root %v", r.Subject)
	}
}

func TestGenuineQuotes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mrenclave string
		debug     bool
	}{
		{"release", "d37d983a85d63fb49649610e2eba0930ecdbff6d113aca3ff3fc7261696c0134", false},
		{"debug", "3e2df98fc7fd042b842121cae6a8086d546e7970db55103725cc1dcbc2c48814", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			quote := readTestdata(t, tc.name+".quote")
			held := readTestdata(t, tc.name+".held_data")
			res, err := Verify(quote, Options{HeldData: held, Now: now})
			if err != nil {
				t.Fatal(err)
			}
			c := Claims(res.Quote, held)
			for k, want := range map[string]any{
				"x-ms-attestation-type":  "sgx",
				"x-ms-sgx-mrenclave":     tc.mrenclave,
				"x-ms-sgx-mrsigner":      "feb995eb86c349ac98e5afbbb5732ca7376ec9979002702ea17ad476e0853a04",
				"x-ms-sgx-is-debuggable": tc.debug,
				"x-ms-sgx-product-id":    1,
				"x-ms-sgx-svn":           1,
				"x-ms-sgx-ehd":           "AQIDBAUG",
			} {
				if c[k] != want {
					t.Errorf("%s = %v, want %v", k, c[k], want)
				}
			}
			sum := sha256.Sum256(held)
			if c["x-ms-sgx-report-data"] != hex.EncodeToString(sum[:])+strings.Repeat("0", 64) {
				t.Errorf("report data %v", c["x-ms-sgx-report-data"])
			}
			if len(res.Chain) != 3 || res.Chain[2].Subject.CommonName != "Intel SGX Root CA" {
				t.Errorf("chain %v", res.Chain)
			}
			if len(res.FMSPC) != 12 || res.PCEID != "0000" {
				t.Errorf("FMSPC %q PCEID %q", res.FMSPC, res.PCEID)
			}
		})
	}
}

// sigDataOffsets are the fields of the signature data, relative to the
// quote start.
const (
	offISVSig  = SignedSize + 4
	offAttKey  = offISVSig + 64
	offQERep   = offAttKey + 64
	offQESig   = offQERep + 384
	offAuthLen = offQESig + 64
)

// TestFlippedBitsFail flips one bit at a time in every byte of the header,
// the ISV report body, the ISV signature, the attestation key, the QE
// report, the QE signature and the QE auth data: each must fail.
func TestFlippedBitsFail(t *testing.T) {
	quote := readTestdata(t, "release.quote")
	held := readTestdata(t, "release.held_data")
	authLen := int(binary.LittleEndian.Uint16(quote[offAuthLen:]))
	regions := []struct {
		name       string
		start, end int
	}{
		{"header", 0, HeaderSize},
		{"report body", HeaderSize, SignedSize},
		{"signature data length", SignedSize, SignedSize + 4},
		{"ISV signature", offISVSig, offAttKey},
		{"attestation key", offAttKey, offQERep},
		{"QE report", offQERep, offQESig},
		{"QE signature", offQESig, offAuthLen},
		{"QE auth data", offAuthLen, offAuthLen + 2 + authLen},
		{"certification data header", offAuthLen + 2 + authLen, offAuthLen + 2 + authLen + 6},
	}
	for _, r := range regions {
		t.Run(r.name, func(t *testing.T) {
			for i := r.start; i < r.end; i++ {
				for _, bit := range []uint{uint(i % 8), uint((i + 3) % 8)} {
					bad := bytes.Clone(quote)
					bad[i] ^= 1 << bit
					// Without held data too: the signatures alone must catch it.
					if _, err := Verify(bad, Options{Now: now}); err == nil {
						t.Fatalf("quote with bit %d of byte %d (%s) flipped verified", bit, i, r.name)
					}
					if _, err := Verify(bad, Options{Now: now, HeldData: held}); err == nil {
						t.Fatalf("quote with bit %d of byte %d (%s) flipped verified with held data", bit, i, r.name)
					}
				}
			}
		})
	}
}

func TestVerifyErrors(t *testing.T) {
	quote := readTestdata(t, "release.quote")
	held := readTestdata(t, "release.held_data")
	withByte := func(off int, v byte) []byte {
		b := bytes.Clone(quote)
		b[off] = v
		return b
	}
	// A chain with a fake root: the signatures hold, the root is not Intel's.
	fakeRoot, fakeQuote := fakeChainQuote(t, quote, true)
	_, noExtQuote := fakeChainQuote(t, quote, false)
	for _, tc := range []struct {
		name    string
		quote   []byte
		opts    Options
		wantErr string
	}{
		{"wrong held data", quote, Options{Now: now, HeldData: []byte("other")}, "not SHA-256 of the held data"},
		{"empty held data", quote, Options{Now: now, HeldData: []byte{}}, "not SHA-256 of the held data"},
		{"version 4", withByte(0, 4), Options{Now: now}, "version want=3 have=4"},
		{"EPID key type", withByte(2, 0), Options{Now: now}, "attestation key type"},
		{"vendor", withByte(12, 0), Options{Now: now}, "QE vendor id"},
		{"truncated", quote[:len(quote)-1], Options{Now: now}, "signature data length"},
		{"trailing byte", append(bytes.Clone(quote), 0), Options{Now: now}, "signature data length"},
		{"too short", quote[:600], Options{Now: now}, "too short"},
		{"empty", nil, Options{Now: now}, "too short"},
		{"PCK expired", quote, Options{Now: time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)}, "PCK certificate chain"},
		{"before PCK", quote, Options{Now: time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC)}, "PCK certificate chain"},
		{"fake root not trusted", fakeQuote, Options{Now: now}, "PCK certificate chain"},
		{"fake root trusted when given", fakeQuote, Options{Now: now, Roots: []*x509.Certificate{fakeRoot}, HeldData: held}, ""},
		{"Intel quote under fake root only", quote, Options{Now: now, Roots: []*x509.Certificate{fakeRoot}}, "PCK certificate chain"},
		{"leaf without SGX extension", noExtQuote, Options{Now: now, Roots: []*x509.Certificate{noExtRoot(t, noExtQuote)}}, "not a PCK certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(tc.quote, tc.opts)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// fakeChainQuote re-signs the genuine quote's QE report under a fake
// root -> PCK chain of the same shape: it must verify only when its root is
// passed explicitly (the devstack's case).
func fakeChainQuote(t *testing.T, quote []byte, sgxExt bool) (*x509.Certificate, []byte) {
	t.Helper()
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pckKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	mk := func(cn string, serial int64, pub, signer *ecdsa.PrivateKey, parent *x509.Certificate, ca bool) *x509.Certificate {
		tpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: ca, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
		if parent == nil {
			parent = tpl
		} else if sgxExt {
			type item struct {
				ID    asn1.ObjectIdentifier
				Value asn1.RawValue
			}
			ext, err := asn1.Marshal([]item{
				{oidPCEID, asn1.RawValue{Tag: asn1.TagOctetString, Bytes: []byte{0, 0}}},
				{oidFMSPC, asn1.RawValue{Tag: asn1.TagOctetString, Bytes: []byte{0, 0x90, 0x6e, 0xd5, 0, 0}}}})
			if err != nil {
				t.Fatal(err)
			}
			tpl.ExtraExtensions = []pkix.Extension{{Id: oidSGXExtensions, Value: ext}}
		}
		der, err := x509.CreateCertificate(rand.Reader, tpl, parent, &pub.PublicKey, signer)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c
	}
	root := mk("Intel SGX Root CA", 1, rootKey, rootKey, nil, true)
	pck := mk("fake PCK", 2, pckKey, rootKey, root, false)
	var pemChain []byte
	for _, c := range []*x509.Certificate{pck, root} {
		pemChain = append(pemChain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	authLen := int(binary.LittleEndian.Uint16(quote[offAuthLen:]))
	head := bytes.Clone(quote[:offAuthLen+2+authLen])
	d := sha256.Sum256(head[offQERep:offQESig])
	r, s, err := ecdsa.Sign(rand.Reader, pckKey, d[:])
	if err != nil {
		t.Fatal(err)
	}
	r.FillBytes(head[offQESig : offQESig+32])
	s.FillBytes(head[offQESig+32 : offQESig+64])
	out := binary.LittleEndian.AppendUint16(head, CertDataPCKChain)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(pemChain)))
	out = append(out, pemChain...)
	binary.LittleEndian.PutUint32(out[SignedSize:], uint32(len(out)-SignedSize-4))
	return root, out
}

func TestParseFields(t *testing.T) {
	q, err := Parse(readTestdata(t, "debug.quote"))
	if err != nil {
		t.Fatal(err)
	}
	if q.Report.AttributesFlags&0xff != 0x07 || !q.Report.Debuggable() {
		t.Errorf("debug flags %#x", q.Report.AttributesFlags)
	}
	if q.QEReport.Debuggable() || q.CertDataType != 5 || len(q.QEAuthData) != 32 {
		t.Errorf("QE debug %v cert type %d auth %d", q.QEReport.Debuggable(), q.CertDataType, len(q.QEAuthData))
	}
}

// noExtRoot returns the root certificate carried in a fake quote's chain.
func noExtRoot(t *testing.T, quote []byte) *x509.Certificate {
	t.Helper()
	q, err := Parse(quote)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := parsePEMChain(q.CertData)
	if err != nil {
		t.Fatal(err)
	}
	return certs[len(certs)-1]
}
