// Package azblob implements blob.Store over one Azure Blob Storage container,
// optionally restricted to a name prefix (a virtual directory).
//
// Every read is pinned to the ETag the caller stat'ed: ranged GETs carry
// If-Match, so a blob replaced after Stat gives blob.ErrChanged (HTTP 412)
// instead of bytes of another version. Service errors are mapped to the
// sentinels of package blob (404 → ErrNotFound, 401/403 → ErrPermission,
// 412 → ErrChanged) and keep the *azcore.ResponseError reachable with
// errors.As.
//
// ReadAt fetches exactly the requested range with one GET, which suits random
// access. For sequential reads of large objects NewRangeReader fetches large
// ranges in parallel and reassembles them in order.
//
// The store is also a blob.Writer (writer.go): Commit uploads a new
// version as staged blocks and makes it current with one conditional Put
// Block List; a lost condition gives blob.ErrConditionNotMet.
//
// Authentication: a connection string (shared key or SAS), a container URL
// with a SAS query, an anonymous public container URL, a container URL with
// an account key, or any azcore.TokenCredential (Microsoft Entra ID bearer
// tokens, which require https).
package azblob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	sdkblob "github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	blobclient "github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/skrfs/skrfs/blob"
)

// Defaults for the tuning fields of Config and ReaderOptions.
//
// DefaultRangeSize and DefaultParallelism are chosen for real Azure: one GET
// of a block blob streams at tens of MiB/s and costs a round trip (10-50 ms
// to first byte) plus a billed transaction, so ranges of several MiB amortise
// the latency and the per-request cost, and a handful of them in flight
// fill a VM's bandwidth. 8 MiB × 4 keeps 32 MiB of buffers per sequential
// reader. The ranges are above 4 MiB on purpose: the service (and Azurite)
// can compute a transactional MD5 only for ranges of at most 4 MiB, and
// Azurite always does so, which makes 4 MiB ranges much slower there than
// 4 MiB + 1 byte. BenchmarkDownload, 1 GiB from Azurite on 2 cores (medians
// of 5 runs, noisy): one whole-blob DownloadStream 1.0 GiB/s; this reader
// with 4 MiB × 2 0.5 GiB/s, 4 MiB+1 × 2 2.0 GiB/s, 8 MiB × 2 2.4 GiB/s,
// 8 MiB × 4 (default) 1.6 GiB/s, 8 MiB × 8 1.4 GiB/s, 16 MiB × 4 1.3 GiB/s.
// Azurite prefers little parallelism only because it shares our CPUs; real
// Azure is latency-bound per request and gains from more ranges in flight.
const (
	// DefaultRangeSize is the size of one ranged GET of a sequential reader.
	DefaultRangeSize = 8 << 20
	// DefaultParallelism is the number of ranged GETs a sequential reader
	// keeps in flight.
	DefaultParallelism = 4
	// DefaultUploadBlockSize is the block size of Upload.
	DefaultUploadBlockSize = 8 << 20
	// DefaultUploadConcurrency is the number of blocks Upload sends at once.
	DefaultUploadConcurrency = 4
)

// Default retry policy; see Config.Retry.
const (
	defaultMaxRetries    = 4
	defaultTryTimeout    = time.Minute
	defaultRetryDelay    = 250 * time.Millisecond
	defaultMaxRetryDelay = 8 * time.Second
	// bodyRetries is how often a body that breaks off mid-read is resumed
	// (from where it broke, still pinned with If-Match).
	bodyRetries = 3
)

