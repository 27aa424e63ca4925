// Command bench runs the side-by-side benchmarks of `make bench`: skrfs
// against gocryptfs, a no-crypto go-fuse loopback and tmpfs on the same
// data in tmpfs, and against direct Azure SDK downloads from Azurite. Every
// figure is the median of several runs with min and max, and every
// comparison is a ratio measured in the same run. Results go to stdout as
// markdown and to -out as JSON and markdown.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/blob/azblob"
	"github.com/skrfs/skrfs/blob/localdir"
	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/integration/azurite"
	"github.com/skrfs/skrfs/internal/devstack"
	"github.com/skrfs/skrfs/internal/upload"
	"github.com/skrfs/skrfs/keyrelease"
)

var (
	size    = flag.Int64("size", 1<<30, "size of the large object")
	runs    = flag.Int("runs", 3, "runs per measurement")
	outDir  = flag.String("out", ".cache/bench", "directory for the JSON and markdown results")
	doAzure = flag.Bool("azure", true, "also measure reads from Azurite")
	fioTime = flag.Int("fio-seconds", 3, "seconds per fio run")
	onlyAz  = flag.Bool("azure-only", false, "measure only the Azurite reads (same as -only azure)")
	hold    = flag.Bool("hold", false, "set up the data and mounts, print their paths, and wait for SIGINT (for profiling by hand)")
	only    = flag.String("only", "", "comma-separated groups to run: open,seq,random,small,levers,par,rss,writes,writes-azure,azure,scale (default: all; writes includes writes-azure unless -azure=false)")
)

// want reports whether a group of scenarios is to run.
func want(group string) bool {
	if *onlyAz {
		return group == "azure"
	}
	if *only == "" {
		return group != "azure" || *doAzure
	}
	for _, g := range strings.Split(*only, ",") {
		if strings.TrimSpace(g) == group {
			return true
		}
	}
	return false
}

// Result is one measured figure.
type Result struct {
	Scenario string    `json:"scenario"`
	Subject  string    `json:"subject"`
	Unit     string    `json:"unit"`
	Median   float64   `json:"median"`
	Min      float64   `json:"min"`
	Max      float64   `json:"max"`
	Samples  []float64 `json:"samples"`
	// Ratio is Median / the baseline's Median (for "lower is better" units,
	// baseline / Median), so > 1 always means skrfs is better.
	Ratio    float64 `json:"ratio,omitempty"`
	Baseline string  `json:"baseline,omitempty"`
	// Ratios holds every comparison of this subject, Ratio the first.
	Ratios []Comparison `json:"ratios,omitempty"`
	Note   string       `json:"note,omitempty"`
}

var results []Result

// Comparison is one ratio of a subject's median to a baseline's.
type Comparison struct {
	Baseline string  `json:"baseline"`
	Ratio    float64 `json:"ratio"`
}

func record(scenario, subject, unit string, samples []float64, note string) *Result {
	s := append([]float64(nil), samples...)
	sort.Float64s(s)
	r := Result{Scenario: scenario, Subject: subject, Unit: unit, Samples: samples, Min: s[0], Max: s[len(s)-1], Median: s[len(s)/2], Note: note}
	results = append(results, r)
	fmt.Fprintf(os.Stderr, "  %-28s %-26s %10.1f %s (min %.1f, max %.1f)\n", scenario, subject, r.Median, unit, r.Min, r.Max)
	return &results[len(results)-1]
}

// ratio sets the ratio of result subject against baseline in a scenario.
func ratio(scenario, subject, baseline string) {
	var s, b *Result
	for i := range results {
		if results[i].Scenario == scenario && results[i].Subject == subject {
			s = &results[i]
		}
		if results[i].Scenario == scenario && results[i].Subject == baseline {
			b = &results[i]
		}
	}
	if s == nil || b == nil || s.Median == 0 || b.Median == 0 {
		return
	}
	r := s.Median / b.Median
	if s.Unit == "ms" || s.Unit == "MiB" || s.Unit == "CPU s/GiB" {
		r = b.Median / s.Median
	}
	if s.Ratios == nil {
		s.Baseline, s.Ratio = baseline, r
	}
	s.Ratios = append(s.Ratios, Comparison{baseline, r})
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		runCleanups()
		os.Exit(1)
	}
}

// cleanups undo what main set up (mounts, a 12 GiB tmpfs, daemons), also
// when a failure or a signal ends the run: os.Exit skips deferred calls.
var (
	cleanupMu sync.Mutex
	cleanups  []func()
)

func onExit(f func()) {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	cleanups = append(cleanups, f)
}

func runCleanups() {
	cleanupMu.Lock()
	fs := cleanups
	cleanups = nil
	cleanupMu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

func sh(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		must(fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out))
	}
	return string(out)
}

// dropCaches empties the page cache (root only); it reports whether it could.
func dropCaches() bool {
	syscall.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0) == nil
}

// busyCPU returns the machine's busy CPU time so far in seconds (all
// cores: user, nice, system, irq, softirq, steal; not idle or iowait).
func busyCPU() float64 {
	b, err := os.ReadFile("/proc/stat")
	must(err)
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	var sum float64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, _ := strconv.ParseFloat(f[i], 64)
		sum += v
	}
	return sum / 100 // USER_HZ
}

// cpuPerGiB collects, per subject, the machine's busy CPU seconds per GiB
// read: on a 2-vCPU machine shared by the reader, the kernel, the daemon
// and (for Azure) the emulator, throughput is bound by this cost.
var cpuPerGiB = map[string][]float64{}

// readAllCPU is readAll that also records busy CPU per GiB for subject.
func readAllCPU(subject, path string) float64 {
	c0 := busyCPU()
	mibps := readAll(path)
	st, err := os.Stat(path)
	must(err)
	cpuPerGiB[subject] = append(cpuPerGiB[subject], (busyCPU()-c0)/(float64(st.Size())/(1<<30)))
	return mibps
}

