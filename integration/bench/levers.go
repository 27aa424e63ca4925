package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// benchLevers measures the small-file levers of issue 20 side by side on
// the 1,000 files of 4 KiB sealed for the oct key (format version 2): one
// daemon per variant, all mounted at once, subjects interleaved run by run
// with gocryptfs. A variant is the FUSE settings of SKRFS_FUSE_TUNING or a
// configuration change.
func benchLevers(bin, cfg string, kinds []smallKind, gcfMnt, work, coldNote string) {
	var ds string
	for _, k := range kinds {
		if k.key == "bench-oct" && k.version == 2 {
			ds = k.dataset
		}
	}
	b, err := os.ReadFile(cfg)
	must(err)
	noAudit := filepath.Join(work, "skrfs-noaudit.yaml")
	must(os.WriteFile(noAudit, []byte(strings.Replace(string(b), "audit:\n  file: audit.jsonl\n", "audit:\n  disabled: true\n", 1)), 0o600))
	variants := []struct{ name, cfg, tuning string }{
		{"skrfs (as shipped)", cfg, ""},
		{"max_background=64", cfg, "max_background=64"},
		{"entry and attr timeouts 1 h", cfg, "entry_timeout=1h,attr_timeout=1h"},
		{"READDIRPLUS off", cfg, "readdirplus=off"},
		{"audit off", noAudit, ""},
	}
	dirs := map[string]string{"gocryptfs": filepath.Join(gcfMnt, "small")}
	var names []string
	for i, v := range variants {
		env := os.Environ()
		if v.tuning != "" {
			env = append(env, "SKRFS_FUSE_TUNING="+v.tuning)
		}
		d := startDaemon(bin, []string{"mount", "--config", v.cfg}, filepath.Join(work, fmt.Sprintf("skrfs-lever%d", i)), env)
		onExit(d.stop)
		dirs[v.name] = filepath.Join(d.mnt, ds, "small")
		names = append(names, v.name)
	}
	names = append(names, "gocryptfs")
	sc := "cat 1,000 files of 4 KiB, oct v2, levers"
	cold := interleaved(*runs, names, func(n string) float64 {
		dropCaches()
		return timeMS(func() { catAll(dirs[n]) })
	})
	// Warm: a second cat 1.5 s after a cold one: the page cache holds
	// every file, and the shipped 1 s entry and attribute timeouts have
	// run out (the kernel asks the daemon again; 1 h timeouts do not).
	warm := interleaved(*runs, names, func(n string) float64 {
		dropCaches()
		catAll(dirs[n])
		time.Sleep(1500 * time.Millisecond)
		return timeMS(func() { catAll(dirs[n]) })
	})
	for _, n := range names {
		record(sc, n, "ms", cold[n], coldNote+"; subjects interleaved; one daemon per variant")
		record(sc+", second cat", n, "ms", warm[n], "1.5 s after a cold cat: page cache warm, 1 s timeouts expired")
	}
	for _, n := range names[:len(names)-1] {
		ratio(sc, n, "gocryptfs")
		ratio(sc+", second cat", n, "gocryptfs")
	}
}
