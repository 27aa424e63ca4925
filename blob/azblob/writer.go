package azblob

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	sdkblob "github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	blobclient "github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/skrfs/skrfs/blob"
)

// Writes (blob.Writer).
//
// Commit streams its data as a block blob: one Put Block (StageBlock) per
// block of Config.CommitBlockSize bytes, up to Config.UploadConcurrency
// in flight, then one Put Block List (CommitBlockList) that carries the
// metadata and the condition (If-Match: <etag>, or If-None-Match: *). The
// new version becomes visible, whole, only when Put Block List succeeds;
// until then readers see the old version, and a writer that dies before
// it leaves the old version current.
//
// Staged blocks that are never committed (a crash, a failed condition, an
// error mid-way) cannot be deleted through the API: Azure keeps them with
// the blob, invisible and not part of any version, and drops them 7 days
// after the last Put Block to that blob (or at the next Put Block List,
// which discards every staged block it does not name). Until then they
// count towards the account's capacity, and towards the limit of 100,000
// uncommitted blocks per blob.
//
// Block IDs are random (24 bytes, base64: all of one length, as Azure
// requires), so that two writers staging blocks for one blob at once never
// overwrite each other's blocks. Because Put Block List discards the
// staged blocks it does not name, the loser of such a race may find its
// blocks gone (400 InvalidBlockList): if its condition no longer holds at
// that point it gets blob.ErrConditionNotMet like any loser; an
// unconditional commit gets the service's error.
//
// A Put Block List whose response is lost (a reset connection, a timeout)
// is retried (withRetries); the retry then fails its own
// condition (412, or 409 BlobAlreadyExists) although the first attempt
// committed. Commit tells the two apart by the blob's committed block
// list: if it is exactly this commit's (random) block IDs, the commit
// succeeded. An empty object has no blocks to recognise, so a lost
// response to a conditional commit of zero bytes reports
// ErrConditionNotMet.

// DefaultCommitBlockSize is the block size of Commit (Config.CommitBlockSize).
const DefaultCommitBlockSize = 4 << 20

// maxBlocks is the most blocks a block blob may have.
const maxBlocks = 50000

var _ blob.Writer = (*Store)(nil)

// accessConditions returns the SDK form of cond (nil when unconditional).
func accessConditions(cond blob.Condition) *sdkblob.AccessConditions {
	switch {
	case cond.IfMatch != "":
		return ifMatch(azcore.ETag(cond.IfMatch))
	case cond.IfNoneMatch:
		all := azcore.ETagAny
		return &sdkblob.AccessConditions{ModifiedAccessConditions: &blobclient.ModifiedAccessConditions{IfNoneMatch: &all}}
	}
	return nil
}

// Commit implements blob.Writer with Put Block and a conditional Put Block
// List; see the comment at the top of this file.
func (s *Store) Commit(ctx context.Context, name string, r io.Reader, md map[string]string, cond blob.Condition) (blob.Info, error) {
	full, err := s.fullName(name)
	if err != nil {
		return blob.Info{}, err
	}
	if cond.IfMatch != "" && cond.IfNoneMatch {
		return blob.Info{}, fmt.Errorf("azblob: commit %q: IfMatch and IfNoneMatch together: %w", name, blob.ErrConditionNotMet)
	}
	if err := ctx.Err(); err != nil {
		return blob.Info{}, err
	}
	bb := s.c.NewBlockBlobClient(full)
	ids, size, err := s.stageBlocks(ctx, bb, name, r)
	if err != nil {
		return blob.Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return blob.Info{}, err
	}
	var resp blockblob.CommitBlockListResponse
	_, err = s.withRetries(ctx, func(ctx context.Context) error {
		var err error
		resp, err = bb.CommitBlockList(ctx, ids, &blockblob.CommitBlockListOptions{
			Metadata:         sdkMetadata(md),
			AccessConditions: accessConditions(cond),
		})
		return err
	})
	if err != nil {
		err = s.conditionErr(ctx, "commit", name, cond, err)
		if errors.Is(err, blob.ErrConditionNotMet) && len(ids) > 0 {
			if info, ok := s.committedByUs(ctx, bb, name, ids, size); ok {
				info.Metadata = copyMetadata(md)
				return info, nil
			}
		}
		return blob.Info{}, err
	}
	if resp.ETag == nil {
		return blob.Info{}, fmt.Errorf("azblob: commit %q: response without ETag", name)
	}
	return blob.Info{Name: name, Size: size, ETag: quoteETag(string(*resp.ETag)),
		ModTime: deref(resp.LastModified), Metadata: copyMetadata(md)}, nil
}

