package blobtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/skrfs/skrfs/blob"
)

// WriterSize is the size of the larger objects the writer tests commit:
// more than one block for a store whose commit block size is at most
// 64 KiB (azblob's tests set such a size).
const WriterSize = 200<<10 + 17

// RunWriter runs the conformance tests of blob.Writer as subtests of t.
// Every Fixture's Store must implement blob.Writer.
func (s Suite) RunWriter(t *testing.T) {
	tests := []struct {
		name string
		fn   func(*testing.T, Fixture, blob.Writer)
	}{
		{"CommitConditions", testCommitConditions},
		{"RemoveConditions", testRemoveConditions},
		{"CommitInfoIsStat", testCommitInfoIsStat},
		{"CommitMetadata", testCommitMetadata},
		{"CommitReaderFails", testCommitReaderFails},
		{"CommitCanceled", testCommitCanceled},
		{"CommitInvalidName", testCommitInvalidName},
		{"PinnedReaderAfterCommit", testPinnedReaderAfterCommit},
		{"ConcurrentConditionalCommits", testConcurrentConditionalCommits},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := s.New(t)
			w, ok := f.Store.(blob.Writer)
			if !ok {
				t.Fatalf("%T does not implement blob.Writer", f.Store)
			}
			tc.fn(t, f, w)
		})
	}
}

// content returns the current bytes and version of name.
func content(t *testing.T, s blob.Store, name string) ([]byte, blob.Info) {
	t.Helper()
	ctx := context.Background()
	info, err := s.Stat(ctx, name)
	if err != nil {
		t.Fatalf("stat %q: %v", name, err)
	}
	p := make([]byte, info.Size)
	if n, err := s.ReadAt(ctx, info.Ref(), p, 0); err != nil && !(err == io.EOF && n == len(p)) {
		t.Fatalf("read %q: %v", name, err)
	}
	return p, info
}

func commit(ctx context.Context, w blob.Writer, name string, data []byte, cond blob.Condition) (blob.Info, error) {
	return w.Commit(ctx, name, bytes.NewReader(data), nil, cond)
}

