package route

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxport/mxport/store/record"
)

// dnsServer is a real DNS server on 127.0.0.1 (UDP and TCP, one port) that
// serves fixed answers.
type dnsServer struct {
	addr    string
	answers map[string][]string // "name./TYPE" -> RRs in zone-file form
	rcodes  map[string]int      // name. -> rcode for every type
	tcOver  map[string]bool     // name. -> truncated over UDP
	tcp     atomic.Int32        // queries over TCP
}

func startDNS(t *testing.T) *dnsServer {
	t.Helper()
	s := &dnsServer{
		answers: map[string][]string{
			"ext.test./A":     {"ext.test. 60 IN A 198.51.100.1", "ext.test. 60 IN A 198.51.100.2"},
			"ext.test./AAAA":  {"ext.test. 60 IN AAAA 2001:db8::1"},
			"v6.test./AAAA":   {"v6.test. 60 IN AAAA 2001:db8::6"},
			"alias.test./A":   {"alias.test. 60 IN CNAME ext.test.", "ext.test. 60 IN A 198.51.100.1"},
			"loop.test./A":    {"loop.test. 60 IN A 127.0.0.1"},
			"big.test./A":     {"big.test. 60 IN A 203.0.113.9"},
			"mxdom.test./MX":  {"mxdom.test. 60 IN MX 20 B.mxdom.test.", "mxdom.test. 60 IN MX 10 a.mxdom.test.", "mxdom.test. 60 IN MX 30 c.mxdom.test."},
			"null.test./MX":   {"null.test. 60 IN MX 0 ."},
			"mixed.test./MX":  {"mixed.test. 60 IN MX 0 .", "mixed.test. 60 IN MX 10 mx.mixed.test."},
			"nomx.test./A":    {"nomx.test. 60 IN A 198.51.100.7"},
			"half.test./AAAA": {"half.test. 60 IN AAAA 2001:db8::5"},
		},
		rcodes: map[string]int{
			"nx.test.":       dns.RcodeNameError,
			"servfail.test.": dns.RcodeServerFailure,
		},
		tcOver: map[string]bool{"big.test.": true},
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		m.Authoritative = true
		q := req.Question[0]
		name := dns.CanonicalName(q.Name)
		_, isTCP := w.RemoteAddr().(*net.TCPAddr)
		if isTCP {
			s.tcp.Add(1)
		}
		switch {
		case name == "half.test." && q.Qtype == dns.TypeA:
			m.Rcode = dns.RcodeServerFailure
		case s.rcodes[name] != 0:
			m.Rcode = s.rcodes[name]
		case s.tcOver[name] && !isTCP:
			m.Truncated = true
		default:
			for _, z := range s.answers[name+"/"+dns.TypeToString[q.Qtype]] {
				rr, err := dns.NewRR(z)
				if err != nil {
					panic(err)
				}
				m.Answer = append(m.Answer, rr)
			}
		}
		w.WriteMsg(m)
	})
	var pc net.PacketConn
	var l net.Listener
	for i := 0; ; i++ { // the UDP port may be taken for TCP
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if l, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if i == 10 {
			t.Fatal(err)
		}
	}
	s.addr = pc.LocalAddr().String()
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // after the shutdowns below (cleanups run last first)
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		wg.Add(1)
		go func() { defer wg.Done(); srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return s
}

func hostedIndex() *Index {
	ix := NewIndex()
	ix.Load(append(testZones(),
		zd("home.test", 1,
			"@ MX 10 mail.home.test:2525",
			"@ A 192.0.2.1",
			"mail A 192.0.2.10",
			"mail AAAA 2001:db8::10",
			"mail A 192.0.2.11",
			"alias CNAME mail.home.test.",
			"out CNAME ext.test.",
			"self A 127.0.0.1",
			"txt TXT \"hello\"",
			"sub MX 10 mx.sub.home.test",
			"nullmx MX 0 .",
			"cn CNAME ext.test."),
	))
	return ix
}

func aps(ss ...string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, s := range ss {
		out = append(out, netip.MustParseAddrPort(s))
	}
	return out
}

