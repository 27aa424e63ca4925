package examples_test

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestACITemplateLocally runs the two containers of
// examples/aci/azuredeploy.json here, against the devstack: skrfs's
// command as written (mount --mkdir into a subdirectory of the shared
// volume, which starts empty), and the app's command as written, with the
// volume and the baked-in configuration mapped to local paths. The app
// must read every file through the mount and log names and sizes only: no
// plaintext in its output. Both run in one mount namespace here: whether ACI propagates
// a FUSE mount between containers through emptyDir is not verified (see
// examples/aci/README.md).
func TestACITemplateLocally(t *testing.T) {
	requireFUSE(t)
	skrfs := bin(t, "skrfs")
	work := t.TempDir()
	dev := filepath.Join(work, "devstack")
	ds := start(t, nil, skrfs, "devstack", "--dir", dev)
	ds.waitFor(t, "devstack ready", func() bool { _, err := os.Stat(filepath.Join(dev, "ready")); return err == nil })
	env := environ(envFile(t, filepath.Join(dev, "devstack.env")))

	tmpl := decodeARM(t, filepath.Join(examplesDir(t), "aci", "azuredeploy.json"))
	var skrfsCmd, appCmd []string
	var volPath string
	for _, c := range tmpl.Resources[0].Properties.Containers {
		if cmd := c.Properties.Command; len(cmd) > 0 && filepath.Base(cmd[0]) == "skrfs" {
			skrfsCmd = cmd
			volPath = c.Properties.VolumeMounts[0].MountPath
		} else {
			appCmd = cmd
		}
	}
	if len(skrfsCmd) == 0 || len(appCmd) == 0 {
		t.Fatalf("skrfs %q, app %q: want skrfs mount and an app", skrfsCmd, appCmd)
	}
	vol := filepath.Join(work, "vol")
	if err := os.Mkdir(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	local := func(s string) string {
		s = strings.ReplaceAll(s, "/etc/skrfs/skrfs.yaml", filepath.Join(dev, "skrfs.yaml"))
		return strings.ReplaceAll(s, volPath+"/", vol+"/")
	}
	var args []string
	for _, a := range skrfsCmd[1:] {
		args = append(args, local(a))
	}
	mnt := args[len(args)-1]
	if filepath.Dir(mnt) != vol {
		t.Fatalf("skrfs mounts at %s, want a subdirectory of the volume %s", mnt, vol)
	}
	mount := start(t, env, skrfs, args...)
	t.Cleanup(func() { mount.stop(t) })

	var appArgs []string
	for _, a := range appCmd[1:] {
		appArgs = append(appArgs, local(a))
	}
	app := start(t, env, appCmd[0], appArgs...)
	app.waitFor(t, "the app's summary", func() bool { return strings.Contains(app.out.String(), " files; ") })
	out := app.out.String()

	// Every original of the dataset was read in full through the mount.
	plain := filepath.Join(dev, "plain", "data")
	n := 0
	err := filepath.WalkDir(plain, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(plain, p)
		want := filepath.Join(mnt, "data", rel) + ": read " + strconv.Itoa(len(b)) + " bytes\n"
		if !strings.Contains(out, want) {
			t.Errorf("app output lacks %q", want)
		}
		// Names and sizes only: not even 16 bytes of the plaintext.
		for i := 0; i+16 <= len(b) && i < 1<<16; i += 16 {
			if bytes.Contains([]byte(out), b[i:i+16]) {
				t.Fatalf("the app's output holds plaintext of %s", rel)
			}
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 2 {
		t.Fatalf("the devstack's dataset has %d files", n)
	}
	// The released keys are read too; the one whose policy this TEE does not
	// satisfy fails, and says so.
	for _, want := range []string{filepath.Join(mnt, "keys", "demo-rsa") + ": read 2", filepath.Join(mnt, "keys", "denied") + ": read failed: Permission denied"} {
		if !strings.Contains(out, want) {
			t.Errorf("app output lacks %q", want)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("app:\n%s\nskrfs: %s", out, mount.out.String())
	}
}
