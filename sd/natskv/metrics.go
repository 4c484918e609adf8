package natskv

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

const meterName = "github.com/aegis-sdk/kitnats/sd/natskv"

// Metric names an Instancer records (WithMeterProvider lists them).
const (
	metricInstances    = "kitnats.registry.instances"      // gauge: healthy instances per service
	metricEvents       = "kitnats.registry.watch.events"   // counter: changes seen, by kind
	metricSkipped      = "kitnats.registry.skipped"        // counter: malformed entries skipped
	metricStaleDropped = "kitnats.registry.stale_dropped"  // counter: instances dropped for an old heartbeat
	metricRestarts     = "kitnats.registry.watch.restarts" // counter: watches rebuilt after a failure
	metricListDuration = "kitnats.registry.list.duration"  // histogram (s): one re-list in polling mode
	// metricStaleGuard is an up-down counter per service: 1 while the
	// mass-removal guard holds staleness (WithStaleGuard), 0 otherwise.
	metricStaleGuard = "kitnats.registry.stale_guard.engaged"
)

type metrics struct {
	svc      attribute.KeyValue
	set      metric.MeasurementOption
	events   metric.Int64Counter
	skipped  metric.Int64Counter
	stale    metric.Int64Counter
	restarts metric.Int64Counter
	guard    metric.Int64UpDownCounter
	listDur  metric.Float64Histogram
	reg      metric.Registration
}

// newMetrics never fails the Instancer: an instrument the provider refuses
// falls back to a no-op one (the otel API returns usable no-op instruments
// alongside errors).
func newMetrics(mp metric.MeterProvider, service string, healthy func() int64) *metrics {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(meterName)
	svc := attribute.String("service", service)
	ms := &metrics{svc: svc, set: metric.WithAttributeSet(attribute.NewSet(svc))}
	ms.events, _ = m.Int64Counter(metricEvents, metric.WithDescription("Registry changes seen, by kind."))
	ms.skipped, _ = m.Int64Counter(metricSkipped, metric.WithDescription("Malformed registry entries skipped."))
	ms.stale, _ = m.Int64Counter(metricStaleDropped, metric.WithDescription("Instances dropped because their heartbeat was too old."))
	ms.restarts, _ = m.Int64Counter(metricRestarts, metric.WithDescription("Registry watches rebuilt after a failure."))
	ms.guard, _ = m.Int64UpDownCounter(metricStaleGuard, metric.WithDescription("1 while the mass-removal guard keeps stale instances of a service."))
	ms.listDur, _ = m.Float64Histogram(metricListDuration, metric.WithUnit("s"), metric.WithDescription("Time to re-list a service in polling mode."))
	gauge, err := m.Int64ObservableGauge(metricInstances, metric.WithDescription("Healthy instances of a service."))
	if err == nil {
		ms.reg, _ = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
			o.ObserveInt64(gauge, healthy(), ms.set)
			return nil
		}, gauge)
	}
	return ms
}

func (m *metrics) event(kind ChangeKind) {
	m.events.Add(context.Background(), 1, metric.WithAttributes(m.svc, attribute.String("kind", kind.String())))
}

func (m *metrics) close() {
	if m.reg != nil {
		_ = m.reg.Unregister()
	}
}