// Config selects a container, how to authenticate to it, and tuning.
//
// Exactly one of ContainerURL and ConnectionString must be set.
type Config struct {
	// ContainerURL is the container's URL, e.g.
	// https://acct.blob.core.windows.net/ciphertext, or for Azurite
	// http://127.0.0.1:10000/devstoreaccount1/ciphertext. It may carry a SAS
	// query (…?sv=…&sig=…), and a path after the container, which becomes a
	// name prefix (joined in front of Prefix). Without SAS, AccountKey or
	// Credential the container is accessed anonymously (public container).
	ContainerURL string

	// ConnectionString is an Azure Storage connection string (AccountKey or
	// SharedAccessSignature, BlobEndpoint for emulators). Requires Container.
	ConnectionString string

	// Container is the container name; used only with ConnectionString.
	Container string

	// Prefix restricts the store to the names under this virtual directory:
	// object names in the blob.Store API are relative to it. Leading and
	// trailing slashes are ignored ("a/b" and "/a/b/" both mean "a/b/").
	// Empty means the whole container.
	Prefix string

	// Credential, when non-nil, authenticates with Microsoft Entra ID bearer
	// tokens (any azcore.TokenCredential, e.g. from azidentity). The
	// ContainerURL must then be https. Nil means SAS, account key,
	// connection string or anonymous access.
	Credential azcore.TokenCredential

	// AccountKey, when non-empty, authenticates ContainerURL with the
	// account's shared key. AccountName defaults to the account of the URL
	// (the first label of the host, or the first path segment for an IP
	// endpoint such as Azurite's).
	AccountName, AccountKey string

	// Transport sends the HTTP requests; an *http.Client satisfies it, so
	// tests can inject a client that trusts a test CA. Nil means a shared
	// default client with a connection pool sized for parallel ranges. A
	// custom client should allow at least Parallelism idle connections per
	// host (http.Transport.MaxIdleConnsPerHost) or connections churn.
	Transport policy.Transporter

	// Retry is the retry policy of every request. Zero fields take these
	// defaults: MaxRetries 4, TryTimeout 1 min (one try, including reading
	// its body; ranges are at most a few MiB so this only catches stalled
	// connections), RetryDelay 250 ms, MaxRetryDelay 8 s. As in azcore,
	// MaxRetries < 0 means no retries.
	Retry policy.RetryOptions

	// RangeSize is the default size of one ranged GET of NewRangeReader;
	// 0 means DefaultRangeSize. ReadAt always fetches exactly what is asked.
	RangeSize int64

	// Parallelism is the default number of ranges NewRangeReader keeps in
	// flight; 0 means DefaultParallelism.
	Parallelism int

	// UploadBlockSize is the block size of Upload and of Put for data
	// larger than 256 MiB; 0 means DefaultUploadBlockSize.
	UploadBlockSize int64

	// UploadConcurrency is the number of blocks Upload and Put send at
	// once; 0 means DefaultUploadConcurrency. Upload buffers
	// UploadBlockSize × UploadConcurrency bytes.
	UploadConcurrency int

	// CommitBlockSize is the size of the blocks Commit stages (the last
	// one may be shorter); 0 means DefaultCommitBlockSize. Commit buffers
	// CommitBlockSize × UploadConcurrency bytes.
	CommitBlockSize int64

	// SkipCheck skips the check that Open does by listing at most one name
	// under the prefix. Set it for credentials that may not list (a SAS
	// without the l permission).
	SkipCheck bool
}

// Store is a blob.Store over one container and prefix. It is safe for
// concurrent use.
type Store struct {
	c      *container.Client
	prefix string // "" or ends with "/"

	rangeSize         int64
	parallelism       int
	uploadBlockSize   int64
	uploadConcurrency int
	commitBlockSize   int64
	retry             policy.RetryOptions // with defaults; Commit retries itself
	// blocks recycles Commit's block buffers (*[]byte of commitBlockSize),
	// so that committing many small files does not allocate a block each.
	blocks sync.Pool
}

var (
	_ blob.Store      = (*Store)(nil)
	_ blob.HeadReader = (*Store)(nil)
)

