package writes

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/blob/azblob"
	"github.com/skrfs/skrfs/integration/azurite"
	"github.com/skrfs/skrfs/integration/faultproxy"
)

// overwrite replaces a file and reports the outcome of each step: "ok" or
// the errno's name.
const overwrite = `
import os, sys, errno
def step(f):
    try:
        r = f()
        return "ok", r
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno)), None
res, fd = step(lambda: os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC))
print("open", res)
if fd is not None:
    print("write", step(lambda: os.write(fd, b"the new version\n" * 20000))[0])
    print("close", step(lambda: os.close(fd))[0])
`

// TestCommitStorageFaultsThroughMount: while every write request to Azure
// fails (503, or a reset connection, through all retries), an app that
// replaces a file gets an error from close(2), and the old object stays
// current and intact in storage and through the mount.
func TestCommitStorageFaultsThroughMount(t *testing.T) {
	requireTool(t, "python3")
	ctx := context.Background()
	container := azureContainer(t)
	proxy, err := faultproxy.Start(az.Endpoint, faultproxy.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	direct, err := azblob.Open(ctx, azblob.Config{ContainerURL: az.ContainerURL(container), AccountKey: az.AccountKey, Prefix: "ds"})
	if err != nil {
		t.Fatal(err)
	}
	ds := dataset{azure: proxy.URL() + "/" + azurite.AccountName + "/" + container + "/ds", keys: "[demo-oct]", writeKey: "demo-oct"}
	cfg := config(t, ds)
	d := mount(t, cfg)
	defer d.unmount()
	if err := os.WriteFile(filepath.Join(d.dir(), "obj"), pattern("old", 300<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	writes := []faultproxy.Kind{faultproxy.KindOther}
	for _, tc := range []struct {
		name string
		rule faultproxy.Rule
	}{
		{"503", faultproxy.Rule{Kinds: writes, Prob: 1, Fault: faultproxy.Status, Status: 503}},
		{"reset", faultproxy.Rule{Kinds: writes, Prob: 1, Fault: faultproxy.Reset}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, err := direct.Stat(ctx, "obj")
			if err != nil {
				t.Fatal(err)
			}
			cur, err := os.ReadFile(filepath.Join(d.dir(), "obj"))
			if err != nil {
				t.Fatal(err)
			}
			if err := proxy.SetConfig(faultproxy.Config{Seed: 1, Rules: []faultproxy.Rule{tc.rule}}); err != nil {
				t.Fatal(err)
			}
			got := strings.TrimSpace(python(t, overwrite, filepath.Join(d.dir(), "obj")))
			// The commit's error reaches close(2) as EIO, whatever the
			// transport failure was (a reset is ECONNRESET underneath).
			if got != "open ok\nwrite ok\nclose EIO" {
				t.Fatalf("the app saw:\n%s\nwant close to fail with EIO\n%s", got, d.out)
			}
			t.Logf("the app saw: %q", got)
			// While storage fails, the old version stays current and
			// intact, and nothing else appears.
			after, err := direct.Stat(ctx, "obj")
			if err != nil || after.ETag != before.ETag {
				t.Fatalf("after the failed commit: %+v, %v; want the old version %s", after, err, before.ETag)
			}
			var names []string
			direct.List(ctx, blob.ListOptions{}, func(i blob.Info) error { names = append(names, i.Name); return nil })
			if strings.Join(names, ",") != "obj" {
				t.Fatalf("objects after the failed commit: %v", names)
			}
			if proxy.Stats().Fired(tc.rule.Fault) == 0 {
				t.Fatal("no fault was injected")
			}
			if err := proxy.SetConfig(faultproxy.Config{}); err != nil {
				t.Fatal(err)
			}
			// Once storage recovers, a fresh mount reads a whole version:
			// the old one, or the new one if the daemon committed the
			// staged data later (docs/writes.md: at the release of the
			// last handle, anything still staged is committed).
			fresh := mount(t, cfg)
			b, err := os.ReadFile(filepath.Join(fresh.dir(), "obj"))
			fresh.unmount()
			newer := bytes.Repeat([]byte("the new version\n"), 20000)
			switch {
			case err != nil:
				t.Fatalf("obj after storage recovered: %v", err)
			case bytes.Equal(b, cur):
				t.Log("after recovery: the old version")
			case bytes.Equal(b, newer):
				t.Log("after recovery: the new version (committed after the failed close)")
			default:
				t.Fatalf("obj after storage recovered: %d bytes, neither the old version (%d) nor the new one (%d)", len(b), len(cur), len(newer))
			}
		})
	}
	// A slow store (every write request delayed) slows the commit down but
	// it succeeds: close returns, and storage holds the whole new version.
	t.Run("slow", func(t *testing.T) {
		before, err := direct.Stat(ctx, "obj")
		if err != nil {
			t.Fatal(err)
		}
		rule := faultproxy.Rule{Kinds: writes, Prob: 1, Fault: faultproxy.Delay, Delay: 300 * time.Millisecond}
		if err := proxy.SetConfig(faultproxy.Config{Seed: 1, Rules: []faultproxy.Rule{rule}}); err != nil {
			t.Fatal(err)
		}
		got := strings.TrimSpace(python(t, overwrite, filepath.Join(d.dir(), "obj")))
		fired := proxy.Stats().Fired(faultproxy.Delay)
		proxy.SetConfig(faultproxy.Config{})
		if got != "open ok\nwrite ok\nclose ok" || fired == 0 {
			t.Fatalf("the app saw:\n%s\n(%d delayed requests); want every step to succeed", got, fired)
		}
		after, err := direct.Stat(ctx, "obj")
		if err != nil || after.ETag == before.ETag {
			t.Fatalf("after a slow commit that returned: %+v, %v; want a new version", after, err)
		}
		b, err := os.ReadFile(filepath.Join(d.dir(), "obj"))
		if err != nil || !bytes.Equal(b, bytes.Repeat([]byte("the new version\n"), 20000)) {
			t.Fatalf("obj after a slow commit: %d bytes, %v", len(b), err)
		}
	})
}
