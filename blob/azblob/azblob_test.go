package azblob_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/blob/azblob"
	"github.com/skrfs/skrfs/blob/blobtest"
	"github.com/skrfs/skrfs/integration/azurite"
)

// One plain (HTTP, shared key, SAS, anonymous) and one secure (HTTPS,
// bearer tokens) emulator for the whole package.
var plain, secure *azurite.Instance

func TestMain(m *testing.M) {
	var stops []func()
	for _, s := range []struct {
		inst **azurite.Instance
		opts azurite.Options
	}{{&plain, azurite.Options{}}, {&secure, azurite.Options{HTTPS: true, OAuth: true}}} {
		inst, stop, err := azurite.StartMain(s.opts)
		if err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
			for _, stop := range stops {
				stop()
			}
			os.Exit(1)
		}
		*s.inst = inst
		stops = append(stops, stop)
	}
	code := m.Run()
	for _, stop := range stops {
		stop()
	}
	os.Exit(code)
}

var containerSeq atomic.Int64

// newContainer creates a fresh container on inst.
func newContainer(tb testing.TB, inst *azurite.Instance, access *container.PublicAccessType) (string, *container.Client) {
	tb.Helper()
	name := fmt.Sprintf("c%05d", containerSeq.Add(1))
	c, err := inst.ContainerClient(name)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := c.Create(context.Background(), &container.CreateOptions{Access: access}); err != nil {
		tb.Fatalf("create container %s: %v", name, err)
	}
	return name, c
}