// Open returns a store for the container and prefix that cfg describes.
// Unless cfg.SkipCheck is set it lists at most one name to check that the
// container exists and the credential may read it, so that a wrong URL or
// key fails here (with blob.ErrNotFound or blob.ErrPermission) rather than
// on first access.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	c, prefix, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	s := &Store{
		c:                 c,
		prefix:            prefix,
		rangeSize:         orDefault(cfg.RangeSize, DefaultRangeSize),
		parallelism:       orDefault(cfg.Parallelism, DefaultParallelism),
		uploadBlockSize:   orDefault(cfg.UploadBlockSize, DefaultUploadBlockSize),
		uploadConcurrency: orDefault(cfg.UploadConcurrency, DefaultUploadConcurrency),
		commitBlockSize:   orDefault(cfg.CommitBlockSize, DefaultCommitBlockSize),
		retry:             retryOptions(cfg.Retry),
	}
	if !cfg.SkipCheck {
		if err := s.check(ctx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func orDefault[T int | int64](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// newClient builds the SDK container client and the normalised prefix.
func newClient(cfg Config) (*container.Client, string, error) {
	opts := &container.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: cfg.Transport,
		Retry:     retryOptions(cfg.Retry),
		Telemetry: policy.TelemetryOptions{ApplicationID: "skrfs"},
	}}
	if opts.Transport == nil {
		opts.Transport = defaultClient()
	}
	prefix := cfg.Prefix
	var (
		c   *container.Client
		err error
	)
	switch {
	case (cfg.ContainerURL == "") == (cfg.ConnectionString == ""):
		return nil, "", errors.New("azblob: set exactly one of ContainerURL and ConnectionString")
	case cfg.Credential != nil && cfg.AccountKey != "":
		return nil, "", errors.New("azblob: set at most one of Credential and AccountKey")
	case cfg.ConnectionString != "":
		if cfg.Credential != nil || cfg.AccountKey != "" {
			return nil, "", errors.New("azblob: a connection string carries its own credential; do not set Credential or AccountKey")
		}
		if cfg.Container == "" {
			return nil, "", errors.New("azblob: ConnectionString needs Container")
		}
		c, err = container.NewClientFromConnectionString(cfg.ConnectionString, cfg.Container, opts)
	default:
		if cfg.Container != "" {
			return nil, "", errors.New("azblob: Container is only used with ConnectionString; put the container in ContainerURL")
		}
		var (
			u       string
			account string
			path    string
		)
		u, account, path, err = splitContainerURL(cfg.ContainerURL)
		if err != nil {
			return nil, "", err
		}
		prefix = path + "/" + prefix
		switch {
		case cfg.Credential != nil:
			if !strings.HasPrefix(strings.ToLower(u), "https://") {
				return nil, "", fmt.Errorf("azblob: bearer credentials need an https container URL, not %s", redact(u))
			}
			c, err = container.NewClient(u, cfg.Credential, opts)
		case cfg.AccountKey != "":
			name := cfg.AccountName
			if name == "" {
				name = account
			}
			var key *sdkblob.SharedKeyCredential
			if key, err = sdkblob.NewSharedKeyCredential(name, cfg.AccountKey); err != nil {
				return nil, "", fmt.Errorf("azblob: account key: %w", err)
			}
			c, err = container.NewClientWithSharedKeyCredential(u, key, opts)
		default:
			c, err = container.NewClientWithNoCredential(u, opts)
		}
	}
	if err != nil {
		return nil, "", fmt.Errorf("azblob: %w", blob.RedactError(err))
	}
	prefix, err = normalisePrefix(prefix)
	if err != nil {
		return nil, "", err
	}
	return c, prefix, nil
}

// splitContainerURL splits a container URL into the URL of the container
// itself (with its SAS query), the account name and the path after the
// container (a name prefix).
func splitContainerURL(raw string) (containerURL, account, path string, err error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "", "", "", fmt.Errorf("azblob: container URL %q: not an absolute URL", redact(raw))
	}
	parts, err := sdkblob.ParseURL(raw)
	if err != nil {
		return "", "", "", fmt.Errorf("azblob: container URL %q: %w", redact(raw), err)
	}
	if parts.ContainerName == "" {
		return "", "", "", fmt.Errorf("azblob: container URL %q names no container", redact(raw))
	}
	account = parts.IPEndpointStyleInfo.AccountName
	if account == "" {
		account, _, _ = strings.Cut(u.Hostname(), ".")
	}
	path = parts.BlobName
	parts.BlobName = ""
	return parts.String(), account, path, nil
}

// redact removes the query (a SAS signature) from a URL for messages.
func redact(raw string) string {
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		return raw[:i] + "?REDACTED"
	}
	return raw
}

