package natsrpc

import (
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// The Service answers NATS micro discovery itself: PING, INFO and STATS on
// $SRV.{VERB}, $SRV.{VERB}.{service} and $SRV.{VERB}.{service}.{id}, with
// the response types of nats.go/micro, so `nats micro ls|info|stats` and
// micro clients see it as one of theirs. (micro's own endpoints would
// deliver each request through a goroutine of micro's and a per-service
// lock; the Service subscribes its endpoints itself and keeps micro's wire
// format only.)

// semVer is micro's rule for service versions.
var semVer = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)

// discovery is what the Service reports about itself.
type discovery struct {
	id          string // micro's service ID: unique per running instance
	version     string
	description string
	metadata    map[string]string
	started     time.Time
}

func newDiscovery(cfg serviceConfig) discovery {
	return discovery{
		// micro's IDs are NUIDs; nats.go's inboxes end in one.
		id:          strings.TrimPrefix(nats.NewInbox(), nats.InboxPrefix),
		version:     cfg.version,
		description: cfg.description,
		metadata:    cfg.metadata,
		started:     time.Now().UTC(),
	}
}

func (s *Service) identity() micro.ServiceIdentity {
	return micro.ServiceIdentity{Name: s.name, ID: s.disc.id, Version: s.disc.version, Metadata: maps.Clone(s.disc.metadata)}
}

// info is the micro discovery info (the same `nats micro info` shows).
func (s *Service) info() micro.Info {
	eps := s.endpoints()
	info := micro.Info{
		ServiceIdentity: s.identity(),
		Type:            micro.InfoResponseType,
		Description:     s.disc.description,
		Endpoints:       make([]micro.EndpointInfo, 0, len(eps)),
	}
	for _, e := range eps {
		info.Endpoints = append(info.Endpoints, micro.EndpointInfo{Name: e.method, Subject: e.subject, QueueGroup: e.queue})
	}
	return info
}

// stats is the micro discovery stats; each endpoint's Data is its
// endpointStats. NumRequests counts every request delivered to the
// endpoint, NumErrors and LastError the handlers' failures, and the
// processing times the time requests held a worker.
func (s *Service) stats() micro.Stats {
	eps := s.endpoints()
	stats := micro.Stats{
		ServiceIdentity: s.identity(),
		Type:            micro.StatsResponseType,
		Started:         s.disc.started,
		Endpoints:       make([]*micro.EndpointStats, 0, len(eps)),
	}
	for _, e := range eps {
		st := e.stats
		n := st.requests.Load()
		es := &micro.EndpointStats{
			Name:           e.method,
			Subject:        e.subject,
			QueueGroup:     e.queue,
			NumRequests:    int(n),
			NumErrors:      int(st.Errors.Load()),
			ProcessingTime: time.Duration(st.processing.Load()),
		}
		if ran := st.ran.Load(); ran > 0 {
			es.AverageProcessingTime = es.ProcessingTime / time.Duration(ran)
		}
		if le := st.lastError.Load(); le != nil {
			es.LastError = *le
		}
		es.Data = st.data()
		stats.Endpoints = append(stats.Endpoints, es)
	}
	return stats
}

// endpoints lists the service's endpoints in subscription order:
// service-wide ones first, then the instance ones.
func (s *Service) endpoints() []*route {
	eps := make([]*route, 0, 2*len(s.methods))
	for i := range 2 {
		for _, m := range s.methods {
			eps = append(eps, &m.eps[i])
		}
	}
	return eps
}

// subscribeDiscovery answers PING, INFO and STATS on the three subjects of
// each verb.
func (s *Service) subscribeDiscovery() error {
	ping, _ := json.Marshal(micro.Ping{ServiceIdentity: s.identity(), Type: micro.PingResponseType})
	verbs := []struct {
		verb micro.Verb
		body func() []byte
	}{
		{micro.PingVerb, func() []byte { return ping }},
		{micro.InfoVerb, func() []byte { b, _ := json.Marshal(s.info()); return b }},
		{micro.StatsVerb, func() []byte { b, _ := json.Marshal(s.stats()); return b }},
	}
	for _, v := range verbs {
		for _, kind := range [][2]string{{"", ""}, {s.name, ""}, {s.name, s.disc.id}} {
			subject, err := micro.ControlSubject(v.verb, kind[0], kind[1])
			if err != nil {
				return err
			}
			body := v.body
			sub, err := s.nc.Subscribe(subject, func(m *nats.Msg) {
				if !replyAllowed(s.replies, m.Reply) || m.Reply == "" {
					return
				}
				if err := m.Respond(body()); err != nil {
					s.log("msg", "discovery reply failed", "subject", m.Subject, "err", err)
				}
			})
			if err != nil {
				return fmt.Errorf("natsrpc: subscribe %s: %w", subject, err)
			}
			s.control = append(s.control, sub)
		}
	}
	return nil
}
