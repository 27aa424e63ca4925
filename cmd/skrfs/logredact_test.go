package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// Every line of the process log passes through blob.Redact, so a SAS in an
// error from any component (not only the blob store) never reaches it.
func TestLogRedactsSAS(t *testing.T) {
	const marker = "LOGSASMARKER42"
	err := errors.New(`Get "https://a.blob.core.windows.net/c/o?sv=2022-11-02&se=2030&sp=r&sig=` + marker + `": connection refused`)
	for _, console := range []bool{false, true} {
		var buf bytes.Buffer
		l := newLogger(&buf, zerolog.InfoLevel, console)
		l.Warn().Err(err).Str("sas", "st=2024&sig="+marker).Msg("failed")
		out := buf.String()
		if strings.Contains(out, marker) || !strings.Contains(out, "failed") {
			t.Errorf("console=%v: log line %q", console, out)
		}
		if !console {
			var m map[string]any
			if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
				t.Errorf("redacted JSON line does not parse: %v: %s", err, out)
			}
		}
	}
}
