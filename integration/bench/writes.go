package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/skrfs/skrfs/integration/azurite"
	"github.com/skrfs/skrfs/internal/devstack"
	"github.com/skrfs/skrfs/keyrelease"
)

// Writes (issue 22, docs/writes.md): sequential writes of 1 GiB and 1,000
// creates of small files through writable datasets, sealed for the bench
// oct key and for the RSA-3072 key (public key only: no release), against
// gocryptfs on tmpfs and `skrfs upload` of the same file; the same to
// Azurite against rclone crypt; peak RSS while writing 4 GiB.

// writeBuf is the data every sequential write writes, 1 MiB at a time.
var writeBuf = func() []byte { b := make([]byte, 1<<20); rand.Read(b); return b }()

// writeFile creates p and writes n bytes 1 MiB at a time, then closes it
// (the commit): MiB/s including the close.
func writeFile(p string, n int64) float64 {
	start := time.Now()
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	must(err)
	for off := int64(0); off < n; off += int64(len(writeBuf)) {
		_, err := f.Write(writeBuf[:min(int64(len(writeBuf)), n-off)])
		must(err)
	}
	must(f.Close())
	return float64(n) / (1 << 20) / time.Since(start).Seconds()
}

// createSmall makes dir and 1,000 files of 4 KiB in it: milliseconds.
func createSmall(dir string) float64 {
	return timeMS(func() {
		must(os.Mkdir(dir, 0o755))
		for i := range 1000 {
			must(os.WriteFile(filepath.Join(dir, fmt.Sprintf("%04d", i)), writeBuf[i:i+4096], 0o644))
		}
	})
}

// writableConfig writes a configuration with writable datasets (name:
// [store directory or azure URL, key name]) beside the bench keys.
func writableConfig(s *devstack.Stack, ref keyrelease.KeyRef, keys map[string]string, sets map[string][2]string, spill, path string) string {
	writeConfigKeys(s, ref, nil, keys, nil, path)
	b, err := os.ReadFile(path)
	must(err)
	cfg := string(b)
	for name, src := range sets {
		loc := "local: " + src[0]
		if strings.HasPrefix(src[0], "http") {
			loc = "azure: " + src[0]
		}
		cfg += "  - name: " + name + "\n    " + loc + "\n    keys: [" + src[1] + "]\n    writable: true\n    write_key: " + src[1] + "\n"
	}
	cfg += "write:\n  spill_dir: " + spill + "\n"
	must(os.WriteFile(path, []byte(cfg), 0o600))
	return path
}

