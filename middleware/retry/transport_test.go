package retry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	httptransport "github.com/go-kit/kit/transport/http"

	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/middleware/retry"
)

// httpStatus is what a go-kit HTTP client's DecodeResponseFunc returns for
// a non-2xx answer: an error with go-kit's StatusCoder method.
type httpStatus int

func (e httpStatus) Error() string   { return fmt.Sprintf("HTTP %d", int(e)) }
func (e httpStatus) StatusCode() int { return int(e) }

// grpcLike has the shape of a grpc-go status error.
type grpcCode uint32

type grpcStatus struct{ c grpcCode }

func (s *grpcStatus) Code() grpcCode { return s.c }

type grpcLike struct{ c grpcCode }

func (e grpcLike) Error() string           { return fmt.Sprintf("rpc error: code = %d", e.c) }
func (e grpcLike) GRPCStatus() *grpcStatus { return &grpcStatus{e.c} }

func TestDefaultClassifierTransport(t *testing.T) {
	refused := &url.Error{Op: "Post", URL: "http://127.0.0.1:1", Err: &net.OpError{Op: "dial", Net: "tcp",
		Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}
	reset := &url.Error{Op: "Post", URL: "http://127.0.0.1:1", Err: &net.OpError{Op: "read", Net: "tcp",
		Err: os.NewSyscallError("read", syscall.ECONNRESET)}}
	cases := []struct {
		name              string
		err               error
		plain, idempotent retry.Action
	}{
		{"refused", refused, retry.Retry, retry.Retry},
		{"reset", reset, retry.Stop, retry.Retry},
		{"EOF mid-call", &url.Error{Op: "Get", URL: "http://x", Err: io.EOF}, retry.Stop, retry.Retry},
		{"HTTP 503", httpStatus(503), retry.Retry, retry.Retry},
		{"HTTP 429", fmt.Errorf("decode: %w", httpStatus(429)), retry.Retry, retry.Retry},
		{"HTTP 502", httpStatus(502), retry.Stop, retry.Retry},
		{"HTTP 504", httpStatus(504), retry.Stop, retry.RetryAfterBackoff},
		{"HTTP 500", httpStatus(500), retry.Stop, retry.Stop},
		{"HTTP 404", httpStatus(404), retry.Stop, retry.Stop},
		{"gRPC UNAVAILABLE", grpcLike{14}, retry.Retry, retry.Retry},
		{"gRPC RESOURCE_EXHAUSTED", grpcLike{8}, retry.Retry, retry.Retry},
		{"gRPC DEADLINE_EXCEEDED", grpcLike{4}, retry.Stop, retry.RetryAfterBackoff},
		{"gRPC INTERNAL", grpcLike{13}, retry.Stop, retry.Stop},
		{"gRPC INVALID_ARGUMENT", grpcLike{3}, retry.Stop, retry.Stop},
		{"decoder EOF", io.EOF, retry.Stop, retry.Stop},
		// The transport contract comes first: a Retryable error that also
		// carries a status is judged by Retryable.
		{"retryable with 500", retryableStatus{true, 500}, retry.Retry, retry.Retry},
		{"not retryable with 503", retryableStatus{false, 503}, retry.Stop, retry.Stop},
	}
	for _, c := range cases {
		if got := retry.DefaultClassifier(c.err, false); got != c.plain {
			t.Errorf("%s: DefaultClassifier(%v, false) = %v, want %v", c.name, c.err, got, c.plain)
		}
		if got := retry.DefaultClassifier(c.err, true); got != c.idempotent {
			t.Errorf("%s: DefaultClassifier(%v, true) = %v, want %v", c.name, c.err, got, c.idempotent)
		}
	}
}

type retryableStatus struct {
	retryable bool
	code      int
}

func (e retryableStatus) Error() string   { return "status" }
func (e retryableStatus) Retryable() bool { return e.retryable }
func (e retryableStatus) StatusCode() int { return e.code }

// orderBalancer picks the first of its instances not tried yet.
type orderBalancer struct {
	names []string
	eps   map[string]endpoint.Endpoint
}

func (b *orderBalancer) Endpoint() (endpoint.Endpoint, error) {
	p, err := b.Pick(context.Background(), nil)
	return p.Endpoint, err
}

func (b *orderBalancer) Pick(_ context.Context, tried []string) (lb.Pick, error) {
	for _, n := range b.names {
		if !slices.Contains(tried, n) {
			return lb.Pick{Instance: n, Endpoint: b.eps[n]}, nil
		}
	}
	return lb.Pick{Instance: b.names[0], Endpoint: b.eps[b.names[0]]}, nil
}

// httpEndpoint is a go-kit HTTP client endpoint for POST {base}/echo whose
// decoder returns an httpStatus for a non-2xx answer.
func httpEndpoint(t *testing.T, base string, client *http.Client) endpoint.Endpoint {
	t.Helper()
	u, err := url.Parse(base + "/echo")
	if err != nil {
		t.Fatal(err)
	}
	return httptransport.NewClient(http.MethodPost, u,
		func(_ context.Context, r *http.Request, req any) error {
			r.Body = io.NopCloser(strings.NewReader(req.(string)))
			return nil
		},
		func(_ context.Context, r *http.Response) (any, error) {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				return nil, err
			}
			if r.StatusCode != http.StatusOK {
				return nil, httpStatus(r.StatusCode)
			}
			return string(body), nil
		},
		httptransport.SetClient(client),
	).Endpoint()
}

