package smtpd

import "github.com/prometheus/client_golang/prometheus"

// Refusal reasons, the "reason" label of Metrics.Refused.
const (
	reasonRelay        = "relay"         // a relay trick or address literal (550 5.7.1)
	reasonNotForwarded = "not_forwarded" // not a forwarded zone (550 5.7.1)
	reasonUnknown      = "unknown"       // the route index never loaded (451 4.3.0)
	reasonOtherZone    = "other_zone"    // a second zone in one transaction (451 4.5.3)
	reasonTooMany      = "too_many_rcpts"
	reasonSyntax       = "syntax"
	reasonTooBig       = "too_big"
	reasonLoop         = "loop"
	reasonSpool        = "spool"   // the spool write failed (451 4.3.0)
	reasonAborted      = "aborted" // the client's connection failed mid-DATA
)

// Metrics are the inbound SMTP server's Prometheus counters. A nil
// *Metrics counts nothing.
type Metrics struct {
	Sessions prometheus.Counter     // sessions (EHLO/HELO after connect or STARTTLS)
	Accepted prometheus.Counter     // messages answered 250
	Bytes    prometheus.Counter     // body bytes of accepted messages, Received header included
	Refused  *prometheus.CounterVec // refused recipients and messages, by reason
}

// NewMetrics makes the counters and registers them with reg (nil: not
// registered). It panics if they are already registered, as
// prometheus.MustRegister does.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Sessions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mxport_smtp_sessions_total", Help: "Inbound SMTP sessions."}),
		Accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mxport_smtp_accepted_total", Help: "Inbound messages accepted (fsync'd and queued)."}),
		Bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mxport_smtp_accepted_bytes_total", Help: "Bytes of inbound messages accepted."}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxport_smtp_refused_total", Help: "Inbound recipients and messages refused, by reason."},
			[]string{"reason"}),
	}
	for _, r := range []string{reasonRelay, reasonNotForwarded, reasonUnknown, reasonOtherZone,
		reasonTooMany, reasonSyntax, reasonTooBig, reasonLoop, reasonSpool, reasonAborted} {
		m.Refused.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.Sessions, m.Accepted, m.Bytes, m.Refused)
	}
	return m
}

func (m *Metrics) session() {
	if m != nil {
		m.Sessions.Inc()
	}
}

func (m *Metrics) accepted(size int64) {
	if m != nil {
		m.Accepted.Inc()
		m.Bytes.Add(float64(size))
	}
}

func (m *Metrics) refused(reason string) {
	if m != nil {
		m.Refused.WithLabelValues(reason).Inc()
	}
}
