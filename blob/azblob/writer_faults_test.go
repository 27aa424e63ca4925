package azblob_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/blob/azblob"
	"github.com/skrfs/skrfs/blob/blobtest"
	"github.com/skrfs/skrfs/integration/azurite"
	"github.com/skrfs/skrfs/integration/faultproxy"
)

// TestCommitStorageFaults: storage faults during a commit (every Put Block
// and Put Block List answered 503, reset, or too slow) reach the caller
// as an error, and the old object stays intact and current: no new
// version, no other object. A fault that retries overcome does not.
func TestCommitStorageFaults(t *testing.T) {
	writes := []faultproxy.Kind{faultproxy.KindOther}
	tests := []struct {
		name string
		rule faultproxy.Rule
		ok   bool // retries overcome the fault
	}{
		{"503", faultproxy.Rule{Kinds: writes, Prob: 1, Fault: faultproxy.Status, Status: 503}, false},
		{"reset", faultproxy.Rule{Kinds: writes, Prob: 1, Fault: faultproxy.Reset}, false},
		{"slow", faultproxy.Rule{Kinds: writes, Prob: 1, Fault: faultproxy.Delay, Delay: 3 * time.Second}, false},
		{"stall", faultproxy.Rule{Kinds: writes, Prob: 1, Fault: faultproxy.Stall}, false},
		{"one 503", faultproxy.Rule{Kinds: writes, Prob: 1, Max: 1, Fault: faultproxy.Status, Status: 503}, true},
		{"one reset", faultproxy.Rule{Kinds: writes, Prob: 1, Max: 1, Fault: faultproxy.Reset}, true},
		// Large blocks: the 503s come back while the client is still
		// sending the body, and the attempt is repeated with a body of
		// its own (withRetries).
		{"503s during large blocks", faultproxy.Rule{Kinds: writes, Prob: 1, Max: 2, Fault: faultproxy.Status, Status: 503}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			name, _ := newContainer(t, plain, nil)
			direct := open(t, azblob.Config{ContainerURL: plain.ContainerURL(name), AccountKey: plain.AccountKey})
			blockSize := int64(testBlockSize)
			if strings.Contains(tc.name, "large") {
				blockSize = 2 << 20
			}
			old := blobtest.Data(1, 3*testBlockSize+100)
			if err := direct.Put(ctx, "obj", old, map[string]string{"v": "old"}); err != nil {
				t.Fatal(err)
			}
			before, err := direct.Stat(ctx, "obj")
			if err != nil {
				t.Fatal(err)
			}
			proxy, err := faultproxy.Start(plain.Endpoint, faultproxy.Config{Seed: 1, Rules: []faultproxy.Rule{tc.rule}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { proxy.Close() })
			faulty := open(t, azblob.Config{
				ContainerURL: proxy.URL() + "/" + azurite.AccountName + "/" + name,
				AccountKey:   plain.AccountKey,
				Transport:    &http.Client{},
				// Short tries (a slow or stalled request is abandoned
				// after 500 ms), 3 in all.
				Retry: policy.RetryOptions{MaxRetries: 2, TryTimeout: 500 * time.Millisecond,
					RetryDelay: 10 * time.Millisecond, MaxRetryDelay: 50 * time.Millisecond},
				CommitBlockSize: blockSize,
				SkipCheck:       true,
			})
			newer := blobtest.Data(2, 3*testBlockSize+100)
			if blockSize > testBlockSize {
				newer = blobtest.Data(2, 4*int(blockSize)+100)
			}
			start := time.Now()
			info, err := faulty.Commit(ctx, "obj", bytes.NewReader(newer), map[string]string{"v": "new"}, blob.Condition{IfMatch: before.ETag})
			t.Logf("commit: %v after %v; faults: %v", err, time.Since(start).Round(time.Millisecond), proxy.Stats().Faults)
			if proxy.Stats().Fired(tc.rule.Fault) == 0 {
				t.Fatal("no fault was injected")
			}
			after, serr := direct.Stat(ctx, "obj")
			if serr != nil {
				t.Fatal(serr)
			}
			got := make([]byte, after.Size)
			if _, err := direct.ReadAt(ctx, after.Ref(), got, 0); err != nil && err != io.EOF {
				t.Fatal(err)
			}
			if tc.ok {
				if err != nil {
					t.Fatalf("Commit after a transient fault = %v, want success", err)
				}
				if after.ETag != info.ETag || !bytes.Equal(got, newer) {
					t.Fatalf("after a successful commit the object is %+v, not the new version %s", after, info.ETag)
				}
				return
			}
			if err == nil {
				t.Fatalf("Commit under persistent faults succeeded: %+v", info)
			}
			if errors.Is(err, blob.ErrConditionNotMet) {
				t.Fatalf("a storage fault reported as a lost condition: %v", err)
			}
			if after.ETag != before.ETag || !bytes.Equal(got, old) {
				t.Fatalf("after a failed commit the object is %+v, want the old version %+v intact", after, before)
			}
			if v, _ := blob.MetadataValue(after.Metadata, "v"); v != "old" {
				t.Fatalf("metadata after a failed commit: %v", after.Metadata)
			}
			var names []string
			direct.List(ctx, blob.ListOptions{}, func(i blob.Info) error { names = append(names, i.Name); return nil })
			if len(names) != 1 {
				t.Fatalf("objects after a failed commit: %v", names)
			}
			// Once the store recovers, the same commit goes through: the
			// failed one left nothing in its way.
			if err := proxy.SetConfig(faultproxy.Config{}); err != nil {
				t.Fatal(err)
			}
			if _, err := faulty.Commit(ctx, "obj", bytes.NewReader(newer), nil, blob.Condition{IfMatch: before.ETag}); err != nil {
				t.Fatalf("Commit after recovery: %v", err)
			}
		})
	}
}

