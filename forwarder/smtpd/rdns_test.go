package smtpd

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// testDNS is a real DNS server on 127.0.0.1 with fixed answers, counting
// the questions it gets.
type testDNS struct {
	addr string
	mu   sync.Mutex
	asks map[string]int // "name type"
}

func startTestDNS(t *testing.T, answers map[string]string, servfail map[string]bool) *testDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &testDNS{addr: pc.LocalAddr().String(), asks: map[string]int{}}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		q := req.Question[0]
		key := q.Name + " " + dns.TypeToString[q.Qtype]
		d.mu.Lock()
		d.asks[key]++
		d.mu.Unlock()
		m := new(dns.Msg)
		m.SetReply(req)
		m.Authoritative = true
		switch {
		case servfail[q.Name]:
			m.Rcode = dns.RcodeServerFailure
		case answers[key] != "":
			rr, err := dns.NewRR(q.Name + " 60 IN " + dns.TypeToString[q.Qtype] + " " + answers[key])
			if err != nil {
				t.Error(err)
			}
			m.Answer = append(m.Answer, rr)
		default:
			m.Rcode = dns.RcodeNameError
			if answers[q.Name+" A"] != "" || answers[q.Name+" PTR"] != "" {
				m.Rcode = dns.RcodeSuccess // the name exists: no data
			}
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return d
}

func (d *testDNS) count(key string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.asks[key]
}

// resolver is a pure-Go resolver that asks d only.
func (d *testDNS) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var nd net.Dialer
		return nd.DialContext(ctx, "udp", d.addr)
	}}
}

// TestReverseNameCached: the client's forward-confirmed reverse name goes
// into Received, and is looked up once for several connections from the
// same address; a failed lookup is not remembered.
func TestReverseNameCached(t *testing.T) {
	d := startTestDNS(t, map[string]string{
		"2.0.0.127.in-addr.arpa. PTR": "client.test.",
		"client.test. A":              "127.0.0.2",
	}, map[string]bool{"3.0.0.127.in-addr.arpa.": true})
	f := newFixture(t, func(cfg *Config) { cfg.Resolver = d.resolver() })

	send := func(ip string) string {
		c := f.dialFrom(ip)
		c.must("EHLO helo.test", 250)
		c.must("MAIL FROM:<a@b.example>", 250)
		c.must("RCPT TO:<user@example.com>", 250)
		if code, msg := c.send2(); code != 250 {
			t.Fatalf("DATA: %d %s", code, msg)
		}
		c.must("QUIT", 221)
		m := <-f.q.ch
		hdr, _ := f.body(m.ID)
		return hdr
	}
	for i := range 3 {
		if hdr := send("127.0.0.2"); !strings.Contains(hdr, "from helo.test (client.test [127.0.0.2])") {
			t.Fatalf("connection %d: Received %q, want the confirmed name client.test", i, hdr)
		}
	}
	if n := d.count("2.0.0.127.in-addr.arpa. PTR"); n != 1 {
		t.Errorf("%d PTR questions for 3 connections from one address, want 1", n)
	}

	var asked []int
	for i := range 2 {
		if hdr := send("127.0.0.3"); strings.Contains(hdr, "client.test") {
			t.Fatalf("connection %d: Received %q names a client whose lookup failed", i, hdr)
		}
		asked = append(asked, d.count("3.0.0.127.in-addr.arpa. PTR"))
	}
	if asked[0] == 0 || asked[1] <= asked[0] {
		t.Errorf("PTR questions after each of 2 connections whose lookup failed: %v, want a new lookup each time", asked)
	}
}
