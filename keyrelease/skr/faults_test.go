package skr_test

import (
	"context"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/rs/zerolog"

	"github.com/skrfs/skrfs/internal/azauth"
	"github.com/skrfs/skrfs/internal/config"
	"github.com/skrfs/skrfs/internal/devstack"
	"github.com/skrfs/skrfs/keyrelease"
	"github.com/skrfs/skrfs/keyrelease/akv"
	"github.com/skrfs/skrfs/keyrelease/attest"
	"github.com/skrfs/skrfs/keyrelease/cache"
	"github.com/skrfs/skrfs/keyrelease/maa"
	"github.com/skrfs/skrfs/keyrelease/skr"
)

// These tests run the production key-release stack (fake SEV-SNP evidence
// -> maa.Client -> akv.Client with azcore's retry policy and managed
// identity -> keyrelease/cache) against the in-process devstack, inject
// faults at the stand-ins and count the requests they receive. Only the
// delays are shortened (azcore's retry delay, the cache's sleeps are
// recorded instead of slept); attempt counts are the production defaults.
// keyrelease/cache's own tests cover the retry logic with a fake inner
// releaser; these cover what the real clients turn faults into.

// evidence adapts the fake TEE to skr.EvidenceSource.
type evidence struct{ f *attest.Fake }

func (e evidence) Evidence(ctx context.Context, rd [64]byte) (maa.Evidence, error) {
	ev, err := e.f.Evidence(ctx, rd)
	if err != nil {
		return maa.Evidence{}, err
	}
	return maa.Evidence{Report: ev.Report, CertChainPEM: ev.CertChainPEM(), Endorsements: ev.Endorsements}, nil
}

type world struct {
	s      *devstack.Stack
	r      *skr.Releaser
	c      *cache.Cache
	ref    keyrelease.KeyRef
	mu     sync.Mutex
	sleeps []time.Duration
	now    time.Time // the releaser's clock, advanced by tests
}

func (w *world) clock() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.now
}

func (w *world) advance(d time.Duration) {
	w.mu.Lock()
	w.now = w.now.Add(d)
	w.mu.Unlock()
}

// TestMain stops the shared devstack and removes its directory.
func TestMain(m *testing.M) {
	code := m.Run()
	if stack != nil {
		stack.Close()
		os.RemoveAll(stack.Dir)
	}
	os.Exit(code)
}

var (
	stackOnce sync.Once
	stack     *devstack.Stack
	stackErr  error
)

// sharedStack starts one seeded devstack for the package (seeding writes
// a 64 MiB object); each test resets the faults it sets.
func sharedStack(t *testing.T) *devstack.Stack {
	stackOnce.Do(func() {
		dir, err := os.MkdirTemp("", "skrfs-skr-faults-")
		if err != nil {
			stackErr = err
			return
		}
		stack, stackErr = devstack.Start(context.Background(), devstack.Options{Dir: dir, Seed: true, Logger: zerolog.Nop()})
	})
	if stackErr != nil {
		t.Fatal(stackErr)
	}
	t.Cleanup(func() {
		for _, svc := range []string{devstack.ServiceMAA, devstack.ServiceVault, devstack.ServiceIMDS, devstack.ServiceEntra} {
			stack.SetFault(svc, nil)
		}
	})
	return stack
}