func normalisePrefix(p string) (string, error) {
	p = strings.Trim(p, "/")
	if p == "" {
		return "", nil
	}
	if err := blob.CheckName(p); err != nil {
		return "", fmt.Errorf("azblob: prefix: %w", err)
	}
	return p + "/", nil
}

func retryOptions(r policy.RetryOptions) policy.RetryOptions {
	if r.MaxRetries == 0 {
		r.MaxRetries = defaultMaxRetries
	}
	if r.TryTimeout == 0 {
		r.TryTimeout = defaultTryTimeout
	}
	if r.RetryDelay == 0 {
		r.RetryDelay = defaultRetryDelay
	}
	if r.MaxRetryDelay == 0 {
		r.MaxRetryDelay = defaultMaxRetryDelay
	}
	return r
}

var defaultClient = sync.OnceValue(func() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	// net/http keeps only 2 idle connections per host by default; parallel
	// ranges of several readers would open and close connections all the
	// time.
	t.MaxIdleConns = 256
	t.MaxIdleConnsPerHost = 64
	return &http.Client{Transport: t}
})

// Prefix returns the store's name prefix ("" or ending with "/").
func (s *Store) Prefix() string { return s.prefix }

// URL returns the container's URL (including any SAS query; do not log it).
func (s *Store) URL() string { return s.c.URL() }

// ContainerClient returns the SDK client of the container, for operations
// this package does not wrap. Names there are not relative to Prefix.
func (s *Store) ContainerClient() *container.Client { return s.c }

// fullName validates a store-relative name and returns the blob name.
func (s *Store) fullName(name string) (string, error) {
	if err := blob.CheckName(name); err != nil {
		return "", err
	}
	return s.prefix + name, nil
}

func (s *Store) check(ctx context.Context) error {
	pager := s.c.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{
		Prefix:     nonEmpty(s.prefix),
		MaxResults: ptr(int32(1)),
	})
	if _, err := pager.NextPage(ctx); err != nil {
		return mapErr("open", strings.TrimSuffix(s.prefix, "/"), err)
	}
	return nil
}

// Stat implements blob.Store with Get Blob Properties.
func (s *Store) Stat(ctx context.Context, name string) (blob.Info, error) {
	if err := ctx.Err(); err != nil {
		return blob.Info{}, err
	}
	full, err := s.fullName(name)
	if err != nil {
		return blob.Info{}, err
	}
	p, err := s.c.NewBlobClient(full).GetProperties(ctx, nil)
	if err != nil {
		return blob.Info{}, mapErr("stat", name, err)
	}
	if p.ContentLength == nil || p.ETag == nil {
		return blob.Info{}, fmt.Errorf("azblob: stat %q: response without Content-Length or ETag", name)
	}
	return blob.Info{
		Name:     name,
		Size:     *p.ContentLength,
		ETag:     quoteETag(string(*p.ETag)),
		ModTime:  deref(p.LastModified),
		Metadata: metadata(p.Metadata),
	}, nil
}

