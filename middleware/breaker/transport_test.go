package breaker_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/go-kit/kit/endpoint"
	httptransport "github.com/go-kit/kit/transport/http"
	"github.com/sony/gobreaker/v2"

	"github.com/aegis-sdk/kitnats/middleware/breaker"
)

// httpStatus is what a go-kit HTTP client's decoder returns for a non-2xx
// answer: an error with go-kit's StatusCoder method.
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

func TestIsBusinessErrorTransport(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{httpStatus(400), true},
		{fmt.Errorf("decode: %w", httpStatus(404)), true},
		{httpStatus(422), true},
		{httpStatus(408), false},
		{httpStatus(429), false},
		{httpStatus(500), false},
		{httpStatus(502), false},
		{httpStatus(503), false},
		{httpStatus(504), false},
		{grpcLike{3}, true},  // INVALID_ARGUMENT
		{grpcLike{5}, true},  // NOT_FOUND
		{grpcLike{7}, true},  // PERMISSION_DENIED
		{grpcLike{4}, false}, // DEADLINE_EXCEEDED
		{grpcLike{8}, false}, // RESOURCE_EXHAUSTED
		{grpcLike{13}, false},
		{grpcLike{14}, false},
	} {
		if got := breaker.IsBusinessError(c.err); got != c.want {
			t.Errorf("IsBusinessError(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// httpInstance is a real HTTP server whose answer a test switches: 0
// answers 200, anything else that status; stop closes it, so that calls
// are refused.
type httpInstance struct {
	srv    *httptest.Server
	status atomic.Int64
}

func newHTTPInstance(t *testing.T) *httpInstance {
	in := &httpInstance{}
	in.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s := in.status.Load(); s != 0 {
			w.WriteHeader(int(s))
			return
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(in.srv.Close)
	return in
}

// httpFleet is breaker.Factory over go-kit HTTP client endpoints, one per
// real server.
type httpFleet struct {
	ins     map[string]*httpInstance
	eps     map[string]endpoint.Endpoint
	closers map[string]*breaker.Closer
}

func newHTTPFleet(t *testing.T, n int) *httpFleet {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	fl := &httpFleet{ins: map[string]*httpInstance{}, eps: map[string]endpoint.Endpoint{}, closers: map[string]*breaker.Closer{}}
	f := breaker.Factory(func(instance string) (endpoint.Endpoint, io.Closer, error) {
		u, err := url.Parse(instance)
		if err != nil {
			return nil, nil, err
		}
		return httptransport.NewClient(http.MethodGet, u,
			func(context.Context, *http.Request, any) error { return nil },
			func(_ context.Context, r *http.Response) (any, error) {
				if r.StatusCode != http.StatusOK {
					return nil, httpStatus(r.StatusCode)
				}
				return io.ReadAll(r.Body)
			},
			httptransport.SetClient(client)).Endpoint(), nil, nil
	})
	for range n {
		in := newHTTPInstance(t)
		e, c, err := f(in.srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		fl.ins[in.srv.URL], fl.eps[in.srv.URL], fl.closers[in.srv.URL] = in, e, c.(*breaker.Closer)
		t.Cleanup(func() { c.Close() })
	}
	return fl
}

func (fl *httpFleet) round() {
	for _, e := range fl.eps {
		_, _ = e(context.Background(), nil)
	}
}

func (fl *httpFleet) open() int {
	n := 0
	for _, c := range fl.closers {
		if c.Breaker().State() == gobreaker.StateOpen {
			n++
		}
	}
	return n
}

// One HTTP instance failing (500s, then refusing connections) trips its own
// breaker and no other; 4xx answers trip nothing.
func TestHTTPOneFailingInstanceTrips(t *testing.T) {
	for _, c := range []struct {
		name string
		fail func(*httpInstance)
	}{
		{"500", func(in *httpInstance) { in.status.Store(500) }},
		{"503", func(in *httpInstance) { in.status.Store(503) }},
		{"refused", func(in *httpInstance) { in.srv.Close() }},
	} {
		t.Run(c.name, func(t *testing.T) {
			fl := newHTTPFleet(t, 3)
			var bad string
			for name := range fl.ins {
				bad = name
				break
			}
			c.fail(fl.ins[bad])
			for range breaker.DefaultConsecutiveFailures + 1 {
				fl.round()
			}
			if got := fl.closers[bad].Breaker().State(); got != gobreaker.StateOpen {
				t.Errorf("the failing instance's breaker is %v, want open", got)
			}
			if n := fl.open(); n != 1 {
				t.Errorf("%d breakers open, want 1", n)
			}
		})
	}
	t.Run("4xx", func(t *testing.T) {
		fl := newHTTPFleet(t, 3)
		for _, in := range fl.ins {
			in.status.Store(404)
			break
		}
		for range 3 * breaker.DefaultConsecutiveFailures {
			fl.round()
		}
		if n := fl.open(); n != 0 {
			t.Errorf("%d breakers opened on answers", n)
		}
	})
}

// When every HTTP instance fails the same way at once — every server
// refuses (the client's network is down), or every one answers 503 (a
// dependency they share is down) — no breaker opens: ejecting them all
// would leave nothing to call when they come back.
func TestHTTPNetworkWideOutageTripsNothing(t *testing.T) {
	for _, c := range []struct {
		name string
		fail func(*httpInstance)
	}{
		{"refused", func(in *httpInstance) { in.srv.Close() }},
		{"503", func(in *httpInstance) { in.status.Store(503) }},
		{"500", func(in *httpInstance) { in.status.Store(500) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			fl := newHTTPFleet(t, 3)
			for _, in := range fl.ins {
				c.fail(in)
			}
			for range 20 {
				fl.round()
			}
			if n := fl.open(); n != 0 {
				t.Errorf("%d breakers opened in an outage of every instance", n)
			}
			var excluded uint32
			for _, cl := range fl.closers {
				excluded += cl.Breaker().Counts().TotalExclusions
			}
			if excluded == 0 {
				t.Error("no failure was excused: the outage rule did not apply")
			}
		})
	}
}

// gRPC failures follow the same rules, without grpc-go in the library:
// UNAVAILABLE on every instance trips nothing, INTERNAL on one trips it,
// INVALID_ARGUMENT never trips.
func TestGRPCCodesRules(t *testing.T) {
	// run calls every instance once per round, 20 rounds, and returns the
	// breakers' states.
	run := func(errs map[string]error) map[string]gobreaker.State {
		f := breaker.Factory(func(name string) (endpoint.Endpoint, io.Closer, error) {
			return func(context.Context, any) (any, error) { return nil, errs[name] }, nil, nil
		})
		eps := map[string]endpoint.Endpoint{}
		closers := map[string]*breaker.Closer{}
		for name := range errs {
			e, c, err := f(name)
			if err != nil {
				t.Fatal(err)
			}
			eps[name], closers[name] = e, c.(*breaker.Closer)
			t.Cleanup(func() { c.Close() })
		}
		for range 20 {
			for _, e := range eps {
				_, _ = e(context.Background(), nil)
			}
		}
		states := map[string]gobreaker.State{}
		for name, c := range closers {
			states[name] = c.Breaker().State()
		}
		return states
	}
	closed, open := gobreaker.StateClosed, gobreaker.StateOpen

	if st := run(map[string]error{"a": grpcLike{14}, "b": grpcLike{14}, "c": grpcLike{14}}); st["a"] != closed || st["b"] != closed || st["c"] != closed {
		t.Errorf("UNAVAILABLE everywhere: %v, want all closed", st)
	}
	if st := run(map[string]error{"a": grpcLike{4}, "b": grpcLike{4}, "c": grpcLike{4}}); st["a"] != closed || st["b"] != closed || st["c"] != closed {
		t.Errorf("DEADLINE_EXCEEDED everywhere: %v, want all closed", st)
	}
	if st := run(map[string]error{"a": grpcLike{13}, "b": nil, "c": nil}); st["a"] != open || st["b"] != closed || st["c"] != closed {
		t.Errorf("INTERNAL on a: %v, want a open only", st)
	}
	if st := run(map[string]error{"a": grpcLike{14}, "b": nil, "c": nil}); st["a"] != open || st["b"] != closed {
		t.Errorf("UNAVAILABLE on a: %v, want a open only", st)
	}
	if st := run(map[string]error{"a": grpcLike{3}, "b": nil}); st["a"] != closed {
		t.Errorf("INVALID_ARGUMENT on a: %v, want closed", st)
	}
}