func newWorld(t *testing.T, key string) *world {
	s := sharedStack(t)
	w := &world{s: s, now: time.Now()}
	hc, pool, err := azauth.HTTPClient([]string{s.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	cred, err := azauth.Credential(config.Identity{Kind: config.IdentityManaged, ClientID: devstack.ClientID, IMDSEndpoint: s.IMDSURL}, hc)
	if err != nil {
		t.Fatal(err)
	}
	w.r = &skr.Releaser{Evidence: evidence{&attest.Fake{Device: s.Device, Endorsements: [][]byte{s.Endorsement}}},
		MAA: &maa.Client{BaseURL: s.MAAURL, HTTPClient: hc},
		Vault: &akv.Client{Credential: cred, Transport: hc, Roots: pool, Hosts: []string{strings.TrimPrefix(s.VaultURL, "https://")},
			Retry: policy.RetryOptions{RetryDelay: time.Millisecond, MaxRetryDelay: 10 * time.Millisecond}},
		Now: w.clock}
	w.c = cache.New(w.r, cache.Options{Now: w.clock, Sleep: func(ctx context.Context, d time.Duration) error {
		w.mu.Lock()
		w.sleeps = append(w.sleeps, d)
		w.mu.Unlock()
		return ctx.Err()
	}})
	t.Cleanup(func() { w.c.Close(); w.r.Close() })
	if w.ref, err = keyrelease.ParseKeyRef(s.VaultURL + "/keys/" + key); err != nil {
		t.Fatal(err)
	}
	return w
}

// release releases w.ref with a generous bound: a hang fails the test.
func (w *world) release(t *testing.T) (*keyrelease.Key, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	k, err := w.c.Release(ctx, w.ref)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("release did not finish in 90s")
	}
	return k, err
}

func counts(s *devstack.Stack) (maaN, vaultN int64) {
	return s.Requests(devstack.ServiceMAA), s.Requests(devstack.ServiceVault)
}

// TestServiceDownOrFailing: with MAA or Key Vault down (connections
// aborted) or answering 5xx, a release fails with keyrelease.ErrUnavailable
// (EIO at the filesystem, fs/errno.go), never ErrDenied; the stand-ins
// see a bounded number of requests (cache attempts x azcore tries); and
// once the service is back, the next release succeeds.
func TestServiceDownOrFailing(t *testing.T) {
	const attempts = 5 // cache.DefaultOptions().Backoff.Attempts
	for _, tc := range []struct {
		name          string
		service       string
		fault         devstack.Fault
		maxMAA, maxKV int64
	}{
		{"MAA down", devstack.ServiceMAA, devstack.Fault{Down: true}, attempts, 0},
		{"MAA 503", devstack.ServiceMAA, devstack.Fault{Status: http.StatusServiceUnavailable}, attempts, 0},
		{"MAA 500", devstack.ServiceMAA, devstack.Fault{Status: http.StatusInternalServerError}, attempts, 0},
		// azcore retries 5xx 3 times: 4 tries per cache attempt. The token
		// is attested once and reused (2 MAA requests: attest, and the
		// client's fetch of the signing keys).
		{"Key Vault down", devstack.ServiceVault, devstack.Fault{Down: true}, 2, attempts * 4},
		{"Key Vault 503", devstack.ServiceVault, devstack.Fault{Status: http.StatusServiceUnavailable}, 2, attempts * 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, devstack.KeyOct)
			w.s.SetFault(tc.service, &tc.fault)
			m0, v0 := counts(w.s)
			_, err := w.release(t)
			m1, v1 := counts(w.s)
			if !errors.Is(err, keyrelease.ErrUnavailable) || errors.Is(err, keyrelease.ErrDenied) {
				t.Fatalf("release with %s: %v, want ErrUnavailable", tc.name, err)
			}
			if m1-m0 < 1 || m1-m0 > tc.maxMAA || v1-v0 > tc.maxKV {
				t.Fatalf("%d MAA and %d Key Vault requests, want 1..%d and at most %d", m1-m0, v1-v0, tc.maxMAA, tc.maxKV)
			}
			if tc.service == devstack.ServiceVault && v1-v0 < attempts {
				t.Fatalf("%d Key Vault requests: the cache did not retry", v1-v0)
			}
			w.s.SetFault(tc.service, nil)
			k, err := w.release(t)
			if err != nil {
				t.Fatalf("release after recovery: %v", err)
			}
			k.Wipe()
		})
	}
}

// TestThrottlingStorm: Key Vault or MAA answering 429 to everything while
// 32 callers ask for the same key: they share one release (single
// flight), the stand-in sees a bounded number of requests however many
// callers wait, the cache's delays are jittered and within the backoff
// caps, and everyone gets ErrUnavailable. A Retry-After longer than
// azcore's MaxRetryDelay (10ms here, 60s in production, where the cache's
// 60s ReleaseTimeout bounds the wait) is not retried within a cache
// attempt: one request per attempt.
func TestThrottlingStorm(t *testing.T) {
	const attempts, callers = 5, 32
	// Bounds allow two single-flight rounds: a caller that arrives just
	// after a round failed starts the next one.
	for _, tc := range []struct {
		name          string
		service       string
		fault         devstack.Fault
		maxMAA, maxKV int64
	}{
		{"Key Vault 429", devstack.ServiceVault, devstack.Fault{Status: http.StatusTooManyRequests}, 2, attempts * 4 * 2},
		{"Key Vault 429 Retry-After 30", devstack.ServiceVault, devstack.Fault{Status: http.StatusTooManyRequests, RetryAfter: "30"}, 2, attempts * 2},
		{"MAA 429", devstack.ServiceMAA, devstack.Fault{Status: http.StatusTooManyRequests, RetryAfter: "1"}, attempts * 2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, devstack.KeyRSA)
			w.s.SetFault(tc.service, &tc.fault)
			m0, v0 := counts(w.s)
			var wg sync.WaitGroup
			errs := make([]error, callers)
			for i := range callers {
				wg.Go(func() { _, errs[i] = w.release(t) })
			}
			wg.Wait()
			m1, v1 := counts(w.s)
			for i, err := range errs {
				if !errors.Is(err, keyrelease.ErrUnavailable) {
					t.Fatalf("caller %d: %v, want ErrUnavailable", i, err)
				}
			}
			if m1-m0 > tc.maxMAA || v1-v0 > tc.maxKV || m1-m0+v1-v0 < attempts {
				t.Fatalf("%d callers made %d MAA and %d Key Vault requests, want at most %d and %d (and at least %d in all)",
					callers, m1-m0, v1-v0, tc.maxMAA, tc.maxKV, attempts)
			}
			w.mu.Lock()
			sleeps := append([]time.Duration(nil), w.sleeps...)
			w.mu.Unlock()
			// Retries happen (releases of 32 callers may be one or two
			// single-flight rounds); every delay is within its cap and
			// they are not all equal (jitter).
			if len(sleeps) < attempts-1 {
				t.Fatalf("%d backoff delays, want at least %d", len(sleeps), attempts-1)
			}
			distinct := map[time.Duration]bool{}
			for _, d := range sleeps {
				if d < 0 || d > cache.DefaultOptions().Backoff.Max {
					t.Fatalf("backoff delay %v out of range", d)
				}
				distinct[d] = true
			}
			if len(distinct) < 2 {
				t.Fatalf("backoff delays %v are not jittered", sleeps)
			}
		})
	}
}