func testCommitConditions(t *testing.T, f Fixture, w blob.Writer) {
	ctx := context.Background()
	var (
		cur  []byte    // the bytes the object should hold (nil: absent)
		last blob.Info // the last successful commit
		seq  uint64    = 1000
		// staleTag is a version this writer replaced itself.
		staleTag string
	)
	stale := func() blob.Condition { return blob.Condition{IfMatch: last.ETag} } // evaluated before the step
	steps := []struct {
		name string
		pre  func() // changes behind the writer's back
		cond func() blob.Condition
		ok   bool
	}{
		{"if-match on a name never written", nil, func() blob.Condition { return blob.Condition{IfMatch: `"0x1"`} }, false},
		{"new with if-none-match", nil, func() blob.Condition { return blob.Condition{IfNoneMatch: true} }, true},
		{"if-none-match on an existing object", nil, func() blob.Condition { return blob.Condition{IfNoneMatch: true} }, false},
		{"if-match the current version", nil, func() blob.Condition { return blob.Condition{IfMatch: last.ETag} }, true},
		{"if-match a stale version", func() {
			// Another producer replaces the object.
			seq++
			cur = Data(seq, 777)
			if err := f.Put("obj", cur); err != nil {
				t.Fatal(err)
			}
		}, stale, false},
		{"unconditional over an existing object", nil, func() blob.Condition { return blob.Condition{} }, true},
		{"if-match after delete", func() {
			if err := f.Delete("obj"); err != nil {
				t.Fatal(err)
			}
			cur = nil
		}, stale, false},
		{"if-none-match after delete", nil, func() blob.Condition { return blob.Condition{IfNoneMatch: true} }, true},
		{"if-match a version replaced by this writer", func() {
			staleTag = last.ETag
			seq++
			data := Data(seq, 10)
			info, err := commit(ctx, w, "obj", data, blob.Condition{})
			if err != nil {
				t.Fatal(err)
			}
			cur, last = data, info
		}, func() blob.Condition { return blob.Condition{IfMatch: staleTag} }, false},
	}
	for _, st := range steps {
		if st.pre != nil {
			st.pre()
		}
		cond := st.cond()
		seq++
		data := Data(seq, int(seq%5)*1000+int(seq%7))
		info, err := commit(ctx, w, "obj", data, cond)
		switch {
		case st.ok && err != nil:
			t.Fatalf("%s: Commit(%+v) = %v, want success", st.name, cond, err)
		case !st.ok && !errors.Is(err, blob.ErrConditionNotMet):
			t.Fatalf("%s: Commit(%+v) = %+v, %v; want ErrConditionNotMet", st.name, cond, info, err)
		case st.ok:
			cur, last = data, info
		}
		if cur == nil {
			if _, err := f.Store.Stat(ctx, "obj"); !errors.Is(err, blob.ErrNotFound) {
				t.Fatalf("%s: Stat = %v, want ErrNotFound (a failed commit created the object)", st.name, err)
			}
			continue
		}
		got, _ := content(t, f.Store, "obj")
		if !bytes.Equal(got, cur) {
			t.Fatalf("%s: object holds %d bytes, not the %d expected (ok %v)", st.name, len(got), len(cur), st.ok)
		}
	}
	// A failed commit leaves no trace in a listing.
	var names []string
	if err := f.Store.List(ctx, blob.ListOptions{}, func(i blob.Info) error { names = append(names, i.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, ",") != "obj" {
		t.Fatalf("List = %q, want only obj", names)
	}
}

func testRemoveConditions(t *testing.T, f Fixture, w blob.Writer) {
	ctx := context.Background()
	if err := w.Remove(ctx, "missing", blob.Condition{}); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Remove(missing) = %v, want ErrNotFound", err)
	}
	if err := w.Remove(ctx, "missing", blob.Condition{IfMatch: `"0x1"`}); !errors.Is(err, blob.ErrConditionNotMet) {
		t.Fatalf("Remove(missing, if-match) = %v, want ErrConditionNotMet", err)
	}
	old, err := commit(ctx, w, "d/obj", Data(1, 100), blob.Condition{})
	if err != nil {
		t.Fatal(err)
	}
	cur, err := commit(ctx, w, "d/obj", Data(2, 100), blob.Condition{IfMatch: old.ETag})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cond blob.Condition
		want error // nil: removed
	}{
		{"if-match a stale version", blob.Condition{IfMatch: old.ETag}, blob.ErrConditionNotMet},
		{"if-none-match on an existing object", blob.Condition{IfNoneMatch: true}, blob.ErrConditionNotMet},
		{"if-match the current version", blob.Condition{IfMatch: cur.ETag}, nil},
		{"if-match after the removal", blob.Condition{IfMatch: cur.ETag}, blob.ErrConditionNotMet},
		{"unconditional after the removal", blob.Condition{}, blob.ErrNotFound},
	}
	for _, tc := range tests {
		err := w.Remove(ctx, "d/obj", tc.cond)
		if (tc.want == nil && err != nil) || !errors.Is(err, tc.want) {
			t.Fatalf("%s: Remove = %v, want %v", tc.name, err, tc.want)
		}
		_, serr := f.Store.Stat(ctx, "d/obj")
		if removed := errors.Is(serr, blob.ErrNotFound); removed != (tc.want == nil || tc.want == blob.ErrNotFound || tc.name == "if-match after the removal") {
			t.Fatalf("%s: after Remove (%v), Stat = %v", tc.name, err, serr)
		}
	}
	// Unconditional removal of an existing object.
	if _, err := commit(ctx, w, "d/e/obj", Data(3, 10), blob.Condition{}); err != nil {
		t.Fatal(err)
	}
	if err := w.Remove(ctx, "d/e/obj", blob.Condition{}); err != nil {
		t.Fatalf("Remove(unconditional) = %v", err)
	}
	if _, err := f.Store.Stat(ctx, "d/e/obj"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Stat after Remove = %v, want ErrNotFound", err)
	}
	// The name can be written again, as an object or as a prefix.
	if _, err := commit(ctx, w, "d", Data(4, 10), blob.Condition{IfNoneMatch: true}); err != nil {
		t.Fatalf("Commit(d) after its objects were removed: %v", err)
	}
}