func copyMetadata(md map[string]string) map[string]string {
	if len(md) == 0 {
		return nil
	}
	out := make(map[string]string, len(md))
	for k, v := range md {
		out[k] = v
	}
	return out
}

// stageBlocks reads r to its end and stages it as blocks, up to
// uploadConcurrency at a time, and returns their IDs in order and the
// total size. The first error (of r or of the service) stops it.
func (s *Store) stageBlocks(ctx context.Context, bb *blockblob.Client, name string, r io.Reader) ([]string, int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
		ids      []string
		size     int64
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err })
		cancel()
	}
	free := make(chan []byte, s.uploadConcurrency)
	for range s.uploadConcurrency {
		free <- nil // taken from the pool on first use: a small object needs one buffer
	}
	defer func() {
		close(free)
		for buf := range free {
			if buf != nil {
				s.blocks.Put(&buf)
			}
		}
	}()
	for {
		var buf []byte
		select {
		case buf = <-free:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			if buf != nil {
				free <- buf
			}
			fail(ctx.Err())
			break
		}
		if buf == nil {
			if p, ok := s.blocks.Get().(*[]byte); ok && int64(len(*p)) == s.commitBlockSize {
				buf = *p
			} else {
				buf = make([]byte, s.commitBlockSize)
			}
		}
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if len(ids) == maxBlocks {
				fail(fmt.Errorf("azblob: commit %q: more than %d blocks of %d bytes", name, maxBlocks, s.commitBlockSize))
				break
			}
			id := newBlockID()
			ids = append(ids, id)
			size += int64(n)
			wg.Add(1)
			go func(block []byte) {
				defer wg.Done()
				tries, err := s.withRetries(ctx, func(ctx context.Context) error {
					// A fresh reader per attempt: see withRetries.
					_, err := bb.StageBlock(ctx, id, streaming.NopCloser(bytes.NewReader(block)), nil)
					return err
				})
				if err != nil {
					fail(mapErr("commit (put block)", name, err)) // the first error wins
				}
				if err != nil || tries > 1 {
					// An abandoned attempt's body may still be read by
					// the transport: never reuse its buffer.
					free <- nil
					return
				}
				free <- buf
			}(buf[:n])
		} else {
			free <- buf
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			fail(fmt.Errorf("azblob: commit %q: reading the data: %w", name, rerr))
			break
		}
	}
	wg.Wait()
	if firstErr != nil {
		return nil, 0, firstErr
	}
	if ids == nil {
		ids = []string{}
	}
	return ids, size, nil
}

func newBlockID() string {
	var b [24]byte
	rand.Read(b[:])
	return base64.StdEncoding.EncodeToString(b[:])
}

// committedByUs reports whether the blob's committed blocks are exactly
// ids, that is, whether a Put Block List of ids whose response was lost
// took effect, and returns the version it made.
func (s *Store) committedByUs(ctx context.Context, bb *blockblob.Client, name string, ids []string, size int64) (blob.Info, bool) {
	bl, err := bb.GetBlockList(ctx, blockblob.BlockListTypeCommitted, nil)
	if err != nil || bl.ETag == nil || len(bl.CommittedBlocks) != len(ids) {
		return blob.Info{}, false
	}
	for i, b := range bl.CommittedBlocks {
		if b == nil || deref(b.Name) != ids[i] {
			return blob.Info{}, false
		}
	}
	return blob.Info{Name: name, Size: size, ETag: quoteETag(string(*bl.ETag)), ModTime: deref(bl.LastModified)}, true
}

