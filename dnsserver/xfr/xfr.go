// Package xfr sends zones to secondaries: AXFR out (RFC 5936) and NOTIFY
// (RFC 1996). Authorisation is the caller's; xfr knows no Redis.
package xfr

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/mxport/mxport/dnsserver/zone"
)

// maxMsg is the size an AXFR message is filled to, under the 64 KiB TCP
// message limit with room for a TSIG record.
const maxMsg = 63000

// Out writes z to w as an AXFR response to req: the SOA, every record, the
// SOA again, in as few compressed messages as fit. A signed request gets
// every message signed, the later ones with timers only (RFC 8945 5.3.1).
func Out(w dns.ResponseWriter, req *dns.Msg, z *zone.Zone) error {
	rrs := append(z.Records(), z.SOA())
	tsig := req.IsTsig()
	first := true
	for len(rrs) > 0 {
		m := new(dns.Msg)
		m.SetReply(req)
		m.Authoritative = true
		m.Compress = true
		n := 0
		for n < len(rrs) {
			m.Answer = append(m.Answer, rrs[n])
			if m.Len() > maxMsg && n > 0 {
				m.Answer = m.Answer[:n]
				break
			}
			n++
		}
		rrs = rrs[n:]
		if tsig != nil {
			m.SetTsig(tsig.Hdr.Name, tsig.Algorithm, tsig.Fudge, time.Now().Unix())
		}
		if err := w.WriteMsg(m); err != nil {
			return fmt.Errorf("axfr %s: %w", z.Name(), err)
		}
		if first && tsig != nil {
			w.TsigTimersOnly(true)
		}
		first = false
	}
	return nil
}

// Notifier sends NOTIFY for changed zones to the configured secondaries,
// retrying each until it answers (RFC 1996 3.6), newest serial only.
type Notifier struct {
	targets []string // host:port
	retry   []time.Duration
	mu      sync.Mutex
	pending map[string]uint32        // "zone target" -> newest serial to announce
	wake    map[string]chan struct{} // "zone target" -> its sender, while one runs
	ctx     context.Context
	// Sent, when not nil, is called after each NOTIFY answered (tests, metrics).
	Sent func(zone, target string, serial uint32)
}

// NewNotifier returns a Notifier for targets; it stops retrying when ctx ends.
func NewNotifier(ctx context.Context, targets []string) *Notifier {
	return &Notifier{
		targets: targets, ctx: ctx,
		retry:   []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 15 * time.Second, 60 * time.Second},
		pending: map[string]uint32{}, wake: map[string]chan struct{}{},
	}
}

// Notify announces z's current serial to every target, asynchronously.
func (n *Notifier) Notify(z *zone.Zone) {
	if n == nil {
		return
	}
	for _, t := range n.targets {
		key := z.Name() + " " + t
		n.mu.Lock()
		n.pending[key] = z.Serial()
		wake, running := n.wake[key]
		if !running {
			wake = make(chan struct{}, 1)
			n.wake[key] = wake
		}
		n.mu.Unlock()
		if running {
			select { // a sender waiting to retry an older serial goes now
			case wake <- struct{}{}:
			default:
			}
		} else {
			go n.run(key, z.Name(), t, wake)
		}
	}
}

// run sends the pending serial for one zone and target until acknowledged,
// then picks up a newer one if it arrived meanwhile.
func (n *Notifier) run(key, name, target string, wake chan struct{}) {
	attempt := 0
	for {
		n.mu.Lock()
		serial, ok := n.pending[key]
		if !ok {
			delete(n.wake, key)
			n.mu.Unlock()
			return
		}
		n.mu.Unlock()
		err := send(n.ctx, name, target, serial)
		if err == nil {
			slog.Info("notify", "zone", name, "target", target, "serial", serial)
			if n.Sent != nil {
				n.Sent(name, target, serial)
			}
			n.mu.Lock()
			if n.pending[key] == serial {
				delete(n.pending, key)
			}
			n.mu.Unlock()
			attempt = 0
			continue
		}
		delay := n.retry[min(attempt, len(n.retry)-1)]
		attempt++
		slog.Warn("notify failed", "zone", name, "target", target, "serial", serial, "attempt", attempt, "err", err, "retry", delay)
		if attempt > 10 {
			n.mu.Lock()
			delete(n.pending, key)
			n.mu.Unlock()
			continue
		}
		t := time.NewTimer(delay)
		select {
		case <-n.ctx.Done():
			t.Stop()
			return
		case <-wake:
			t.Stop()
			attempt = 0
		case <-t.C:
		}
	}
}

// send sends one NOTIFY over UDP and waits for its answer.
func send(ctx context.Context, name, target string, serial uint32) error {
	m := new(dns.Msg)
	m.SetNotify(name)
	m.Authoritative = true
	c := &dns.Client{Net: "udp", Timeout: 3 * time.Second}
	r, _, err := c.ExchangeContext(ctx, m, target)
	if err != nil {
		return err
	}
	if r.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("answered %s", dns.RcodeToString[r.Rcode])
	}
	return nil
}