func testCommitInfoIsStat(t *testing.T, f Fixture, w blob.Writer) {
	ctx := context.Background()
	for _, size := range []int{0, 1, 4096, WriterSize} {
		name := fmt.Sprintf("dir/sub/obj-%d", size)
		data := Data(uint64(size), size)
		info, err := commit(ctx, w, name, data, blob.Condition{IfNoneMatch: true})
		if err != nil {
			t.Fatalf("Commit %d bytes: %v", size, err)
		}
		got, st := content(t, f.Store, name)
		if info.Name != name || info.Size != int64(size) || info.ETag == "" || info.ETag != st.ETag || st.Size != int64(size) {
			t.Fatalf("Commit = %+v, Stat = %+v; want name %s, size %d and Stat's ETag", info, st, name, size)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%d bytes committed, other bytes read back", size)
		}
		// The returned ETag pins reads and conditions the next commit.
		if size > 0 {
			p := make([]byte, 1)
			if _, err := f.Store.ReadAt(ctx, info.Ref(), p, int64(size-1)); err != nil && err != io.EOF {
				t.Fatalf("ReadAt(returned ref) = %v", err)
			}
		}
		next, err := commit(ctx, w, name, data, blob.Condition{IfMatch: info.ETag})
		if err != nil {
			t.Fatalf("Commit(if-match the returned ETag) = %v", err)
		}
		if next.ETag == info.ETag {
			t.Fatalf("a new commit of the same bytes kept the ETag %s", info.ETag)
		}
	}
}

