package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skrfs/skrfs/blob/azblob"
	"github.com/skrfs/skrfs/crypto"
	"github.com/skrfs/skrfs/integration/azurite"
	"github.com/skrfs/skrfs/internal/devstack"
	"github.com/skrfs/skrfs/internal/upload"
	"github.com/skrfs/skrfs/keyrelease"
)

var (
	scaleLocal  = flag.Int("scale-objects", 1_000_000, "objects of the scale run on a local directory (group scale; 0 = none)")
	scaleSmall  = flag.Int("scale-compare", 100_000, "objects of the scale run side by side with rclone crypt (group scale; 0 = none)")
	scaleAzure  = flag.Int("scale-azure", 100_000, "objects of the scale run on Azurite (group scale; 0 = none)")
	scaleRclone = flag.Bool("scale-rclone", true, "compare the scale run with rclone crypt over a local directory")
)

// scaleName is object i of a tree of n: 1,000 objects per leaf
// directory, 10 leaves per top-level directory (a000/b0/f0000 ...).
func scaleName(i int) string {
	leaf := i / 1000
	return fmt.Sprintf("a%03d/b%d/f%04d", leaf/10, leaf%10, i%1000)
}

func scalePlain(i int) []byte { return []byte(fmt.Sprintf("object %07d\n", i)) }

// sealScale seals n tiny objects (one batch, format version 2) and hands
// each with its upload metadata to put, in parallel.
func sealScale(n int, oct []byte, ref string, put func(name string, obj []byte, md map[string]string) error) {
	b, err := crypto.NewBatch(oct, ref, nil)
	must(err)
	defer b.Destroy()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	for range 4 * runtime.NumCPU() {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || failed.Load() != nil {
					return
				}
				name := scaleName(i)
				obj, err := crypto.SealV2(scalePlain(i), b, crypto.SealOptions{Name: name})
				if err == nil {
					var h *crypto.Header
					if h, err = crypto.ParseHeader(obj); err == nil {
						err = put(name, obj, map[string]string{
							upload.MetaHeaderLen: strconv.Itoa(h.Len()), upload.MetaChunkSize: strconv.Itoa(h.ChunkSize),
							upload.MetaVersion: strconv.Itoa(h.Version), upload.MetaKeyRef: ref})
					}
				}
				if err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		must(err)
	}
}

// writeScaleLocal writes n sealed objects under dir as localdir lays them
// out (the metadata in the same extended attribute), directly: a million
// temporary-file-and-rename uploads would take minutes.
func writeScaleLocal(dir string, n int, oct []byte, ref string) {
	for leaf := 0; leaf*1000 < n; leaf++ {
		must(os.MkdirAll(filepath.Join(dir, filepath.Dir(scaleName(leaf*1000))), 0o755))
	}
	sealScale(n, oct, ref, func(name string, obj []byte, md map[string]string) error {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, obj, 0o644); err != nil {
			return err
		}
		return setMetadataXattr(p, md)
	})
}

// writeScalePlain writes the same plaintexts as files (rclone's source).
func writeScalePlain(dir string, n int) {
	for leaf := 0; leaf*1000 < n; leaf++ {
		must(os.MkdirAll(filepath.Join(dir, filepath.Dir(scaleName(leaf*1000))), 0o755))
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 4 * runtime.NumCPU() {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				must(os.WriteFile(filepath.Join(dir, scaleName(i)), scalePlain(i), 0o644))
			}
		})
	}
	wg.Wait()
}

// procStatus returns a /proc/PID/status field in MiB (VmRSS, VmHWM).
func procStatus(pid int, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	must(err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return float64(kb) / 1024
		}
	}
	return 0
}

// findCount runs find(1) over dir and returns the entries it printed.
func findCount(dir string) int {
	cmd := exec.Command("find", dir)
	out, err := cmd.StdoutPipe()
	must(err)
	must(cmd.Start())
	n := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		n++
	}
	must(cmd.Wait())
	return n
}

// scaleSubject is one mount under measurement: start mounts it (and
// returns the directory holding the tree and the serving process), stop
// unmounts it.
type scaleSubject struct {
	label string
	n     int
	start func() (dir string, pid int, stop func())
}