func benchWrites(ctx context.Context, bin string, s *devstack.Stack, ref keyrelease.KeyRef, kinds []smallKind, oct []byte, gcfMnt, plain, tmpfs, work string) {
	keys := map[string]string{}
	rsaKey := ""
	for _, k := range kinds {
		keys[k.key] = k.ref
		if k.key == "bench-rsa" {
			rsaKey = k.key
		}
	}
	spill := mkdir(filepath.Join(tmpfs, "spill"))
	sets := map[string][2]string{
		"w-oct": {mkdir(filepath.Join(tmpfs, "wstore-oct")), "bench-oct"},
		"w-rsa": {mkdir(filepath.Join(tmpfs, "wstore-rsa")), rsaKey},
	}
	cfg := writableConfig(s, ref, keys, sets, spill, filepath.Join(work, "skrfs-writes.yaml"))
	d := startDaemon(bin, []string{"mount", "--config", cfg}, filepath.Join(work, "skrfs-w"), os.Environ())
	defer d.stop()
	relBefore := s.Vault.Stats("bench-rsa").Allowed
	keyFile := filepath.Join(work, "bench-oct.key")
	must(os.WriteFile(keyFile, oct, 0o600))
	src := filepath.Join(plain, "big.bin")
	if _, err := os.Stat(src); err != nil {
		writeRandom(src, *size, 1)
	}
	gcfW := mkdir(filepath.Join(gcfMnt, "w"))
	tmpW := mkdir(filepath.Join(tmpfs, "tmpfs-w"))
	dirOf := map[string]string{
		"skrfs oct":                        filepath.Join(d.mnt, "w-oct"),
		"skrfs RSA-3072 (public key only)": filepath.Join(d.mnt, "w-rsa"),
		"gocryptfs":                        gcfW,
		"tmpfs (no FUSE)":                  tmpW,
	}
	names := []string{"skrfs oct", "skrfs RSA-3072 (public key only)", "gocryptfs", "tmpfs (no FUSE)"}
	sizeNote := fmt.Sprintf("%d MiB", *size>>20)
	if want("writes") {
		sc := "seq write 1 GiB"
		up := "skrfs upload (oct, same file from tmpfs)"
		run := 0
		got := interleaved(*runs, append(names, up), func(n string) float64 {
			run++
			if n == up {
				dst := mkdir(filepath.Join(tmpfs, fmt.Sprintf("upload-%d", run)))
				defer os.RemoveAll(dst)
				start := time.Now()
				cmd := exec.Command(bin, "upload", "--key", keyFile, "--key-ref", ref.String(), "--to", dst, src)
				if out, err := cmd.CombinedOutput(); err != nil {
					must(fmt.Errorf("skrfs upload: %v\n%s", err, out))
				}
				return float64(*size) / (1 << 20) / time.Since(start).Seconds()
			}
			p := filepath.Join(dirOf[n], "big.bin")
			defer os.Remove(p)
			return writeFile(p, *size)
		})
		for _, n := range append(names, up) {
			record(sc, n, "MiB/s", got[n], sizeNote+", 1 MiB writes, close (the commit) included; subjects interleaved; ciphertext and spill on tmpfs")
		}
		ratio(sc, "skrfs oct", "gocryptfs")
		ratio(sc, "skrfs RSA-3072 (public key only)", "gocryptfs")
		ratio(sc, "skrfs oct", up)

		sc = "create 1,000 files of 4 KiB"
		run = 0
		got = interleaved(*runs, names, func(n string) float64 {
			run++
			dir := filepath.Join(dirOf[n], fmt.Sprintf("small-%d", run))
			ms := createSmall(dir)
			must(os.RemoveAll(dir))
			return ms
		})
		for _, n := range names {
			record(sc, n, "ms", got[n], "mkdir, then open/write/close each (one commit per file); subjects interleaved")
		}
		ratio(sc, "skrfs oct", "gocryptfs")
		ratio(sc, "skrfs RSA-3072 (public key only)", "gocryptfs")
		fmt.Fprintf(os.Stderr, "key releases of bench-rsa during the write runs: %d (writes seal with the public key)\n", s.Vault.Stats("bench-rsa").Allowed-relBefore)
	}
	d.stop()

	if want("writes") {
		// Peak RSS of a fresh daemon while one file of 4 GiB is written:
		// staging (64 MiB by default) spills sealed chunks; the store and
		// the spill are on disk here (4 GiB each would crowd the tmpfs).
		diskStore := mkdir(filepath.Join(work, "wstore-disk"))
		diskSpill := mkdir(filepath.Join(work, "spill-disk"))
		cfg := writableConfig(s, ref, keys, map[string][2]string{"w-disk": {diskStore, rsaKey}}, diskSpill, filepath.Join(work, "skrfs-writes-disk.yaml"))
		d := startDaemon(bin, []string{"mount", "--config", cfg}, filepath.Join(work, "skrfs-wrss"), os.Environ())
		mibps := writeFile(filepath.Join(d.mnt, "w-disk", "4g.bin"), 4<<30)
		record("peak RSS writing 4 GiB", "skrfs daemon", "MiB", []float64{d.peakRSS()}, fmt.Sprintf("VmHWM of a fresh daemon; RSA-3072 write key; store and spill on disk; %.0f MiB/s", mibps))
		d.stop()
		os.RemoveAll(diskStore)
		os.RemoveAll(diskSpill)
	}
	if (want("writes") && *doAzure) || want("writes-azure") {
		benchWritesAzure(ctx, bin, s, ref, keys, rsaKey, keyFile, src, tmpfs, work)
	}
}

