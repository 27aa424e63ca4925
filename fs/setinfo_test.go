package fs

import (
	"context"
	"errors"
	"testing"
)

// An interrupted lookup (go-fuse cancels its context) must not pin a size
// of 0 to the object: the next lookup computes the real size.
func TestInterruptedSizeIsNotRecorded(t *testing.T) {
	w := newWorld(t)
	ds := &w.root.opts.Datasets[0]
	for _, tc := range []struct {
		name   string
		ctx    func() context.Context
		wantOK bool
	}{
		{"canceled", func() context.Context { c, cancel := context.WithCancel(context.Background()); cancel(); return c }, false},
		{"deadline", func() context.Context {
			c, cancel := context.WithTimeout(context.Background(), 0)
			defer cancel()
			return c
		}, false},
		{"live", context.Background, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info, err := ds.Store.Stat(context.Background(), "hello.txt")
			if err != nil {
				t.Fatal(err)
			}
			info.Metadata = nil // no size hint: the preamble must be read
			n := &objectNode{root: w.root, ds: ds, name: "hello.txt", objName: "hello.txt"}
			err = n.setInfo(tc.ctx(), info, nil)
			if tc.wantOK != (err == nil) || (err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)) {
				t.Fatalf("setInfo: %v", err)
			}
			if err := n.setInfo(context.Background(), info, nil); err != nil {
				t.Fatal(err)
			}
			if n.plainSize != int64(len(w.plain["hello.txt"])) || n.sizeErr != nil {
				t.Fatalf("size %d (%v) after an interrupted lookup, want %d", n.plainSize, n.sizeErr, len(w.plain["hello.txt"]))
			}
		})
	}
}
