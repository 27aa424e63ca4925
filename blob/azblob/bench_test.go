package azblob_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	sdkblob "github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"

	skblob "github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/blob/azblob"
)

// benchSize is the size of the benchmark blob: $SKRFS_BENCH_SIZE bytes
// (suffixes K, M, G for KiB, MiB, GiB), default 1 GiB.
func benchSize(b *testing.B) int64 {
	s := strings.TrimSpace(os.Getenv("SKRFS_BENCH_SIZE"))
	if s == "" {
		return 1 << 30
	}
	mult := int64(1)
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		b.Fatalf("SKRFS_BENCH_SIZE=%q: want a positive size such as 1073741824, 256M or 1G", os.Getenv("SKRFS_BENCH_SIZE"))
	}
	return n * mult
}

var bench struct {
	once  sync.Once
	store *azblob.Store
	info  skblob.Info
	err   error
}

// benchBlob uploads the benchmark blob once per test binary run.
func benchBlob(b *testing.B) (*azblob.Store, skblob.Info) {
	bench.once.Do(func() {
		size := benchSize(b)
		name, _ := newContainer(b, plain, nil)
		s, err := azblob.Open(context.Background(), azblob.Config{
			ConnectionString: plain.ConnectionString(), Container: name,
			// The whole-blob DownloadStream is one try of the full size.
			Retry: policy.RetryOptions{TryTimeout: 30 * time.Minute},
		})
		if err != nil {
			bench.err = err
			return
		}
		start := time.Now()
		data := io.LimitReader(rand.NewChaCha8([32]byte{'s', 'k', 'r', 'f', 's'}), size)
		if err := s.Upload(context.Background(), "bench.bin", data, nil); err != nil {
			bench.err = err
			return
		}
		bench.store = s
		bench.info, bench.err = s.Stat(context.Background(), "bench.bin")
		b.Logf("uploaded %d MiB in %v", size>>20, time.Since(start).Round(time.Millisecond))
	})
	if bench.err != nil {
		b.Fatal(bench.err)
	}
	return bench.store, bench.info
}

// BenchmarkDownload reads one large blob from Azurite (default 1 GiB, see
// SKRFS_BENCH_SIZE) with one plain SDK DownloadStream of the whole blob and
// with the range reader at several range sizes and parallelisms.
func BenchmarkDownload(b *testing.B) {
	s, info := benchBlob(b)
	ctx := context.Background()

	b.Run("DownloadStream", func(b *testing.B) {
		b.SetBytes(info.Size)
		etag := azcore.ETag(info.ETag)
		bc := s.ContainerClient().NewBlobClient(s.Prefix() + info.Name)
		for b.Loop() {
			resp, err := bc.DownloadStream(ctx, &sdkblob.DownloadStreamOptions{
				AccessConditions: &sdkblob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: &etag}},
			})
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || n != info.Size {
				b.Fatalf("read %d bytes, %v", n, err)
			}
		}
	})

	for _, o := range []azblob.ReaderOptions{
		{}, // defaults
		{RangeSize: 4 << 20, Parallelism: 2},
		{RangeSize: 4<<20 + 1, Parallelism: 2},
		{RangeSize: 8 << 20, Parallelism: 2},
		{RangeSize: 8 << 20, Parallelism: 8},
		{RangeSize: 16 << 20, Parallelism: 4},
	} {
		name := "Reader/default"
		if o != (azblob.ReaderOptions{}) {
			name = fmt.Sprintf("Reader/%s/%d", sizeName(o.RangeSize), o.Parallelism)
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(info.Size)
			for b.Loop() {
				r := s.NewRangeReader(ctx, info.Ref(), info.Size, o)
				n, err := io.Copy(io.Discard, r)
				r.Close()
				if err != nil || n != info.Size {
					b.Fatalf("read %d bytes, %v", n, err)
				}
			}
		})
	}
}

func sizeName(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dMiB+%d", n>>20, n%(1<<20))
}
