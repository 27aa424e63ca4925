package blob_test

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"syscall"
	"testing"

	"github.com/skrfs/skrfs/blob"
)

const marker = "S3CRETMARKER"

func TestRedact(t *testing.T) {
	sasQuery := "sv=2022-11-02&ss=b&srt=co&sp=rl&se=2030-01-01T00%3A00%3A00Z&st=2024&spr=https&sig=" + marker + "%2Bx%3D"
	for _, in := range []string{
		`Get "https://acct.blob.core.windows.net/c/o?` + sasQuery + `": dial tcp: connection refused`,
		`{"error":"azblob: read \"o\": Get \"http://127.0.0.1:1/acct/c/o?` + sasQuery + `\": EOF"}`,
		`sig=` + marker,
		`the SAS was se=2030&SIG=` + marker + ` and more`,
		`copy source https%3A%2F%2Fa.blob.core.windows.net%2Fc%2Fo%3Fsig%3D` + marker,
		`level=warn err="sp=r&sig=` + marker + `"`,
		"skoid=" + marker + "&sktid=" + marker + "&skt=" + marker + "&ske=" + marker + "&sks=b&skv=" + marker,
	} {
		got := blob.Redact(in)
		if strings.Contains(got, marker) {
			t.Errorf("Redact(%q) = %q: the marker survived", in, got)
		}
		if !strings.Contains(got, blob.Redacted) {
			t.Errorf("Redact(%q) = %q: nothing redacted", in, got)
		}
	}
	// JSON stays JSON: the escaped quote that ends the URL is kept.
	if got := blob.Redact(`{"e":"Get \"https://h/c?sig=x\": EOF"}`); got != `{"e":"Get \"https://h/c?REDACTED\": EOF"}` {
		t.Errorf("JSON line: %q", got)
	}
	for _, keep := range []string{"dataset=data object=a/b.bin", "", "https://h/c/o", "first=1 last=2 ast=3"} {
		if got := blob.Redact(keep); got != keep {
			t.Errorf("Redact(%q) = %q, want it unchanged", keep, got)
		}
	}
}

func TestRedactError(t *testing.T) {
	ue := &url.Error{Op: "Get", URL: "https://a.blob.core.windows.net/c/o?sv=1&sig=" + marker, Err: syscall.ECONNREFUSED}
	err := blob.RedactError(fmt.Errorf("azblob: read %q: %w", "o", ue))
	if strings.Contains(err.Error(), marker) {
		t.Fatalf("error %q holds the signature", err)
	}
	var got *url.Error
	if !errors.As(err, &got) || strings.Contains(got.URL, marker) || strings.Contains(got.Error(), marker) {
		t.Fatalf("the wrapped *url.Error still holds the signature: %v", got)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("the chain was lost: %v", err)
	}
	if blob.RedactError(nil) != nil {
		t.Fatal("RedactError(nil) != nil")
	}
}
