package main

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/aegis-sdk/kitnats/internal/registry"
	"github.com/aegis-sdk/kitnats/wire"
)

// lsMember is one record of the registry and the client's verdict on it.
type lsMember struct {
	Service           string            `json:"service"`
	Instance          string            `json:"instance"`
	Key               string            `json:"key"`
	Revision          uint64            `json:"revision"`
	Status            string            `json:"status,omitempty"`
	Version           string            `json:"version,omitempty"`
	Zone              string            `json:"zone,omitempty"`
	StickyActiveGroup string            `json:"stickyActiveGroup,omitempty"`
	LastHeartbeat     *time.Time        `json:"lastHeartbeat,omitempty"` // as the record says (the writer's clock)
	WrittenAt         time.Time         `json:"writtenAt"`               // as the server stamped the write
	HeartbeatAge      float64           `json:"heartbeatAgeSeconds"`     // since writtenAt: what staleness counts
	TTL               *float64          `json:"ttlSeconds,omitempty"`    // the write's per-key TTL
	TTLLeft           *float64          `json:"ttlLeftSeconds,omitempty"`
	Client            string            `json:"client"`  // active, standby, unhealthy, stale or skipped
	Offered           bool              `json:"offered"` // in the set a client balances over
	Reason            string            `json:"reason,omitempty"`
	Metadata          map[string]string `json:"metadata,omitempty"`
}

// lsService is one service's records and their counts.
type lsService struct {
	Service   string     `json:"service"`
	Instances int        `json:"instances"` // records that decode
	Offered   int        `json:"offered"`
	Active    int        `json:"active"`
	Standby   int        `json:"standby"`
	Unhealthy int        `json:"unhealthy"`
	Stale     int        `json:"stale"`
	Skipped   int        `json:"skipped"` // records clients skip: they do not decode or do not match their key
	Members   []lsMember `json:"members"`
}

type lsOutput struct {
	Bucket      string      `json:"bucket"`
	Layout      string      `json:"layout"`
	StaleAfter  float64     `json:"staleAfterSeconds"` // ≤ 0: never stale
	PerKeyTTL   bool        `json:"perKeyTTL"`
	Services    []lsService `json:"services"`
	ForeignKeys []string    `json:"foreignKeys,omitempty"` // live keys that are not of the layout
	Hint        string      `json:"hint,omitempty"`
	Cut         string      `json:"cut,omitempty"` // the bucket has more keys than were read (--max-keys)
}

