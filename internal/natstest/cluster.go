package natstest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Cluster is a JetStream cluster of embedded nodes on loopback.
type Cluster struct {
	Nodes []*Server
	dir   string
}

// RunCluster starts an n-node JetStream cluster (n ≥ 3 for R3 streams) and
// waits until it has a meta leader.
func RunCluster(n int) (*Cluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("natstest: cluster of %d nodes", n)
	}
	dir, err := os.MkdirTemp("", "kitnats-cluster-")
	if err != nil {
		return nil, fmt.Errorf("natstest: cluster dir: %w", err)
	}
	c := &Cluster{dir: dir}
	// Route ports must be known before any node starts, since every node
	// lists all routes; client ports are pinned too, so URLs are stable.
	ports, err := freePorts(2 * n)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	routes := make([]string, n)
	for i := range n {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", ports[n+i])
	}
	errs := make(chan error, n)
	c.Nodes = make([]*Server, n)
	for i := range n {
		go func() {
			s, err := Run(Config{
				ServerName: fmt.Sprintf("n%d", i+1),
				Port:       ports[i],
				StoreDir:   filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
				Cluster:    &ClusterConfig{Name: "kitnats", Port: ports[n+i], Routes: routes},
			})
			c.Nodes[i] = s
			errs <- err
		}()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		c.Shutdown()
		return nil, first
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := Dial(c.URL())
	if err != nil {
		c.Shutdown()
		return nil, err
	}
	defer nc.Close()
	if err := WaitJetStream(ctx, nc); err != nil {
		c.Shutdown()
		return nil, err
	}
	// A meta leader answers before it has heard from every peer; an R3
	// stream created then fails with "no suitable peers for placement".
	if err := c.waitPeers(ctx); err != nil {
		c.Shutdown()
		return nil, err
	}
	return c, nil
}

// waitPeers returns once the meta leader counts every other node a current,
// online peer.
func (c *Cluster) waitPeers(ctx context.Context) error {
	for {
		for _, n := range c.Nodes {
			srv := n.NATSServer()
			if srv == nil {
				continue
			}
			info, err := srv.Jsz(nil)
			if err != nil || info.Meta == nil || info.Meta.Leader != srv.Name() || len(info.Meta.Replicas) < len(c.Nodes)-1 {
				continue
			}
			ready := true
			for _, p := range info.Meta.Replicas {
				ready = ready && p.Current && !p.Offline
			}
			if ready {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("natstest: cluster peers not all online: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// StartCluster runs a cluster for a test and shuts it down when the test ends.
func StartCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	c, err := RunCluster(n)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Shutdown)
	return c
}

// URL lists every node's client URL, comma-separated, as nats.Connect takes it.
func (c *Cluster) URL() string {
	urls := make([]string, 0, len(c.Nodes))
	for _, s := range c.Nodes {
		if s != nil {
			urls = append(urls, s.URL())
		}
	}
	return strings.Join(urls, ",")
}

// Node returns the node with the given server name, or nil.
func (c *Cluster) Node(name string) *Server {
	for _, s := range c.Nodes {
		if s != nil && s.Name() == name {
			return s
		}
	}
	return nil
}

// Shutdown stops every node and removes the cluster's stores. Idempotent.
func (c *Cluster) Shutdown() {
	for _, s := range c.Nodes {
		if s != nil {
			s.Shutdown()
		}
	}
	os.RemoveAll(c.dir)
}

// freePorts reserves n distinct loopback ports by listening and releasing them.
// Another process could take one in between; on a test machine that is rare
// enough, and a failed start says so plainly.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("natstest: reserve port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
