package devstack

import (
	"fmt"
	"net/http"
	"sync/atomic"
)

// Services of a stack, as named by SetFault and Requests.
const (
	ServiceMAA   = "maa"
	ServiceVault = "vault"
	ServiceIMDS  = "imds"
	ServiceEntra = "entra"
)

// Fault makes a service misbehave, for fault-injection tests and drills.
type Fault struct {
	// Status answers every request with this HTTP status (429 throttling,
	// 503 unavailable, ...) and an Azure-style error body.
	Status int
	// RetryAfter, when set, is sent as the Retry-After header with Status.
	RetryAfter string
	// Down aborts every request without an answer, as a service that is
	// down or unreachable mid-connection does (the client sees EOF).
	Down bool
}

// service counts a service's requests and applies its fault.
type service struct {
	name     string
	h        http.Handler
	fault    atomic.Pointer[Fault]
	requests atomic.Int64
}

func (s *service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	f := s.fault.Load()
	switch {
	case f == nil:
		s.h.ServeHTTP(w, r)
	case f.Down:
		panic(http.ErrAbortHandler) // closes the connection without a response
	default:
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(f.Status)
		fmt.Fprintf(w, `{"error":{"code":"InjectedFault","message":"devstack %s: injected HTTP %d"}}`, s.name, f.Status)
	}
}

// SetFault injects f into service (one of the Service constants); nil
// restores normal service. It panics on an unknown service name.
func (s *Stack) SetFault(name string, f *Fault) {
	svc := s.services[name]
	if svc == nil {
		panic("devstack: unknown service " + name)
	}
	if f != nil {
		c := *f
		f = &c
	}
	svc.fault.Store(f)
}

// Requests returns how many requests service has received (faulted ones
// included) since the stack started.
func (s *Stack) Requests(name string) int64 {
	svc := s.services[name]
	if svc == nil {
		panic("devstack: unknown service " + name)
	}
	return svc.requests.Load()
}
