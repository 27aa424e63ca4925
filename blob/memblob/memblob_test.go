package memblob_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/blob/blobtest"
	"github.com/skrfs/skrfs/blob/memblob"
)

func TestConformance(t *testing.T) {
	blobtest.Suite{New: func(tb testing.TB) blobtest.Fixture {
		s := memblob.New()
		return blobtest.Fixture{Store: s, Put: s.Put, Delete: s.Delete}
	}}.Run(t)
}

func TestCommitConditions(t *testing.T) {
	ctx := context.Background()
	s := memblob.New()
	first, err := s.Commit(ctx, "a", strings.NewReader("one"), nil, blob.Condition{IfNoneMatch: true})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cond blob.Condition
		ok   bool
	}{
		{"if-none-match on an existing object", blob.Condition{IfNoneMatch: true}, false},
		{"if-match a stale version", blob.Condition{IfMatch: `"ff"`}, false},
		{"if-match the current version", blob.Condition{IfMatch: first.ETag}, true},
		{"if-match the replaced version", blob.Condition{IfMatch: first.ETag}, false},
		{"unconditional", blob.Condition{}, true},
	}
	for _, tc := range tests {
		_, err := s.Commit(ctx, "a", strings.NewReader(tc.name), nil, tc.cond)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, blob.ErrConditionNotMet)) {
			t.Errorf("%s: %v, want ok %v", tc.name, err, tc.ok)
		}
	}
	info, _ := s.Stat(ctx, "a")
	if err := s.Remove(ctx, "a", blob.Condition{IfMatch: first.ETag}); !errors.Is(err, blob.ErrConditionNotMet) {
		t.Errorf("remove of a stale version: %v", err)
	}
	if err := s.Remove(ctx, "a", blob.Condition{IfMatch: info.ETag}); err != nil {
		t.Errorf("remove: %v", err)
	}
	if err := s.Remove(ctx, "a", blob.Condition{}); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("remove of a missing object: %v", err)
	}
}

func TestWriterConformance(t *testing.T) {
	blobtest.Suite{New: func(tb testing.TB) blobtest.Fixture {
		s := memblob.New()
		return blobtest.Fixture{Store: s, Put: s.Put, Delete: s.Delete}
	}}.RunWriter(t)
}