// ReadHead implements blob.HeadReader with one ranged Get Blob of
// [0, len(p)) without a precondition: its response names the version
// (ETag), the size (Content-Range), the modification time and the
// metadata, so an open costs one request instead of Get Blob Properties
// and a Get Blob. A body that breaks off is read again, pinned to the
// version the response named.
func (s *Store) ReadHead(ctx context.Context, name string, p []byte) (blob.Info, int, error) {
	if err := ctx.Err(); err != nil {
		return blob.Info{}, 0, err
	}
	full, err := s.fullName(name)
	if err != nil {
		return blob.Info{}, 0, err
	}
	if len(p) == 0 {
		info, err := s.Stat(ctx, name)
		return info, 0, err
	}
	resp, err := s.c.NewBlobClient(full).DownloadStream(ctx, &sdkblob.DownloadStreamOptions{
		Range: sdkblob.HTTPRange{Offset: 0, Count: int64(len(p))},
	})
	if statusCode(err) == http.StatusRequestedRangeNotSatisfiable {
		// An empty blob has no byte 0: stat it, and read what a
		// replacement may hold.
		info, err := s.Stat(ctx, name)
		if err != nil {
			return blob.Info{}, 0, err
		}
		return blob.ReadHeadOf(ctx, s, info, p) // ReadAt resumes broken bodies
	}
	if err != nil {
		return blob.Info{}, 0, mapErr("read", name, err)
	}
	defer resp.Body.Close()
	if resp.ETag == nil || resp.ContentLength == nil {
		return blob.Info{}, 0, fmt.Errorf("azblob: read %q: response without ETag or Content-Length", name)
	}
	length, total := *resp.ContentLength, *resp.ContentLength
	if resp.ContentRange != nil {
		start, t, ok := parseContentRange(*resp.ContentRange)
		if !ok || start != 0 {
			return blob.Info{}, 0, fmt.Errorf("azblob: read %q: unexpected Content-Range %q", name, *resp.ContentRange)
		}
		total = t
	}
	if length != min(int64(len(p)), total) {
		return blob.Info{}, 0, fmt.Errorf("azblob: read %q: %d bytes for the first %d of a %d-byte blob", name, length, len(p), total)
	}
	info := blob.Info{Name: name, Size: total, ETag: quoteETag(string(*resp.ETag)),
		ModTime: deref(resp.LastModified), Metadata: metadata(resp.Metadata)}
	n, err := io.ReadFull(resp.Body, p[:length])
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return blob.Info{}, 0, cerr
		}
		return blob.ReadHeadOf(ctx, s, info, p) // ReadAt resumes broken bodies
	}
	return info, n, nil
}

