package reach

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
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// statusErr is a go-kit StatusCoder error, as a client decoder returns for
// a non-2xx answer.
type statusErr int

func (e statusErr) Error() string   { return fmt.Sprintf("status %d", int(e)) }
func (e statusErr) StatusCode() int { return int(e) }

// fakeCode, fakeStatus and grpcErr have the shape of grpc-go's codes.Code,
// *status.Status and status error.
type fakeCode uint32

type fakeStatus struct{ c fakeCode }

func (s *fakeStatus) Code() fakeCode { return s.c }

type grpcErr struct{ s *fakeStatus }

func (e *grpcErr) Error() string                { return "rpc error" }
func (e *grpcErr) GRPCStatus() *fakeStatus      { return e.s }
func grpcError(code uint32) error               { return &grpcErr{&fakeStatus{fakeCode(code)}} }
func wrapped(err error) error                   { return fmt.Errorf("call: %w", err) }
func urlErr(err error) error                    { return &url.Error{Op: "Post", URL: "http://x", Err: err} }
func opErr(op string, err error) *net.OpError   { return &net.OpError{Op: op, Net: "tcp", Err: err} }
func sysErr(call string, e syscall.Errno) error { return os.NewSyscallError(call, e) }

// oddStatus has GRPCStatus methods of other shapes: none may be taken for
// a gRPC status.
type oddStatus struct{}

func (oddStatus) Error() string      { return "odd" }
func (oddStatus) GRPCStatus() string { return "UNAVAILABLE" }
func (oddStatus) StatusCode() int    { return 1000 }

type signedCode struct{}

func (signedCode) Code() int { return 14 }

type signedStatus struct{}

func (signedStatus) Error() string           { return "signed" }
func (signedStatus) GRPCStatus() *signedCode { return &signedCode{} }

