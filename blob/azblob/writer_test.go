package azblob_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/blob/azblob"
	"github.com/skrfs/skrfs/blob/blobtest"
)

// Commits in small blocks, so that the suite's larger objects take
// several Put Blocks.
const testBlockSize = 64 << 10

func TestWriterConformanceSharedKey(t *testing.T) {
	blobtest.Suite{New: func(tb testing.TB) blobtest.Fixture {
		name, _ := newContainer(tb, plain, nil)
		return fixture(open(tb, azblob.Config{ConnectionString: plain.ConnectionString(), Container: name,
			Prefix: "w/pre", CommitBlockSize: testBlockSize, UploadConcurrency: 3}))
	}}.RunWriter(t)
}

func TestWriterConformanceSAS(t *testing.T) {
	blobtest.Suite{New: func(tb testing.TB) blobtest.Fixture {
		_, c := newContainer(tb, plain, nil)
		perms := sas.ContainerPermissions{Read: true, Add: true, Create: true, Write: true, Delete: true, List: true}
		u, err := c.GetSASURL(perms, time.Now().Add(time.Hour), nil)
		if err != nil {
			tb.Fatal(err)
		}
		return fixture(open(tb, azblob.Config{ContainerURL: u, CommitBlockSize: testBlockSize}))
	}}.RunWriter(t)
}

// TestCommitBlocks: Commit stages one block per CommitBlockSize bytes and
// commits them in order (a last, shorter block included).
func TestCommitBlocks(t *testing.T) {
	name, c := newContainer(t, plain, nil)
	ctx := context.Background()
	s := open(t, azblob.Config{ContainerURL: plain.ContainerURL(name), AccountKey: plain.AccountKey, CommitBlockSize: 1000, UploadConcurrency: 2})
	data := blobtest.Data(9, 10500)
	if _, err := s.Commit(ctx, "obj", bytes.NewReader(data), nil, blob.Condition{IfNoneMatch: true}); err != nil {
		t.Fatal(err)
	}
	bl, err := c.NewBlockBlobClient("obj").GetBlockList(ctx, "committed", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(bl.CommittedBlocks) != 11 {
		t.Fatalf("%d blocks committed, want 11", len(bl.CommittedBlocks))
	}
	seen := map[string]bool{}
	for i, b := range bl.CommittedBlocks {
		want := int64(1000)
		if i == 10 {
			want = 500
		}
		if *b.Size != want || len(*b.Name) != len(*bl.CommittedBlocks[0].Name) || seen[*b.Name] {
			t.Fatalf("block %d: %s, %d bytes", i, *b.Name, *b.Size)
		}
		seen[*b.Name] = true
	}
	got := make([]byte, len(data))
	info, _ := s.Stat(ctx, "obj")
	if _, err := s.ReadAt(ctx, info.Ref(), got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
}

// TestCommitErrorsRedacted: a commit through a SAS URL that fails never
// puts the signature into its error.
func TestCommitErrorsRedacted(t *testing.T) {
	_, c := newContainer(t, plain, nil)
	// Read and list only: writes are refused.
	u, err := c.GetSASURL(sas.ContainerPermissions{Read: true, List: true}, time.Now().Add(time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := open(t, azblob.Config{ContainerURL: u})
	_, err = s.Commit(context.Background(), "obj", strings.NewReader("data"), nil, blob.Condition{IfNoneMatch: true})
	if !errors.Is(err, blob.ErrPermission) {
		t.Fatalf("Commit without write permission = %v, want ErrPermission", err)
	}
	_, query, _ := strings.Cut(u, "?")
	for _, p := range strings.Split(query, "&") {
		if k, v, _ := strings.Cut(p, "="); (k == "sig" || k == "se") && strings.Contains(err.Error(), v) {
			t.Fatalf("error quotes %s: %v", k, err)
		}
	}
	if err := s.Remove(context.Background(), "obj", blob.Condition{}); err == nil || strings.Contains(err.Error(), "sig=") && !strings.Contains(err.Error(), "sig="+blob.Redacted) {
		t.Fatalf("Remove: %v", err)
	}
}