// recordCPU records the CPU cost per GiB collected for subjects.
func recordCPU(scenario string, subjects []string) {
	for _, n := range subjects {
		if len(cpuPerGiB[n]) > 0 {
			record(scenario+", CPU cost", n, "CPU s/GiB", cpuPerGiB[n], "machine-wide busy CPU (all cores) per GiB read")
		}
		delete(cpuPerGiB, n)
	}
}

// readAll reads a file with 1 MiB reads, like dd bs=1M, and returns MiB/s.
func readAll(path string) float64 {
	f, err := os.Open(path)
	must(err)
	defer f.Close()
	buf := make([]byte, 1<<20)
	start := time.Now()
	var n int64
	for {
		k, err := f.Read(buf)
		n += int64(k)
		if err == io.EOF {
			break
		}
		must(err)
	}
	return float64(n) / (1 << 20) / time.Since(start).Seconds()
}

func samples(n int, f func() float64) []float64 {
	var out []float64
	for i := 0; i < n; i++ {
		out = append(out, f())
	}
	return out
}

// fio runs random 4 KiB reads and returns IOPS.
func fio(path string, qd int, direct bool) float64 {
	d := "0"
	if direct {
		d = "1"
	}
	out := sh("fio", "--name=r", "--filename="+path, "--rw=randread", "--bs=4k", "--ioengine=libaio",
		"--iodepth="+strconv.Itoa(qd), "--direct="+d, "--runtime="+strconv.Itoa(*fioTime), "--time_based",
		"--output-format=json", "--readonly", "--invalidate=0")
	var r struct {
		Jobs []struct {
			Read struct {
				IOPS float64 `json:"iops"`
			} `json:"read"`
		} `json:"jobs"`
	}
	must(json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &r))
	return r.Jobs[0].Read.IOPS
}