func TestAddrs(t *testing.T) {
	d := startDNS(t)
	r := NewResolver(hostedIndex(), ResolverConfig{
		Server:   d.addr,
		Own:      []string{"mx1.fwd.test", "MX2.fwd.test."},
		OwnAddrs: []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("192.0.2.99")},
		OwnPort:  2500,
		Timeout:  3 * time.Second,
	})
	ctx := context.Background()
	for _, c := range []struct {
		host string
		port uint16
		want []netip.AddrPort
		err  error // nil: no error; errTemp: some other error
	}{
		// Hosted: A and AAAA, IPv4 first; a CNAME in the zone followed once.
		{"mail.home.test", 2525, aps("192.0.2.10:2525", "192.0.2.11:2525", "[2001:db8::10]:2525"), nil},
		{"MAIL.Home.Test.", 2525, aps("192.0.2.10:2525", "192.0.2.11:2525", "[2001:db8::10]:2525"), nil},
		{"alias.home.test", 2525, aps("192.0.2.10:2525", "192.0.2.11:2525", "[2001:db8::10]:2525"), nil},
		{"home.test", 0, aps("192.0.2.1:25"), nil},
		{"mail.example.com", 2525, aps("192.0.2.10:2525", "[2001:db8::10]:2525"), nil},
		// Hosted name whose CNAME leaves our zones, and hosted names
		// without an address: DNS answers (the test server does not
		// know them: no address).
		{"out.home.test", 2525, nil, ErrNoAddress},
		{"txt.home.test", 2525, nil, ErrNoAddress},
		// DNS.
		{"ext.test", 25, aps("198.51.100.1:25", "198.51.100.2:25", "[2001:db8::1]:25"), nil},
		{"v6.test", 2525, aps("[2001:db8::6]:2525"), nil},
		{"alias.test", 2525, aps("198.51.100.1:2525"), nil},
		{"half.test", 2525, aps("[2001:db8::5]:2525"), nil}, // A fails, AAAA answers
		{"big.test", 2525, aps("203.0.113.9:2525"), nil},    // truncated over UDP, then TCP
		{"nx.test", 2525, nil, ErrNoAddress},
		{"nomx.test.", 2525, aps("198.51.100.7:2525"), nil},
		{"null.test", 2525, nil, ErrNoAddress}, // no data
		{"servfail.test", 2525, nil, errTemp},
		// Address literals.
		{"198.51.100.3", 2525, aps("198.51.100.3:2525"), nil},
		{"[2001:db8::3]", 2525, aps("[2001:db8::3]:2525"), nil},
		// Loops: an own MX host; our own listener at our port.
		{"mx1.fwd.test", 2525, nil, ErrLoop},
		{"mx2.fwd.test.", 25, nil, ErrLoop},
		{"self.home.test", 2500, nil, ErrLoop},
		{"loop.test", 2500, nil, ErrLoop},
		{"127.0.0.1", 2500, nil, ErrLoop},
		{"192.0.2.99", 2500, nil, ErrLoop},
		{"0.0.0.0", 2500, nil, ErrLoop},
		// The same address at another port is someone else.
		{"self.home.test", 2525, aps("127.0.0.1:2525"), nil},
		{"loop.test", 25, aps("127.0.0.1:25"), nil},
		{"127.0.0.2", 2500, aps("127.0.0.2:2500"), nil}, // we listen on 127.0.0.1 only
	} {
		got, err := r.Addrs(ctx, record.Target{Pref: 10, Host: c.host, Port: c.port})
		switch {
		case c.err == errTemp:
			if err == nil || errors.Is(err, ErrNoAddress) || errors.Is(err, ErrLoop) {
				t.Errorf("Addrs(%s:%d) err = %v, want a temporary lookup error", c.host, c.port, err)
			}
		case !errors.Is(err, c.err) || (c.err == nil && err != nil):
			t.Errorf("Addrs(%s:%d) err = %v, want %v", c.host, c.port, err, c.err)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("Addrs(%s:%d) = %v, want %v", c.host, c.port, got, c.want)
		}
	}
	if d.tcp.Load() == 0 {
		t.Error("no TCP retry after a truncated answer")
	}
}

var errTemp = errors.New("temporary")

func TestAddrsUnspecifiedListener(t *testing.T) {
	r := NewResolver(hostedIndex(), ResolverConfig{
		Server:   "127.0.0.1:1", // never asked
		OwnAddrs: []netip.Addr{netip.IPv6Unspecified()},
		OwnPort:  25,
	})
	for _, h := range []string{"127.0.0.5", "::1", "self.home.test"} {
		if _, err := r.Addrs(context.Background(), record.Target{Host: h, Port: 25}); !errors.Is(err, ErrLoop) {
			t.Errorf("Addrs(%s:25) err = %v, want ErrLoop", h, err)
		}
	}
	if _, err := r.Addrs(context.Background(), record.Target{Host: "mail.home.test", Port: 25}); err != nil {
		t.Errorf("a foreign host at our port: %v", err)
	}
}

func TestAddrsSystemResolver(t *testing.T) {
	r := NewResolver(NewIndex(), ResolverConfig{Timeout: 3 * time.Second})
	got, err := r.Addrs(context.Background(), record.Target{Host: "localhost", Port: 2525})
	if err != nil {
		t.Skipf("system resolver has no localhost: %v", err)
	}
	if !containsAddr(got, "127.0.0.1:2525") && !containsAddr(got, "[::1]:2525") {
		t.Fatalf("localhost = %v", got)
	}
	for i := 1; i < len(got); i++ {
		if got[i-1].Addr().Is6() && got[i].Addr().Is4() {
			t.Fatalf("IPv6 before IPv4: %v", got)
		}
	}
}

