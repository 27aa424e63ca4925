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

// TestResumeAfterChange: a body that breaks off is resumed pinned to the
// same version (If-Match), so when the blob was replaced or deleted in
// between, the read fails with ErrChanged or ErrNotFound and returns no
// bytes: never the first bytes of one version followed by the rest of
// another.
func TestResumeAfterChange(t *testing.T) {
	tests := []struct {
		name   string
		change func(ctx context.Context, s *azblob.Store) error
		want   error
	}{
		{"replaced", func(ctx context.Context, s *azblob.Store) error {
			return s.Put(ctx, "obj", blobtest.Data(5, 10000), nil) // same size, other bytes
		}, blob.ErrChanged},
		{"deleted", func(ctx context.Context, s *azblob.Store) error { return s.Delete(ctx, "obj") }, blob.ErrNotFound},
	}
	for _, tc := range tests {
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
