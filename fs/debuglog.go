package fs

import (
	"bytes"
	"io"
	"log"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The FUSE debug log (--fuse-debug) prints every request and reply.
// go-fuse quotes payload bytes in it: the first bytes of read and write
// data, xattr values, symlink targets and readlink answers. Those are keys
// and plaintext, so the mount's debug logger passes every line through
// redactPayload, which keeps the operation, node, sizes and flags, and the
// names of the entries an operation looks up or changes, and replaces
// every other quoted byte string with its length.

// opsWithNames lists the requests whose first quoted string is the name of
// the directory entry they act on (go-fuse's FileNames), and how many such
// names they carry. SYMLINK carries two, but the second is the target: the
// content of the link, redacted like any payload.
var opsWithNames = map[string]int{
	"LOOKUP": 1, "CREATE": 1, "TMPFILE": 1, "MKDIR": 1, "MKNOD": 1, "UNLINK": 1, "RMDIR": 1,
	"LINK": 1, "SYMLINK": 1, "RENAME": 2, "RENAME2": 2,
	"GETXATTR": 1, "SETXATTR": 1, "REMOVEXATTR": 1, // the attribute's name; SETXATTR's value is payload
}

// redactPayload returns line with every quoted byte string that is not an
// entry name replaced by <N bytes>.
func redactPayload(line string) string {
	keep := 0
	if rest, ok := strings.CutPrefix(line, "rx "); ok {
		// "rx UNIQUE: OPNAME nNODE ..."
		if _, after, ok := strings.Cut(rest, ": "); ok {
			op, _, _ := strings.Cut(after, " ")
			keep = opsWithNames[op]
		}
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(line, '"')
		if i < 0 {
			b.WriteString(line)
			return b.String()
		}
		b.WriteString(line[:i])
		q, err := strconv.QuotedPrefix(line[i:])
		if err != nil {
			// Not a whole quoted string: drop the rest of the line.
			b.WriteString("<redacted>")
			return b.String()
		}
		line = line[i+len(q):]
		if keep > 0 {
			keep--
			b.WriteString(q)
			continue
		}
		n := len(q) - 2
		if s, err := strconv.Unquote(q); err == nil {
			n = len(s)
		}
		b.WriteString("<" + strconv.Itoa(n) + " bytes>")
		// go-fuse marks a cut payload with "..." right after the quote.
		line = strings.TrimPrefix(line, "...")
	}
}

// redactingWriter is the sink of the FUSE debug logger: it redacts each
// line before writing it to w. log.Logger calls Write once per entry.
type redactingWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (r *redactingWriter) Write(p []byte) (int, error) {
	var out bytes.Buffer
	stamp := time.Now().Format("fuse: 2006/01/02 15:04:05.000000 ")
	for _, line := range strings.SplitAfter(string(p), "\n") {
		if line == "" {
			continue
		}
		nl := strings.HasSuffix(line, "\n")
		out.WriteString(stamp)
		out.WriteString(redactPayload(strings.TrimSuffix(line, "\n")))
		if nl {
			out.WriteByte('\n')
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.w.Write(out.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// debugLogger is the logger of a mount's FUSE debug output.
func debugLogger(w io.Writer) *log.Logger {
	// No prefix or flags: the writer sees the bare message, which starts
	// with "rx" or "tx", and stamps it after redacting.
	return log.New(&redactingWriter{w: w}, "", 0)
}
