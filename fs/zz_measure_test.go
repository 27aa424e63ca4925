package fs

import (
	"os"
	"testing"
	"time"
)

func TestZZMeasureWrite(t *testing.T) {
	if os.Getenv("SKRFS_MEASURE") == "" {
		t.Skip()
	}
	w := newWorld(t, writable, func(w *world) {
		prev := w.tune
		w.tune = func(o *Options) { prev(o); o.CacheBytes = 64 << 20; o.RangeSize = 8 << 20; o.StagingBytes = 64 << 20 }
	})
	data := pseudo(5, 1<<20)
	for _, size := range []int{32 << 20, 256 << 20} {
		f, _ := os.Create(w.path("data/m.bin"))
		start := time.Now()
		for off := 0; off < size; off += len(data) {
			if _, err := f.Write(data); err != nil {
				t.Fatal(err)
			}
		}
		staged := time.Since(start)
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		total := time.Since(start)
		t.Logf("%d MiB: write %.0f MB/s, with commit %.0f MB/s (commit %v), spilled %d", size>>20, float64(size)/staged.Seconds()/1e6, float64(size)/total.Seconds()/1e6, total-staged, w.root.counters.spilled.Load())
		f, _ = os.OpenFile(w.path("data/m.bin"), os.O_RDWR, 0)
		start = time.Now()
		f.WriteAt([]byte("x"), int64(size/2))
		f.Close()
		t.Logf("%d MiB: 1-byte rewrite in the middle and close: %v", size>>20, time.Since(start))
	}
}
