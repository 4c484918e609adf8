package natskv

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/natserr"
	"github.com/aegis-sdk/kitnats/internal/registry"
	"github.com/aegis-sdk/kitnats/internal/safetext"
	"github.com/aegis-sdk/kitnats/wire"
)

// ErrClosed is returned by a Registrar's calls after Close.
var ErrClosed = errors.New("natskv: registrar closed")

// Registrar registers one instance in a bucket and keeps its record alive: it
// rewrites the record every heartbeat, with a per-write TTL where the bucket
// supports one, re-creates it if it vanished (expired, purged by an operator,
// lost in a server restart) and deletes it on Deregister. It implements
// go-kit's sd.Registrar; the Context variants return errors instead of
// logging them.
type Registrar struct {
	b      *Bucket
	key    string
	logger log.Logger
	opts   registrarOptions
	ttl    time.Duration // 0: the bucket takes no per-write TTL

	lifeMu sync.Mutex // serialises Register, Deregister, SetStatus, Close
	write  sync.Mutex // serialises writes, so the newest state is written last

	mu         sync.Mutex
	inst       Instance
	registered bool
	closed     bool
	cancel     context.CancelFunc
	done       chan struct{}
}

var _ sd.Registrar = (*Registrar)(nil)

// NewRegistrar returns a Registrar for inst in bucket b; nothing is written
// until Register. inst must be valid (EncodeInstance says why not); its
// LastHeartbeat is set on every write, and an empty Status means ACTIVE.
// Options: WithLayout, WithHeartbeat, WithTTL, WithZone,
// WithInstanceSubjects, WithAddress.
func NewRegistrar(b *Bucket, inst Instance, logger log.Logger, opts ...RegistrarOption) (*Registrar, error) {
	o := registrarOptions{commonOptions: defaultCommon()}
	logger, err := configure(b, logger, opts, RegistrarOption.applyRegistrar, &o, &o.commonOptions)
	if err != nil {
		return nil, err
	}
	inst = inst.clone()
	if inst.Status == "" {
		inst.Status = StatusActive
	}
	if inst.Metadata == nil {
		inst.Metadata = map[string]string{}
	}
	if o.zone != "" {
		inst.Metadata[wire.MetadataZone] = o.zone
	}
	if o.instanceSubjects {
		inst.Metadata[wire.MetadataRPC] = wire.RPCInstance
	}
	for transport, addr := range o.addrs {
		inst.Metadata[wire.AddressKey(transport)] = addr
	}
	probe := inst.record()
	probe.LastHeartbeat = time.Now()
	if err := probe.Validate(); err != nil {
		return nil, err
	}
	key, err := o.layout.Key(inst.ServiceName, inst.InstanceID)
	if err != nil {
		return nil, err
	}
	r := &Registrar{
		b:      b,
		key:    key,
		logger: log.With(logger, "service", inst.ServiceName, "instance", inst.InstanceID),
		opts:   o,
		inst:   inst,
	}
	if b.caps.MsgTTL {
		r.ttl = registry.WholeSeconds(o.liveness(0).EffectiveTTL())
	}
	return r, nil
}

// Key is the KV key the record is written under.
func (r *Registrar) Key() string { return r.key }

// TTL is the per-write TTL in use, 0 when the bucket takes none.
func (r *Registrar) TTL() time.Duration { return r.ttl }

// instance returns the record as last written (or to be written).
func (r *Registrar) instance() Instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inst.clone()
}

// Register implements sd.Registrar. Errors are logged; the heartbeat keeps
// retrying in the background.
func (r *Registrar) Register() {
	ctx, cancel := context.WithTimeout(context.Background(), r.writeTimeout())
	defer cancel()
	if err := r.RegisterContext(ctx); err != nil {
		r.logger.Log("action", "register", "err", err)
		return
	}
	r.logger.Log("action", "register")
}

// Deregister implements sd.Registrar. Errors are logged.
func (r *Registrar) Deregister() {
	ctx, cancel := context.WithTimeout(context.Background(), r.writeTimeout())
	defer cancel()
	if err := r.DeregisterContext(ctx); err != nil {
		r.logger.Log("action", "deregister", "err", err)
		return
	}
	r.logger.Log("action", "deregister")
}

// RegisterContext writes the record and starts the heartbeat. It is
// idempotent: registering again rewrites the record. If the first write
// fails the error is returned, but the Registrar stays registered and the
// heartbeat retries until Deregister or Close.
func (r *Registrar) RegisterContext(ctx context.Context) error {
	return r.life(func(wasRegistered bool) error {
		r.mu.Lock()
		r.registered = true
		r.mu.Unlock()
		err := r.writeRecord(ctx)
		if !wasRegistered {
			lctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			r.mu.Lock()
			r.cancel, r.done = cancel, done
			r.mu.Unlock()
			go r.loop(lctx, done, err != nil)
		}
		return err
	})
}