func TestOf(t *testing.T) {
	var nilGRPC *grpcErr
	cases := []struct {
		name string
		err  error
		want Class
	}{
		{"nil", nil, Unknown},
		{"plain", errors.New("boom"), Unknown},
		{"canceled", wrapped(context.Canceled), Unknown},
		{"canceled in url error", urlErr(context.Canceled), Unknown},
		{"decoder EOF", io.EOF, Unknown},
		{"decoder EOF wrapped", wrapped(io.ErrUnexpectedEOF), Unknown},

		{"http 400", statusErr(400), Answered},
		{"http 404 wrapped", wrapped(statusErr(404)), Answered},
		{"http 422", statusErr(422), Answered},
		{"http 200", statusErr(200), Answered},
		{"http 408", statusErr(408), Unreached},
		{"http 429", statusErr(429), Unreached},
		{"http 503", statusErr(503), Unreached},
		{"http 503 joined", errors.Join(errors.New("x"), statusErr(503)), Unreached},
		{"http 502", statusErr(502), Cut},
		{"http 504", statusErr(504), Timeout},
		{"http 500", statusErr(500), Failed},
		{"http 501", statusErr(501), Failed},
		{"http 599", statusErr(599), Failed},
		{"http 600", statusErr(600), Unknown},
		{"http 0", statusErr(0), Unknown},
		{"http -1", statusErr(-1), Unknown},

		{"grpc unavailable", grpcError(14), Unreached},
		{"grpc resource exhausted", grpcError(8), Unreached},
		{"grpc deadline", grpcError(4), Timeout},
		{"grpc internal", grpcError(13), Failed},
		{"grpc unknown", grpcError(2), Failed},
		{"grpc data loss", grpcError(15), Failed},
		{"grpc invalid argument", grpcError(3), Answered},
		{"grpc not found wrapped", wrapped(grpcError(5)), Answered},
		{"grpc unimplemented", grpcError(12), Answered},
		{"grpc unauthenticated", grpcError(16), Answered},
		{"grpc ok", grpcError(0), Unknown},
		{"grpc canceled", grpcError(1), Unknown},
		{"grpc future code", grpcError(17), Unknown},
		{"grpc huge code", grpcError(1<<32 - 1), Unknown},
		{"grpc nil status", &grpcErr{}, Unknown},
		{"grpc nil error", nilGRPC, Unknown},
		{"grpc joined", errors.Join(errors.New("a"), wrapped(grpcError(14))), Unreached},
		{"grpc before http", wrapped(errors.Join(grpcError(3), statusErr(503))), Answered},
		{"odd shapes", oddStatus{}, Unknown},
		{"signed code", signedStatus{}, Unknown},

		{"refused", urlErr(opErr("dial", sysErr("connect", syscall.ECONNREFUSED))), Unreached},
		{"refused bare", sysErr("connect", syscall.ECONNREFUSED), Unreached},
		{"dial unreachable", urlErr(opErr("dial", sysErr("connect", syscall.EHOSTUNREACH))), Unreached},
		{"dial timeout", urlErr(opErr("dial", timeoutErr{})), Unreached},
		{"read timeout", urlErr(opErr("read", timeoutErr{})), Timeout},
		{"deadline", urlErr(context.DeadlineExceeded), Timeout},
		{"reset", urlErr(opErr("read", sysErr("read", syscall.ECONNRESET))), Cut},
		{"broken pipe", urlErr(opErr("write", sysErr("write", syscall.EPIPE))), Cut},
		{"EOF from the client", urlErr(io.EOF), Cut},
		{"unexpected EOF from the client", urlErr(io.ErrUnexpectedEOF), Cut},
		{"other op error", opErr("read", errors.New("weird")), Cut},
		{"other url error", urlErr(errors.New("unsupported protocol scheme")), Unknown},
		{"server closed idle", urlErr(errors.New("http: server closed idle connection")), Unreached},
		{"server closed idle, not from the client", errors.New("http: server closed idle connection"), Unknown},
	}
	for _, c := range cases {
		if got := Of(c.err); got != c.want {
			t.Errorf("%s: Of(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// TestOfRealHTTPClient classifies what net/http's client really returns.
func TestOfRealHTTPClient(t *testing.T) {
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()

	t.Run("refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		_, err = client.Get("http://" + addr + "/")
		if got := Of(err); got != Unreached {
			t.Fatalf("Of(%v) = %v, want unreached", err, got)
		}
	})

	t.Run("cut", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close() // the process died with the request read
			}
		}))
		defer srv.Close()
		req, _ := http.NewRequest(http.MethodPost, srv.URL, nil)
		_, err := client.Do(req)
		if got := Of(err); got != Cut {
			t.Fatalf("Of(%v) = %v, want cut", err, got)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}))
		defer srv.Close()
		defer close(release)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		_, err := client.Do(req)
		if got := Of(err); got != Timeout {
			t.Fatalf("Of(%v) = %v, want timeout", err, got)
		}
	})

	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:1/", nil)
		_, err := client.Do(req)
		if got := Of(err); got != Unknown {
			t.Fatalf("Of(%v) = %v, want unknown", err, got)
		}
	})
}

func TestGRPCCode(t *testing.T) {
	if c, ok := GRPCCode(wrapped(grpcError(14))); !ok || c != 14 {
		t.Fatalf("GRPCCode = %d, %v; want 14, true", c, ok)
	}
	if _, ok := GRPCCode(statusErr(503)); ok {
		t.Fatal("an HTTP status read as a gRPC code")
	}
}

// A chain deeper than maxDepth is walked no further, and ends.
func TestGRPCCodeDeepChain(t *testing.T) {
	err := grpcError(14)
	for range 2 * maxDepth {
		err = wrapped(err)
	}
	if _, ok := GRPCCode(err); ok {
		t.Fatal("walked past maxDepth")
	}
}

func TestClassString(t *testing.T) {
	seen := map[string]bool{}
	for c := Unknown; c <= Failed; c++ {
		s := c.String()
		if seen[s] {
			t.Fatalf("%d and another class both print %q", c, s)
		}
		seen[s] = true
	}
}

func BenchmarkOf(b *testing.B) {
	for _, c := range []struct {
		name string
		err  error
	}{
		{"grpc", wrapped(grpcError(14))},
		{"http-status", wrapped(statusErr(503))},
		{"refused", urlErr(opErr("dial", sysErr("connect", syscall.ECONNREFUSED)))},
		{"unknown", wrapped(errors.New("boom"))},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Of(c.err)
			}
		})
	}
}