func testCommitMetadata(t *testing.T, f Fixture, w blob.Writer) {
	ctx := context.Background()
	md := map[string]string{"skrfsversion": "2", "skrfsalg": "AES256GCM", "k": ""}
	info, err := w.Commit(ctx, "m", bytes.NewReader([]byte("x")), md, blob.Condition{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := f.Store.Stat(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range md {
		if v == "" {
			continue // Azure drops empty values
		}
		if got, ok := blob.MetadataValue(st.Metadata, k); !ok || got != v {
			t.Fatalf("Stat metadata %q = %q, %v; want %q (all: %v)", k, got, ok, v, st.Metadata)
		}
		if info.Metadata != nil {
			if got, _ := blob.MetadataValue(info.Metadata, k); got != v {
				t.Fatalf("Commit's metadata %q = %q, want %q", k, got, v)
			}
		}
	}
	var listed blob.Info
	if err := f.Store.List(ctx, blob.ListOptions{WithMetadata: true}, func(i blob.Info) error { listed = i; return nil }); err != nil {
		t.Fatal(err)
	}
	if got, _ := blob.MetadataValue(listed.Metadata, "skrfsversion"); got != "2" {
		t.Fatalf("List metadata = %v", listed.Metadata)
	}
	// A new commit replaces the metadata as a whole.
	if _, err := w.Commit(ctx, "m", bytes.NewReader([]byte("y")), map[string]string{"other": "1"}, blob.Condition{IfMatch: info.ETag}); err != nil {
		t.Fatal(err)
	}
	st, _ = f.Store.Stat(ctx, "m")
	if _, ok := blob.MetadataValue(st.Metadata, "skrfsversion"); ok {
		t.Fatalf("metadata of the old version survived: %v", st.Metadata)
	}
}

// testCommitReaderFails: a commit whose data cannot be read to the end
// changes nothing: the old version stays, whole and current.
func testCommitReaderFails(t *testing.T, f Fixture, w blob.Writer) {
	ctx := context.Background()
	old := Data(1, WriterSize)
	info, err := commit(ctx, w, "obj", old, blob.Condition{})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("the data source failed")
	for _, cond := range []blob.Condition{{}, {IfMatch: info.ETag}} {
		r := io.MultiReader(bytes.NewReader(Data(2, WriterSize-1000)), iotest.ErrReader(boom))
		if _, err := w.Commit(ctx, "obj", r, nil, cond); !errors.Is(err, boom) {
			t.Fatalf("Commit with a failing reader (%+v) = %v, want the reader's error", cond, err)
		}
		got, st := content(t, f.Store, "obj")
		if st.ETag != info.ETag || !bytes.Equal(got, old) {
			t.Fatalf("after a failed commit the object is %+v (%d bytes), want the old version %s", st, len(got), info.ETag)
		}
	}
	// A new object that fails is not created.
	r := io.MultiReader(bytes.NewReader(Data(3, 5000)), iotest.ErrReader(boom))
	if _, err := w.Commit(ctx, "new", r, nil, blob.Condition{IfNoneMatch: true}); !errors.Is(err, boom) {
		t.Fatalf("Commit(new) with a failing reader = %v", err)
	}
	if _, err := f.Store.Stat(ctx, "new"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Stat after a failed new commit = %v, want ErrNotFound", err)
	}
}

func testCommitCanceled(t *testing.T, f Fixture, w blob.Writer) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := commit(ctx, w, "obj", []byte("data"), blob.Condition{}); err == nil {
		t.Fatal("Commit with a canceled context succeeded")
	}
	if _, err := f.Store.Stat(context.Background(), "obj"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Stat after a canceled commit = %v, want ErrNotFound", err)
	}
	if err := f.Put("obj", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := w.Remove(ctx, "obj", blob.Condition{}); err == nil {
		t.Fatal("Remove with a canceled context succeeded")
	}
}

func testCommitInvalidName(t *testing.T, f Fixture, w blob.Writer) {
	ctx := context.Background()
	for _, name := range []string{"", "/abs", "../x", "a/../../x", "a//b", "a\\b", "a/./b", "nul\x00"} {
		if _, err := commit(ctx, w, name, []byte("x"), blob.Condition{}); !errors.Is(err, blob.ErrInvalidName) {
			t.Errorf("Commit(%q) = %v, want ErrInvalidName", name, err)
		}
		if err := w.Remove(ctx, name, blob.Condition{}); !errors.Is(err, blob.ErrInvalidName) {
			t.Errorf("Remove(%q) = %v, want ErrInvalidName", name, err)
		}
	}
}

// testPinnedReaderAfterCommit: a reader that pinned the old version gets
// ErrChanged once a commit replaced it, and never bytes of the new one.
func testPinnedReaderAfterCommit(t *testing.T, f Fixture, w blob.Writer) {
	ctx := context.Background()
	old, newer := Data(10, WriterSize), Data(11, WriterSize) // same size
	info, err := commit(ctx, w, "obj", old, blob.Condition{})
	if err != nil {
		t.Fatal(err)
	}
	// A stream opened before the commit, read after it.
	r, err := blob.OpenRange(ctx, f.Store, info.Ref(), 0, WriterSize)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	head := make([]byte, 1000)
	if _, err := io.ReadFull(r, head); err != nil {
		t.Fatal(err)
	}
	if _, err := commit(ctx, w, "obj", newer, blob.Condition{IfMatch: info.ETag}); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(r)
	got := append(head, rest...)
	if !bytes.Equal(got, old[:len(got)]) {
		t.Fatalf("a stream of the pinned version returned bytes of another version")
	}
	if err != nil && !errors.Is(err, blob.ErrChanged) {
		t.Fatalf("a stream of the replaced version failed with %v, want ErrChanged (or the old bytes)", err)
	}
	if err == nil && len(got) != len(old) {
		t.Fatalf("a stream of the replaced version ended after %d bytes without an error", len(got))
	}
	p := make([]byte, 100)
	for _, off := range []int64{0, WriterSize / 2} {
		if n, err := f.Store.ReadAt(ctx, info.Ref(), p, off); n != 0 || !errors.Is(err, blob.ErrChanged) {
			t.Fatalf("ReadAt(replaced version, %d) = %d, %v; want 0, ErrChanged", off, n, err)
		}
	}
}

// testConcurrentConditionalCommits: writers race to commit one name, all
// conditioned on the same state; exactly one wins, the others get
// ErrConditionNotMet, and the object holds the winner's bytes.
func testConcurrentConditionalCommits(t *testing.T, f Fixture, w blob.Writer) {
	ctx := context.Background()
	base, err := commit(ctx, w, "shared", Data(1, 1000), blob.Condition{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, obj string
		cond      blob.Condition
	}{
		{"if-none-match", "fresh", blob.Condition{IfNoneMatch: true}},
		{"if-match", "shared", blob.Condition{IfMatch: base.ETag}},
	} {
		const writers = 6
		var wg sync.WaitGroup
		errs := make([]error, writers)
		datas := make([][]byte, writers)
		start := make(chan struct{})
		for i := range writers {
			datas[i] = Data(uint64(100+i), 50<<10+i)
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, errs[i] = commit(ctx, w, tc.obj, datas[i], tc.cond)
			}()
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("%s: writers %d and %d both won", tc.name, winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, blob.ErrConditionNotMet):
				t.Fatalf("%s: writer %d: %v, want ErrConditionNotMet", tc.name, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("%s: no writer won: %v", tc.name, errs)
		}
		if got, _ := content(t, f.Store, tc.obj); !bytes.Equal(got, datas[winner]) {
			t.Fatalf("%s: the object does not hold the winner's bytes", tc.name)
		}
	}
}