// waitFile waits for a readiness file with a deadline.
func waitFile(p string, cmd *exec.Cmd) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(p); err == nil {
			return
		}
		if time.Now().After(deadline) {
			must(fmt.Errorf("%s not ready", cmd.Path))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type daemon struct {
	cmd  *exec.Cmd
	mnt  string
	logs *lockedBuf // the daemon's stderr (JSON lines)
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func startDaemon(bin string, args []string, mnt string, env []string) *daemon {
	os.MkdirAll(mnt, 0o755)
	ready := mnt + ".ready"
	os.Remove(ready)
	cmd := exec.Command(bin, append(args, "--ready-file", ready, mnt)...)
	cmd.Env = env
	logs := &lockedBuf{}
	cmd.Stderr = io.MultiWriter(os.Stderr, logs)
	must(cmd.Start())
	waitFile(ready, cmd)
	return &daemon{cmd: cmd, mnt: mnt, logs: logs}
}

// fsStats are the daemon's read counters (fs.Stats, logged on SIGUSR1).
type fsStats struct {
	BytesFetched int64 `json:"bytes_fetched"`
	BytesServed  int64 `json:"bytes_served"`
	Fetches      int64 `json:"fetches"`
	Reads        int64 `json:"reads"`
}

// stats asks the daemon for its counters (skrfs only).
func (d *daemon) stats() fsStats {
	count := func() int { return strings.Count(d.logs.String(), `"read counters"`) }
	n := count()
	must(d.cmd.Process.Signal(syscall.SIGUSR1))
	deadline := time.Now().Add(10 * time.Second)
	for count() == n {
		if time.Now().After(deadline) {
			must(fmt.Errorf("no read counters from the daemon after SIGUSR1"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	lines := strings.Split(d.logs.String(), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], `"read counters"`) {
			var s fsStats
			must(json.Unmarshal([]byte(lines[i]), &s))
			return s
		}
	}
	panic("unreachable")
}

// amplification records storage bytes fetched per byte served while f
// runs.
func amplification(d *daemon, scenario, note string, f func()) {
	before := d.stats()
	f()
	after := d.stats()
	served := after.BytesServed - before.BytesServed
	if served == 0 {
		return
	}
	a := float64(after.BytesFetched-before.BytesFetched) / float64(served)
	record(scenario, "skrfs read amplification", "x", []float64{a},
		fmt.Sprintf("storage bytes per byte read; %d fetches for %d reads; %s", after.Fetches-before.Fetches, after.Reads-before.Reads, note))
}

// interleaved measures several subjects run by run (A B C, A B C, ...),
// so a noisy phase of the machine hits every subject alike.
func interleaved(n int, names []string, f func(name string) float64) map[string][]float64 {
	out := map[string][]float64{}
	for i := 0; i < n; i++ {
		for _, name := range names {
			out[name] = append(out[name], f(name))
		}
	}
	return out
}

func (d *daemon) stop() {
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.cmd.Wait()
}

// peakRSS returns the daemon's peak resident set in MiB.
func (d *daemon) peakRSS() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	must(err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return float64(kb) / 1024
		}
	}
	return 0
}

func writeRandom(p string, n int64, seed byte) {
	must(os.MkdirAll(filepath.Dir(p), 0o755))
	f, err := os.Create(p)
	must(err)
	defer f.Close()
	r := mrand.NewChaCha8([32]byte{seed})
	buf := make([]byte, 1<<20)
	for left := n; left > 0; left -= int64(len(buf)) {
		r.Read(buf)
		_, err := f.Write(buf[:min(left, int64(len(buf)))])
		must(err)
	}
}

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		must(fmt.Errorf("make bench needs root (FUSE mounts, tmpfs, dropping caches)"))
	}
	ctx := context.Background()
	work, err := os.MkdirTemp("", "skrfs-bench-")
	must(err)
	defer runCleanups()
	onExit(func() { os.RemoveAll(work) })
	go func() { // Ctrl-C: tear down, then exit
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
		runCleanups()
		os.Exit(130)
	}()
	tmpfs := filepath.Join(work, "tmpfs")
	os.MkdirAll(tmpfs, 0o755)
	sh("mount", "-t", "tmpfs", "-o", "size=12g", "tmpfs", tmpfs)
	onExit(func() { syscall.Unmount(tmpfs, syscall.MNT_DETACH) })
	bin := filepath.Join(mkdir(filepath.Join(work, "bin")), "skrfs")
	loopBin := filepath.Join(work, "bin", "loopback")
	sh("go", "build", "-o", bin, "./cmd/skrfs")
	sh("go", "build", "-o", loopBin, "./integration/bench/loopback")
	canDrop := dropCaches()

	// The devstack, and a key whose bytes we hold so we can seal data.
	stack, err := devstack.Start(ctx, devstack.Options{Dir: filepath.Join(work, "devstack"), Seed: true, Logger: zerolog.Nop()})
	must(err)
	onExit(func() { stack.Close() })
	octBytes := make([]byte, 32)
	rand.Read(octBytes)
	kid := importKey(ctx, stack, octBytes)
	ref, _ := keyrelease.ParseKeyRef(kid)
	ref.Version = ""

	// The data: one large object, 1,000 small files, 64 medium ones.
	plain := filepath.Join(tmpfs, "plain")
	if want("seq") || want("random") || want("rss") || want("azure") {
		writeRandom(filepath.Join(plain, "big.bin"), *size, 1)
	}
	for i := 0; i < 1000; i++ {
		writeRandom(filepath.Join(plain, "small", fmt.Sprintf("%04d", i)), 4096, byte(i))
	}
	if want("par") {
		for i := 0; i < 64; i++ {
			writeRandom(filepath.Join(plain, "par", fmt.Sprintf("%02d", i)), 16<<20, byte(100+i))
		}
	}
	store := filepath.Join(tmpfs, "skrfs-store")
	st, err := localdir.New(mkdir(store))
	must(err)
	files, err := upload.Collect([]string{plain})
	must(err)
	res := upload.Run(ctx, st, files, upload.Options{KEK: octBytes, KeyRef: ref.String(), Parallel: runtime.NumCPU()})
	if len(res.Errors) > 0 {
		must(res.Errors[0])
	}
	// The small files again, sealed for an RSA-3072 and an EC P-256 key
	// (public keys only, as a data owner would), in format version 2 (one
	// batch per upload run) and, for the before/after comparison, version 1.
	kinds := smallKinds(ctx, stack, octBytes, ref, tmpfs, plain)
	extraKeys := map[string]string{}
	extraSets := map[string][2]string{}
	for _, k := range kinds {
		extraKeys[k.key] = k.ref
		extraSets[k.dataset] = [2]string{"local: " + k.store, k.key}
	}
	cfg := writeConfigKeys(stack, ref, map[string]string{"bench": "local: " + store}, extraKeys, extraSets, filepath.Join(work, "skrfs.yaml"))

	// gocryptfs over the same plaintext, ciphertext in tmpfs.
	gcfCipher := mkdir(filepath.Join(tmpfs, "gcf-cipher"))
	pw := filepath.Join(work, "pw")
	os.WriteFile(pw, []byte("bench password"), 0o600)
	sh("gocryptfs", "-init", "-q", "-passfile", pw, "-scryptn", "10", gcfCipher)
	gcfMnt := mkdir(filepath.Join(work, "gcf"))
	sh("gocryptfs", "-q", "-passfile", pw, gcfCipher, gcfMnt)
	onExit(func() { exec.Command("umount", gcfMnt).Run() })
	sh("cp", "-r", plain+"/.", gcfMnt)

	loop := startDaemon(loopBin, []string{plain}, filepath.Join(work, "loop"), os.Environ())
	onExit(loop.stop)

	// First open of a key file (attestation + release) and warm opens.
	if want("open") {
		var first, warm []float64
		for i := 0; i < *runs; i++ {
			d := startDaemon(bin, []string{"mount", "--config", cfg}, filepath.Join(work, "skrfs"), os.Environ())
			first = append(first, timeMS(func() { readFile(filepath.Join(d.mnt, "keys", "bench-oct")) }))
			warm = append(warm, timeMS(func() { readFile(filepath.Join(d.mnt, "keys", "bench-oct")) }))
			d.stop()
		}
		record("open key file", "first open (attest+release)", "ms", first, "devstack on loopback")
		record("open key file", "warm open (cached key)", "ms", warm, "")
		// The first open of an object per key type (format version 2):
		// attestation, the key's release, the batch key's unwrap (one
		// private-key operation for RSA and EC) and the object's open, on
		// a fresh daemon each; then a second object of the same batch.
		for _, k := range kinds {
			if k.version != 2 {
				continue
			}
			var first, second []float64
			for i := 0; i < *runs; i++ {
				d := startDaemon(bin, []string{"mount", "--config", cfg}, filepath.Join(work, "skrfs-first"), os.Environ())
				dir := filepath.Join(d.mnt, k.dataset, "small")
				first = append(first, timeMS(func() { readFile(filepath.Join(dir, "0000")) }))
				second = append(second, timeMS(func() { readFile(filepath.Join(dir, "0001")) }))
				d.stop()
			}
			record("first open of an object, per key type", k.label, "ms", first, "fresh daemon: attestation, release, batch-key unwrap, open")
			record("second object of the batch, per key type", k.label, "ms", second, "same daemon, key and batch key cached")
		}
	}

	sk := startDaemon(bin, []string{"mount", "--config", cfg}, filepath.Join(work, "skrfs"), os.Environ())
	onExit(sk.stop)
	skData := filepath.Join(sk.mnt, "bench")
	subjects := []struct{ name, dir string }{{"skrfs", skData}, {"gocryptfs", gcfMnt}, {"loopback (no crypto)", loop.mnt}, {"tmpfs (no FUSE)", plain}}
	dirOf := map[string]string{}
	var names []string
	for _, s := range subjects {
		dirOf[s.name] = s.dir
		names = append(names, s.name)
	}

	if *hold {
		fmt.Printf("skrfs %s (pid %d)\ngocryptfs %s\nloopback %s (pid %d)\ntmpfs %s\nready; Ctrl-C to tear down\n",
			skData, sk.cmd.Process.Pid, gcfMnt, loop.mnt, loop.cmd.Process.Pid, plain)
		select {} // until the signal handler tears down
	}
	coldNote := "page cache dropped before each run"
	if !canDrop {
		coldNote = "page cache could NOT be dropped: runs are warm"
	}
	if want("seq") {
		// Subjects interleaved run by run: A B C D, A B C D, ...
		amplification(sk, "seq read 1 GiB cold", "whole reads, cold", func() {
			cold := interleaved(*runs, names, func(n string) float64 { dropCaches(); return readAllCPU(n, filepath.Join(dirOf[n], "big.bin")) })
			for _, n := range names {
				record("seq read 1 GiB cold", n, "MiB/s", cold[n], coldNote+"; subjects interleaved")
			}
		})
		recordCPU("seq read 1 GiB cold", names)
		ratio("seq read 1 GiB cold, CPU cost", "skrfs", "gocryptfs")
		ratio("seq read 1 GiB cold, CPU cost", "skrfs", "loopback (no crypto)")
		warm := interleaved(*runs, names, func(n string) float64 {
			p := filepath.Join(dirOf[n], "big.bin")
			readAll(p) // into the page cache
			return readAll(p)
		})
		for _, n := range names {
			record("seq read 1 GiB warm", n, "MiB/s", warm[n], "subjects interleaved")
		}
		for _, sc := range []string{"seq read 1 GiB cold", "seq read 1 GiB warm"} {
			ratio(sc, "skrfs", "gocryptfs")
			ratio(sc, "skrfs", "loopback (no crypto)")
			ratio(sc, "loopback (no crypto)", "gocryptfs")
		}
	}
	if want("random") {
		for _, qd := range []int{1, 16} {
			sc := fmt.Sprintf("random 4 KiB QD%d warm", qd)
			for _, s := range subjects[:2] {
				p := filepath.Join(s.dir, "big.bin")
				readAll(p)
				record(sc, s.name, "IOPS", samples(*runs, func() float64 { return fio(p, qd, false) }), "buffered, after a full read")
			}
			ratio(sc, "skrfs", "gocryptfs")
			sc = fmt.Sprintf("random 4 KiB QD%d cold", qd)
			for _, s := range subjects[:2] {
				p := filepath.Join(s.dir, "big.bin")
				run := func() {
					record(sc, s.name, "IOPS", samples(*runs, func() float64 { dropCaches(); return fio(p, qd, true) }), "O_DIRECT, "+coldNote)
				}
				if s.name == "skrfs" {
					amplification(sk, sc, "O_DIRECT 4 KiB reads, 64 KiB chunks", run)
				} else {
					run()
				}
			}
			ratio(sc, "skrfs", "gocryptfs")
		}
	}
	if want("small") {
		// Every key type side by side, each dataset on the same daemon
		// (one release per key in all); the batch key of a version 2
		// dataset is unwrapped once per daemon.
		var smallNames []string
		for _, k := range kinds {
			smallNames = append(smallNames, k.label)
			dirOf[k.label] = filepath.Join(sk.mnt, k.dataset, "small")
		}
		smallNames = append(smallNames, "gocryptfs")
		dirOf["gocryptfs"] = gcfMnt
		relBefore := map[string]int{}
		for _, key := range []string{"bench-rsa", "bench-ec", "bench-oct"} {
			relBefore[key] = stack.Vault.Stats(key).Allowed
		}
		got := interleaved(*runs, smallNames, func(n string) float64 {
			dir := dirOf[n]
			if n == "gocryptfs" {
				dir = filepath.Join(gcfMnt, "small")
			}
			dropCaches()
			return timeMS(func() { catAll(dir) })
		})
		for _, n := range smallNames {
			record("cat 1,000 files of 4 KiB, per key type", n, "ms", got[n], coldNote+"; subjects interleaved; one daemon")
		}
		for _, n := range smallNames[:len(smallNames)-1] {
			ratio("cat 1,000 files of 4 KiB, per key type", n, "gocryptfs")
		}
		for _, key := range []string{"bench-rsa", "bench-ec", "bench-oct"} {
			fmt.Fprintf(os.Stderr, "key releases of %s during the small-file runs: %d\n", key, stack.Vault.Stats(key).Allowed-relBefore[key])
		}
		dirOf["gocryptfs"] = gcfMnt
		for _, s := range subjects[:2] {
			dir := filepath.Join(s.dir, "small")
			record("cat 1,000 files of 4 KiB", s.name, "ms", samples(*runs, func() float64 {
				dropCaches()
				return timeMS(func() { catAll(dir) })
			}), coldNote)
		}
		record("cat 1,000 files of 4 KiB", "tmpfs (no FUSE)", "ms", samples(*runs, func() float64 { return timeMS(func() { catAll(filepath.Join(plain, "small")) }) }), "")
		ratio("cat 1,000 files of 4 KiB", "skrfs", "gocryptfs")
	}

	if want("levers") {
		benchLevers(bin, cfg, kinds, gcfMnt, work, coldNote)
	}

	if want("par") {
		// 64 readers over 64 objects under one key, each run on a fresh
		// daemon: one release per run in all.
		before := stack.Vault.Stats("bench-oct").Allowed
		record("64 readers x 64 objects", "skrfs", "MiB/s", samples(*runs, func() float64 {
			d := startDaemon(bin, []string{"mount", "--config", cfg}, filepath.Join(work, "skrfs-par"), os.Environ())
			defer d.stop()
			dropCaches()
			return parallelRead(filepath.Join(d.mnt, "bench", "par"))
		}), "aggregate")
		record("64 readers x 64 objects", "gocryptfs", "MiB/s", samples(*runs, func() float64 { dropCaches(); return parallelRead(filepath.Join(gcfMnt, "par")) }), "aggregate")
		ratio("64 readers x 64 objects", "skrfs", "gocryptfs")
		releases := stack.Vault.Stats("bench-oct").Allowed - before
		results[len(results)-2].Note = fmt.Sprintf("aggregate, a fresh daemon per run; key releases: %d in %d runs", releases, *runs)

		// The same per key type (format version 2), interleaved with
		// gocryptfs run by run; a fresh daemon per run.
		var parNames []string
		parDir := map[string]string{}
		for _, k := range kinds {
			if k.version == 2 {
				parNames = append(parNames, k.label)
				parDir[k.label] = k.dataset
			}
		}
		parNames = append(parNames, "gocryptfs")
		got := interleaved(*runs, parNames, func(n string) float64 {
			if n == "gocryptfs" {
				dropCaches()
				return parallelRead(filepath.Join(gcfMnt, "par"))
			}
			d := startDaemon(bin, []string{"mount", "--config", cfg}, filepath.Join(work, "skrfs-par"), os.Environ())
			defer d.stop()
			dropCaches()
			return parallelRead(filepath.Join(d.mnt, parDir[n], "par"))
		})
		for _, n := range parNames {
			record("64 readers x 64 objects, per key type", n, "MiB/s", got[n], "aggregate; subjects interleaved; a fresh daemon per run (one release)")
		}
		for _, n := range parNames[:len(parNames)-1] {
			ratio("64 readers x 64 objects, per key type", n, "gocryptfs")
		}
	}

	if want("rss") {
		// Peak memory of a fresh daemon while streaming 4 GiB.
		d := startDaemon(bin, []string{"mount", "--config", cfg}, filepath.Join(work, "skrfs-rss"), os.Environ())
		for i := int64(0); i < 4<<30; i += *size {
			dropCaches()
			readAll(filepath.Join(d.mnt, "bench", "big.bin"))
		}
		record("peak RSS streaming 4 GiB", "skrfs daemon", "MiB", []float64{d.peakRSS()}, "VmHWM of a fresh daemon process")
		d.stop()
	}

	if want("writes") || want("writes-azure") {
		benchWrites(ctx, bin, stack, ref, kinds, octBytes, gcfMnt, plain, tmpfs, work)
	}
	if want("azure") {
		benchAzure(ctx, bin, stack, ref, octBytes, work)
	}
	if want("scale") {
		sk.stop() // one daemon at a time: the scale runs measure RSS
		benchScale(ctx, bin, stack, ref, octBytes, work, tmpfs)
	}
	report()
}