// refusingAddr is a loopback address nothing listens on.
func refusingAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// A call that is not idempotent moves off an instance that refuses the
// connection (a crashed instance the registry still lists) to one that
// answers, and each instance served at most what it should.
func TestRetryMovesOffRefusingHTTPInstance(t *testing.T) {
	var served atomic.Int64
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		io.Copy(w, r.Body)
	}))
	defer good.Close()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()

	dead := "http://" + refusingAddr(t)
	b := &orderBalancer{names: []string{dead, good.URL}, eps: map[string]endpoint.Endpoint{
		dead:     httpEndpoint(t, dead, client),
		good.URL: httpEndpoint(t, good.URL, client),
	}}
	var mu sync.Mutex
	var attempts []retry.Attempt
	e, err := retry.New(b, retry.WithObserver(func(_ context.Context, attempt int, instance string, delay time.Duration, err error) {
		mu.Lock()
		attempts = append(attempts, retry.Attempt{Number: attempt, Instance: instance, Delay: delay, Err: err})
		mu.Unlock()
	}))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e(context.Background(), "hello")
	if err != nil {
		t.Fatalf("call failed: %v", err)
	}
	if resp != "hello" {
		t.Fatalf("response %q", resp)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(attempts) != 2 || attempts[0].Instance != dead || attempts[0].Err == nil ||
		attempts[1].Instance != good.URL || attempts[1].Err != nil {
		t.Fatalf("attempts %+v, want a refused one on %s then a success on %s", attempts, dead, good.URL)
	}
	if served.Load() != 1 {
		t.Fatalf("served %d times", served.Load())
	}
}

// An instance that dies with the request read (its connection cut) may
// have processed it: a call that is not idempotent comes back failed and
// is not sent again; an idempotent one moves on.
func TestRetryHTTPCutMidCall(t *testing.T) {
	var cutSeen atomic.Int64
	cut := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cutSeen.Add(1)
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
	}))
	defer cut.Close()
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.Copy(w, r.Body) }))
	defer good.Close()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	b := &orderBalancer{names: []string{cut.URL, good.URL}, eps: map[string]endpoint.Endpoint{
		cut.URL:  httpEndpoint(t, cut.URL, client),
		good.URL: httpEndpoint(t, good.URL, client),
	}}

	plain, err := retry.New(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain(context.Background(), "once"); err == nil {
		t.Fatal("a call cut mid-flight was retried elsewhere though not idempotent")
	}
	if n := cutSeen.Load(); n != 1 {
		t.Fatalf("the cutting instance saw the call %d times, want 1", n)
	}

	idem, err := retry.New(b, retry.WithIdempotent())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := idem(context.Background(), "twice")
	if err != nil || resp != "twice" {
		t.Fatalf("idempotent call: %v, %v", resp, err)
	}
}

// HTTP statuses: 503 moves on, 500 and 404 stop at the first instance.
func TestRetryHTTPStatuses(t *testing.T) {
	for _, c := range []struct {
		status int
		moves  bool
	}{{503, true}, {429, true}, {500, false}, {404, false}} {
		t.Run(fmt.Sprint(c.status), func(t *testing.T) {
			var failing atomic.Int64
			bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				failing.Add(1)
				w.WriteHeader(c.status)
			}))
			defer bad.Close()
			good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.Copy(w, r.Body) }))
			defer good.Close()
			client := &http.Client{Transport: &http.Transport{}}
			defer client.CloseIdleConnections()
			b := &orderBalancer{names: []string{bad.URL, good.URL}, eps: map[string]endpoint.Endpoint{
				bad.URL:  httpEndpoint(t, bad.URL, client),
				good.URL: httpEndpoint(t, good.URL, client),
			}}
			e, err := retry.New(b)
			if err != nil {
				t.Fatal(err)
			}
			_, err = e(context.Background(), "x")
			if c.moves && err != nil {
				t.Fatalf("status %d: not moved on: %v", c.status, err)
			}
			if !c.moves {
				var st httpStatus
				if !errors.As(err, &st) || int(st) != c.status {
					t.Fatalf("status %d: got %v, want the status back", c.status, err)
				}
			}
			if failing.Load() != 1 {
				t.Fatalf("the failing instance was called %d times", failing.Load())
			}
		})
	}
}
