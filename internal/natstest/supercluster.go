package natstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Domains of a supercluster's JetStream and of its leaf node.
const (
	DefaultHubDomain  = "hub"
	DefaultLeafDomain = "edge"
)

// SuperclusterConfig shapes a supercluster. The zero value is two one-node
// regions, "east" and "west", in JetStream domain DefaultHubDomain, and no
// leaf node.
type SuperclusterConfig struct {
	// Regions are the clusters joined by gateways; empty means east and
	// west, one node each. Every node of every region is one peer of the
	// supercluster's single JetStream meta group.
	Regions []RegionConfig
	// HubDomain is the JetStream domain of the supercluster; empty means
	// DefaultHubDomain. A leaf node with a domain of its own reaches the
	// supercluster's JetStream through it.
	HubDomain string
	// Leaf, when true, runs a leaf node with a JetStream domain of its own
	// (LeafDomain, default DefaultLeafDomain) attached to the first node of
	// LeafHub (default: the first region).
	Leaf       bool
	LeafDomain string
	LeafHub    string
	// Debug routes the servers' logs to stderr.
	Debug bool
}

// RegionConfig is one cluster of a supercluster.
type RegionConfig struct {
	Name  string
	Nodes int // 0 means 1
}

// Region is one cluster of a supercluster: a gateway, named Name.
type Region struct {
	Name string
	*Cluster
}

// Supercluster is clusters joined by gateways over loopback TCP, sharing one
// JetStream (one meta group, in HubDomain), and optionally a leaf node with
// a JetStream domain of its own. Every node listens on fixed ports, so a
// stopped node comes back on the same ones with its store and its gateway,
// route and leaf connections are re-established.
type Supercluster struct {
	Regions    []*Region
	Leaf       *Server // nil without a leaf
	HubDomain  string
	LeafDomain string
	leafHub    *Server
	dir        string
}