func mkdir(p string) string { must(os.MkdirAll(p, 0o755)); return p }

func timeMS(f func()) float64 {
	start := time.Now()
	f()
	return float64(time.Since(start).Microseconds()) / 1000
}

func readFile(p string) []byte {
	b, err := os.ReadFile(p)
	must(err)
	return b
}

func catAll(dir string) {
	ents, err := os.ReadDir(dir)
	must(err)
	for _, e := range ents {
		readFile(filepath.Join(dir, e.Name()))
	}
}

func parallelRead(dir string) float64 {
	ents, err := os.ReadDir(dir)
	must(err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var total int64
	start := time.Now()
	for _, e := range ents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := readFile(filepath.Join(dir, e.Name()))
			mu.Lock()
			total += int64(len(b))
			mu.Unlock()
		}()
	}
	wg.Wait()
	return float64(total) / (1 << 20) / time.Since(start).Seconds()
}

func importKey(ctx context.Context, s *devstack.Stack, oct []byte) string {
	kc, err := s.KeysClient(nil)
	must(err)
	hd := fmt.Sprintf("%x", s.TEE.HostData)
	ct := "application/json; charset=utf-8"
	kty := azkeys.KeyTypeOctHSM
	hsm, exp := true, true
	resp, err := kc.ImportKey(ctx, "bench-oct", azkeys.ImportKeyParameters{HSM: &hsm, Key: &azkeys.JSONWebKey{Kty: &kty, K: oct},
		KeyAttributes: &azkeys.KeyAttributes{Exportable: &exp}, ReleasePolicy: &azkeys.KeyReleasePolicy{ContentType: &ct, EncodedPolicy: s.Policy(hd)}}, nil)
	must(err)
	return string(*resp.Key.KID)
}

