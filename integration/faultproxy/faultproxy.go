// Package faultproxy is an HTTP proxy for tests that sits between a client
// and a blob service (Azurite) and injects storage faults: added latency,
// stalls, error statuses (500, 503, 429 with Retry-After), connection
// resets, bodies cut off or stalled mid-stream, and bodies with a flipped
// byte.
//
// Which fault a request gets is decided by Rules, per request kind (blob
// reads, property reads, listings), with a probability drawn from a
// generator seeded by Config.Seed and by the request's identity (method,
// path, query, range) and attempt number. The n-th attempt of the same
// request therefore gets the same fault in every run with the same seed,
// however concurrent requests interleave. (Which requests a client makes
// can still vary with timing: read-ahead, cache evictions.)
//
// The proxy forwards everything else unchanged (shared-key and SAS
// signatures do not cover the host, so clients sign as for the target) and
// counts what it saw and did (Stats).
package faultproxy

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Kind classifies a blob-service request.
type Kind string

// Request kinds of the Azure Blob REST API.
const (
	// KindRead is a Get Blob (GET of a blob, ranged or whole).
	KindRead Kind = "read"
	// KindStat is a Get Blob Properties (HEAD of a blob).
	KindStat Kind = "stat"
	// KindList is a List Blobs or any other GET with a comp= query.
	KindList Kind = "list"
	// KindOther is everything else (uploads, container operations).
	KindOther Kind = "other"
)

// Fault is what the proxy does to a request a rule selected.
type Fault string

// Faults.
const (
	// Delay forwards the request after Rule.Delay.
	Delay Fault = "delay"
	// Stall holds the request without answering until the client gives
	// up (or the proxy closes); with Rule.Delay > 0, it then drops the
	// connection after that long instead.
	Stall Fault = "stall"
	// Status answers Rule.Status (500, 503, 429...) without forwarding,
	// with an Azure-style error body and, if Rule.RetryAfter > 0, a
	// Retry-After header.
	Status Fault = "status"
	// Reset resets the connection (TCP RST) without answering.
	Reset Fault = "reset"
	// Truncate forwards the response headers (with the full
	// Content-Length) and the first Rule.Bytes bytes of the body (half of
	// it when 0), then aborts the connection.
	Truncate Fault = "truncate"
	// StallBody forwards the headers and the first Rule.Bytes bytes of the
	// body (half when 0), then holds the rest until the client gives up.
	StallBody Fault = "stall-body"
	// Corrupt forwards the response with one bit flipped at body offset
	// Rule.Bytes (the middle when 0): tampering in flight.
	Corrupt Fault = "corrupt"
)

// Rule selects requests and the fault they get.
type Rule struct {
	// Kinds are the request kinds the rule applies to (empty: all).
	Kinds []Kind
	// Prob is the probability (0..1) that a matching request gets Fault.
	Prob float64
	// Max bounds how many times the rule fires (0: no bound).
	Max int
	// Fault is what happens to a selected request.
	Fault Fault
	// Delay is the latency of Delay and the give-up time of Stall.
	Delay time.Duration
	// Status is the status code of Status.
	Status int
	// RetryAfter, when positive, is sent as Retry-After (whole seconds,
	// at least 1) with Status.
	RetryAfter time.Duration
	// Bytes is the body offset at which Truncate, StallBody and Corrupt
	// act (0: the middle of the body).
	Bytes int64
}

// Config configures a proxy.
type Config struct {
	// Seed makes the fault decisions reproducible.
	Seed uint64
	// Rules are tried in order; the first that matches a request's kind
	// and draws below its Prob decides the fault. No rule: forward as is.
	Rules []Rule
}

// ErrConfig is wrapped by errors of an invalid Config.
var ErrConfig = errors.New("faultproxy: invalid configuration")

// Stats counts requests and the faults applied.
type Stats struct {
	// Requests counts every request by kind.
	Requests map[Kind]int
	// Faults counts the faults applied by fault and kind.
	Faults map[Fault]map[Kind]int
}

// Fired returns how many times fault was applied (to any kind).
func (s Stats) Fired(f Fault) int {
	n := 0
	for _, c := range s.Faults[f] {
		n += c
	}
	return n
}

// Proxy is a running fault-injecting proxy.
type Proxy struct {
	target    *url.URL
	transport *http.Transport
	srv       *http.Server
	ln        net.Listener
	closed    chan struct{}
	closeOnce sync.Once

	servedMu sync.Mutex
	isClosed bool
	served   sync.WaitGroup // handlers running; Add only under servedMu while open

	mu       sync.Mutex
	cfg      Config
	fired    []int          // per rule
	attempts map[string]int // request identity -> attempts so far
	stats    Stats
}