// RunSupercluster starts a supercluster and returns once it is ready (see
// Ready).
func RunSupercluster(cfg SuperclusterConfig) (*Supercluster, error) {
	if len(cfg.Regions) == 0 {
		cfg.Regions = []RegionConfig{{Name: "east"}, {Name: "west"}}
	}
	if cfg.HubDomain == "" {
		cfg.HubDomain = DefaultHubDomain
	}
	if cfg.LeafDomain == "" {
		cfg.LeafDomain = DefaultLeafDomain
	}
	if cfg.LeafHub == "" {
		cfg.LeafHub = cfg.Regions[0].Name
	}
	names := map[string]bool{}
	total := 0
	for i := range cfg.Regions {
		r := &cfg.Regions[i]
		if r.Nodes == 0 {
			r.Nodes = 1
		}
		if r.Name == "" || names[r.Name] || r.Nodes < 0 {
			return nil, fmt.Errorf("natstest: region %d: name %q, %d nodes", i, r.Name, r.Nodes)
		}
		names[r.Name] = true
		total += r.Nodes
	}
	if cfg.Leaf && !names[cfg.LeafHub] {
		return nil, fmt.Errorf("natstest: leaf hub %q is not a region", cfg.LeafHub)
	}
	dir, err := os.MkdirTemp("", "kitnats-super-")
	if err != nil {
		return nil, fmt.Errorf("natstest: supercluster dir: %w", err)
	}
	sc := &Supercluster{HubDomain: cfg.HubDomain, dir: dir}
	// Every node's client, route, gateway and leaf ports, and the leaf's
	// client port, are known before any node starts: each lists the others.
	ports, err := freePorts(4*total + 1)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	type node struct{ client, route, gateway, leaf int }
	nodes := make([][]node, len(cfg.Regions))
	next := 0
	for i, r := range cfg.Regions {
		for range r.Nodes {
			nodes[i] = append(nodes[i], node{ports[next], ports[next+1], ports[next+2], ports[next+3]})
			next += 4
		}
	}
	var gateways []*server.RemoteGatewayOpts
	for i, r := range cfg.Regions {
		g := &server.RemoteGatewayOpts{Name: r.Name}
		for _, n := range nodes[i] {
			g.URLs = append(g.URLs, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", n.gateway)})
		}
		gateways = append(gateways, g)
	}
	var all []*Server
	for i, rc := range cfg.Regions {
		var routes []*url.URL
		for _, n := range nodes[i] {
			routes = append(routes, &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", n.route)})
		}
		rdir := filepath.Join(dir, rc.Name)
		region := &Region{Name: rc.Name, Cluster: &Cluster{dir: rdir}}
		for j, n := range nodes[i] {
			name := fmt.Sprintf("%s-%d", rc.Name, j+1)
			o := baseOptions(name, n.client, filepath.Join(rdir, name), cfg.Debug)
			o.JetStreamDomain = cfg.HubDomain
			o.Cluster = server.ClusterOpts{Name: rc.Name, Host: "127.0.0.1", Port: n.route}
			o.Routes = routes // a node ignores the route to itself
			o.Gateway = server.GatewayOpts{Name: rc.Name, Host: "127.0.0.1", Port: n.gateway, Gateways: gateways}
			if cfg.Leaf && rc.Name == cfg.LeafHub && j == 0 {
				o.LeafNode = server.LeafNodeOpts{Host: "127.0.0.1", Port: n.leaf}
			}
			s := &Server{opts: o}
			region.Nodes = append(region.Nodes, s)
			all = append(all, s)
		}
		sc.Regions = append(sc.Regions, region)
	}
	// Nodes start together: a clustered node waits for its peers.
	errs := make(chan error, len(all))
	for _, s := range all {
		go func() { errs <- s.startLocked() }()
	}
	var first error
	for range all {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		sc.Shutdown()
		return nil, first
	}
	if cfg.Leaf {
		hub := sc.Region(cfg.LeafHub).Nodes[0]
		sc.leafHub = hub
		o := baseOptions("leaf", ports[4*total], filepath.Join(dir, "leaf"), cfg.Debug)
		o.JetStreamDomain = cfg.LeafDomain
		o.LeafNode = server.LeafNodeOpts{
			ReconnectInterval: 50 * time.Millisecond,
			Remotes: []*server.RemoteLeafOpts{{
				URLs: []*url.URL{{Scheme: "nats-leaf", Host: fmt.Sprintf("127.0.0.1:%d", hub.opts.LeafNode.Port)}},
			}},
		}
		sc.Leaf = &Server{opts: o}
		sc.LeafDomain = cfg.LeafDomain
		if err := sc.Leaf.startLocked(); err != nil {
			sc.Leaf = nil
			sc.Shutdown()
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := sc.Ready(ctx); err != nil {
		sc.Shutdown()
		return nil, err
	}
	return sc, nil
}

// StartSupercluster runs a supercluster for a test and shuts it down when
// the test ends.
func StartSupercluster(tb testing.TB, cfg SuperclusterConfig) *Supercluster {
	tb.Helper()
	sc, err := RunSupercluster(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(sc.Shutdown)
	return sc
}

func baseOptions(name string, port int, store string, debug bool) server.Options {
	return server.Options{
		ServerName: name,
		Host:       "127.0.0.1",
		Port:       port,
		NoLog:      !debug,
		Debug:      debug,
		NoSigs:     true,
		JetStream:  true,
		StoreDir:   store,
		// Leaf nodes beside gateways need a system account.
		SystemAccount:      server.DEFAULT_SYSTEM_ACCOUNT,
		Accounts:           []*server.Account{server.NewAccount(server.DEFAULT_SYSTEM_ACCOUNT)},
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  1 << 30,
	}
}

// startLocked starts a Server built with fixed options.
func (s *Server) startLocked() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.start()
}

// Region returns the region named name, or nil.
func (sc *Supercluster) Region(name string) *Region {
	for _, r := range sc.Regions {
		if r.Name == name {
			return r
		}
	}
	return nil
}

// Hub is the node the leaf node connects to; nil without a leaf.
func (sc *Supercluster) Hub() *Server { return sc.leafHub }

// Nodes are every node of every region (not the leaf).
func (sc *Supercluster) Nodes() []*Server {
	var out []*Server
	for _, r := range sc.Regions {
		out = append(out, r.Nodes...)
	}
	return out
}

// Ready returns once every running node is ready: each has its gateways to
// every other region with a running node, in and out; the JetStream meta
// leader counts every running node a current, online peer; the leaf node,
// if it and its hub run, is connected; JetStream answers in every region,
// and each side of the leaf connection answers the other through its
// domain. It waits, checking every 25 ms, until ctx ends.
// After a stopped node is started again, Ready says when the supercluster
// has healed.
func (sc *Supercluster) Ready(ctx context.Context) error {
	var last error
	for {
		if last = sc.check(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("natstest: supercluster not ready: %w (%v)", ctx.Err(), last)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func (sc *Supercluster) check(ctx context.Context) error {
	running := map[string]int{} // region → running nodes
	var nodes []*server.Server
	for _, r := range sc.Regions {
		for _, n := range r.Nodes {
			if srv := n.NATSServer(); srv != nil {
				running[r.Name]++
				nodes = append(nodes, srv)
			}
		}
	}
	// Every running node has its outbound gateway to every other region;
	// every running node of a region reaches each other region inbound
	// (a node connects to one node of each region, not to each).
	for _, r := range sc.Regions {
		inbound := map[string]int{}
		for _, n := range r.Nodes {
			srv := n.NATSServer()
			if srv == nil {
				continue
			}
			gz, err := srv.Gatewayz(nil)
			if err != nil {
				return err
			}
			for other, count := range running {
				if other == r.Name || count == 0 {
					continue
				}
				if _, ok := gz.OutboundGateways[other]; !ok {
					return fmt.Errorf("%s: no outbound gateway to %s", srv.Name(), other)
				}
				inbound[other] += len(gz.InboundGateways[other])
			}
		}
		if running[r.Name] == 0 {
			continue
		}
		for other, count := range running {
			if other != r.Name && count > 0 && inbound[other] < count {
				return fmt.Errorf("%s: %d inbound gateways from %s, want %d", r.Name, inbound[other], other, count)
			}
		}
	}
	if err := metaReady(nodes); err != nil {
		return err
	}
	// JetStream answers in every region with a running node.
	for _, r := range sc.Regions {
		for _, n := range r.Nodes {
			if n.Running() {
				if err := answers(ctx, n.URL(), sc.HubDomain); err != nil {
					return fmt.Errorf("JetStream from %s: %w", n.Name(), err)
				}
				break
			}
		}
	}
	if sc.Leaf == nil {
		return nil
	}
	leaf, hub := sc.Leaf.NATSServer(), sc.leafHub.NATSServer()
	if leaf == nil || hub == nil {
		return nil
	}
	if leaf.NumLeafNodes() == 0 || hub.NumLeafNodes() == 0 {
		return errors.New("leaf node not connected")
	}
	// Each side's JetStream through the other's domain.
	for _, p := range []struct {
		url, domain string
	}{{sc.Leaf.URL(), sc.HubDomain}, {sc.leafHub.URL(), sc.LeafDomain}, {sc.Leaf.URL(), sc.LeafDomain}} {
		if err := answers(ctx, p.url, p.domain); err != nil {
			return fmt.Errorf("JetStream domain %s from %s: %w", p.domain, p.url, err)
		}
	}
	return nil
}

// metaReady checks that one of nodes leads the meta group and counts every
// other one a current, online peer.
func metaReady(nodes []*server.Server) error {
	if len(nodes) == 0 {
		return nil
	}
	want := map[string]bool{}
	for _, srv := range nodes {
		want[srv.Name()] = true
	}
	for _, srv := range nodes {
		info, err := srv.Jsz(nil)
		if err != nil || info.Meta == nil || info.Meta.Leader != srv.Name() {
			continue
		}
		seen := 0
		for _, p := range info.Meta.Replicas {
			if want[p.Name] {
				if !p.Current || p.Offline {
					return fmt.Errorf("meta peer %s not current", p.Name)
				}
				seen++
			}
		}
		if seen < len(nodes)-1 {
			return fmt.Errorf("meta leader %s counts %d of %d peers", srv.Name(), seen, len(nodes)-1)
		}
		return nil
	}
	return errors.New("no JetStream meta leader")
}

// answers asks the JetStream of domain for its account info over a fresh
// connection to url.
func answers(ctx context.Context, url, domain string) error {
	nc, err := nats.Connect(url, nats.MaxReconnects(0))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.NewWithDomain(nc, domain)
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	info, err := js.AccountInfo(actx)
	if err != nil {
		return err
	}
	if info.Domain != domain {
		return fmt.Errorf("answered by domain %q", info.Domain)
	}
	return nil
}

// URL lists the client URLs of every node of every region, comma-separated.
func (sc *Supercluster) URL() string {
	var urls []string
	for _, r := range sc.Regions {
		urls = append(urls, r.URL())
	}
	return strings.Join(urls, ",")
}

// Shutdown stops every node and the leaf, and removes their stores.
// Idempotent.
func (sc *Supercluster) Shutdown() {
	// Stop every node before waiting out the source setups: a setup of one
	// node waits for another's answer.
	if sc.Leaf != nil {
		sc.Leaf.Stop()
	}
	for _, r := range sc.Regions {
		for _, n := range r.Nodes {
			n.Stop()
		}
	}
	os.RemoveAll(sc.dir)
	waitSourceSetups(40 * time.Second)
}

// waitSourceSetups waits, at most d, for nats-server's goroutines that wait
// for the answer to a stream source's (or mirror's) consumer request: they
// end only with the answer or their timeout (5 s for a durable consumer,
// 30 s otherwise), not when the server shuts down, and goleak would count
// them against the test. Servers' Shutdown calls it, once stopped.
func waitSourceSetups(d time.Duration) {
	deadline := time.Now().Add(d)
	buf := make([]byte, 1<<20)
	for time.Now().Before(deadline) {
		for {
			n := runtime.Stack(buf, true)
			if n < len(buf) {
				buf = buf[:n]
				break
			}
			buf = make([]byte, 2*len(buf))
		}
		if !bytes.Contains(buf, []byte("server.(*stream).trySetupSourceConsumer.func")) &&
			!bytes.Contains(buf, []byte("server.(*stream).setupMirrorConsumer.func")) {
			return
		}
		buf = buf[:cap(buf)]
		time.Sleep(50 * time.Millisecond)
	}
}