// ReadAt implements blob.Store with one ranged Get Blob of exactly
// [off, off+len(p)), pinned with If-Match. A body that breaks off is resumed
// (still pinned) a few times; a body that ends short is an error, never a
// silent short read.
func (s *Store) ReadAt(ctx context.Context, ref blob.Ref, p []byte, off int64) (int, error) {
	if len(p) == 0 {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if _, err := s.fullName(ref.Name); err != nil {
			return 0, err
		}
		if off < 0 {
			return 0, fmt.Errorf("azblob: read %q: %w: negative offset %d", ref.Name, blob.ErrOutOfRange, off)
		}
		return 0, nil
	}
	body, err := s.openRange(ctx, ref, off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	defer body.Close()
	n, err := io.ReadFull(body, p[:body.left])
	if err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// OpenRange implements blob.RangeOpener: one ranged GET, pinned by
// If-Match, whose body is resumed (up to bodyRetries times) if it breaks
// off.
func (s *Store) OpenRange(ctx context.Context, ref blob.Ref, off, n int64) (io.ReadCloser, error) {
	if n == 0 {
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	if n < 0 {
		return nil, fmt.Errorf("azblob: read %q: %w: negative length %d", ref.Name, blob.ErrOutOfRange, n)
	}
	return s.openRange(ctx, ref, off, n)
}

// rangeBody is the body of one ranged GET: exactly left more bytes.
type rangeBody struct {
	s         *Store
	ctx       context.Context
	ref       blob.Ref
	full      string
	off       int64 // offset of the next byte
	left      int64 // bytes still to come
	length    int64 // bytes in the response
	body      io.ReadCloser
	closeOnce sync.Once
}

func (s *Store) openRange(ctx context.Context, ref blob.Ref, off, n int64) (*rangeBody, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	full, err := s.fullName(ref.Name)
	if err != nil {
		return nil, err
	}
	if off < 0 {
		return nil, fmt.Errorf("azblob: read %q: %w: negative offset %d", ref.Name, blob.ErrOutOfRange, off)
	}
	bc := s.c.NewBlobClient(full)
	etag := azcore.ETag(ref.ETag)
	resp, err := bc.DownloadStream(ctx, &sdkblob.DownloadStreamOptions{
		Range:            sdkblob.HTTPRange{Offset: off, Count: n},
		AccessConditions: ifMatch(etag),
	})
	if err != nil {
		switch statusCode(err) {
		case http.StatusRequestedRangeNotSatisfiable:
			if err := s.pastEnd(ctx, ref, full, off, err); err != io.EOF {
				return nil, err
			}
			return &rangeBody{s: s, ctx: ctx, ref: ref, full: full, off: off, body: io.NopCloser(bytes.NewReader(nil))}, nil
		case http.StatusPreconditionFailed:
			return nil, s.changedOrGone(ctx, ref, full, err)
		}
		return nil, mapErr("read", ref.Name, err)
	}
	body := resp.NewRetryReader(ctx, &sdkblob.RetryReaderOptions{MaxRetries: bodyRetries, EarlyCloseAsError: true})
	fail := func(err error) (*rangeBody, error) {
		body.Close()
		return nil, err
	}

	// Check what the service is about to send before reading it.
	if resp.ETag != nil && *resp.ETag != etag {
		return fail(fmt.Errorf("azblob: read %q: %w: ETag %s, pinned %s", ref.Name, blob.ErrChanged, *resp.ETag, etag))
	}
	if resp.ContentLength == nil {
		return fail(fmt.Errorf("azblob: read %q at %d: response without Content-Length", ref.Name, off))
	}
	length := *resp.ContentLength
	var total int64
	if resp.ContentRange == nil {
		// 200 with the whole blob: only acceptable for a read from 0.
		if off != 0 {
			return fail(fmt.Errorf("azblob: read %q at %d: the service ignored the range", ref.Name, off))
		}
		total = length
	} else {
		start, t, ok := parseContentRange(*resp.ContentRange)
		if !ok || start != off {
			return fail(fmt.Errorf("azblob: read %q at %d: unexpected Content-Range %q", ref.Name, off, *resp.ContentRange))
		}
		total = t
	}
	if off > total {
		return fail(fmt.Errorf("azblob: read %q: %w: offset %d beyond size %d", ref.Name, blob.ErrOutOfRange, off, total))
	}
	if length < 0 || length > n || off+length > total {
		return fail(fmt.Errorf("azblob: read %q at %d: %d bytes for a %d-byte range of a %d-byte blob", ref.Name, off, length, n, total))
	}
	if length < n && off+length != total {
		return fail(fmt.Errorf("azblob: read %q at %d: %d bytes, %d asked, blob size %d: %w", ref.Name, off, length, n, total, io.ErrUnexpectedEOF))
	}
	return &rangeBody{s: s, ctx: ctx, ref: ref, full: full, off: off, left: length, length: length, body: body}, nil
}

func (r *rangeBody) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.body.Read(p)
	r.off += int64(n)
	r.left -= int64(n)
	switch {
	case err == nil || (err == io.EOF && r.left == 0):
		if r.left == 0 {
			return n, io.EOF
		}
		return n, nil
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return n, fmt.Errorf("azblob: read %q at %d: truncated body, %d of %d bytes: %w", r.ref.Name, r.off, r.length-r.left, r.length, io.ErrUnexpectedEOF)
	case statusCode(err) == http.StatusPreconditionFailed: // when resuming the body
		return n, r.s.changedOrGone(r.ctx, r.ref, r.full, err)
	}
	return n, mapErr("read", r.ref.Name, err)
}

func (r *rangeBody) Close() error {
	var err error
	r.closeOnce.Do(func() { err = r.body.Close() })
	return err
}

// pastEnd handles a 416 (range not satisfiable): the offset is at or past
// the end of the blob. It stats the pinned version to tell the two apart.
func (s *Store) pastEnd(ctx context.Context, ref blob.Ref, full string, off int64, rangeErr error) error {
	etag := azcore.ETag(ref.ETag)
	p, err := s.c.NewBlobClient(full).GetProperties(ctx, &blobclient.GetPropertiesOptions{AccessConditions: ifMatch(etag)})
	if statusCode(err) == http.StatusPreconditionFailed {
		return s.changedOrGone(ctx, ref, full, err)
	}
	if err != nil {
		return mapErr("read", ref.Name, err)
	}
	size := deref(p.ContentLength)
	switch {
	case off == size:
		return io.EOF
	case off > size:
		return fmt.Errorf("azblob: read %q: %w: offset %d beyond size %d", ref.Name, blob.ErrOutOfRange, off, size)
	}
	return mapErr("read", ref.Name, rangeErr)
}

// changedOrGone classifies a 412 of a read pinned with If-Match: Azurite
// (and HTTP in general) answers 412 also when the blob no longer exists, but
// a deleted blob must give blob.ErrNotFound. One unconditional stat tells.
func (s *Store) changedOrGone(ctx context.Context, ref blob.Ref, full string, preconditionErr error) error {
	if _, err := s.c.NewBlobClient(full).GetProperties(ctx, nil); statusCode(err) == http.StatusNotFound {
		return mapErr("read", ref.Name, err)
	}
	return mapErr("read", ref.Name, preconditionErr)
}

// parseContentRange parses "bytes first-last/total".
func parseContentRange(s string) (first, total int64, ok bool) {
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	f, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	first, err1 := strconv.ParseInt(f, 10, 64)
	total, err2 := strconv.ParseInt(tot, 10, 64)
	return first, total, err1 == nil && err2 == nil
}

// List implements blob.Store with List Blobs (flat, or hierarchical with a
// delimiter). Names are relative to the store's prefix; names that
// blob.CheckName rejects (such as "a//b", which Azure allows) are skipped,
// since no other method could address them.
func (s *Store) List(ctx context.Context, opts blob.ListOptions, fn func(blob.Info) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	prefix := nonEmpty(s.prefix + opts.Prefix)
	include := container.ListBlobsInclude{Metadata: opts.WithMetadata}
	if opts.Delimiter == "" {
		pager := s.c.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: prefix, Include: include})
		for pager.More() {
			page, err := pager.NextPage(ctx)
			if err != nil {
				return mapErr("list", opts.Prefix, err)
			}
			for _, item := range page.Segment.BlobItems {
				info, ok := s.itemInfo(item, opts.WithMetadata)
				if !ok {
					continue
				}
				if err := fn(info); err != nil {
					return err
				}
			}
		}
		return nil
	}
	pager := s.c.NewListBlobsHierarchyPager(opts.Delimiter, &container.ListBlobsHierarchyOptions{Prefix: prefix, Include: include})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return mapErr("list", opts.Prefix, err)
		}
		// A page covers a contiguous run of names, but lists blobs and
		// prefixes separately: merge them.
		var infos []blob.Info
		for _, item := range page.Segment.BlobItems {
			if info, ok := s.itemInfo(item, opts.WithMetadata); ok {
				infos = append(infos, info)
			}
		}
		for _, bp := range page.Segment.BlobPrefixes {
			name, ok := s.relative(deref(bp.Name))
			if ok && blob.CheckName(strings.TrimSuffix(name, opts.Delimiter)) == nil {
				infos = append(infos, blob.Info{Name: name, IsPrefix: true})
			}
		}
		sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
		for _, info := range infos {
			if err := fn(info); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Store) relative(full string) (string, bool) {
	name, ok := strings.CutPrefix(full, s.prefix)
	return name, ok && name != ""
}

