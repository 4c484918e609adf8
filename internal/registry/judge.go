package registry

import (
	"fmt"
	"time"

	"github.com/aegis-sdk/kitnats/internal/safetext"
)

// DecodeKey reads the record stored under key as an Instancer of the
// layout does by default: it must decode (strict on LayoutAegis, lenient
// on LayoutDotted) and name the service and instance its key names. The
// error says why an Instancer would skip it; it matches ErrInvalidRecord,
// wire.ErrInvalidName or, for a key outside the layout, ErrKeyMismatch.
func DecodeKey(l Layout, key string, data []byte) (Instance, error) {
	service, _, ok := l.Parse(key)
	if !ok {
		return Instance{}, &RecordError{Err: fmt.Errorf("%w: %s is not a key of the %s layout", ErrKeyMismatch, safetext.Quote(key), l)}
	}
	m := Msg{Key: key, Op: ChangeUpdated, Data: data}
	NewBook(service, l, l == LayoutAegis).Decode(&m)
	return m.inst, m.err
}

// JudgeConfig is what a Judge knows of the clients it stands for.
type JudgeConfig struct {
	Layout   Layout
	Liveness Liveness
	// Markers: the bucket leaves expiry markers (natskv.Capabilities).
	Markers        bool
	ExcludeStandby bool
}

// Judge applies an Instancer's own rule — the State, stale guard included —
// to a bucket read from outside it, as cmd/kitnats reads one: Add every
// record of the bucket, then ask for the Health of each key.
type Judge struct {
	cfg        JudgeConfig
	staleAfter time.Duration
	services   map[string]*judged
}

// judged is one service's records and, once judged at some time, its
// state.
type judged struct {
	msgs []Msg
	at   time.Time
	st   *State
}

// NewJudge returns the judgement of clients with the given settings; it
// refuses settings as natskv's options refuse them.
func NewJudge(c JudgeConfig) (*Judge, error) {
	if !c.Layout.Valid() {
		return nil, Invalid("WithLayout", "unknown layout %v", c.Layout)
	}
	if err := c.Liveness.Check(); err != nil {
		return nil, err
	}
	return &Judge{cfg: c, staleAfter: c.Liveness.Stale(c.Markers), services: map[string]*judged{}}, nil
}

// StaleAfter is how old a record's last write may be before it is stale; 0
// or less: never.
func (j *Judge) StaleAfter() time.Duration { return j.staleAfter }

// Add records the latest write of key: its data, revision, and when the
// server stored it (staleness counts from the server's time, as an
// Instancer's does, whatever the writer's clock). Keys outside the layout
// are ignored.
func (j *Judge) Add(key string, data []byte, rev uint64, written time.Time) {
	service, _, ok := j.cfg.Layout.Parse(key)
	if !ok {
		return
	}
	s := j.services[service]
	if s == nil {
		s = &judged{}
		j.services[service] = s
	}
	s.msgs = append(s.msgs, Msg{Key: key, Op: ChangeUpdated, Data: data, Rev: rev, Seen: written})
	s.st = nil
}

// Health is how a client of the service that has been running for a while
// judges the record of key at now: the Instancer's state, fed the records
// added, on its own clock (so the mass-removal guard holds instances that
// went stale together, as it would in that client). ok is false for a key
// not added, or whose record a client skips (DecodeKey says why).
func (j *Judge) Health(key string, now time.Time) (h Health, ok bool) {
	service, id, ok := j.cfg.Layout.Parse(key)
	if !ok {
		return 0, false
	}
	st := j.state(service, now)
	if st == nil {
		return 0, false
	}
	e := st.book.entries[id]
	if e == nil {
		return 0, false
	}
	return st.health(id, e), true
}

// Guard says why the mass-removal guard of a client of service holds stale
// instances at now; "" when it does not.
func (j *Judge) Guard(service string, now time.Time) string {
	if st := j.state(service, now); st != nil && st.guardOn && now.Sub(st.guardSince) <= j.staleAfter {
		return st.guardReason
	}
	return ""
}

// state replays the service's records as a client that started two stale
// thresholds before now sees them: its first set then (records already old
// are stale at once, as on any first set), then its clock's ticks up to
// now. Nothing before that window changes what a client offers now: the
// guard holds for one threshold at most.
func (j *Judge) state(service string, now time.Time) *State {
	s := j.services[service]
	if s == nil {
		return nil
	}
	if s.st != nil && s.at.Equal(now) {
		return s.st
	}
	st := NewState(StateConfig{Service: service, Layout: j.cfg.Layout, Format: func(i Instance) string { return i.InstanceID },
		ExcludeStandby: j.cfg.ExcludeStandby, StaleAfter: j.staleAfter, Strict: j.cfg.Layout == LayoutAegis,
		GuardShare: DefaultGuardShare})
	l := st.NewLoad()
	for _, m := range s.msgs {
		l.Add(m)
	}
	cs := st.book.Replace(l, now)
	if sa := j.staleAfter; sa > 0 {
		// At most 256 ticks: a client's clock, or a coarser one for
		// thresholds of minutes.
		every := max(TickEvery(sa), 2*sa/256)
		from := now.Add(-2 * sa)
		st.Reloaded(cs, from)
		for t := from.Add(every); t.Before(now); t = t.Add(every) {
			st.Tick(t)
		}
		st.Tick(now)
	} else {
		st.Reloaded(cs, now)
	}
	s.st, s.at = st, now
	return st
}
