package dnsserver

import (
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the DNS role's Prometheus counters. A nil *Metrics counts
// nothing.
type Metrics struct {
	queries *prometheus.CounterVec
	rrlHits *prometheus.CounterVec
	// byRcode holds the counters of the common RCODEs per transport
	// (0 udp, 1 tcp), resolved once: no label lookup per query.
	byRcode [2][dns.RcodeNotZone + 1]prometheus.Counter
}

// NewMetrics registers the DNS counters with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxport_dns_responses_total", Help: "DNS responses sent, by RCODE and transport.",
		}, []string{"rcode", "proto"}),
		rrlHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxport_dns_rrl_total", Help: "Responses dropped or slipped (sent truncated) by response rate limiting.",
		}, []string{"action"}),
	}
	reg.MustRegister(m.queries, m.rrlHits)
	for i, proto := range []string{"udp", "tcp"} {
		for rc := range m.byRcode[i] {
			m.byRcode[i][rc] = m.queries.WithLabelValues(rcodeName(rc), proto)
		}
	}
	return m
}

func (m *Metrics) query(rcode int, udp bool) {
	if m == nil {
		return
	}
	i, proto := 1, "tcp"
	if udp {
		i, proto = 0, "udp"
	}
	if rcode >= 0 && rcode < len(m.byRcode[i]) {
		m.byRcode[i][rcode].Inc()
		return
	}
	m.queries.WithLabelValues(rcodeName(rcode), proto).Inc()
}

func rcodeName(rc int) string {
	if name, ok := dns.RcodeToString[rc]; ok {
		return name
	}
	return "OTHER"
}

func (m *Metrics) rrl(action string) {
	if m == nil {
		return
	}
	m.rrlHits.WithLabelValues(action).Inc()
}
