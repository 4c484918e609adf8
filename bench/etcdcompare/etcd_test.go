package etcdcompare

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/etcdv3"
	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/aegis-sdk/kitnats/sd/natskv/internal/scale"
)

// etcdBackend is go-kit's etcdv3 Instancer over an embedded etcd: keys
// /services/{service}/{instance}, the instance string their value, one
// go-kit client for every Instancer as a process would have.
type etcdBackend struct {
	cli   *clientv3.Client // writes and the raw watch
	kit   etcdv3.Client
	names map[string]bool
}

func freeURL(tb testing.TB) url.URL {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return url.URL{Scheme: "http", Host: l.Addr().String()}
}

func startEtcd(tb testing.TB) *etcdBackend {
	cfg := embed.NewConfig()
	cfg.Dir = tb.TempDir()
	// Like JetStream's file store, which does not sync every write either:
	// the comparison is of the watch, not of the disk.
	cfg.UnsafeNoFsync = true
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cu, pu := freeURL(tb), freeURL(tb)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		tb.Fatal("etcd not ready")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{cu.String()}, DialTimeout: 5 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	kit, err := etcdv3.NewClient(ctx, []string{cu.String()}, etcdv3.ClientOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	return &etcdBackend{cli: cli, kit: kit}
}

func prefix(svc string) string { return "/services/" + svc + "/" }

func key(svc string, id int) string { return fmt.Sprintf("%si%d", prefix(svc), id) }

func value(id int) string { return fmt.Sprintf("10.0.%d.%d:8080", id/250, id%250) }

func (e *etcdBackend) Fill(ctx context.Context, services []string, per int) error {
	var ops []clientv3.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		_, err := e.cli.Txn(ctx).Then(ops...).Commit()
		ops = ops[:0]
		return err
	}
	for _, svc := range services {
		for id := range per {
			ops = append(ops, clientv3.OpPut(key(svc, id), value(id)))
			if len(ops) == 100 { // under etcd's 128 operations per transaction
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	return flush()
}

// Set registers instance 0 (healthy) or deregisters it: go-kit's etcd
// registry has no status, an instance is there or not.
func (e *etcdBackend) Set(ctx context.Context, svc string, healthy bool) error {
	var err error
	if healthy {
		_, err = e.cli.Put(ctx, key(svc, 0), value(0))
	} else {
		_, err = e.cli.Delete(ctx, key(svc, 0))
	}
	return err
}

func (e *etcdBackend) NewInstancer(svc string) (sd.Instancer, error) {
	return etcdv3.NewInstancer(e.kit, prefix(svc), log.NewNopLogger())
}

// ServerWatches is etcd's count of watchers (the server is in-process).
func (e *etcdBackend) ServerWatches(context.Context) (int, error) {
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		return 0, err
	}
	for _, mf := range mfs {
		if mf.GetName() == "etcd_debugging_mvcc_watcher_total" && len(mf.GetMetric()) > 0 {
			return int(mf.GetMetric()[0].GetGauge().GetValue()), nil
		}
	}
	return 0, fmt.Errorf("no watcher gauge")
}

func (e *etcdBackend) RawWatch(ctx context.Context, svc string) (<-chan struct{}, func(), error) {
	wctx, cancel := context.WithCancel(ctx)
	wch := e.cli.Watch(wctx, prefix(svc), clientv3.WithPrefix())
	out := make(chan struct{}, 1)
	go func() {
		for wr := range wch {
			for range wr.Events {
				select {
				case out <- struct{}{}:
				case <-wctx.Done():
					return
				}
			}
		}
	}()
	return out, cancel, nil
}

// BenchmarkInstancerScale: the fleet scenario over natskv and over go-kit's
// etcdv3, one after the other in the same run. Each reports the scenario's
// metrics (see internal/scale); raw-p50/p99 is the backend's own client
// watch (nats.go KV watch, etcd clientv3 Watch).
func BenchmarkInstancerScale(b *testing.B) {
	b.Run("kitnats", func(b *testing.B) {
		for range b.N {
			scale.Run(b, scale.StartNATS(b), scale.DefaultConfig).Report(b)
		}
	})
	b.Run("etcdv3", func(b *testing.B) {
		for range b.N {
			scale.Run(b, startEtcd(b), scale.DefaultConfig).Report(b)
		}
	})
}