func (s *Store) itemInfo(item *container.BlobItem, withMetadata bool) (blob.Info, bool) {
	name, ok := s.relative(deref(item.Name))
	if !ok || blob.CheckName(name) != nil || item.Properties == nil {
		return blob.Info{}, false
	}
	info := blob.Info{
		Name:    name,
		Size:    deref(item.Properties.ContentLength),
		ETag:    quoteETag(string(deref(item.Properties.ETag))),
		ModTime: deref(item.Properties.LastModified),
	}
	if withMetadata {
		info.Metadata = metadata(item.Metadata)
		if info.Metadata == nil {
			info.Metadata = map[string]string{}
		}
	}
	return info, true
}

// Put creates or replaces the object name with data and user metadata
// (nil for none). Metadata keys must be valid C# identifiers; Azure may
// change their case.
func (s *Store) Put(ctx context.Context, name string, data []byte, metadata map[string]string) error {
	full, err := s.fullName(name)
	if err != nil {
		return err
	}
	_, err = s.c.NewBlockBlobClient(full).UploadBuffer(ctx, data, &sdkblob.UploadBufferOptions{
		BlockSize:   s.uploadBlockSize,
		Concurrency: uint16(s.uploadConcurrency),
		Metadata:    sdkMetadata(metadata),
	})
	if err != nil {
		return mapErr("put", name, err)
	}
	return nil
}