// benchWritesAzure: the sequential write of 1 GiB into Azurite through a
// writable dataset, against rclone crypt mounts and `skrfs upload`. Each
// measurement gets a fresh Azurite: its in-memory store frees deleted
// blobs only later, and refuses writes at its size limit meanwhile.
func benchWritesAzure(ctx context.Context, bin string, s *devstack.Stack, ref keyrelease.KeyRef, keys map[string]string, rsaKey, keyFile, src, tmpfs, work string) {
	subjects := []string{"skrfs oct", "skrfs RSA-3072 (public key only)", "skrfs upload (oct)"}
	if _, err := exec.LookPath("rclone"); err == nil {
		subjects = append(subjects, "rclone crypt, vfs cache off", "rclone crypt, vfs cache writes")
	} else {
		fmt.Fprintln(os.Stderr, "  rclone not installed: skipping rclone crypt writes")
	}
	spill := mkdir(filepath.Join(tmpfs, "spill-az"))
	sc := "seq write 1 GiB to Azurite"
	stalled := map[string]int{}
	run := 0
	got := interleaved(*runs, subjects, func(n string) float64 {
		run++
		az, stopAzurite, err := azurite.StartMain(azurite.Options{})
		must(err)
		stopAz := sync.OnceFunc(stopAzurite)
		defer stopAz()
		for _, c := range []string{"wbench", "rclone", "upload"} {
			cc, err := az.ContainerClient(c)
			must(err)
			_, err = cc.Create(ctx, nil)
			must(err)
		}
		env := append(os.Environ(), "AZURE_STORAGE_CONNECTION_STRING="+az.ConnectionString())
		name := fmt.Sprintf("big-%d.bin", run)
		switch {
		case n == "skrfs upload (oct)":
			start := time.Now()
			cmd := exec.Command(bin, "upload", "--key", keyFile, "--key-ref", ref.String(), "--to", az.ContainerURL("upload"), src)
			cmd.Env = env
			if out, err := cmd.CombinedOutput(); err != nil {
				must(fmt.Errorf("skrfs upload: %v\n%s", err, out))
			}
			return float64(*size) / (1 << 20) / time.Since(start).Seconds()
		case strings.HasPrefix(n, "rclone"):
			mode := strings.TrimPrefix(n, "rclone crypt, vfs cache ")
			mnt, stop := rcloneMount(rcloneEnv(az, "rclone"), filepath.Join(work, "rclone-w-"+mode), work, mode)
			defer stop()
			// With a vfs cache, close returns before the upload ends: the
			// clock stops when the whole object is in Azurite. A write
			// that has not finished after 10 minutes counts as 0 MiB/s.
			start := time.Now()
			done := make(chan struct{})
			go func() {
				defer close(done)
				writeFile(filepath.Join(mnt, name), *size)
				waitBlob(ctx, az, "rclone", *size)
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Minute):
				stalled[n]++
				fmt.Fprintf(os.Stderr, "  %s: the write of %d MiB did not finish in 10 minutes\n", n, *size>>20)
				stopAz() // fails the stalled requests
				stop()
				<-done
				return 0
			}
			return float64(*size) / (1 << 20) / time.Since(start).Seconds()
		default:
			ds, key := "az-oct", "bench-oct"
			if n != "skrfs oct" {
				ds, key = "az-rsa", rsaKey
			}
			cfg := writableConfig(s, ref, keys, map[string][2]string{ds: {az.ContainerURL("wbench") + "/" + ds, key}}, spill, filepath.Join(work, "skrfs-writes-az.yaml"))
			d := startDaemon(bin, []string{"mount", "--config", cfg}, filepath.Join(work, "skrfs-waz"), env)
			defer d.stop()
			return writeFile(filepath.Join(d.mnt, ds, name), *size)
		}
	})
	for _, n := range subjects {
		note := "1 MiB writes, close (the commit) included; subjects interleaved; a fresh Azurite and daemon (one key release or public-key fetch) per run"
		if strings.HasPrefix(n, "rclone") {
			note = "1 MiB writes; clock stops when the whole object is in Azurite; rclone " + strings.Fields(sh("rclone", "version"))[1]
			if stalled[n] > 0 {
				note += fmt.Sprintf("; did not finish within 10 min in %d of %d runs (counted as 0)", stalled[n], *runs)
			}
		}
		if strings.HasPrefix(n, "skrfs upload") {
			note = "the same file from tmpfs"
		}
		record(sc, n, "MiB/s", got[n], note)
	}
	for _, n := range subjects[3:] {
		ratio(sc, "skrfs oct", n)
		ratio(sc, "skrfs RSA-3072 (public key only)", n)
	}
	ratio(sc, "skrfs oct", "skrfs upload (oct)")
}

// waitBlob waits until the container holds a blob of at least size bytes
// (an upload that a mount finishes after close).
func waitBlob(ctx context.Context, az *azurite.Instance, container string, size int64) {
	cc, err := az.ContainerClient(container)
	must(err)
	for {
		pager := cc.NewListBlobsFlatPager(nil)
		for pager.More() {
			page, err := pager.NextPage(ctx)
			must(err)
			for _, b := range page.Segment.BlobItems {
				if b.Properties != nil && b.Properties.ContentLength != nil && *b.Properties.ContentLength >= size {
					return
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}
