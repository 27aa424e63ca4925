package azblob_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/blob"
	"github.com/skrfs/skrfs/blob/azblob"
)

const sasMarker = "SASMARKER0123456789"

// A SAS is a bearer credential: no error of the store, nor a log line
// that quotes one, may contain it. The transport errors of net/http quote
// the whole request URL, so a refused connection used to put the SAS into
// the error and from there into the logs; a wrong signature (403 from
// Azurite) must not either.
func TestSASNeverInErrorsOrLogs(t *testing.T) {
	ctx := context.Background()
	sas := "sv=2022-11-02&ss=b&srt=co&sp=rl&se=2030-01-01T00%3A00%3A00Z&st=2024-01-01T00%3A00%3A00Z&spr=https%2Chttp&skoid=" +
		sasMarker + "&sktid=" + sasMarker + "&sig=" + sasMarker

	// A port where nothing listens: connection refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String() + "/devstoreaccount1/c"
	l.Close()
	name, _ := newContainer(t, plain, nil)

	var logs bytes.Buffer
	log := zerolog.New(&logs)
	for _, tc := range []struct {
		what, url string
		want      error // nil: any error
	}{
		{"connection refused", dead + "?" + sas, nil},
		{"Azurite 403", plain.ContainerURL(name) + "?" + sas, blob.ErrPermission},
	} {
		cfg := azblob.Config{ContainerURL: tc.url, Retry: policy.RetryOptions{MaxRetries: -1, TryTimeout: 5 * time.Second}}
		_, err := azblob.Open(ctx, cfg)
		errs := map[string]error{"Open": err}
		cfg.SkipCheck = true
		s, err := azblob.Open(ctx, cfg)
		if err != nil {
			t.Fatalf("%s: Open without check: %v", tc.what, err)
		}
		ref := blob.Ref{Name: "o", ETag: `"0x1"`}
		_, errs["Stat"] = s.Stat(ctx, "o")
		_, _, errs["ReadHead"] = s.ReadHead(ctx, "o", make([]byte, 64))
		_, errs["ReadAt"] = s.ReadAt(ctx, ref, make([]byte, 8), 0)
		_, errs["OpenRange"] = s.OpenRange(ctx, ref, 0, 8)
		errs["List"] = s.List(ctx, blob.ListOptions{WithMetadata: true}, func(blob.Info) error { return nil })
		errs["Put"] = s.Put(ctx, "o", []byte("x"), nil)
		errs["Upload"] = s.Upload(ctx, "o", strings.NewReader("x"), nil)
		errs["Delete"] = s.Delete(ctx, "o")
		for op, err := range errs {
			if err == nil {
				t.Errorf("%s: %s succeeded", tc.what, op)
				continue
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("%s: %s = %v, want %v", tc.what, op, err, tc.want)
			}
			if strings.Contains(err.Error(), sasMarker) {
				t.Errorf("%s: %s error holds the SAS: %v", tc.what, op, err)
			}
			log.Warn().Err(err).Str("op", op).Msg("storage failed")
		}
	}
	if strings.Contains(logs.String(), sasMarker) {
		t.Errorf("the log holds the SAS:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "storage failed") {
		t.Fatal("nothing was logged")
	}
}