func containsAddr(as []netip.AddrPort, s string) bool {
	for _, a := range as {
		if a == netip.MustParseAddrPort(s) {
			return true
		}
	}
	return false
}

func TestMX(t *testing.T) {
	d := startDNS(t)
	r := NewResolver(hostedIndex(), ResolverConfig{Server: d.addr, Timeout: 3 * time.Second})
	ctx := context.Background()
	tg := func(pref uint16, host string, port uint16) record.Target {
		return record.Target{Pref: pref, Host: host, Port: port}
	}
	for _, c := range []struct {
		domain string
		want   []record.Target
		err    error
	}{
		// DNS: preference order at port 25, names lowered.
		{"mxdom.test", []record.Target{tg(10, "a.mxdom.test", 25), tg(20, "b.mxdom.test", 25), tg(30, "c.mxdom.test", 25)}, nil},
		{"MXDOM.test.", []record.Target{tg(10, "a.mxdom.test", 25), tg(20, "b.mxdom.test", 25), tg(30, "c.mxdom.test", 25)}, nil},
		// No MX: the implicit MX (RFC 5321 5.1).
		{"nomx.test", []record.Target{tg(0, "nomx.test", 25)}, nil},
		// Null MX (RFC 7505); a stray null MX next to real ones is ignored.
		{"null.test", nil, ErrNullMX},
		{"mixed.test", []record.Target{tg(10, "mx.mixed.test", 25)}, nil},
		{"nx.test", nil, ErrNoDomain},
		{"servfail.test", nil, errTemp},
		// Hosted: a forwarded zone's route is the real destination.
		{"home.test", []record.Target{tg(10, "mail.home.test", 2525)}, nil},
		{"Example.com.", []record.Target{tg(10, "mail.example.com", 2525), tg(20, "backup.example.net", 25)}, nil},
		// Hosted, not forwarded: the MX as published.
		{"plain.test", []record.Target{tg(10, "mx.plain.test", 25)}, nil},
		{"sub.home.test", []record.Target{tg(10, "mx.sub.home.test", 25)}, nil},
		{"nullmx.home.test", nil, ErrNullMX},
		// Hosted without MX: implicit MX.
		{"sub.example.com", []record.Target{tg(0, "sub.example.com", 25)}, nil},
		{"mail.home.test", []record.Target{tg(0, "mail.home.test", 25)}, nil},
		// A hosted CNAME or unknown name goes to DNS (which says NXDOMAIN
		// for what it does not know... here: no data, so implicit MX).
		{"cn.home.test", []record.Target{tg(0, "cn.home.test", 25)}, nil},
		// Address literal.
		{"[192.0.2.5]", []record.Target{tg(0, "192.0.2.5", 25)}, nil},
	} {
		got, err := r.MX(ctx, c.domain)
		switch {
		case c.err == errTemp:
			if err == nil || errors.Is(err, ErrNullMX) || errors.Is(err, ErrNoDomain) {
				t.Errorf("MX(%s) err = %v, want a temporary lookup error", c.domain, err)
			}
		case !errors.Is(err, c.err) || (c.err == nil && err != nil):
			t.Errorf("MX(%s) err = %v, want %v", c.domain, err, c.err)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("MX(%s) = %v, want %v", c.domain, got, c.want)
		}
	}
}

func TestMXEqualPreferenceShuffled(t *testing.T) {
	mxs := []record.MX{{Pref: 10, Host: "a.test."}, {Pref: 10, Host: "b.test."}, {Pref: 5, Host: "c.test."}}
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		ts, err := mxTargets("x.test", mxs)
		if err != nil || len(ts) != 3 || ts[0].Host != "c.test" {
			t.Fatalf("mxTargets = %v, %v", ts, err)
		}
		seen[ts[1].Host] = true
	}
	if len(seen) != 2 {
		t.Errorf("equal preferences never shuffled: %v", seen)
	}
}

// TestLateBinding: each Addrs call reads the index as it is now.
func TestLateBinding(t *testing.T) {
	ix := hostedIndex()
	r := NewResolver(ix, ResolverConfig{Server: "127.0.0.1:1"})
	ctx := context.Background()
	tgt := ix.Route("home.test")[0]
	got, err := r.Addrs(ctx, tgt)
	if err != nil || got[0] != netip.MustParseAddrPort("192.0.2.10:2525") {
		t.Fatalf("before: %v %v", got, err)
	}
	ix.Update(zd("home.test", 2, "@ MX 10 mail.home.test:2526", "mail A 192.0.2.77"))
	tgt = ix.Route("home.test")[0]
	got, err = r.Addrs(ctx, tgt)
	if err != nil || !reflect.DeepEqual(got, aps("192.0.2.77:2526")) {
		t.Fatalf("after: %v %v", got, err)
	}
}