// TestTokenExpiryRefreshesTransparently: when the cached MAA token is
// about to expire, the next release attests again on its own and the
// release succeeds; while it is valid, releases reuse it (no attestation
// per release).
func TestTokenExpiryRefreshesTransparently(t *testing.T) {
	w := newWorld(t, devstack.KeyOct)
	k, err := w.release(t)
	if err != nil {
		t.Fatal(err)
	}
	k.Wipe()
	a0, _ := w.r.Stats()
	if a0 != 1 {
		t.Fatalf("%d attestations for the first release, want 1", a0)
	}
	// Past the key's TTL (1h) but well within the token's lifetime (8h):
	// the key is released again with the same token.
	w.advance(61 * time.Minute)
	k, err = w.release(t)
	if err != nil {
		t.Fatal(err)
	}
	k.Wipe()
	if a, rel := w.r.Stats(); a != 1 || rel != 2 {
		t.Fatalf("%d attestations and %d releases, want 1 and 2", a, rel)
	}
	// Within 5 minutes of the token's expiry: a fresh attestation.
	m0, _ := counts(w.s)
	w.advance(8*time.Hour - 61*time.Minute - 4*time.Minute)
	k, err = w.release(t)
	if err != nil {
		t.Fatalf("release with an expiring token: %v", err)
	}
	k.Wipe()
	m1, _ := counts(w.s)
	if a, _ := w.r.Stats(); a != 2 || m1-m0 < 1 {
		t.Fatalf("%d attestations (%d MAA requests) after the token neared expiry, want 2", a, m1-m0)
	}
}

// TestPolicyChangedToDenyFailsClosed: a key whose release policy is
// changed (Key Vault key update) to one the TEE does not satisfy is
// refused at the next release after its TTL, even though the cached token
// is still valid (the denial with a reused token is retried once with a
// fresh attestation, then returned); the cached copy is not served.
func TestPolicyChangedToDenyFailsClosed(t *testing.T) {
	w := newWorld(t, devstack.KeyRSA)
	k, err := w.release(t)
	if err != nil {
		t.Fatal(err)
	}
	k.Wipe()
	kc, err := w.s.KeysClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	ct := "application/json; charset=utf-8"
	update := func(hostData string) {
		t.Helper()
		_, err := kc.UpdateKey(context.Background(), devstack.KeyRSA, "", azkeys.UpdateKeyParameters{
			ReleasePolicy: &azkeys.KeyReleasePolicy{ContentType: &ct, EncodedPolicy: w.s.Policy(hostData)}}, nil)
		if err != nil {
			t.Fatal(err)
		}
	}
	update("00" + hex.EncodeToString(w.s.TEE.HostData[1:]))
	t.Cleanup(func() { update(hex.EncodeToString(w.s.TEE.HostData[:])) })
	// Within the TTL the cached key is served (documented: the TTL bounds
	// how long a revoked key remains usable).
	k, err = w.release(t)
	if err != nil {
		t.Fatalf("within the TTL: %v", err)
	}
	k.Wipe()
	a0, _ := w.r.Stats()
	w.advance(61 * time.Minute)
	if _, err := w.release(t); !errors.Is(err, keyrelease.ErrDenied) {
		t.Fatalf("release after the policy changed: %v, want ErrDenied", err)
	}
	if a, _ := w.r.Stats(); a != a0+1 {
		t.Fatalf("%d attestations after the denial, want %d (one fresh attestation before giving up)", a, a0+1)
	}
	if st := w.c.Stats(); st.Keys != 0 {
		t.Fatalf("%d keys still cached after the denial", st.Keys)
	}
}