// lostResponse is a transport that sends every request, but loses the
// response of the first Put Block List (as a reset connection would after
// the service committed).
type lostResponse struct {
	hc   *http.Client
	lost atomic.Int32
}

func (l *lostResponse) Do(req *http.Request) (*http.Response, error) {
	resp, err := l.hc.Do(req)
	if err == nil && req.Method == http.MethodPut && req.URL.Query().Get("comp") == "blocklist" && l.lost.Add(1) == 1 {
		resp.Body.Close()
		return nil, io.ErrUnexpectedEOF
	}
	return resp, err
}

// TestCommitResponseLost: the SDK retries a Put Block List whose response
// was lost; the retry fails its condition because the first attempt
// committed. Commit recognises its own blocks and reports success, with
// the version it made.
func TestCommitResponseLost(t *testing.T) {
	for _, cond := range []string{"if-none-match", "if-match"} {
		t.Run(cond, func(t *testing.T) {
			ctx := context.Background()
			name, _ := newContainer(t, plain, nil)
			direct := open(t, azblob.Config{ContainerURL: plain.ContainerURL(name), AccountKey: plain.AccountKey})
			c := blob.Condition{IfNoneMatch: true}
			if cond == "if-match" {
				if err := direct.Put(ctx, "obj", []byte("old"), nil); err != nil {
					t.Fatal(err)
				}
				before, _ := direct.Stat(ctx, "obj")
				c = blob.Condition{IfMatch: before.ETag}
			}
			tr := &lostResponse{hc: plain.HTTPClient}
			s := open(t, azblob.Config{ContainerURL: plain.ContainerURL(name), AccountKey: plain.AccountKey, Transport: tr,
				Retry: policy.RetryOptions{RetryDelay: time.Millisecond, MaxRetryDelay: 10 * time.Millisecond}, CommitBlockSize: 1000})
			data := blobtest.Data(3, 2500)
			info, err := s.Commit(ctx, "obj", bytes.NewReader(data), nil, c)
			if tr.lost.Load() < 2 {
				t.Fatalf("the lost response was not retried (%d block lists sent): %v", tr.lost.Load(), err)
			}
			if err != nil {
				t.Fatalf("Commit whose first response was lost = %v, want success", err)
			}
			now, err := direct.Stat(ctx, "obj")
			if err != nil || now.ETag != info.ETag || now.Size != int64(len(data)) {
				t.Fatalf("Commit = %+v; Stat = %+v, %v", info, now, err)
			}
			// Another writer's commit is not mistaken for ours.
			if _, err := s.Commit(ctx, "obj", bytes.NewReader(data), nil, c); !errors.Is(err, blob.ErrConditionNotMet) {
				t.Fatalf("a commit whose condition fails = %v, want ErrConditionNotMet", err)
			}
		})
	}
}

// blockListFault answers every Put Block List itself, without sending it:
// 503 ServerBusy, or a reset connection. Put Blocks go through.
type blockListFault struct {
	hc    *http.Client
	reset bool
	seen  atomic.Int32
}

func (f *blockListFault) Do(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPut || req.URL.Query().Get("comp") != "blocklist" {
		return f.hc.Do(req)
	}
	f.seen.Add(1)
	if req.Body != nil {
		req.Body.Close()
	}
	if f.reset {
		return nil, syscall.ECONNRESET
	}
	h := http.Header{}
	h.Set("x-ms-error-code", "ServerBusy")
	return &http.Response{StatusCode: http.StatusServiceUnavailable, Status: "503 Server Busy", Header: h,
		Body: io.NopCloser(strings.NewReader("")), Request: req}, nil
}

// TestCommitBlockListFaults: the last step of a commit, Put Block List,
// fails (after all retries) with 503 or a reset: the error reaches the
// caller, and the old version stays current and intact.
func TestCommitBlockListFaults(t *testing.T) {
	for _, reset := range []bool{false, true} {
		t.Run(fmt.Sprintf("reset=%v", reset), func(t *testing.T) {
			ctx := context.Background()
			name, _ := newContainer(t, plain, nil)
			direct := open(t, azblob.Config{ContainerURL: plain.ContainerURL(name), AccountKey: plain.AccountKey})
			old := blobtest.Data(1, 5000)
			if err := direct.Put(ctx, "obj", old, nil); err != nil {
				t.Fatal(err)
			}
			before, _ := direct.Stat(ctx, "obj")
			tr := &blockListFault{hc: plain.HTTPClient, reset: reset}
			s := open(t, azblob.Config{ContainerURL: plain.ContainerURL(name), AccountKey: plain.AccountKey, Transport: tr,
				Retry:           policy.RetryOptions{MaxRetries: 2, RetryDelay: time.Millisecond, MaxRetryDelay: 10 * time.Millisecond},
				CommitBlockSize: 1000})
			_, err := s.Commit(ctx, "obj", bytes.NewReader(blobtest.Data(2, 5000)), nil, blob.Condition{IfMatch: before.ETag})
			if err == nil || errors.Is(err, blob.ErrConditionNotMet) || tr.seen.Load() != 3 {
				t.Fatalf("Commit with a failing Put Block List (%d tries) = %v; want a storage error", tr.seen.Load(), err)
			}
			after, err := direct.Stat(ctx, "obj")
			got := make([]byte, 5000)
			if err == nil {
				_, err = direct.ReadAt(ctx, after.Ref(), got, 0)
			}
			if err != nil || after.ETag != before.ETag || !bytes.Equal(got, old) {
				t.Fatalf("after the failed commit: %+v, %v; want the old version intact", after, err)
			}
		})
	}
}
