package azblob_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"testing/iotest"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/blob/azblob"
	"github.com/skrfs/skrfs/blob/blobtest"
)

// blobChange alters the blob "obj" behind a reader's back; want is the
// error a read pinned to the old version must give.
type blobChange struct {
	name   string
	change func(ctx context.Context, s *azblob.Store) error
	want   error
}

var changes = []blobChange{
	{"replaced", func(ctx context.Context, s *azblob.Store) error {
		return s.Put(ctx, "obj", blobtest.Data(5, 10000), nil) // same size, other bytes
	}, blob.ErrChanged},
	{"deleted", func(ctx context.Context, s *azblob.Store) error { return s.Delete(ctx, "obj") }, blob.ErrNotFound},
}

// TestResumeAfterChange: a body that breaks off is resumed pinned to the
// same version (If-Match), so when the blob was replaced or deleted in
// between, the read fails with ErrChanged or ErrNotFound and returns no
// bytes: never the first bytes of one version followed by the rest of
// another.
func TestResumeAfterChange(t *testing.T) {
	for _, tc := range changes {
		t.Run(tc.name, func(t *testing.T) {
			name, _ := newContainer(t, plain, nil)
			ctx := context.Background()
			writer := open(t, azblob.Config{ContainerURL: plain.ContainerURL(name), AccountKey: plain.AccountKey})
			if err := writer.Put(ctx, "obj", blobtest.Data(4, 10000), nil); err != nil {
				t.Fatal(err)
			}
			info, err := writer.Stat(ctx, "obj")
			if err != nil {
				t.Fatal(err)
			}
			// The first body breaks off after 100 bytes, and the blob
			// changes before the read resumes.
			var gets atomic.Int32
			var changeErr error
			flaky := open(t, azblob.Config{ContainerURL: plain.ContainerURL(name), AccountKey: plain.AccountKey,
				Transport: transport{hc: plain.HTTPClient, tamper: func(resp *http.Response) {
					if gets.Add(1) == 1 {
						head := io.LimitReader(resp.Body, 100)
						change := iotest.ErrReader(io.ErrUnexpectedEOF)
						resp.Body = readCloser{io.MultiReader(head, readerFunc(func(p []byte) (int, error) {
							if changeErr == nil {
								changeErr = tc.change(ctx, writer)
								if changeErr == nil {
									changeErr = errDone
								}
							}
							return change.Read(p)
						})), resp.Body}
					}
				}}})
			p := make([]byte, 5000)
			n, err := flaky.ReadAt(ctx, info.Ref(), p, 10)
			if changeErr != errDone {
				t.Fatalf("changing the blob: %v", changeErr)
			}
			if n != 0 || !errors.Is(err, tc.want) {
				t.Fatalf("ReadAt across the change = %d, %v; want 0, %v", n, err, tc.want)
			}
			// The same through OpenRange: what was read before the break
			// is the old version's; the rest fails.
			gets.Store(0)
			changeErr = nil
			if err := writer.Put(ctx, "obj", blobtest.Data(4, 10000), nil); err != nil {
				t.Fatal(err)
			}
			if info, err = writer.Stat(ctx, "obj"); err != nil {
				t.Fatal(err)
			}
			r, err := flaky.OpenRange(ctx, info.Ref(), 10, 5000)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got, err := io.ReadAll(r)
			if !errors.Is(err, tc.want) || len(got) > 100 || string(got) != string(blobtest.Data(4, 10000)[10:10+len(got)]) {
				t.Fatalf("OpenRange across the change: %d bytes, %v; want at most the 100 old bytes, then %v", len(got), err, tc.want)
			}
		})
	}
}

var errDone = errors.New("changed")

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// TestReadHeadBodyBreaks: when the body of ReadHead's unpinned GET breaks
// off, the head is read again pinned to the version that response named:
// the right bytes if the blob is unchanged, ErrChanged or ErrNotFound if it
// changed in between, never a mix of two versions.
func TestReadHeadBodyBreaks(t *testing.T) {
	old := blobtest.Data(6, 10000)
	unchanged := blobChange{"unchanged", func(context.Context, *azblob.Store) error { return nil }, nil}
	for _, tc := range append([]blobChange{unchanged}, changes...) {
		t.Run(tc.name, func(t *testing.T) {
			name, _ := newContainer(t, plain, nil)
			ctx := context.Background()
			writer := open(t, azblob.Config{ContainerURL: plain.ContainerURL(name), AccountKey: plain.AccountKey})
			if err := writer.Put(ctx, "obj", old, nil); err != nil {
				t.Fatal(err)
			}
			want, err := writer.Stat(ctx, "obj")
			if err != nil {
				t.Fatal(err)
			}
			var gets atomic.Int32
			flaky := open(t, azblob.Config{ContainerURL: plain.ContainerURL(name), AccountKey: plain.AccountKey,
				Transport: transport{hc: plain.HTTPClient, tamper: func(resp *http.Response) {
					if resp.Request.Method == http.MethodGet && gets.Add(1) == 1 {
						if err := tc.change(ctx, writer); err != nil {
							t.Error(err)
						}
						resp.Body = readCloser{io.MultiReader(io.LimitReader(resp.Body, 100), iotest.ErrReader(io.ErrUnexpectedEOF)), resp.Body}
					}
				}}})
			p := make([]byte, 8192)
			info, n, err := flaky.ReadHead(ctx, "obj", p)
			if gets.Load() == 0 {
				t.Fatal("no body was broken")
			}
			if tc.want != nil {
				if n != 0 || !errors.Is(err, tc.want) {
					t.Fatalf("ReadHead across the change = %d bytes, %v; want 0, %v", n, err, tc.want)
				}
				return
			}
			if gets.Load() < 2 {
				t.Fatalf("%d GETs: the broken body was not read again", gets.Load())
			}
			if err != nil || info.ETag != want.ETag || info.Size != want.Size || string(p[:n]) != string(old[:8192]) {
				t.Fatalf("ReadHead after a broken body = %+v, %d bytes, %v; want version %s and the first 8192 bytes", info, n, err, want.ETag)
			}
		})
	}
}
