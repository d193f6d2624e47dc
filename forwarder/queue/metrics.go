package queue

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the queue's Prometheus metrics. A nil *Metrics counts nothing.
type Metrics struct {
	size     prometheus.Gauge
	outcomes *prometheus.CounterVec
}

// NewMetrics registers the queue metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		size: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mxport_queue_messages", Help: "Messages in the spool waiting for delivery.",
		}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxport_deliveries_total", Help: "Per-recipient delivery outcomes: delivered, deferred, bounced, expired.",
		}, []string{"outcome"}),
	}
	reg.MustRegister(m.size, m.outcomes)
	return m
}

func (m *Metrics) setSize(n int) {
	if m != nil {
		m.size.Set(float64(n))
	}
}

func (m *Metrics) outcome(event string) {
	if m != nil {
		m.outcomes.WithLabelValues(event).Inc()
	}
}
