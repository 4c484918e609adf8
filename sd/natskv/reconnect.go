package natskv

import (
	"time"

	"github.com/nats-io/nats.go"
)

// ReconnectOptions are nats.Options for a connection that discovery should
// come back on quickly: the watch is rebuilt within moments of the
// connection's return, so the reconnect is most of the recovery time.
//
// nats.go's defaults wait 2 s between rounds of attempts (plus up to 100 ms
// of jitter) and give up after 60: a restarted server is seen again up to
// 2 s after it is back, and a long outage ends with a closed connection.
// These options try every 100 ms plus up to 100 ms of jitter (up to 1 s over
// TLS), so that a fleet does not reconnect in lock-step, and never give up;
// pings every 10 s, with 2 outstanding, notice a dead peer in 20–30 s rather
// than the default 4 minutes. Append your own options after them to change
// any of these:
//
//	nc, err := nats.Connect(url, append(natskv.ReconnectOptions(), nats.Name("billing"))...)
func ReconnectOptions() []nats.Option {
	return []nats.Option{
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.PingInterval(10 * time.Second),
		nats.MaxPingsOutstanding(2),
	}
}
