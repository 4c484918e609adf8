package natstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// readyTimeout bounds how long a node may take to accept client connections.
const readyTimeout = 10 * time.Second

// Server is one embedded nats-server with JetStream, restartable on the same
// port and store directory. It is safe for concurrent use.
type Server struct {
	mu     sync.Mutex
	opts   server.Options // the options every (re)start uses; Port is fixed after the first start
	srv    *server.Server // nil while stopped
	ownDir bool           // whether Shutdown removes opts.StoreDir
}

// Config tunes a server. The zero value is a single JetStream node on a random
// loopback port with a fresh temporary store.
type Config struct {
	// StoreDir is the JetStream store directory. Empty means a new temporary
	// directory, removed by Shutdown.
	StoreDir string
	// Port is the client port; 0 picks a free one.
	Port int
	// ServerName names the node; empty lets the server choose.
	ServerName string
	// Cluster, when non-nil, joins the node to a cluster.
	Cluster *ClusterConfig
	// Debug routes the server's own log to stderr.
	Debug bool
}

// ClusterConfig is a node's membership in a cluster.
type ClusterConfig struct {
	Name   string
	Port   int      // this node's route port
	Routes []string // every node's route URL, "nats-route://127.0.0.1:port"
}

// Run starts a server and waits until it accepts connections.
func Run(cfg Config) (*Server, error) {
	s := &Server{}
	s.opts = server.Options{
		ServerName: cfg.ServerName,
		Host:       "127.0.0.1",
		Port:       cfg.Port,
		NoLog:      !cfg.Debug,
		NoSigs:     true,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		// Keep JetStream's reservations small: tests run many servers at once.
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  1 << 30,
	}
	if cfg.Debug {
		s.opts.Debug = true
	}
	if s.opts.Port == 0 {
		s.opts.Port = server.RANDOM_PORT
	}
	if s.opts.StoreDir == "" {
		dir, err := os.MkdirTemp("", "kitnats-js-")
		if err != nil {
			return nil, fmt.Errorf("natstest: store dir: %w", err)
		}
		s.opts.StoreDir = dir
		s.ownDir = true
	}
	if c := cfg.Cluster; c != nil {
		s.opts.Cluster = server.ClusterOpts{Name: c.Name, Host: "127.0.0.1", Port: c.Port}
		s.opts.Routes = server.RoutesFromStr(strings.Join(c.Routes, ","))
	}
	if err := s.start(); err != nil {
		s.removeDir()
		return nil, err
	}
	return s, nil
}

// Start runs a single-node server for a test and shuts it down when the test
// ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := Run(Config{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Shutdown)
	return s
}

func (s *Server) start() error {
	opts := s.opts // nats-server keeps and mutates the pointer it is given
	srv, err := server.NewServer(&opts)
	if err != nil {
		return fmt.Errorf("natstest: new server: %w", err)
	}
	if s.opts.Debug {
		srv.ConfigureLogger()
	}
	go srv.Start()
	if !srv.ReadyForConnections(readyTimeout) {
		srv.Shutdown()
		return errors.New("natstest: server not ready for connections")
	}
	// Pin the port chosen on the first start, so restarts come back on it
	// and clients configured with the URL reconnect.
	s.opts.Port = srv.Addr().(*net.TCPAddr).Port
	s.srv = srv
	return nil
}

// URL is the client URL, "nats://127.0.0.1:port". It stays valid across
// restarts.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("nats://127.0.0.1:%d", s.opts.Port)
}

// Name is the server's name (its JetStream node name in a cluster).
func (s *Server) Name() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return s.srv.Name()
	}
	return s.opts.ServerName
}

// StoreDir is the JetStream store directory.
func (s *Server) StoreDir() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opts.StoreDir
}

// Running reports whether the server is up.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv != nil
}

// NATSServer exposes the underlying server, nil while stopped.
func (s *Server) NATSServer() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv
}

// Stop shuts the server down but keeps its store, so Restart (or
// StartAgain) brings the same data back. Stopping a stopped server is a no-op.
func (s *Server) Stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// StartAgain starts a stopped server on the same port and store.
func (s *Server) StartAgain() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return nil
	}
	// The port may linger in TIME_WAIT for a moment on some kernels; retry.
	var err error
	for range 50 {
		if err = s.start(); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return err
}

// Restart stops the server and starts it again on the same port and store.
func (s *Server) Restart() error {
	s.Stop()
	return s.StartAgain()
}

// Shutdown stops the server for good and removes a temporary store. It is
// idempotent.
func (s *Server) Shutdown() {
	s.Stop()
	s.removeDir()
	waitSourceSetups(40 * time.Second) // supercluster.go
}

func (s *Server) removeDir() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ownDir {
		os.RemoveAll(s.opts.StoreDir)
		s.ownDir = false
	}
}

// Connect dials the server over TCP with options that suit tests: reconnect
// forever with a short wait, so a connection follows a restart. Extra options
// are applied after these. In a test, the connection is closed at cleanup.
func Connect(tb testing.TB, url string, opts ...nats.Option) *nats.Conn {
	tb.Helper()
	nc, err := Dial(url, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// Dial is Connect for programs: it returns an error instead of failing a test.
func Dial(url string, opts ...nats.Option) (*nats.Conn, error) {
	base := []nats.Option{
		nats.MaxReconnects(-1),
		nats.ReconnectWait(25 * time.Millisecond),
		nats.ReconnectJitter(0, 0),
		nats.RetryOnFailedConnect(false),
	}
	nc, err := nats.Connect(url, append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("natstest: connect %s: %w", url, err)
	}
	return nc, nil
}

// JetStream is a convenience that wraps a connection in the jetstream API.
func JetStream(tb testing.TB, nc *nats.Conn) jetstream.JetStream {
	tb.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return js
}

// WaitJetStream blocks until the JetStream API answers on nc (in a cluster:
// a meta leader is elected), or ctx ends.
func WaitJetStream(ctx context.Context, nc *nats.Conn) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := js.AccountInfo(actx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("natstest: JetStream not ready: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