// smallKind is one dataset of the 1,000 small files sealed for one key.
type smallKind struct {
	label, key, ref, dataset, store string
	version                         int
}

// smallKinds creates an RSA-3072 and an EC P-256 key with the bench release
// policy and seals the small files for each key type, in format version 2
// (one batch per run) and version 1.
func smallKinds(ctx context.Context, s *devstack.Stack, oct []byte, octRef keyrelease.KeyRef, tmpfs, plain string) []smallKind {
	kc, err := s.KeysClient(nil)
	must(err)
	hd := fmt.Sprintf("%x", s.TEE.HostData)
	ct := "application/json; charset=utf-8"
	exp := true
	create := func(name string, p azkeys.CreateKeyParameters) (string, any) {
		p.KeyAttributes = &azkeys.KeyAttributes{Exportable: &exp}
		p.ReleasePolicy = &azkeys.KeyReleasePolicy{ContentType: &ct, EncodedPolicy: s.Policy(hd)}
		resp, err := kc.CreateKey(ctx, name, p, nil)
		must(err)
		js, _ := resp.Key.MarshalJSON()
		k, err := keyrelease.ParseKey(js)
		must(err)
		return string(*resp.Key.KID), k.KEK()
	}
	rsaKty, ecKty := azkeys.KeyTypeRSAHSM, azkeys.KeyTypeECHSM
	bits, crv := int32(3072), azkeys.CurveNameP256
	rsaKID, rsaPub := create("bench-rsa", azkeys.CreateKeyParameters{Kty: &rsaKty, KeySize: &bits})
	ecKID, ecPub := create("bench-ec", azkeys.CreateKeyParameters{Kty: &ecKty, Curve: &crv})
	unversioned := func(kid string) string {
		r, err := keyrelease.ParseKeyRef(kid)
		must(err)
		r.Version = ""
		return r.String()
	}
	collect := func(sub string) []upload.File {
		files, err := upload.Collect([]string{filepath.Join(plain, sub)})
		must(err)
		for i := range files {
			files[i].Name = sub + "/" + files[i].Name
		}
		return files
	}
	files := collect("small")
	var parFiles []upload.File
	if want("par") {
		parFiles = collect("par") // the 64 readers per key type, version 2 only
	}
	var out []smallKind
	for _, k := range []struct {
		label, key, ref string
		kek             any
		version         int
	}{
		{"skrfs oct v2", "bench-oct", octRef.String(), oct, 2},
		{"skrfs EC P-256 v2", "bench-ec", unversioned(ecKID), ecPub, 2},
		{"skrfs RSA-3072 v2", "bench-rsa", unversioned(rsaKID), rsaPub, 2},
		{"skrfs RSA-3072 v1", "bench-rsa", unversioned(rsaKID), rsaPub, 1},
		{"skrfs EC P-256 v1", "bench-ec", unversioned(ecKID), ecPub, 1},
		{"skrfs oct v1", "bench-oct", octRef.String(), oct, 1},
	} {
		ds := strings.NewReplacer(" ", "-", ",", "").Replace(strings.ToLower(strings.TrimPrefix(k.label, "skrfs ")))
		store := mkdir(filepath.Join(tmpfs, "store-"+ds))
		st, err := localdir.New(store)
		must(err)
		files := files
		if k.version == 2 {
			files = append(slices.Clip(files), parFiles...)
		}
		res := upload.Run(ctx, st, files, upload.Options{KEK: k.kek, KeyRef: k.ref, FormatVersion: k.version,
			FingerprintKey: make([]byte, 32), Parallel: runtime.NumCPU()})
		if len(res.Errors) > 0 {
			must(res.Errors[0])
		}
		out = append(out, smallKind{label: k.label, key: k.key, ref: k.ref, dataset: "small-" + ds, store: store, version: k.version})
	}
	return out
}

