package natstest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// RunConfig starts a single JetStream node configured by conf, the text of
// a nats-server configuration file: accounts, users, their permissions,
// anything the server accepts. The node listens on loopback with a random
// port and a fresh temporary store (removed by Shutdown), whatever conf says
// about them, and logs nothing unless debug. conf must enable JetStream for
// the accounts that use it (`jetstream: enabled` in an account block).
//
// A server started from a configuration is not restartable: nats-server
// keeps state in the accounts it parsed. Use Run for restart scenarios.
func RunConfig(conf string, debug bool) (*Server, error) {
	dir, err := os.MkdirTemp("", "kitnats-js-")
	if err != nil {
		return nil, fmt.Errorf("natstest: store dir: %w", err)
	}
	path := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("natstest: write config: %w", err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("natstest: config: %w", err)
	}
	opts.Host = "127.0.0.1"
	opts.Port = server.RANDOM_PORT
	opts.NoLog = !debug
	opts.Debug = debug
	opts.NoSigs = true
	opts.JetStream = true
	opts.StoreDir = dir // JetStream keeps its data in a subdirectory, beside the configuration
	opts.JetStreamMaxMemory = 256 << 20
	opts.JetStreamMaxStore = 1 << 30
	s := &Server{opts: *opts, ownDir: true}
	if err := s.start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// StartConfig runs RunConfig for a test and shuts the server down when the
// test ends.
func StartConfig(tb testing.TB, conf string) *Server {
	tb.Helper()
	s, err := RunConfig(conf, false)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Shutdown)
	return s
}