// Start listens on a free loopback port and proxies to target, the service
// root (scheme and host; any path is ignored: request paths are kept).
func Start(target string, cfg Config) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: target %q is not an http(s) URL", ErrConfig, target)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 128
	// Forward bodies as they are: no transparent decompression.
	tr.DisableCompression = true
	p := &Proxy{
		target:    &url.URL{Scheme: u.Scheme, Host: u.Host},
		transport: tr,
		ln:        ln,
		closed:    make(chan struct{}),
		attempts:  map[string]int{},
	}
	p.setConfig(cfg)
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: 10 * time.Second}
	go p.srv.Serve(ln)
	return p, nil
}

func (c Config) validate() error {
	for i, r := range c.Rules {
		switch {
		case r.Prob < 0 || r.Prob > 1:
			return fmt.Errorf("%w: rule %d: probability %v", ErrConfig, i, r.Prob)
		case r.Fault == Status && (r.Status < 100 || r.Status > 599):
			return fmt.Errorf("%w: rule %d: status %d", ErrConfig, i, r.Status)
		case r.Delay < 0 || r.Bytes < 0 || r.Max < 0:
			return fmt.Errorf("%w: rule %d: negative delay, bytes or max", ErrConfig, i)
		}
		switch r.Fault {
		case Delay, Stall, Status, Reset, Truncate, StallBody, Corrupt:
		default:
			return fmt.Errorf("%w: rule %d: unknown fault %q", ErrConfig, i, r.Fault)
		}
	}
	return nil
}

func (p *Proxy) setConfig(cfg Config) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cfg = Config{Seed: cfg.Seed, Rules: append([]Rule(nil), cfg.Rules...)}
	p.fired = make([]int, len(cfg.Rules))
}

// SetConfig replaces the seed and rules (nil rules: forward everything).
// Attempt numbers are kept, so a new seed gives new decisions.
func (p *Proxy) SetConfig(cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	p.setConfig(cfg)
	return nil
}

// URL returns the proxy's root URL, http://127.0.0.1:PORT.
func (p *Proxy) URL() string { return "http://" + p.ln.Addr().String() }

// Stats returns a copy of the counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Stats{Requests: map[Kind]int{}, Faults: map[Fault]map[Kind]int{}}
	for k, v := range p.stats.Requests {
		s.Requests[k] = v
	}
	for f, m := range p.stats.Faults {
		s.Faults[f] = map[Kind]int{}
		for k, v := range m {
			s.Faults[f][k] = v
		}
	}
	return s
}

// CloseIdleConnections closes the proxy's idle connections to the target.
func (p *Proxy) CloseIdleConnections() { p.transport.CloseIdleConnections() }

// CloseIdleClientConnections closes the idle keep-alive connections of
// the proxy's clients, as servers do after an idle timeout: a client's
// pool then holds no connection to the proxy, which lets tests compare a
// client's descriptors and goroutines with a baseline.
func (p *Proxy) CloseIdleClientConnections() {
	p.srv.SetKeepAlivesEnabled(false) // closes idle connections
	p.srv.SetKeepAlivesEnabled(true)
}

// Close stops the proxy: it releases stalled requests, closes every
// connection and waits for the handlers to return.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() { close(p.closed) })
	err := p.srv.Close()
	p.servedMu.Lock()
	p.isClosed = true
	p.servedMu.Unlock()
	p.served.Wait()
	p.transport.CloseIdleConnections()
	return err
}

// KindOf classifies a request of the Azure Blob REST API.
func KindOf(r *http.Request) Kind {
	q := r.URL.Query()
	switch {
	case r.Method == http.MethodHead && q.Get("comp") == "" && q.Get("restype") == "":
		return KindStat
	case r.Method == http.MethodGet && q.Get("comp") == "list":
		return KindList
	case r.Method == http.MethodGet && q.Get("comp") == "" && q.Get("restype") == "":
		return KindRead
	}
	return KindOther
}

// identity names a request for the reproducible decision: what it asks
// for, not who asks or when.
func identity(r *http.Request) string {
	rng := r.Header.Get("x-ms-range")
	if rng == "" {
		rng = r.Header.Get("Range")
	}
	q := r.URL.Query()
	for _, volatile := range []string{"sig", "se", "st", "timeout"} {
		q.Del(volatile)
	}
	return r.Method + " " + r.URL.Path + "?" + q.Encode() + " " + rng
}

// decide returns the rule for the request, or nil to forward it as is.
func (p *Proxy) decide(r *http.Request, kind Kind) *Rule {
	id := identity(r)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stats.Requests == nil {
		p.stats.Requests = map[Kind]int{}
		p.stats.Faults = map[Fault]map[Kind]int{}
	}
	p.stats.Requests[kind]++
	attempt := p.attempts[id]
	p.attempts[id] = attempt + 1
	h := fnv.New64a()
	io.WriteString(h, id)
	rnd := rand.New(rand.NewPCG(p.cfg.Seed, h.Sum64()^uint64(attempt)*0x9e3779b97f4a7c15))
	for i := range p.cfg.Rules {
		rule := &p.cfg.Rules[i]
		draw := rnd.Float64() // drawn for every rule, so rules do not shift each other's draws
		if !matches(rule.Kinds, kind) || draw >= rule.Prob || (rule.Max > 0 && p.fired[i] >= rule.Max) {
			continue
		}
		p.fired[i]++
		if p.stats.Faults[rule.Fault] == nil {
			p.stats.Faults[rule.Fault] = map[Kind]int{}
		}
		p.stats.Faults[rule.Fault][kind]++
		r := *rule
		return &r
	}
	return nil
}