// writeConfigKeys is writeConfig with more keys (name: ref) and datasets
// (name: [source, key name]).
func writeConfigKeys(s *devstack.Stack, ref keyrelease.KeyRef, datasets, keys map[string]string, sets map[string][2]string, path string) string {
	writeConfig(s, ref, datasets, path)
	b, err := os.ReadFile(path)
	must(err)
	cfg := string(b)
	for name, r := range keys {
		if name == "bench-oct" {
			continue
		}
		cfg = strings.Replace(cfg, "keys:\n", "keys:\n  - name: "+name+"\n    ref: "+r+"\n", 1)
	}
	for name, src := range sets {
		cfg += "  - name: " + name + "\n    " + src[0] + "\n    keys: [" + src[1] + "]\n"
	}
	must(os.WriteFile(path, []byte(cfg), 0o600))
	return path
}

// writeConfig extends the devstack's configuration with the bench key and
// datasets.
func writeConfig(s *devstack.Stack, ref keyrelease.KeyRef, datasets map[string]string, path string) string {
	b, err := os.ReadFile(filepath.Join(s.Dir, devstack.ConfigFile))
	must(err)
	// Audit events go to a file beside the configuration, as a deployment
	// that keeps them would send them; on the standard error they would
	// wake this process (and whatever reads its output) on every open.
	cfg := "audit:\n  file: audit.jsonl\n" + string(b)
	cfg = strings.Replace(cfg, "keys:\n", "keys:\n  - name: bench-oct\n    ref: "+ref.String()+"\n", 1)
	for name, src := range datasets {
		cfg += "  - name: " + name + "\n    " + src + "\n    keys: [bench-oct]\n"
	}
	must(os.WriteFile(path, []byte(cfg), 0o600))
	return path
}