func open(tb testing.TB, cfg azblob.Config) *azblob.Store {
	tb.Helper()
	s, err := azblob.Open(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	return s
}

func fixture(s *azblob.Store) blobtest.Fixture {
	return blobtest.Fixture{
		Store: s,
		Put: func(name string, data []byte) error {
			return s.Put(context.Background(), name, data, nil)
		},
		Delete: func(name string) error { return s.Delete(context.Background(), name) },
	}
}

// sharedKeyStore opens a fresh container on the plain emulator with its
// connection string and the given prefix.
func sharedKeyStore(tb testing.TB, prefix string) *azblob.Store {
	name, _ := newContainer(tb, plain, nil)
	return open(tb, azblob.Config{ConnectionString: plain.ConnectionString(), Container: name, Prefix: prefix})
}

func TestConformanceSharedKey(t *testing.T) {
	blobtest.Suite{New: func(tb testing.TB) blobtest.Fixture {
		return fixture(sharedKeyStore(tb, "pre/fix"))
	}}.Run(t)
}

func TestConformanceBearerHTTPS(t *testing.T) {
	blobtest.Suite{New: func(tb testing.TB) blobtest.Fixture {
		name, _ := newContainer(tb, secure, nil)
		return fixture(open(tb, azblob.Config{
			ContainerURL: secure.ContainerURL(name),
			Credential:   &azurite.TokenCredential{},
			Transport:    secure.HTTPClient,
		}))
	}}.Run(t)
}

func TestConformanceSAS(t *testing.T) {
	blobtest.Suite{New: func(tb testing.TB) blobtest.Fixture {
		_, c := newContainer(tb, plain, nil)
		perms := sas.ContainerPermissions{Read: true, Add: true, Create: true, Write: true, Delete: true, List: true}
		u, err := c.GetSASURL(perms, time.Now().Add(time.Hour), nil)
		if err != nil {
			tb.Fatal(err)
		}
		// The path after the container becomes the store's prefix.
		base, query, _ := strings.Cut(u, "?")
		return fixture(open(tb, azblob.Config{ContainerURL: base + "/sas/prefix?" + query}))
	}}.Run(t)
}

func TestPrefixIsolation(t *testing.T) {
	name, c := newContainer(t, plain, nil)
	ctx := context.Background()
	inner := open(t, azblob.Config{ConnectionString: plain.ConnectionString(), Container: name, Prefix: "/in/"})
	whole := open(t, azblob.Config{ContainerURL: plain.ContainerURL(name), AccountKey: plain.AccountKey})
	if inner.Prefix() != "in/" || whole.Prefix() != "" {
		t.Fatalf("prefixes %q, %q", inner.Prefix(), whole.Prefix())
	}
	if err := inner.Put(ctx, "x", []byte("inside"), nil); err != nil {
		t.Fatal(err)
	}
	if err := whole.Put(ctx, "x", []byte("outside"), nil); err != nil {
		t.Fatal(err)
	}
	// A name Azure allows but blob.CheckName does not: not listed.
	if _, err := c.NewBlockBlobClient("in//odd").UploadBuffer(ctx, []byte("?"), nil); err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := whole.List(ctx, blob.ListOptions{}, func(i blob.Info) error {
		got = append(got, i.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, " ") != "in/x x" {
		t.Fatalf("whole container lists %q", got)
	}
	got = nil
	if err := inner.List(ctx, blob.ListOptions{Delimiter: "/"}, func(i blob.Info) error {
		got = append(got, i.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, " ") != "x" {
		t.Fatalf("prefixed store lists %q", got)
	}
	info, err := inner.Stat(ctx, "x")
	if err != nil || info.Size != int64(len("inside")) {
		t.Fatalf("Stat(in/x) = %+v, %v", info, err)
	}
	if _, err := inner.Stat(ctx, "../x"); !errors.Is(err, blob.ErrInvalidName) {
		t.Fatalf("Stat(../x) = %v, want ErrInvalidName", err)
	}
}

func TestAnonymousPublicContainer(t *testing.T) {
	access := container.PublicAccessTypeContainer
	name, _ := newContainer(t, plain, &access)
	writer := open(t, azblob.Config{ContainerURL: plain.ContainerURL(name), AccountKey: plain.AccountKey})
	data := blobtest.Data(9, 5000)
	if err := writer.Put(context.Background(), "pub/obj", data, nil); err != nil {
		t.Fatal(err)
	}
	anon := open(t, azblob.Config{ContainerURL: plain.ContainerURL(name) + "/pub"})
	info, err := anon.Stat(context.Background(), "obj")
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 100)
	if n, err := anon.ReadAt(context.Background(), info.Ref(), p, 4950); n != 50 || err != io.EOF || !bytes.Equal(p[:n], data[4950:]) {
		t.Fatalf("anonymous ReadAt = %d, %v", n, err)
	}
}

func TestMetadataCaseInsensitive(t *testing.T) {
	s := sharedKeyStore(t, "")
	ctx := context.Background()
	md := map[string]string{"wrappedkey": "d3JhcHBlZA==", "SkrfsFormat": "v1"}
	if err := s.Put(ctx, "m/obj", []byte("x"), md); err != nil {
		t.Fatal(err)
	}
	check := func(where string, got map[string]string) {
		t.Helper()
		for _, k := range []string{"wrappedkey", "WrappedKey", "WRAPPEDKEY"} {
			if v, ok := blob.MetadataValue(got, k); !ok || v != md["wrappedkey"] {
				t.Errorf("%s: MetadataValue(%v, %q) = %q, %v", where, got, k, v, ok)
			}
		}
		if v, ok := blob.MetadataValue(got, "skrfsformat"); !ok || v != "v1" {
			t.Errorf("%s: MetadataValue(%v, skrfsformat) = %q, %v", where, got, v, ok)
		}
	}
	info, err := s.Stat(ctx, "m/obj")
	if err != nil {
		t.Fatal(err)
	}
	check("Stat", info.Metadata)
	for _, delim := range []string{"", "/"} {
		var listed []blob.Info
		if err := s.List(ctx, blob.ListOptions{Prefix: "m/", Delimiter: delim, WithMetadata: true}, func(i blob.Info) error {
			listed = append(listed, i)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(listed) != 1 {
			t.Fatalf("List = %+v", listed)
		}
		check("List", listed[0].Metadata)
	}
	if err := s.List(ctx, blob.ListOptions{Prefix: "m/"}, func(i blob.Info) error {
		if i.Metadata != nil {
			t.Errorf("List without WithMetadata returned %v", i.Metadata)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestPermissionDenied(t *testing.T) {
	name, _ := newContainer(t, plain, nil)
	ctx := context.Background()
	good := open(t, azblob.Config{ContainerURL: plain.ContainerURL(name), AccountKey: plain.AccountKey})
	if err := good.Put(ctx, "secret", []byte("s"), nil); err != nil {
		t.Fatal(err)
	}
	info, err := good.Stat(ctx, "secret")
	if err != nil {
		t.Fatal(err)
	}
	wrongKey := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 64))
	cfg := azblob.Config{ContainerURL: plain.ContainerURL(name), AccountKey: wrongKey}
	wantPermission := func(what string, err error) {
		t.Helper()
		var re *azcore.ResponseError
		if !errors.Is(err, blob.ErrPermission) || !errors.As(err, &re) || re.StatusCode != http.StatusForbidden {
			t.Errorf("%s with a wrong key = %v, want ErrPermission wrapping a 403 ResponseError", what, err)
		}
	}
	_, err = azblob.Open(ctx, cfg)
	wantPermission("Open", err)

	cfg.SkipCheck = true
	bad := open(t, cfg)
	_, err = bad.Stat(ctx, "secret")
	wantPermission("Stat", err)
	_, err = bad.ReadAt(ctx, info.Ref(), make([]byte, 1), 0)
	wantPermission("ReadAt", err)
	wantPermission("List", bad.List(ctx, blob.ListOptions{}, func(blob.Info) error { return nil }))
	wantPermission("Put", bad.Put(ctx, "other", nil, nil))

	// A bearer token for another audience.
	sname, _ := newContainer(t, secure, nil)
	_, err = azblob.Open(ctx, azblob.Config{
		ContainerURL: secure.ContainerURL(sname),
		Credential:   &azurite.TokenCredential{Audience: "https://vault.azure.net"},
		Transport:    secure.HTTPClient,
	})
	wantPermission("Open with a token for another audience", err)
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	name, _ := newContainer(t, plain, nil)
	for _, tc := range []struct {
		name string
		cfg  azblob.Config
		want string
	}{
		{"nothing", azblob.Config{}, "exactly one"},
		{"both", azblob.Config{ContainerURL: plain.ContainerURL(name), ConnectionString: plain.ConnectionString()}, "exactly one"},
		{"no container", azblob.Config{ConnectionString: plain.ConnectionString()}, "needs Container"},
		{"bearer over http", azblob.Config{ContainerURL: plain.ContainerURL(name), Credential: &azurite.TokenCredential{}}, "https"},
		{"relative URL", azblob.Config{ContainerURL: "devstoreaccount1/x"}, "absolute"},
		{"bad prefix", azblob.Config{ContainerURL: plain.ContainerURL(name), Prefix: "a/../b"}, "invalid"},
	} {
		if _, err := azblob.Open(ctx, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Open = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	_, err := azblob.Open(ctx, azblob.Config{ConnectionString: plain.ConnectionString(), Container: "nosuchcontainer"})
	if !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Open(missing container) = %v, want ErrNotFound", err)
	}
}

// putLarge uploads n deterministic bytes with the streaming Upload.
func putLarge(t *testing.T, s *azblob.Store, name string, seed uint64, n int) (blob.Info, []byte) {
	t.Helper()
	data := blobtest.Data(seed, n)
	if err := s.Upload(context.Background(), name, bytes.NewReader(data), map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	info, err := s.Stat(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != int64(n) {
		t.Fatalf("uploaded %d bytes, Stat says %d", n, info.Size)
	}
	return info, data
}

func TestRangeReader(t *testing.T) {
	name, _ := newContainer(t, plain, nil)
	s := open(t, azblob.Config{ConnectionString: plain.ConnectionString(), Container: name,
		UploadBlockSize: 1<<20 + 3, UploadConcurrency: 3})
	const size = 20<<20 + 12345
	info, data := putLarge(t, s, "big", 42, size)
	ctx := context.Background()
	for _, tc := range []azblob.ReaderOptions{
		{}, // the store's defaults
		{RangeSize: 333_333, Parallelism: 1},
		{RangeSize: 1<<20 + 7, Parallelism: 3},
		{RangeSize: 4<<20 + 1, Parallelism: 2},
		{RangeSize: 7<<20 - 3, Parallelism: 8},
		{RangeSize: 64 << 20, Parallelism: 2}, // one range
		{Offset: 5<<20 + 1, RangeSize: 2<<20 + 1, Parallelism: 4},
		{Offset: size - 10, RangeSize: 4},
		{Offset: size},
	} {
		t.Run(fmt.Sprintf("off%d-range%d-par%d", tc.Offset, tc.RangeSize, tc.Parallelism), func(t *testing.T) {
			r := s.NewRangeReader(ctx, info.Ref(), size, tc)
			defer r.Close()
			var got bytes.Buffer
			if _, err := io.Copy(&got, r); err != nil { // uses WriteTo
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), data[tc.Offset:]) {
				t.Fatalf("read %d bytes, want %d; contents differ", got.Len(), size-tc.Offset)
			}
		})
	}
	t.Run("iotest", func(t *testing.T) {
		const off = 1<<20 + 99
		r := s.NewRangeReader(ctx, info.Ref(), 4<<20, azblob.ReaderOptions{Offset: off, RangeSize: 100_003, Parallelism: 3})
		defer r.Close()
		if err := iotest.TestReader(r, data[off:4<<20]); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("size larger than the object", func(t *testing.T) {
		r := s.NewRangeReader(ctx, info.Ref(), size+100, azblob.ReaderOptions{RangeSize: 8 << 20})
		defer r.Close()
		n, err := io.Copy(io.Discard, r)
		if !errors.Is(err, io.ErrUnexpectedEOF) || n != 16<<20 {
			t.Fatalf("reading past the real end: %d bytes, %v; want 16 MiB then ErrUnexpectedEOF", n, err)
		}
	})
	t.Run("offset past size", func(t *testing.T) {
		r := s.NewRangeReader(ctx, info.Ref(), size, azblob.ReaderOptions{Offset: size + 1})
		defer r.Close()
		if _, err := r.Read(make([]byte, 1)); !errors.Is(err, blob.ErrOutOfRange) {
			t.Fatalf("Read = %v, want ErrOutOfRange", err)
		}
	})
	t.Run("close mid-read", func(t *testing.T) {
		r := s.NewRangeReader(ctx, info.Ref(), size, azblob.ReaderOptions{RangeSize: 1 << 20, Parallelism: 8})
		p := make([]byte, 1000)
		if _, err := io.ReadFull(r, p); err != nil || !bytes.Equal(p, data[:1000]) {
			t.Fatalf("first read: %v", err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Read(p); err == nil {
			t.Fatal("Read after Close succeeded")
		}
	})
}

// TestRangeReaderChanged replaces the blob between two ranged reads: the
// reader must fail with ErrChanged and hand out only bytes of the old
// version.
func TestRangeReaderChanged(t *testing.T) {
	s := sharedKeyStore(t, "")
	ctx := context.Background()
	const size, rangeSize = 3<<20 + 5, 100_000
	old := blobtest.Data(1, size)
	if err := s.Put(ctx, "obj", old, nil); err != nil {
		t.Fatal(err)
	}
	info, err := s.Stat(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	r := s.NewRangeReader(ctx, info.Ref(), size, azblob.ReaderOptions{RangeSize: rangeSize, Parallelism: 2})
	defer r.Close()
	first := make([]byte, rangeSize)
	if _, err := io.ReadFull(r, first); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "obj", blobtest.Data(2, size), nil); err != nil { // same size
		t.Fatal(err)
	}
	rest, err := io.ReadAll(r)
	if !errors.Is(err, blob.ErrChanged) {
		t.Fatalf("reading on after the blob was replaced: %v, want ErrChanged", err)
	}
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusPreconditionFailed {
		t.Errorf("error %v does not wrap a 412 ResponseError", err)
	}
	got := append(first, rest...)
	if len(got) >= size || !bytes.Equal(got, old[:len(got)]) {
		t.Fatalf("got %d bytes that are not a prefix of the old version", len(got))
	}
	// At most the ranges in flight when the blob was replaced got through.
	if len(got) > 3*rangeSize {
		t.Errorf("got %d bytes, more than Parallelism ranges after the first", len(got))
	}
}

// transport wraps an http.Client and lets a test tamper with Get Blob
// responses.
type transport struct {
	hc     *http.Client
	tamper func(*http.Response)
}

func (t transport) Do(req *http.Request) (*http.Response, error) {
	resp, err := t.hc.Do(req)
	if err == nil && resp.StatusCode == http.StatusPartialContent {
		t.tamper(resp)
	}
	return resp, err
}

var _ policy.Transporter = transport{}

type readCloser struct {
	io.Reader
	io.Closer
}

func TestTruncatedBody(t *testing.T) {
	name, _ := newContainer(t, plain, nil)
	ctx := context.Background()
	data := blobtest.Data(3, 10000)
	writer := open(t, azblob.Config{ContainerURL: plain.ContainerURL(name), AccountKey: plain.AccountKey})
	if err := writer.Put(ctx, "obj", data, nil); err != nil {
		t.Fatal(err)
	}
	info, err := writer.Stat(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}

	// The body ends cleanly after 100 bytes although Content-Length says more.
	short := open(t, azblob.Config{ContainerURL: plain.ContainerURL(name), AccountKey: plain.AccountKey,
		Transport: transport{hc: plain.HTTPClient, tamper: func(resp *http.Response) {
			resp.Body = readCloser{io.LimitReader(resp.Body, 100), resp.Body}
		}}})
	p := make([]byte, 5000)
	if n, err := short.ReadAt(ctx, info.Ref(), p, 10); n != 0 || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("ReadAt over a truncated body = %d, %v; want 0, ErrUnexpectedEOF", n, err)
	}

	// The first body breaks off after 100 bytes; the read resumes.
	var broken atomic.Int32
	flaky := open(t, azblob.Config{ContainerURL: plain.ContainerURL(name), AccountKey: plain.AccountKey,
		Transport: transport{hc: plain.HTTPClient, tamper: func(resp *http.Response) {
			if broken.Add(1) == 1 {
				resp.Body = readCloser{io.MultiReader(io.LimitReader(resp.Body, 100), iotest.ErrReader(io.ErrUnexpectedEOF)), resp.Body}
			}
		}}})
	if n, err := flaky.ReadAt(ctx, info.Ref(), p, 10); n != len(p) || err != nil || !bytes.Equal(p, data[10:10+len(p)]) {
		t.Fatalf("ReadAt over a broken-off body = %d, %v; want a resumed, correct read", n, err)
	}
	if broken.Load() != 2 {
		t.Errorf("%d ranged GETs, want 2 (one resumed)", broken.Load())
	}
}