// DeregisterContext stops the heartbeat and deletes the record, which
// watchers see as a clean removal (not an expiry). Idempotent. For a graceful
// drain, SetStatus(ctx, StatusUnhealthy) first, finish in-flight work, then
// deregister.
func (r *Registrar) DeregisterContext(ctx context.Context) error {
	return r.life(func(registered bool) error {
		if !registered {
			return nil
		}
		r.stopLoop()
		r.mu.Lock()
		r.registered = false
		r.mu.Unlock()
		if err := r.guard(ctx, func(ctx context.Context) error { return r.b.kv.Delete(ctx, r.key) }); err != nil {
			return fmt.Errorf("natskv: deregister %s: %w", r.key, err)
		}
		return nil
	})
}

// SetStatus changes the declared status; while registered it is written at
// once, so watchers see it without waiting for a heartbeat.
func (r *Registrar) SetStatus(ctx context.Context, s Status) error {
	if !registry.Status(s).Valid() {
		return &registry.RecordError{Field: "status", Err: fmt.Errorf("%w: %s", registry.ErrInvalidStatus, safetext.Quote(string(s)))}
	}
	return r.life(func(registered bool) error {
		r.mu.Lock()
		r.inst.Status = s
		r.mu.Unlock()
		if !registered {
			return nil
		}
		return r.writeRecord(ctx)
	})
}

// life runs f, one of the calls that change the registration, with the
// lifecycle lock held (they never overlap; only they and Close change
// whether the Registrar is registered), and tells it whether the Registrar
// is registered. After Close it returns ErrClosed and does not run f.
func (r *Registrar) life(f func(registered bool) error) error {
	r.lifeMu.Lock()
	defer r.lifeMu.Unlock()
	r.mu.Lock()
	closed, registered := r.closed, r.registered
	r.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return f(registered)
}

// Close stops the heartbeat and waits for it, leaving the record in place to
// expire (as if the process had died); call Deregister first for a clean
// stop. Idempotent.
func (r *Registrar) Close() error {
	r.lifeMu.Lock()
	defer r.lifeMu.Unlock()
	r.stopLoop()
	r.mu.Lock()
	r.closed = true
	r.registered = false
	r.mu.Unlock()
	return nil
}

func (r *Registrar) stopLoop() {
	r.mu.Lock()
	cancel, done := r.cancel, r.done
	r.cancel, r.done = nil, nil
	r.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (r *Registrar) writeTimeout() time.Duration {
	return min(max(r.opts.heartbeat, time.Second), 5*time.Second)
}

// writeRecord writes the current state with a fresh heartbeat time.
func (r *Registrar) writeRecord(ctx context.Context) error {
	r.write.Lock()
	defer r.write.Unlock()
	r.mu.Lock()
	r.inst.LastHeartbeat = time.Now().UTC()
	inst := r.inst.clone()
	r.mu.Unlock()
	data, err := EncodeInstance(inst)
	if err != nil {
		return err
	}
	err = r.guard(ctx, func(ctx context.Context) (err error) {
		if r.ttl > 0 {
			// A KV Put drops the key's TTL; publishing to the key's
			// subject with Nats-TTL renews it on every heartbeat.
			msg := nats.NewMsg(r.b.subject(r.key))
			msg.Data = data
			_, err = r.b.js.PublishMsg(ctx, msg, jetstream.WithMsgTTL(r.ttl))
		} else {
			_, err = r.b.kv.Put(ctx, r.key, data)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("natskv: write %s: %w", r.key, err)
	}
	return nil
}

func (r *Registrar) loop(ctx context.Context, done chan struct{}, retrySoon bool) {
	defer close(done)
	nc := r.b.js.Conn()
	var reconnected chan nats.Status
	if nc != nil {
		reconnected = nc.StatusChanged(nats.CONNECTED)
		defer nc.RemoveStatusListener(reconnected)
	}
	next := r.opts.heartbeat
	if retrySoon {
		next = r.opts.retryWait
	}
	t := time.NewTimer(next)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-reconnected:
			// After a reconnect the server may have restarted and lost the
			// record: rewrite it now rather than a heartbeat later.
			t.Stop()
		}
		wctx, cancel := context.WithTimeout(ctx, r.writeTimeout())
		err := r.writeRecord(wctx)
		cancel()
		next = r.opts.heartbeat
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.logger.Log("action", "heartbeat", "err", err)
			next = r.opts.retryWait
			if errors.Is(err, natserr.ErrPermission) {
				next = r.opts.heartbeat // not transient: retry at the heartbeat's pace
			}
		}
		t.Reset(next)
	}
}

// guard runs a write of the record: a refusal by the server (the user may
// not publish to the key's subject, or not receive JetStream's ack on its
// inbox) is returned as a *PermissionError as soon as it is reported,
// instead of the write's timeout.
func (r *Registrar) guard(ctx context.Context, write func(context.Context) error) error {
	nc := r.b.js.Conn()
	return natserr.Do(ctx, nc, []string{r.b.subject(r.key), natserr.InboxPattern(nc)}, write)
}