func benchAzure(ctx context.Context, bin string, s *devstack.Stack, ref keyrelease.KeyRef, oct []byte, work string) {
	az, stopAz, err := azurite.StartMain(azurite.Options{})
	must(err)
	stop := sync.OnceFunc(stopAz)
	onExit(stop)
	defer stop()
	cc, err := az.ContainerClient("bench")
	must(err)
	_, err = cc.Create(ctx, nil)
	must(err)
	url := az.ContainerURL("bench")
	st, err := azblob.Open(ctx, azblob.Config{ContainerURL: url, AccountKey: az.AccountKey, Transport: az.HTTPClient})
	must(err)
	plain := filepath.Join(work, "tmpfs", "plain", "big.bin")
	res := upload.Run(ctx, st, []upload.File{{Path: plain, Name: "big.bin", Size: *size}}, upload.Options{KEK: oct, KeyRef: ref.String()})
	if len(res.Errors) > 0 {
		must(res.Errors[0])
	}
	info, err := st.Stat(ctx, "big.bin")
	must(err)
	env := append(os.Environ(), "AZURE_STORAGE_CONNECTION_STRING="+az.ConnectionString())
	cfg := writeConfig(s, ref, map[string]string{"cloud": "azure: " + url}, filepath.Join(work, "skrfs-azure.yaml"))
	d := startDaemon(bin, []string{"mount", "--config", cfg}, filepath.Join(work, "skrfs-azure"), env)
	stopD := sync.OnceFunc(d.stop)
	onExit(stopD)
	defer stopD()
	sc := "seq read 1 GiB from Azurite"
	pinned := pinAzurite(az)
	defer unpin()
	subjects := []string{"skrfs (decrypting)", "SDK DownloadStream (ciphertext)", "skrfs range reader (ciphertext)", floorSubject}
	notes := []string{"cold; subjects interleaved", "one plain download of the whole blob", "parallel ranged reads, no decryption",
		"one plain download into memory, then AES-256-GCM open of every chunk (crypto.Decryptor, 1 MiB at a time)"}
	for i := range notes {
		notes[i] += pinned
	}
	// Process CPU per GiB: the daemon's for skrfs, this process's for the
	// floor (a download and a decryption, nothing else runs here then).
	procCPU := map[string][]float64{}
	var got map[string][]float64
	amplification(d, sc, "whole reads from Azurite", func() {
		got = interleaved(*runs, subjects, func(name string) float64 {
			start := time.Now()
			var n int64
			switch name {
			case subjects[0]:
				dropCaches()
				c0 := pidCPU(d.cmd.Process.Pid)
				mibps := readAllCPU(name, filepath.Join(d.mnt, "cloud", "big.bin"))
				procCPU[name] = append(procCPU[name], (pidCPU(d.cmd.Process.Pid)-c0)/(float64(info.Size)/(1<<30)))
				return mibps
			case floorSubject:
				// Buffers made before the clock starts: the floor is the
				// download and the decryption, not the zeroing of 1 GiB
				// of fresh memory.
				if len(floorBuf) < int(info.Size) {
					floorBuf = make([]byte, info.Size)
					floorPT = make([]byte, 0, 1<<20)
				}
				start = time.Now()
				c0 := selfCPU()
				resp, err := cc.NewBlobClient("big.bin").DownloadStream(ctx, nil)
				must(err)
				buf := floorBuf[:info.Size]
				_, err = io.ReadFull(resp.Body, buf)
				resp.Body.Close()
				must(err)
				h, err := crypto.ParseHeader(buf)
				must(err)
				table, err := crypto.ReadTable(bytes.NewReader(buf), info.Size, h, buf[:h.Len()])
				must(err)
				dec, err := crypto.NewDecryptorOpts(h, oct, "big.bin", info.Size, crypto.OpenOptions{Table: table})
				must(err)
				per := int64(cap(floorPT)) / int64(h.ChunkSize) // chunks per call
				for i := int64(0); i < dec.NumChunks(); i += per {
					off, sz := dec.CipherRange(i, min(i+per, dec.NumChunks())-1)
					_, err := dec.DecryptChunks(floorPT[:0], buf[off:off+sz], i)
					must(err)
				}
				clear(floorPT[:cap(floorPT)])
				mibps := float64(info.Size) / (1 << 20) / time.Since(start).Seconds()
				procCPU[name] = append(procCPU[name], (selfCPU()-c0)/(float64(info.Size)/(1<<30)))
				return mibps
			case subjects[1]:
				c0 := busyCPU()
				defer func() { cpuPerGiB[name] = append(cpuPerGiB[name], (busyCPU()-c0)/(float64(n)/(1<<30))) }()
				resp, err := cc.NewBlobClient("big.bin").DownloadStream(ctx, nil)
				must(err)
				n, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				must(err)
			default:
				r := st.NewRangeReader(ctx, blob.Ref{Name: info.Name, ETag: info.ETag}, info.Size, azblob.ReaderOptions{})
				n, err = io.Copy(io.Discard, r)
				r.Close()
				must(err)
			}
			return float64(n) / (1 << 20) / time.Since(start).Seconds()
		})
	})
	for i, name := range subjects {
		record(sc, name, "MiB/s", got[name], notes[i])
	}
	recordCPU(sc, subjects[:2])
	ratio(sc+", CPU cost", subjects[0], subjects[1])
	ratio(sc, "skrfs (decrypting)", "SDK DownloadStream (ciphertext)")
	ratio(sc, "skrfs range reader (ciphertext)", "SDK DownloadStream (ciphertext)")
	ratio(sc, "skrfs (decrypting)", floorSubject)
	for _, name := range []string{subjects[0], floorSubject} {
		who := "the daemon's"
		if name == floorSubject {
			who = "the bench process's"
		}
		record(sc+", process CPU", name, "CPU s/GiB", procCPU[name], who+" user+system CPU per GiB"+pinned)
	}
	ratio(sc+", process CPU", subjects[0], floorSubject)
	unpin() // rclone's mounts below run unpinned, as before

	// rclone crypt over the same Azurite: Debian's rclone 1.60 reaches a
	// non-default Azurite port only through a container SAS URL.
	rcloneBench(ctx, az, plain, work, d)
}

func rcloneBench(ctx context.Context, az *azurite.Instance, plain, work string, sk *daemon) {
	if _, err := exec.LookPath("rclone"); err != nil {
		fmt.Fprintln(os.Stderr, "  rclone not installed: skipping rclone crypt")
		return
	}
	cc, err := az.ContainerClient("rclone")
	must(err)
	_, err = cc.Create(ctx, nil)
	must(err)
	env := rcloneEnv(az, "rclone")
	cp := exec.Command("rclone", "copy", plain, "cr:")
	cp.Env = env
	if out, err := cp.CombinedOutput(); err != nil {
		must(fmt.Errorf("rclone copy: %v\n%s", err, out))
	}
	mount := func(mode string) (string, func()) {
		return rcloneMount(env, filepath.Join(work, "rclone-"+mode), work, mode, "--read-only")
	}
	sc := "seq read 1 GiB from Azurite"
	for _, mode := range []string{"off", "full"} {
		record(sc, "rclone crypt, vfs cache "+mode, "MiB/s", samples(*runs, func() float64 {
			mnt, stop := mount(mode) // a fresh cache each run: cold
			defer stop()
			dropCaches()
			return readAll(filepath.Join(mnt, "big.bin"))
		}), "rclone "+strings.Fields(sh("rclone", "version"))[1])
	}
	ratio(sc, "skrfs (decrypting)", "rclone crypt, vfs cache off")
	// Random 4 KiB reads, cold, from Azurite.
	rsc := "random 4 KiB QD1 cold, Azurite"
	mnt, stop := mount("off")
	record(rsc, "rclone crypt, vfs cache off", "IOPS", samples(*runs, func() float64 { dropCaches(); return fio(filepath.Join(mnt, "big.bin"), 1, false) }), "buffered, page cache dropped")
	stop()
	amplification(sk, rsc, "buffered 4 KiB reads, 64 KiB chunks, kernel read-ahead included", func() {
		record(rsc, "skrfs", "IOPS", samples(*runs, func() float64 { dropCaches(); return fio(filepath.Join(sk.mnt, "cloud", "big.bin"), 1, false) }), "buffered, page cache dropped")
	})
	ratio(rsc, "skrfs", "rclone crypt, vfs cache off")
}