func matches(kinds []Kind, k Kind) bool {
	if len(kinds) == 0 {
		return true
	}
	for _, x := range kinds {
		if x == k {
			return true
		}
	}
	return false
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	p.servedMu.Lock()
	if p.isClosed {
		p.servedMu.Unlock()
		panic(http.ErrAbortHandler)
	}
	p.served.Add(1)
	p.servedMu.Unlock()
	defer p.served.Done()
	kind := KindOf(r)
	rule := p.decide(r, kind)
	if rule != nil {
		switch rule.Fault {
		case Delay:
			if !p.sleep(r.Context(), rule.Delay) {
				return
			}
		case Stall:
			if rule.Delay > 0 {
				p.sleep(r.Context(), rule.Delay)
			} else {
				p.sleep(r.Context(), -1)
			}
			reset(w)
			return
		case Status:
			writeStatus(w, rule)
			return
		case Reset:
			reset(w)
			return
		}
	}
	p.forward(w, r, rule)
}

// sleep waits for d (forever when negative), the client going away, or the
// proxy closing; it reports whether d elapsed.
func (p *Proxy) sleep(ctx context.Context, d time.Duration) bool {
	var timer <-chan time.Time
	if d >= 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-timer:
		return true
	case <-ctx.Done():
	case <-p.closed:
	}
	return false
}

// writeStatus answers like the Blob service does for a server error.
func writeStatus(w http.ResponseWriter, rule *Rule) {
	code := map[int]string{
		http.StatusInternalServerError: "InternalError",
		http.StatusServiceUnavailable:  "ServerBusy",
		http.StatusTooManyRequests:     "ServerBusy",
	}[rule.Status]
	if code == "" {
		code = "InjectedFault"
	}
	if rule.RetryAfter > 0 {
		secs := int64(rule.RetryAfter.Round(time.Second) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(max(1, secs), 10))
	}
	body := fmt.Sprintf(`<?xml version="1.0" encoding="utf-8"?><Error><Code>%s</Code><Message>injected by faultproxy</Message></Error>`, code)
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("x-ms-error-code", code)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(rule.Status)
	io.WriteString(w, body)
}

// reset closes the client connection with a TCP RST (SO_LINGER 0).
func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// forward sends the request to the target and relays the answer, applying
// a body fault (Truncate, StallBody, Corrupt) when rule asks for one.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, rule *Rule) {
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = p.target.Scheme, p.target.Host
	out.Host = p.target.Host
	for _, h := range hopByHop {
		out.Header.Del(h)
	}
	if r.ContentLength == 0 {
		out.Body = nil
	}
	resp, err := p.transport.RoundTrip(out)
	if err != nil {
		if r.Context().Err() == nil {
			http.Error(w, "faultproxy: "+err.Error(), http.StatusBadGateway)
		}
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	for _, h := range hopByHop {
		w.Header().Del(h)
	}
	if resp.ContentLength >= 0 {
		w.Header().Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	w.WriteHeader(resp.StatusCode)
	if rule == nil || r.Method == http.MethodHead || resp.ContentLength <= 0 {
		io.Copy(w, resp.Body)
		return
	}
	at := rule.Bytes
	if at == 0 || at >= resp.ContentLength {
		at = resp.ContentLength / 2
	}
	switch rule.Fault {
	case Truncate, StallBody:
		if _, err := io.CopyN(w, resp.Body, at); err != nil {
			panic(http.ErrAbortHandler)
		}
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		if rule.Fault == StallBody {
			p.sleep(r.Context(), -1)
		}
		// Aborting the handler closes the connection mid-body: the client
		// sees fewer bytes than Content-Length.
		panic(http.ErrAbortHandler)
	case Corrupt:
		io.Copy(w, &flipReader{r: resp.Body, at: at})
	default:
		io.Copy(w, resp.Body)
	}
}

// flipReader flips the lowest bit of the byte at offset at.
type flipReader struct {
	r   io.Reader
	off int64
	at  int64
}

func (f *flipReader) Read(b []byte) (int, error) {
	n, err := f.r.Read(b)
	if i := f.at - f.off; i >= 0 && i < int64(n) {
		b[i] ^= 1
	}
	f.off += int64(n)
	return n, err
}

// String describes a rule for logs.
func (r Rule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s p=%.2f", r.Fault, r.Prob)
	if len(r.Kinds) > 0 {
		fmt.Fprintf(&b, " kinds=%v", r.Kinds)
	}
	if r.Status != 0 {
		fmt.Fprintf(&b, " status=%d", r.Status)
	}
	if r.Delay != 0 {
		fmt.Fprintf(&b, " delay=%v", r.Delay)
	}
	return b.String()
}