// measureScale records, for one subject: mount to the first listing of
// its root, find over the tree, the serving process's RSS (peak, after
// find, after drop_caches) and a cold stat deep in the tree.
func measureScale(sc string, s scaleSubject) {
	t0 := time.Now()
	dir, pid, stop := s.start()
	_, err := os.ReadDir(dir)
	must(err)
	record(sc+": mount to first ls", s.label, "ms", []float64{float64(time.Since(t0).Microseconds()) / 1000}, "")
	base := procStatus(pid, "VmRSS")
	var entries int
	ms := timeMS(func() { entries = findCount(dir) })
	record(sc+": find over the tree", s.label, "ms", []float64{ms}, fmt.Sprintf("%d entries (%.0f per second)", entries, float64(entries)/(ms/1000)))
	after := procStatus(pid, "VmRSS")
	record(sc+": RSS after find", s.label, "MiB", []float64{after}, fmt.Sprintf("%.0f bytes per object above the %.0f MiB before find", (after-base)*(1<<20)/float64(s.n), base))
	record(sc+": peak RSS", s.label, "MiB", []float64{procStatus(pid, "VmHWM")}, "VmHWM")
	dropCaches() // the kernel forgets the inodes: FORGET for every one
	// Until the RSS stops falling (3 s without a drop of 1 MiB), at most 60 s.
	t1 := time.Now()
	dropped, low := procStatus(pid, "VmRSS"), time.Now()
	for time.Since(t1) < 60*time.Second && time.Since(low) < 3*time.Second {
		time.Sleep(500 * time.Millisecond)
		if r := procStatus(pid, "VmRSS"); r < dropped-1 {
			dropped, low = r, time.Now()
		}
	}
	record(sc+": RSS after drop_caches", s.label, "MiB", []float64{dropped}, fmt.Sprintf("%.0f bytes per inactive object above the %.0f MiB before find; lowest within %.0f s of dropping", (dropped-base)*(1<<20)/float64(s.n), base, time.Since(t1).Seconds()))
	stop()
	// A cold stat deep in the tree, on a fresh mount.
	dir, _, stop = s.start()
	deep := filepath.Join(dir, scaleName(s.n-1))
	record(sc+": cold stat deep in the tree", s.label, "ms", []float64{timeMS(func() { _, err := os.Stat(deep); must(err) })}, scaleName(s.n-1)+", fresh mount")
	stop()
}

// benchScale is the scale group: a million objects in one local dataset,
// the comparison with rclone crypt at a smaller count, and Azurite.
func benchScale(ctx context.Context, bin string, stack *devstack.Stack, ref keyrelease.KeyRef, oct []byte, work, tmpfs string) {
	skrfsSubject := func(label, cfg, dataset string, n int, env []string) scaleSubject {
		return scaleSubject{label: label, n: n, start: func() (string, int, func()) {
			d := startDaemon(bin, []string{"mount", "--config", cfg}, filepath.Join(work, "skrfs-scale"), env)
			return filepath.Join(d.mnt, dataset), d.cmd.Process.Pid, d.stop
		}}
	}
	// A million objects on a local directory (tmpfs).
	if *scaleLocal > 0 {
		big := filepath.Join(tmpfs, "scale-store")
		gen := timeMS(func() { writeScaleLocal(big, *scaleLocal, oct, ref.String()) })
		fmt.Fprintf(os.Stderr, "sealed %d objects in %.1f s\n", *scaleLocal, gen/1000)
		cfg := writeConfig(stack, ref, map[string]string{"scale": "local: " + big}, filepath.Join(work, "skrfs-scale.yaml"))
		measureScale(fmt.Sprintf("scale, %d objects, local", *scaleLocal), skrfsSubject("skrfs", cfg, "scale", *scaleLocal, os.Environ()))
		os.RemoveAll(big)
	}

	// The comparison: the same tree at a smaller count, skrfs and rclone
	// crypt (local backend) over the same tmpfs.
	if n := *scaleSmall; n > 0 {
		scaleCompare(work, tmpfs, oct, ref, n, func(cfg string) scaleSubject {
			return skrfsSubject("skrfs", cfg, "scale", n, os.Environ())
		}, stack)
	}

	if *scaleAzure > 0 {
		az, stopAz, err := azurite.StartMain(azurite.Options{})
		must(err)
		defer stopAz()
		cc, err := az.ContainerClient("scale")
		must(err)
		_, err = cc.Create(ctx, nil)
		must(err)
		url := az.ContainerURL("scale")
		st, err := azblob.Open(ctx, azblob.Config{ContainerURL: url, AccountKey: az.AccountKey, Transport: az.HTTPClient})
		must(err)
		ms := timeMS(func() {
			sealScale(*scaleAzure, oct, ref.String(), func(name string, obj []byte, md map[string]string) error {
				return st.Put(ctx, name, obj, md)
			})
		})
		fmt.Fprintf(os.Stderr, "put %d objects into Azurite in %.1f s\n", *scaleAzure, ms/1000)
		env := append(os.Environ(), "AZURE_STORAGE_CONNECTION_STRING="+az.ConnectionString())
		cfg := writeConfig(stack, ref, map[string]string{"scale": "azure: " + url}, filepath.Join(work, "skrfs-scale-az.yaml"))
		measureScale(fmt.Sprintf("scale, %d objects, Azurite", *scaleAzure), skrfsSubject("skrfs", cfg, "scale", *scaleAzure, env))
	}
}