// rcloneEnv configures the remotes az (Azurite's container, by a SAS URL:
// Debian's rclone 1.60 reaches a non-default port only so) and cr (rclone
// crypt over it).
func rcloneEnv(az *azurite.Instance, container string) []string {
	qp, err := sas.BlobSignatureValues{Protocol: sas.ProtocolHTTPSandHTTP, ExpiryTime: time.Now().Add(24 * time.Hour),
		Permissions:   (&sas.ContainerPermissions{Read: true, Add: true, Create: true, Write: true, Delete: true, List: true}).String(),
		ContainerName: container}.SignWithSharedKey(az.SharedKey())
	must(err)
	obscured := strings.TrimSpace(sh("rclone", "obscure", "bench password"))
	return append(os.Environ(), "RCLONE_CONFIG_AZ_TYPE=azureblob", "RCLONE_CONFIG_AZ_SAS_URL="+az.ContainerURL(container)+"?"+qp.Encode(),
		"RCLONE_CONFIG_CR_TYPE=crypt", "RCLONE_CONFIG_CR_REMOTE=az:"+container, "RCLONE_CONFIG_CR_PASSWORD="+obscured)
}

// rcloneMount mounts cr: at mnt with a fresh vfs cache in mode; the stop
// function (idempotent) unmounts and removes the cache.
func rcloneMount(env []string, mnt, work, mode string, extra ...string) (string, func()) {
	mkdir(mnt)
	cache := mkdir(filepath.Join(work, "rclone-cache-"+mode+fmt.Sprint(time.Now().UnixNano())))
	cmd := exec.Command("rclone", append([]string{"mount", "cr:", mnt, "--vfs-cache-mode", mode, "--cache-dir", cache}, extra...)...)
	cmd.Env = env
	must(cmd.Start())
	deadline := time.Now().Add(30 * time.Second)
	for !isMountpoint(mnt) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			must(fmt.Errorf("rclone mount %s not ready", mode))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return mnt, sync.OnceFunc(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		syscall.Unmount(mnt, syscall.MNT_DETACH)
		os.RemoveAll(cache)
	})
}

func isMountpoint(dir string) bool {
	b, _ := os.ReadFile("/proc/self/mounts")
	return strings.Contains(string(b), " "+dir+" ")
}

func report() {
	var md bytes.Buffer
	fmt.Fprintf(&md, "| scenario | subject | median | min | max | unit | ratio (>1: skrfs better) | note |\n|---|---|---:|---:|---:|---|---:|---|\n")
	for _, r := range results {
		var rts []string
		for _, c := range r.Ratios {
			rts = append(rts, fmt.Sprintf("%.2f vs %s", c.Ratio, c.Baseline))
		}
		rt := strings.Join(rts, "; ")
		fmt.Fprintf(&md, "| %s | %s | %.1f | %.1f | %.1f | %s | %s | %s |\n", r.Scenario, r.Subject, r.Median, r.Min, r.Max, r.Unit, rt, r.Note)
	}
	os.Stdout.Write(md.Bytes())
	must(os.MkdirAll(*outDir, 0o755))
	stamp := time.Now().UTC().Format("20060102T150405Z")
	j, _ := json.MarshalIndent(map[string]any{"time": stamp, "cpus": runtime.NumCPU(), "size": *size, "runs": *runs, "results": results}, "", "  ")
	must(os.WriteFile(filepath.Join(*outDir, "bench-"+stamp+".json"), j, 0o644))
	must(os.WriteFile(filepath.Join(*outDir, "bench-"+stamp+".md"), md.Bytes(), 0o644))
}

// floorSubject is the CPU floor of a decrypting read from Azure: what any
// client must do (download and decrypt), without FUSE or skrfs.
const floorSubject = "floor: SDK download + AES-GCM open"

// floorBuf and floorPT are the floor's buffers, made once.
var floorBuf, floorPT []byte

var pinAzure = flag.Bool("azure-pin", true, "pin Azurite to the last CPU and the bench and its daemons to the others during the Azurite reads (taskset)")

// pinAzurite pins Azurite (all its threads) to the last CPU and this
// process (all threads; daemons started later inherit it) to the others,
// so that the emulator does not compete with the client for cores. It
// returns a note for the results ("" when not pinned).
func pinAzurite(az *azurite.Instance) string {
	n := runtime.NumCPU()
	if !*pinAzure || n < 2 {
		return ""
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return ""
	}
	sh("taskset", "-a", "-p", "-c", strconv.Itoa(n-1), strconv.Itoa(az.Pid()))
	sh("taskset", "-a", "-p", "-c", fmt.Sprintf("0-%d", n-2), strconv.Itoa(os.Getpid()))
	return fmt.Sprintf("; Azurite pinned to CPU %d, client to CPU 0-%d", n-1, n-2)
}

// unpin gives this process all CPUs again.
func unpin() {
	if _, err := exec.LookPath("taskset"); err == nil && runtime.NumCPU() >= 2 {
		exec.Command("taskset", "-a", "-p", "-c", fmt.Sprintf("0-%d", runtime.NumCPU()-1), strconv.Itoa(os.Getpid())).Run()
	}
}

// pidCPU is a process's user+system CPU seconds (/proc/PID/stat).
func pidCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	must(err)
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseFloat(f[11], 64) // utime: field 14 of stat, 12th after the name
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100 // USER_HZ
}

// selfCPU is this process's user+system CPU seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	must(syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
