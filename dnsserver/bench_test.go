package dnsserver

import (
	"fmt"
	"net"
	"testing"

	"github.com/miekg/dns"

	"github.com/mxport/mxport/dnsserver/zone"
	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
)

// benchWriter is a dns.ResponseWriter that packs and discards, as the
// UDP path does.
type benchWriter struct {
	buf []byte
}

func (w *benchWriter) LocalAddr() net.Addr { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (w *benchWriter) RemoteAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 40000}
}
func (w *benchWriter) WriteMsg(m *dns.Msg) error {
	var err error
	w.buf, err = m.PackBuffer(w.buf)
	return err
}
func (w *benchWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *benchWriter) Close() error                { return nil }
func (w *benchWriter) TsigStatus() error           { return nil }
func (w *benchWriter) TsigTimersOnly(bool)         {}
func (w *benchWriter) Hijack()                     {}

// BenchmarkServeDNS measures the handler's cost per query, the socket
// aside: the CPU per answered query that dnsperf sees, minus the kernel.
func BenchmarkServeDNS(b *testing.B) {
	zd := store.ZoneData{Zone: store.Zone{Name: "example.com", Serial: 2026112301,
		SOA: store.SOA{MName: "ns1.example.com.", RName: "hostmaster.example.com.", Refresh: 3600, Retry: 900, Expire: 1209600, Minimum: 300, TTL: 3600}}}
	for _, r := range []record.Record{
		{Name: "@", Type: "NS", TTL: 3600, Data: "ns1.example.com."},
		{Name: "@", Type: "MX", TTL: 3600, Data: "10 mail.example.com.:2525"},
		{Name: "www", Type: "A", TTL: 300, Data: "192.0.2.80"},
		{Name: "mail", Type: "A", TTL: 300, Data: "192.0.2.25"},
		{Name: "ns1", Type: "A", TTL: 300, Data: "192.0.2.53"},
	} {
		n, err := record.Normalize("example.com", r, record.Policy{})
		if err != nil {
			b.Fatal(err)
		}
		zd.Records = append(zd.Records, n)
	}
	ix := NewIndex(zone.Options{MXHosts: []string{"mx1.fwd.test", "mx2.fwd.test"}}, nil)
	ix.Load([]store.ZoneData{zd})
	h := &Handler{ix: ix}
	for _, tc := range []struct {
		name  string
		qname string
		qtype uint16
	}{
		{"answer", "www.example.com.", dns.TypeA},
		{"mx-forwarded", "example.com.", dns.TypeMX},
		{"nxdomain", "nope.example.com.", dns.TypeA},
		{"refused", "www.example.org.", dns.TypeA},
	} {
		b.Run(tc.name, func(b *testing.B) {
			req := new(dns.Msg)
			req.SetQuestion(tc.qname, tc.qtype)
			req.SetEdns0(1232, false)
			w := &benchWriter{buf: make([]byte, 0, 1232)}
			b.ReportAllocs()
			for b.Loop() {
				h.ServeDNS(w, req)
			}
		})
	}
}

// BenchmarkUDPHandle measures one datagram through the UDP loop's handle,
// sockets aside: "cached" is the answer cache's hit, "handler" the same
// query through unpack, Handler and pack (udpServer.slow).
func BenchmarkUDPHandle(b *testing.B) {
	h := &Handler{ix: fuzzIndex(b)}
	for _, tc := range []struct {
		name  string
		qname string
		qtype uint16
	}{
		{"answer", "mail.plain.test.", dns.TypeA},
		{"mx-forwarded", "example.com.", dns.TypeMX},
		{"mx-additional", "plain.test.", dns.TypeMX},
		{"wildcard", "x.w.plain.test.", dns.TypeTXT},
		{"nxdomain", "nope.plain.test.", dns.TypeA},
		{"refused", "www.example.org.", dns.TypeA},
	} {
		m := new(dns.Msg)
		m.SetQuestion(tc.qname, tc.qtype)
		m.SetEdns0(1232, false)
		pkt, _ := m.Pack()
		for _, fast := range []bool{true, false} {
			name := tc.name + "/cached"
			if !fast {
				name = tc.name + "/handler"
			}
			b.Run(name, func(b *testing.B) {
				u, w := testUDP(h)
				buf := make([]byte, 0, 1500)
				b.ReportAllocs()
				for b.Loop() {
					w.reset(testClient, buf)
					if fast {
						u.handle(w, pkt)
					} else {
						u.slow(w, pkt)
					}
				}
			})
		}
	}
}

// BenchmarkUDPHandleWorkingSet is the cached path over 100,000 distinct
// questions (wildcard names), about the benchmark's working set: most
// lookups then miss the CPU caches, as under dnsperf.
func BenchmarkUDPHandleWorkingSet(b *testing.B) {
	h := &Handler{ix: fuzzIndex(b)}
	u, w := testUDP(h)
	pkts := make([][]byte, 100000)
	for i := range pkts {
		m := new(dns.Msg)
		m.SetQuestion(fmt.Sprintf("h%d.w.plain.test.", i), dns.TypeTXT)
		m.SetEdns0(1232, false)
		pkts[i], _ = m.Pack()
	}
	buf := make([]byte, 0, 1500)
	for _, p := range pkts { // fill the cache
		w.reset(testClient, buf)
		u.handle(w, p)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		w.reset(testClient, buf)
		u.handle(w, pkts[i])
		i = (i + 7919) % len(pkts)
	}
}
