package config

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/skrfs/skrfs/keyrelease"
)

// FuzzParse feeds arbitrary bytes to the configuration parser. Properties:
// it never panics; a rejection is an ErrInvalid error and no
// configuration; an accepted configuration keeps the invariants the
// daemon relies on (every key reference parses, file names are plain
// names and unique, datasets only name configured keys, modes parse, the
// cache TTL is at least 1s), and marshalling it and parsing it again gives
// the same configuration (compared by its marshalled form) (defaults are idempotent, nothing is lost).
func FuzzParse(f *testing.F) {
	f.Add([]byte(validYAML()))
	f.Add([]byte(valid))
	f.Add([]byte("keys:\n  - name: k\n    ref: https://v.vault.azure.net/keys/k/0123\nattestation:\n  maa: https://a\nmount:\n  allow_other: true\n  uid: 0\n"))
	f.Add([]byte("datasets:\n  - {name: d, azure: 'https://a.blob.core.windows.net/c?sv=x', keys: [k]}\n"))
	f.Add([]byte("cache: {ttl: 0s, max_stale: -1h}\n"))
	f.Add([]byte("keys:\n  - {name: k, ref: https://v.vault.azure.net/keys/k}\nattestation: {maa: https://a}\ndatasets:\n  - {name: d, local: /s, writable: true, write_key: k}\nwrite: {staging_bytes: 2097152, spill_dir: /tmp}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			if c != nil || !errors.Is(err, ErrInvalid) {
				t.Fatalf("rejection: got %v, %v; want nil and ErrInvalid", c, err)
			}
			return
		}
		checkInvariants(t, c)
		out, err := yaml.Marshal(c)
		if err != nil {
			t.Fatalf("accepted configuration does not marshal: %v", err)
		}
		c2, err := Parse(out)
		if err != nil {
			t.Fatalf("accepted configuration does not parse again: %v\n%s", err, out)
		}
		out2, err := yaml.Marshal(c2)
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("round trip changed the configuration (%v):\n%s\n%s", err, out, out2)
		}
	})
}

func checkInvariants(t *testing.T, c *Config) {
	t.Helper()
	keys := map[string]bool{}
	files := map[string]bool{}
	for _, k := range c.Keys {
		if _, err := keyrelease.ParseKeyRef(k.Ref); err != nil {
			t.Fatalf("accepted key %q with reference %q: %v", k.Name, k.Ref, err)
		}
		if keys[k.Name] || strings.ContainsAny(k.Name, "/\x00") || k.Name == "." || k.Name == ".." {
			t.Fatalf("accepted key name %q", k.Name)
		}
		keys[k.Name] = true
		if len(k.Views) == 0 {
			t.Fatalf("key %q has no view after defaults", k.Name)
		}
		for _, v := range k.Views {
			if files[v.File] || strings.ContainsAny(v.File, "/\x00") || v.File == "." || v.File == ".." {
				t.Fatalf("accepted view file %q", v.File)
			}
			files[v.File] = true
			if m, err := ParseMode(v.Mode); err != nil || m > 0o777 {
				t.Fatalf("accepted view mode %q", v.Mode)
			}
		}
	}
	for _, d := range c.Datasets {
		if d.Name == "keys" || strings.ContainsAny(d.Name, "/\x00") || d.Name == "." || d.Name == ".." {
			t.Fatalf("accepted dataset name %q", d.Name)
		}
		for _, k := range d.Keys {
			if !keys[k] {
				t.Fatalf("dataset %q names unknown key %q", d.Name, k)
			}
		}
		if d.Writable != (d.WriteKey != "") || (d.Writable && !keys[d.WriteKey]) {
			t.Fatalf("dataset %q: writable %v with write key %q", d.Name, d.Writable, d.WriteKey)
		}
	}
	if len(c.Keys) > 0 && !strings.HasPrefix(c.Attestation.MAA, "https://") {
		t.Fatalf("accepted MAA %q", c.Attestation.MAA)
	}
	if c.Write.StagingBytes < 1<<20 {
		t.Fatalf("accepted write.staging_bytes %d", c.Write.StagingBytes)
	}
	if time.Duration(c.Cache.TTL) < time.Second || c.Cache.MaxStale < 0 {
		t.Fatalf("accepted cache %+v", c.Cache)
	}
}
