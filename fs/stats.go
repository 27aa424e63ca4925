package fs

import (
	"context"
	"io"
	"sync/atomic"
	"time"

	"github.com/skrfs/skrfs/blob"
)

// Stats are cumulative counters of one filesystem since NewRoot. Read
// amplification is BytesFetched / BytesServed: ciphertext taken from
// storage per plaintext byte handed to readers.
type Stats struct {
	Fetches      int64 // storage reads (headers, preambles, chunk ranges)
	BytesFetched int64 // bytes those reads returned
	Reads        int64 // read requests on dataset files
	BytesServed  int64 // plaintext bytes returned by them
	ChunksLoaded int64 // chunks authenticated and decrypted
	// ChunkMisses counts chunks a reader had to wait for (not in the cache
	// when its read arrived); ChunkHits the ones that were.
	ChunkHits, ChunkMisses int64
	// Writes (docs/writes.md): objects committed, commits lost to another
	// writer, staged chunks spilled, and the plaintext staged in memory now.
	Commits, CommitConflicts, SpilledChunks, StagedBytes int64
	// Manifests published by writes (publish.go), failed publishes, and
	// publishes retried after another writer's.
	ManifestPublishes, ManifestPublishFailures, ManifestPublishConflicts int64
}

// Amplification returns BytesFetched / BytesServed (0 when nothing was
// served).
func (s Stats) Amplification() float64 {
	if s.BytesServed == 0 {
		return 0
	}
	return float64(s.BytesFetched) / float64(s.BytesServed)
}

type counters struct {
	fetches, bytesFetched, reads, bytesServed, chunksLoaded, chunkHits, chunkMisses atomic.Int64
	// Writes: staged chunks spilled, objects committed, commits lost.
	spilled, commits, conflicts atomic.Int64
	// Manifests published by writes, failed publishes, conflict retries.
	publishes, publishFailures, publishConflicts atomic.Int64
}

// Stats returns a snapshot of the counters.
func (r *Root) Stats() Stats {
	c := &r.counters
	return Stats{
		Fetches: c.fetches.Load(), BytesFetched: c.bytesFetched.Load(),
		Reads: c.reads.Load(), BytesServed: c.bytesServed.Load(),
		ChunksLoaded: c.chunksLoaded.Load(),
		ChunkHits:    c.chunkHits.Load(), ChunkMisses: c.chunkMisses.Load(),
		Commits: c.commits.Load(), CommitConflicts: c.conflicts.Load(),
		SpilledChunks: c.spilled.Load(), StagedBytes: r.staged.Load(),
		ManifestPublishes: c.publishes.Load(), ManifestPublishFailures: c.publishFailures.Load(),
		ManifestPublishConflicts: c.publishConflicts.Load(),
	}
}

// countingStore counts what a dataset's store returns, and times it for
// the observer.
type countingStore struct {
	blob.Store
	c   *counters
	obs Observer // nil = none
}

func (s countingStore) ReadAt(ctx context.Context, ref blob.Ref, p []byte, off int64) (int, error) {
	start := time.Now()
	n, err := s.Store.ReadAt(ctx, ref, p, off)
	s.c.fetches.Add(1)
	s.c.bytesFetched.Add(int64(n))
	if s.obs != nil {
		failed := err
		if err == io.EOF {
			failed = nil // a read reaching the end is a success
		}
		s.obs.Fetched(time.Since(start), failed)
	}
	return n, err
}

// ReadHead reads through the inner store's HeadReader, or Stat and ReadAt.
func (s countingStore) ReadHead(ctx context.Context, name string, p []byte) (blob.Info, int, error) {
	start := time.Now()
	info, n, err := blob.ReadHead(ctx, s.Store, name, p)
	s.c.fetches.Add(1)
	s.c.bytesFetched.Add(int64(n))
	if s.obs != nil {
		s.obs.Fetched(time.Since(start), err)
	}
	return info, n, err
}

// OpenRange streams through the inner store's RangeOpener, or its ReadAt.
func (s countingStore) OpenRange(ctx context.Context, ref blob.Ref, off, n int64) (io.ReadCloser, error) {
	start := time.Now()
	r, err := blob.OpenRange(ctx, s.Store, ref, off, n)
	if err != nil {
		if s.obs != nil {
			s.obs.Fetched(time.Since(start), err)
		}
		return nil, err
	}
	s.c.fetches.Add(1)
	return &countingReader{ReadCloser: r, c: s.c, obs: s.obs, start: start}, nil
}

// countingReader counts a streamed range; closing it reports the whole
// range's duration, and the first read error other than EOF, to the
// observer.
type countingReader struct {
	io.ReadCloser
	c     *counters
	obs   Observer
	start time.Time
	err   error
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.c.bytesFetched.Add(int64(n))
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}

func (r *countingReader) Close() error {
	err := r.ReadCloser.Close()
	if r.obs != nil {
		r.obs.Fetched(time.Since(r.start), r.err)
	}
	return err
}