func (a *app) lsCommand() *cobra.Command {
	var asJSON, all bool
	cmd := &cobra.Command{
		Use:   "ls [SERVICE]",
		Short: "List services, or one service's instances and whether clients would pick them",
		Long: `List the services registered in the bucket with their instance counts, or,
given a service (or --instances), each instance: its status, version, zone
(metadata "zone"), heartbeat age, TTL left (on buckets with per-key TTL), and
whether a client would consider it healthy — and if not, why:

  yes        offered to balancers
  standby    offered, but picked only when no ACTIVE instance can serve
  unhealthy  declared UNHEALTHY by its owner (draining, or failing its checks)
  stale      no write for longer than the stale threshold: a crashed owner
  skipped    the record does not decode or does not match its key

The heartbeat age counts from the server's timestamp of the last write, as
clients count it. Staleness follows --heartbeat, --ttl and --stale-after,
which should match your fleet's settings.`,
		Example: `  kitnats ls
  kitnats ls greeter
  kitnats ls --instances --json | jq '.services[].members[] | select(.offered | not)'`,
		Args: argsBetween(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			service := ""
			if len(args) == 1 {
				service = args[0]
			}
			return a.ls(cmd, service, all, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "write JSON, for scripts")
	cmd.Flags().BoolVarP(&all, "instances", "l", false, "list every instance of every service")
	a.maxKeysFlag(cmd)
	return cmd
}

func (a *app) ls(cmd *cobra.Command, service string, all, asJSON bool) error {
	ctx := cmd.Context()
	l, err := a.layoutFor(service)
	if err != nil {
		return err
	}
	s, err := a.open(ctx, cmd)
	if err != nil {
		return err
	}
	defer s.close()
	sc, err := a.scan(ctx, s)
	if err != nil {
		return err
	}
	out := a.lsBuild(s, classify(sc.Records, l), service)
	out.Cut = sc.cut()
	switch {
	case asJSON:
		if err := writeJSON(a.stdout, out); err != nil {
			return err
		}
	case service != "" || all:
		if err := a.lsInstances(out, service == ""); err != nil {
			return err
		}
	default:
		if err := a.lsServices(out); err != nil {
			return err
		}
	}
	if len(out.Services) == 0 && out.Hint != "" {
		// Nothing of this layout, and keys of the other: a wrong --layout.
		return errors.New(out.Hint)
	}
	return nil
}

// lsBuild judges every record of the layout (of service, if given).
func (a *app) lsBuild(s *session, v bucketView, service string) lsOutput {
	now := a.now()
	caps := s.b.Capabilities()
	out := lsOutput{Bucket: s.b.Name(), Layout: s.layout.String(), StaleAfter: seconds(s.judge.StaleAfter()),
		PerKeyTTL: caps.MsgTTL, Services: []lsService{}, Hint: layoutHint(v, s.layout, service)}
	by := map[string]*lsService{}
	for _, r := range v.Records {
		s.judge.Add(r.Key, r.Data, r.Seq, r.Written) // judged per service, as a client's state judges it (its stale guard too)
	}
	for _, r := range v.Records {
		if service != "" && r.Service != service {
			continue
		}
		svc := by[r.Service]
		if svc == nil {
			svc = &lsService{Service: r.Service}
			by[r.Service] = svc
		}
		age := max(now.Sub(r.Written), 0)
		m := lsMember{Service: r.Service, Instance: r.Instance, Key: r.Key, Revision: r.Seq,
			WrittenAt: r.Written.UTC(), HeartbeatAge: seconds(age)}
		if r.TTL > 0 {
			ttl, left := seconds(r.TTL), seconds(r.Written.Add(r.TTL).Sub(now))
			m.TTL, m.TTLLeft = &ttl, &left
		}
		if r.Err != nil {
			m.Client, m.Reason = "skipped", r.Err.Error()
			svc.Skipped++
			svc.Members = append(svc.Members, m)
			continue
		}
		in := r.Record
		hb := in.LastHeartbeat.UTC()
		m.Status, m.Version, m.Zone, m.StickyActiveGroup = string(in.Status), in.Version, in.Metadata[wire.MetadataZone], in.StickyActiveGroup
		m.LastHeartbeat, m.Metadata = &hb, in.Metadata
		svc.Instances++
		h, _ := s.judge.Health(r.Key, now)
		m.Client, m.Offered = h.String(), h.Offered()
		switch h {
		case registry.HealthActive:
			svc.Active++
		case registry.HealthStandby, registry.HealthExcluded:
			svc.Standby++
			m.Reason = "STANDBY: picked only when no ACTIVE instance can serve"
			if h == registry.HealthExcluded {
				m.Reason = "STANDBY, and clients exclude standby instances"
			}
		case registry.HealthUnhealthy:
			svc.Unhealthy++
			m.Reason = "declared UNHEALTHY by its owner"
		case registry.HealthStale:
			svc.Stale++
			m.Reason = fmt.Sprintf("no write for %s, stale after %s", human(age), human(s.judge.StaleAfter()))
		}
		if m.Offered {
			svc.Offered++
		}
		svc.Members = append(svc.Members, m)
	}
	for _, svc := range by {
		slices.SortFunc(svc.Members, func(a, b lsMember) int { return strings.Compare(a.Key, b.Key) })
		out.Services = append(out.Services, *svc)
	}
	slices.SortFunc(out.Services, func(a, b lsService) int { return cmp.Compare(a.Service, b.Service) })
	if service == "" {
		for _, r := range v.Foreign {
			out.ForeignKeys = append(out.ForeignKeys, r.Key)
		}
	}
	return out
}

func (a *app) lsServices(out lsOutput) error {
	if len(out.Services) == 0 {
		say(a.stdout, "no instances registered in bucket %s (layout %s)", out.Bucket, out.Layout)
	} else {
		t := newTable(a.stdout, "SERVICE", "INSTANCES", "HEALTHY", "STANDBY", "UNHEALTHY", "STALE", "SKIPPED")
		for _, s := range out.Services {
			t.row(s.Service, strconv.Itoa(s.Instances), strconv.Itoa(s.Active), strconv.Itoa(s.Standby),
				strconv.Itoa(s.Unhealthy), strconv.Itoa(s.Stale), strconv.Itoa(s.Skipped))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	skipped := 0
	for _, s := range out.Services {
		for _, m := range s.Members {
			if m.Client != "skipped" {
				continue
			}
			if skipped++; skipped <= maxRows {
				say(a.stdout, "skipped by clients: %s: %s", m.Key, m.Reason)
			}
		}
	}
	if skipped > maxRows {
		say(a.stdout, "skipped by clients: %d more records (kitnats ls --json lists them all)", skipped-maxRows)
	}
	a.lsNotes(out)
	return nil
}

func (a *app) lsInstances(out lsOutput, withService bool) error {
	if len(out.Services) == 0 {
		say(a.stdout, "no instances registered in bucket %s (layout %s)", out.Bucket, out.Layout)
		a.lsNotes(out)
		return nil
	}
	header := []string{"INSTANCE", "STATUS", "VERSION", "ZONE", "HEARTBEAT", "TTL LEFT", "HEALTHY"}
	if withService {
		header = append([]string{"SERVICE"}, header...)
	}
	t := newTable(a.stdout, header...)
	for _, s := range out.Services {
		for _, m := range s.Members {
			row := []string{m.Instance, m.Status, m.Version, m.Zone, human(time.Duration(m.HeartbeatAge*float64(time.Second))) + " ago",
				ttlLeft(m, out.PerKeyTTL), verdict(m)}
			if withService {
				row = append([]string{m.Service}, row...)
			}
			t.row(row...)
		}
	}
	if err := t.flush(); err != nil {
		return err
	}
	a.lsNotes(out)
	return nil
}

func (a *app) lsNotes(out lsOutput) {
	if out.Cut != "" {
		say(a.stdout, "note: %s", out.Cut)
	}
	if n := len(out.ForeignKeys); n > 0 && out.Hint == "" {
		say(a.stdout, "%d key(s) not of the %s layout, ignored by clients (kitnats check lists them)", n, out.Layout)
	}
	if out.Hint != "" && len(out.Services) > 0 {
		say(a.stdout, "note: %s", out.Hint)
	}
}

// ttlLeft is the TTL LEFT cell: "-" on buckets without per-key TTL,
// "none" for a write that carried none (it never expires on the server).
func ttlLeft(m lsMember, perKeyTTL bool) string {
	switch {
	case m.TTLLeft == nil && perKeyTTL:
		return "none"
	case m.TTLLeft == nil:
		return "-"
	case *m.TTLLeft <= 0:
		return "expired"
	}
	return human(time.Duration(*m.TTLLeft * float64(time.Second)))
}

// verdict is the HEALTHY cell.
func verdict(m lsMember) string {
	switch m.Client {
	case "active":
		return "yes"
	case "standby":
		return "standby: " + strings.TrimPrefix(m.Reason, "STANDBY: ")
	case "skipped":
		return "no: skipped, " + m.Reason
	}
	return "no: " + m.Client + ", " + m.Reason
}
