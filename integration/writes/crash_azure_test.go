package writes

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/blob/azblob"
)

// TestKillDuringCommitAzure: the daemon is killed while it commits a
// 64 MiB replacement to Azure (blocks staged, Put Block List not yet
// sent, or sent): after a restart the blob is the old version or the
// whole new one, and no other blob appeared.
func TestKillDuringCommitAzure(t *testing.T) {
	py := requireTool(t, "python3")
	ctx := context.Background()
	container := azureContainer(t)
	ds := dataset{azure: az.ContainerURL(container) + "/ds", keys: "[demo-oct]", writeKey: "demo-oct"}
	direct, err := azblob.Open(ctx, azblob.Config{ContainerURL: az.ContainerURL(container), AccountKey: az.AccountKey, Prefix: "ds"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := config(t, ds)
	d := mount(t, cfg)
	old := pattern("old", 1<<20)
	if err := os.WriteFile(filepath.Join(d.dir(), "obj.bin"), old, 0o644); err != nil {
		t.Fatal(err)
	}
	before, err := direct.Stat(ctx, "obj.bin")
	if err != nil {
		t.Fatal(err)
	}
	app := exec.Command(py, "-c", bigWriter, filepath.Join(d.dir(), "obj.bin"), "64")
	stdout, _ := app.StdoutPipe()
	var appErr bytes.Buffer
	app.Stderr = &appErr
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	lines := lineReader(stdout)
	deadline := time.After(60 * time.Second)
	for l := ""; l != "closing"; {
		select {
		case l = <-lines:
		case <-deadline:
			app.Process.Kill()
			app.Wait()
			t.Fatalf("the writer did not reach its close in 60s: %s", appErr.String())
		}
	}
	time.Sleep(300 * time.Millisecond) // into the commit: sealing and staging blocks
	d.kill()
	app.Process.Kill()
	app.Wait()

	after, err := direct.Stat(ctx, "obj.bin")
	if err != nil {
		t.Fatal(err)
	}
	if bl, err := direct.ContainerClient().NewBlockBlobClient("ds/obj.bin").GetBlockList(ctx, "uncommitted", nil); err == nil {
		t.Logf("blocks staged but not committed at the kill: %d (Azure drops them after 7 days)", len(bl.UncommittedBlocks))
	}
	var names []string
	direct.List(ctx, blob.ListOptions{}, func(i blob.Info) error { names = append(names, i.Name); return nil })
	if strings.Join(names, ",") != "obj.bin" {
		t.Fatalf("blobs after the kill: %v", names)
	}
	d = mount(t, cfg)
	defer d.unmount()
	got, err := os.ReadFile(filepath.Join(d.dir(), "obj.bin"))
	switch {
	case err != nil:
		t.Fatalf("obj.bin after the restart: %v", err)
	case after.ETag == before.ETag && bytes.Equal(got, old):
		t.Log("the old version survived the kill")
	case after.ETag != before.ETag && len(got) == 64<<20 && bytes.Equal(got[:1<<20], newChunk()) && bytes.Equal(got[63<<20:], newChunk()):
		t.Log("the commit completed before the kill: the new version, whole")
	default:
		t.Fatalf("obj.bin after the restart: %d bytes (ETag %s, old %s): neither the old version nor the whole new one", len(got), after.ETag, before.ETag)
	}
}
