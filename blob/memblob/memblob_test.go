package memblob_test

import (
	"testing"

	"github.com/skrfs/skrfs/blob/blobtest"
	"github.com/skrfs/skrfs/blob/memblob"
)

func TestConformance(t *testing.T) {
	blobtest.Suite{New: func(tb testing.TB) blobtest.Fixture {
		s := memblob.New()
		return blobtest.Fixture{Store: s, Put: s.Put, Delete: s.Delete}
	}}.Run(t)
}
