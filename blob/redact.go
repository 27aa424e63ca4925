package blob

import (
	"errors"
	"io"
	"net/url"
	"regexp"
	"strings"
)

// Shared access signatures are bearer credentials carried in URL queries.
// Transport errors of net/http (*url.Error) quote the whole request URL,
// so an error that wraps one would put a SAS into logs. Redact removes
// them from any text; RedactError from any error; RedactWriter from every
// line a logger writes.

var (
	// urlQuery matches the query of a URL in free text (JSON-escaped text
	// included: a backslash or quote ends it).
	urlQuery = regexp.MustCompile(`(?i)([a-z][a-z0-9+.-]*://[^\s?"'<>\\]*)\?[^\s"'<>\\]*`)
	// sasParam matches a SAS query parameter outside a URL, plain or
	// percent-encoded (a URL nested in another's query): the signature
	// and every parameter of account, service and user delegation SASs.
	sasParam = regexp.MustCompile(`(?i)(^|%3f|%26|[^a-z0-9_])(sig|sv|ss|srt|se|st|sp|sr|spr|sip|si|skoid|sktid|skt|ske|sks|skv|saoid|suoid|scid|sdd|ses|rscc|rscd|rsce|rscl|rsct)(=|%3d)[^&\s"'<>\\]*`)
)

// Redacted replaces what Redact removes.
const Redacted = "REDACTED"

// Redact returns s with the query of every URL replaced by REDACTED and
// the value of every SAS parameter (sig=, se=, sv=, ...) elsewhere in it
// replaced too.
func Redact(s string) string {
	if !strings.Contains(s, "=") && !strings.Contains(s, "?") && !strings.Contains(strings.ToLower(s), "%3d") {
		return s
	}
	s = urlQuery.ReplaceAllString(s, "${1}?"+Redacted)
	return sasParam.ReplaceAllString(s, "${1}${2}${3}"+Redacted)
}

// RedactError returns err with every URL query and SAS parameter removed
// from its message. The *url.Error values in its chain have their URL
// redacted in place, so that unwrapping cannot reveal a SAS either;
// errors.Is and errors.As still see the whole chain.
func RedactError(err error) error {
	if err == nil {
		return nil
	}
	for e := err; e != nil; {
		var ue *url.Error
		if !errors.As(e, &ue) {
			break
		}
		ue.URL = Redact(ue.URL)
		e = ue.Err
	}
	msg := err.Error()
	if r := Redact(msg); r != msg {
		return redactedError{msg: r, err: err}
	}
	return err
}

type redactedError struct {
	msg string
	err error
}

func (e redactedError) Error() string { return e.msg }
func (e redactedError) Unwrap() error { return e.err }

// RedactWriter returns a writer that passes each write (one log event, for
// zerolog) through Redact.
func RedactWriter(w io.Writer) io.Writer { return redactWriter{w} }

type redactWriter struct{ w io.Writer }

func (r redactWriter) Write(p []byte) (int, error) {
	s := Redact(string(p))
	if _, err := io.WriteString(r.w, s); err != nil {
		return 0, err
	}
	return len(p), nil
}