// setMetadataXattr stores upload metadata as blob/localdir keeps it: JSON
// of the lower-cased keys in one extended attribute.
func setMetadataXattr(p string, md map[string]string) error {
	lower := make(map[string]string, len(md))
	for k, v := range md {
		lower[strings.ToLower(k)] = v
	}
	b, err := json.Marshal(lower)
	if err != nil {
		return err
	}
	return unix.Setxattr(p, "user.skrfs.metadata", b, 0)
}

// scaleCompare measures skrfs and rclone crypt (local backend) on the same
// tree of n objects over the same tmpfs.
func scaleCompare(work, tmpfs string, oct []byte, ref keyrelease.KeyRef, n int, skrfs func(cfg string) scaleSubject, stack *devstack.Stack) {
	sc := fmt.Sprintf("scale, %d objects, local", n)
	small := filepath.Join(tmpfs, "scale-store-small")
	writeScaleLocal(small, n, oct, ref.String())
	cfgSmall := writeConfig(stack, ref, map[string]string{"scale": "local: " + small}, filepath.Join(work, "skrfs-scale-small.yaml"))
	measureScale(sc, skrfs(cfgSmall))
	if _, err := exec.LookPath("rclone"); err == nil && *scaleRclone {
		plain := filepath.Join(tmpfs, "scale-plain")
		writeScalePlain(plain, n)
		store := mkdir(filepath.Join(tmpfs, "scale-rclone"))
		env := append(os.Environ(), "RCLONE_CONFIG_CR_TYPE=crypt", "RCLONE_CONFIG_CR_REMOTE="+store,
			"RCLONE_CONFIG_CR_PASSWORD="+strings.TrimSpace(sh("rclone", "obscure", "bench password")))
		cp := exec.Command("rclone", "copy", plain, "cr:", "--transfers", "16", "--checkers", "16")
		cp.Env = env
		ms := timeMS(func() {
			if out, err := cp.CombinedOutput(); err != nil {
				must(fmt.Errorf("rclone copy: %v\n%s", err, out))
			}
		})
		fmt.Fprintf(os.Stderr, "rclone copied %d files in %.1f s\n", n, ms/1000)
		os.RemoveAll(plain)
		measureScale(sc, scaleSubject{label: "rclone crypt", n: n, start: func() (string, int, func()) {
			mnt := mkdir(filepath.Join(work, "rclone-scale"))
			cmd := exec.Command("rclone", "mount", "cr:", mnt, "--vfs-cache-mode", "off", "--read-only")
			cmd.Env = env
			must(cmd.Start())
			deadline := time.Now().Add(60 * time.Second)
			for !isMountpoint(mnt) {
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					must(fmt.Errorf("rclone mount not ready"))
				}
				time.Sleep(10 * time.Millisecond)
			}
			return mnt, cmd.Process.Pid, func() {
				cmd.Process.Signal(syscall.SIGTERM)
				cmd.Wait()
				syscall.Unmount(mnt, syscall.MNT_DETACH)
			}
		}})
		for _, m := range []string{"mount to first ls", "find over the tree", "cold stat deep in the tree"} {
			ratio(sc+": "+m, "skrfs", "rclone crypt")
		}
		os.RemoveAll(store)
	}
	os.RemoveAll(small)

}