// conditionErr maps an error of a conditional write: a failed condition
// (412 ConditionNotMet, 409 BlobAlreadyExists, 404 with If-Match, or 400
// InvalidBlockList when another writer's commit discarded our blocks and
// the condition no longer holds) gives blob.ErrConditionNotMet; anything
// else is mapped as reads are.
func (s *Store) conditionErr(ctx context.Context, op, name string, cond blob.Condition, err error) error {
	err = blob.RedactError(err)
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return mapErr(op, name, err)
	}
	lost := false
	switch {
	case re.StatusCode == http.StatusPreconditionFailed,
		bloberror.HasCode(err, bloberror.ConditionNotMet, bloberror.BlobAlreadyExists):
		lost = true
	case re.StatusCode == http.StatusNotFound && cond.IfMatch != "":
		lost = !bloberror.HasCode(err, bloberror.ContainerNotFound)
	case bloberror.HasCode(err, bloberror.InvalidBlockList) && (cond.IfMatch != "" || cond.IfNoneMatch):
		lost = s.conditionFails(ctx, name, cond)
	}
	if !lost {
		return mapErr(op, name, err)
	}
	return fmt.Errorf("azblob: %s %q: %w: %w", op, name, blob.ErrConditionNotMet, responseError{re})
}

// conditionFails reports whether cond is known not to hold now.
func (s *Store) conditionFails(ctx context.Context, name string, cond blob.Condition) bool {
	info, err := s.Stat(ctx, name)
	switch {
	case errors.Is(err, blob.ErrNotFound):
		return cond.IfMatch != ""
	case err != nil:
		return false
	case cond.IfNoneMatch:
		return true
	}
	return info.ETag != cond.IfMatch
}

// Remove implements blob.Writer with a conditional Delete Blob (snapshots
// included). IfNoneMatch can only fail or find nothing to remove: it is
// answered with a Get Blob Properties (the service, and Azurite, may
// ignore If-None-Match on a delete).
func (s *Store) Remove(ctx context.Context, name string, cond blob.Condition) error {
	full, err := s.fullName(name)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if cond.IfNoneMatch {
		info, err := s.Stat(ctx, name)
		if err != nil {
			return err
		}
		return fmt.Errorf("azblob: remove %q: %w: it exists (version %s)", name, blob.ErrConditionNotMet, info.ETag)
	}
	_, err = s.c.NewBlobClient(full).Delete(ctx, &blobclient.DeleteOptions{
		DeleteSnapshots:  ptr(blobclient.DeleteSnapshotsOptionTypeInclude),
		AccessConditions: accessConditions(cond),
	})
	if err != nil {
		return s.conditionErr(ctx, "remove", name, cond, err)
	}
	return nil
}

// withRetries calls op until it succeeds, fails for good, or the store's
// retry policy (Config.Retry: MaxRetries, TryTimeout, RetryDelay,
// MaxRetryDelay) is exhausted, and returns how many attempts it made.
// Each attempt runs with the SDK's own retries turned off: the SDK
// retries a request by rewinding its body, the same reader that the
// transport of an abandoned attempt (a 503 or a reset before the body was
// sent, a try timeout) may still be reading; two goroutines then share
// the reader (a data race, and bytes of the body taken by the wrong
// request). op makes a new body per attempt instead.
func (s *Store) withRetries(ctx context.Context, op func(context.Context) error) (int, error) {
	once := policy.WithRetryOptions(ctx, policy.RetryOptions{MaxRetries: -1, TryTimeout: s.retry.TryTimeout})
	for try := 1; ; try++ {
		err := op(once)
		if err == nil || try > int(max(s.retry.MaxRetries, 0)) || !retryable(ctx, err) {
			return try, err
		}
		delay := s.retry.RetryDelay << min(try-1, 16)
		if delay <= 0 || delay > s.retry.MaxRetryDelay {
			delay = s.retry.MaxRetryDelay
		}
		delay = delay*4/5 + time.Duration(mrand.Int64N(int64(delay)*2/5+1)) // ±20% jitter
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return try, err
		}
	}
}

// retryable reports whether a failed attempt may succeed when repeated:
// transport errors and try timeouts, and the statuses the SDK retries
// (408, 429, 500, 502, 503, 504). Not when ctx itself ended.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		switch re.StatusCode {
		case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
			http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	}
	return true
}