// Upload creates or replaces the object name with the contents of r, in
// blocks of Config.UploadBlockSize sent Config.UploadConcurrency at a time.
// The new version becomes visible only when all of r has been uploaded.
func (s *Store) Upload(ctx context.Context, name string, r io.Reader, metadata map[string]string) error {
	full, err := s.fullName(name)
	if err != nil {
		return err
	}
	_, err = s.c.NewBlockBlobClient(full).UploadStream(ctx, r, &sdkblob.UploadStreamOptions{
		BlockSize:   s.uploadBlockSize,
		Concurrency: s.uploadConcurrency,
		Metadata:    sdkMetadata(metadata),
	})
	if err != nil {
		return mapErr("upload", name, err)
	}
	return nil
}

// Delete removes the object name (and its snapshots, if any).
func (s *Store) Delete(ctx context.Context, name string) error {
	full, err := s.fullName(name)
	if err != nil {
		return err
	}
	_, err = s.c.NewBlobClient(full).Delete(ctx, &blobclient.DeleteOptions{
		DeleteSnapshots: ptr(blobclient.DeleteSnapshotsOptionTypeInclude),
	})
	if err != nil {
		return mapErr("delete", name, err)
	}
	return nil
}

func ifMatch(etag azcore.ETag) *sdkblob.AccessConditions {
	return &sdkblob.AccessConditions{ModifiedAccessConditions: &blobclient.ModifiedAccessConditions{IfMatch: &etag}}
}

func metadata(md map[string]*string) map[string]string {
	if md == nil {
		return nil
	}
	out := make(map[string]string, len(md))
	for k, v := range md {
		out[k] = deref(v)
	}
	return out
}

func sdkMetadata(md map[string]string) map[string]*string {
	if md == nil {
		return nil
	}
	out := make(map[string]*string, len(md))
	for k, v := range md {
		out[k] = &v
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func statusCode(err error) int {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// mapErr wraps an SDK error with the sentinel of its status code. The
// *azcore.ResponseError stays reachable with errors.As, but the message
// holds only its status and error code, not the whole response dump.
func mapErr(op, name string, err error) error {
	// Transport errors quote the request URL, SAS included: never pass one on.
	err = blob.RedactError(err)
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return fmt.Errorf("azblob: %s %q: %w", op, name, err)
	}
	var kind error
	switch re.StatusCode {
	case http.StatusNotFound:
		kind = blob.ErrNotFound
	case http.StatusPreconditionFailed:
		kind = blob.ErrChanged
	case http.StatusUnauthorized, http.StatusForbidden:
		kind = blob.ErrPermission
	case http.StatusRequestedRangeNotSatisfiable:
		kind = blob.ErrOutOfRange
	default:
		return fmt.Errorf("azblob: %s %q: %w", op, name, responseError{re})
	}
	return fmt.Errorf("azblob: %s %q: %w: %w", op, name, kind, responseError{re})
}

// responseError shortens the message of an *azcore.ResponseError, which
// otherwise includes the whole response, and unwraps to it.
type responseError struct{ re *azcore.ResponseError }

func (e responseError) Error() string {
	msg := fmt.Sprintf("HTTP %d", e.re.StatusCode)
	if e.re.ErrorCode != "" {
		msg += " " + e.re.ErrorCode
	}
	return msg
}

func (e responseError) Unwrap() error { return e.re }

// quoteETag returns the ETag in its quoted HTTP form. Blob properties
// headers carry "0x8D…" with quotes, but List Blobs returns the same ETag
// without them; every Info must carry one form so that a Ref from List and
// a Ref from Stat pin the same version.
func quoteETag(e string) string {
	if e == "" || strings.HasPrefix(e, `"`) || strings.HasPrefix(e, `W/"`) {
		return e
	}
	return `"` + e + `"`
}
