package dnsserver

// FuzzHandler feeds arbitrary packets through the server's own path, as
// miekg/dns runs it for a UDP or TCP packet: the header through accept,
// the message through dns.Msg.Unpack, the TSIG through the index's keys,
// then Handler.ServeDNS with a ResponseWriter that packs and signs like
// miekg/dns's. No sockets and no Redis: the index is loaded by hand, so
// the fuzzer runs at full speed.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxport/mxport/dnsserver/rrl"
	"github.com/mxport/mxport/dnsserver/zone"
	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
)

const (
	fuzzKey    = "fuzz-key."
	fuzzSecret = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=" // 32 bytes
)

// fuzzIndex returns an index with a forwarded zone, a plain zone with most
// features (wildcard, delegation, CNAME chain, a large RRset) and a key.
func fuzzIndex(t testing.TB) *Index {
	t.Helper()
	mx := []string{"mx1.fwd.test", "mx2.fwd.test"}
	zones := map[string][]record.Record{
		"example.com": {
			{Name: "@", Type: "NS", TTL: 3600, Data: "ns1.fwd.test."},
			{Name: "@", Type: "MX", TTL: 3600, Data: "10 mail.example.com:2525"},
			{Name: "mail", Type: "A", TTL: 300, Data: "192.0.2.25"},
		},
		"plain.test": {
			{Name: "@", Type: "NS", TTL: 3600, Data: "ns1.plain.test."},
			{Name: "ns1", Type: "A", TTL: 3600, Data: "192.0.2.53"},
			{Name: "@", Type: "MX", TTL: 3600, Data: "10 mail.plain.test."},
			{Name: "mail", Type: "A", TTL: 300, Data: "192.0.2.10"},
			{Name: "mail", Type: "AAAA", TTL: 300, Data: "2001:db8::10"},
			{Name: "*.w", Type: "TXT", TTL: 300, Data: `"wild"`},
			{Name: "a.b.ent", Type: "A", TTL: 300, Data: "192.0.2.97"},
			{Name: "sub", Type: "NS", TTL: 3600, Data: "ns1.sub.plain.test."},
			{Name: "ns1.sub", Type: "A", TTL: 3600, Data: "192.0.2.54"},
			{Name: "c1", Type: "CNAME", TTL: 300, Data: "c2.plain.test."},
			{Name: "c2", Type: "CNAME", TTL: 300, Data: "mail.plain.test."},
			{Name: "loop", Type: "CNAME", TTL: 300, Data: "loop.plain.test."},
			{Name: "_sip._tcp", Type: "SRV", TTL: 300, Data: "10 5 5060 mail.plain.test."},
			{Name: "unk", Type: "TYPE65280", TTL: 300, Data: `\# 2 abcd`},
		},
	}
	for i := 0; i < 60; i++ {
		zones["plain.test"] = append(zones["plain.test"], record.Record{Name: "big", Type: "TXT", TTL: 300,
			Data: `"` + strings.Repeat(string(rune('a'+i%26)), 50+i) + `"`})
	}
	var zds []store.ZoneData
	for name, recs := range zones {
		zd := store.ZoneData{Zone: store.Zone{Name: name, Serial: 2026010100, SOA: store.SOA{
			MName: "ns1.fwd.test.", RName: "hostmaster." + name + ".", Refresh: 3600, Retry: 900,
			Expire: 1209600, Minimum: 300, TTL: 3600}}}
		for _, rc := range recs {
			n, err := record.Normalize(name, rc, record.Policy{MXHosts: mx})
			if err != nil {
				t.Fatalf("%s %+v: %v", name, rc, err)
			}
			zd.Records = append(zd.Records, n)
		}
		zds = append(zds, zd)
	}
	ix := NewIndex(zone.Options{MXHosts: mx}, nil)
	ix.Load(zds)
	ix.Keys([]store.TSIGKey{{Name: fuzzKey, Algorithm: dns.HmacSHA256, Secret: fuzzSecret, Zones: []string{"plain.test"}}})
	if ix.Len() != len(zones) {
		t.Fatalf("index holds %d zones, want %d", ix.Len(), len(zones))
	}
	return ix
}

// fuzzUpdater answers every UPDATE REFUSED without touching a store
// (dnsserver/update has its own tests).
type fuzzUpdater struct{}

func (fuzzUpdater) Apply(context.Context, *dns.Msg, string, []string) int { return dns.RcodeRefused }

// fuzzWriter is a dns.ResponseWriter of a TCP connection that records what
// would be sent, signing as miekg/dns's does.
type fuzzWriter struct {
	prov       dns.TsigProvider
	tsigStatus error
	reqMAC     string
	timersOnly bool
	out        [][]byte
	err        error // a reply that could not be packed
}

func (w *fuzzWriter) LocalAddr() net.Addr { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }

func (w *fuzzWriter) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5353}
}

func (w *fuzzWriter) WriteMsg(m *dns.Msg) error {
	var buf []byte
	var err error
	if m.IsTsig() != nil {
		buf, w.reqMAC, err = dns.TsigGenerateWithProvider(m, w.prov, w.reqMAC, w.timersOnly)
	} else {
		buf, err = m.Pack()
	}
	if err != nil {
		w.err = err
		return err
	}
	w.out = append(w.out, buf)
	return nil
}

func (w *fuzzWriter) Write(b []byte) (int, error) {
	w.out = append(w.out, append([]byte(nil), b...))
	return len(b), nil
}

func (w *fuzzWriter) Close() error          { return nil }
func (w *fuzzWriter) TsigStatus() error     { return w.tsigStatus }
func (w *fuzzWriter) TsigTimersOnly(b bool) { w.timersOnly = b }
func (w *fuzzWriter) Hijack()               {}

// serve runs one packet through the server's path and returns what it
// would send: over UDP the batched server's own (udpServer.slow, the
// answer cache aside: FuzzHandler compares the two); over
// TCP miekg/dns's, which serve re-enacts (accept, unpack, TSIG check, then
// the handler; miekg/dns itself answers what accept rejects or what does
// not unpack).
func serve(h *Handler, prov tsigProvider, packet []byte, udp bool) ([][]byte, error) {
	if len(packet) < 12 {
		return nil, nil // dropped silently by both
	}
	if udp {
		u := &udpServer{h: h, tp: prov}
		w := &udpWriter{tp: prov}
		w.reset(testClient, nil)
		u.slow(w, packet)
		if w.out == nil {
			return nil, nil
		}
		return [][]byte{w.out}, nil
	}
	dh := dns.Header{
		Id: binary.BigEndian.Uint16(packet), Bits: binary.BigEndian.Uint16(packet[2:]),
		Qdcount: binary.BigEndian.Uint16(packet[4:]), Ancount: binary.BigEndian.Uint16(packet[6:]),
		Nscount: binary.BigEndian.Uint16(packet[8:]), Arcount: binary.BigEndian.Uint16(packet[10:]),
	}
	if accept(dh) != dns.MsgAccept {
		return nil, nil
	}
	req := new(dns.Msg)
	if err := req.Unpack(packet); err != nil {
		return nil, nil
	}
	w := &fuzzWriter{prov: prov}
	if t := req.IsTsig(); t != nil {
		w.tsigStatus = dns.TsigVerifyWithProvider(packet, prov, "", false)
		w.reqMAC = t.MAC
	}
	h.ServeDNS(w, req)
	return w.out, w.err
}

// udpLimit is the most a UDP reply to req may hold.
func udpLimit(req *dns.Msg) int {
	var opt *dns.OPT
	for _, rr := range req.Extra {
		if o, ok := rr.(*dns.OPT); ok {
			if opt != nil {
				return 512 // FORMERR, no OPT back
			}
			opt = o
		}
	}
	if opt == nil {
		return 512
	}
	return max(512, min(int(opt.UDPSize()), 1232))
}

// fuzzSeeds are real queries of several kinds, packed.
func fuzzSeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	add := func(m *dns.Msg) {
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	q := func(name string, qtype uint16) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		return m
	}
	for _, c := range []struct {
		name string
		typ  uint16
	}{
		{"example.com.", dns.TypeMX}, {"plain.test.", dns.TypeMX}, {"mail.plain.test.", dns.TypeA},
		{"x.w.plain.test.", dns.TypeTXT}, {"b.ent.plain.test.", dns.TypeA}, {"www.sub.plain.test.", dns.TypeA},
		{"c1.plain.test.", dns.TypeA}, {"loop.plain.test.", dns.TypeA}, {"nope.plain.test.", dns.TypeA},
		{"big.plain.test.", dns.TypeTXT}, {"plain.test.", dns.TypeANY}, {"example.org.", dns.TypeA},
		{"_sip._tcp.plain.test.", dns.TypeSRV}, {"unk.plain.test.", 65280}, {"MaIl.PlAiN.TeSt.", dns.TypeA},
	} {
		add(q(c.name, c.typ))
		m := q(c.name, c.typ)
		m.SetEdns0(4096, true)
		add(m)
	}
	m := q("big.plain.test.", dns.TypeTXT)
	m.SetEdns0(1232, false)
	m.IsEdns0().SetVersion(1)
	add(m)
	m = q("plain.test.", dns.TypeAXFR)
	add(m)
	m = q("plain.test.", dns.TypeIXFR)
	m.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: "plain.test.", Rrtype: dns.TypeSOA, Class: dns.ClassINET}, Ns: "a.", Mbox: "b.", Serial: 1}}
	add(m)
	m = new(dns.Msg)
	m.SetNotify("plain.test.")
	add(m)
	m = new(dns.Msg)
	m.SetUpdate("plain.test.")
	m.Insert([]dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: "u.plain.test.", Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300}, Txt: []string{"x"}}})
	add(m)
	m = q("plain.test.", dns.TypeSOA)
	m.Opcode = dns.OpcodeStatus
	add(m)
	m = q("version.bind.", dns.TypeTXT)
	m.Question[0].Qclass = dns.ClassCHAOS
	add(m)
	// Signed: a SOA query, an AXFR, an UPDATE, and one with a wrong MAC.
	for _, m := range []*dns.Msg{q("plain.test.", dns.TypeSOA), q("plain.test.", dns.TypeAXFR), q("big.plain.test.", dns.TypeTXT)} {
		m.SetTsig(fuzzKey, dns.HmacSHA256, 300, time.Now().Unix())
		b, _, err := dns.TsigGenerate(m, fuzzSecret, "", false)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	m = new(dns.Msg)
	m.SetUpdate("plain.test.")
	m.RemoveRRset([]dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: "u.plain.test.", Rrtype: dns.TypeTXT, Class: dns.ClassINET}}})
	m.SetTsig(fuzzKey, dns.HmacSHA256, 300, time.Now().Unix())
	b, _, err := dns.TsigGenerate(m, base64.StdEncoding.EncodeToString([]byte("wrong secret")), "", false)
	if err != nil {
		t.Fatal(err)
	}
	seeds = append(seeds, b)
	return seeds
}

func FuzzHandler(f *testing.F) {
	ix := fuzzIndex(f)
	prov := tsigProvider{ix}
	h := &Handler{ix: ix, updater: fuzzUpdater{}}
	// A second handler with RRL on, so the slip and drop paths run too.
	hr := &Handler{ix: ix, updater: fuzzUpdater{}, rrl: rrl.New(rrl.Config{ResponsesPerSecond: 1, Window: 1, Slip: 2})}
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	// The UDP path with its answer cache, kept across packets.
	cached, cw := testUDP(h)
	f.Fuzz(func(t *testing.T, packet []byte) {
		if mustKey(packet) != nil {
			// A plain query through the cache, twice (a miss, then
			// maybe a hit): the Handler's reply, byte for byte.
			// (Anything else goes to the Handler; signed replies
			// carry the time.)
			want := run(cached, cw, packet, false)
			for range 2 {
				if got := run(cached, cw, packet, true); !bytes.Equal(got, want) {
					t.Fatalf("cached reply differs\nrequest %x\nfast %x\nslow %x", packet, got, want)
				}
			}
		}
		for _, udp := range []bool{true, false} {
			for _, handler := range []*Handler{h, hr} {
				// TSIG verification rewrites the packet in place (id
				// and ARCOUNT): each pass gets its own copy.
				out, err := serve(handler, prov, bytes.Clone(packet), udp)
				if err != nil {
					t.Fatalf("reply does not pack: %v\nrequest %x", err, packet)
				}
				var req dns.Msg
				if req.Unpack(packet) != nil && len(packet) >= 12 {
					req.Id = binary.BigEndian.Uint16(packet)
				}
				for _, b := range out {
					if len(b) > 65535 {
						t.Fatalf("reply of %d bytes", len(b))
					}
					if udp && len(b) > udpLimit(&req) {
						t.Fatalf("UDP reply of %d bytes, limit %d", len(b), udpLimit(&req))
					}
					var resp dns.Msg
					if err := resp.Unpack(b); err != nil {
						t.Fatalf("reply does not unpack: %v (udp %v, rrl %v)\nrequest %x\nreply   %x", err, udp, handler.rrl != nil, packet, b)
					}
					if !resp.Response || resp.Id != req.Id || resp.RecursionAvailable {
						t.Fatalf("bad reply header: %v\nrequest %x\nreply   %x", resp.MsgHdr, packet, b)
					}
				}
			}
		}
	})
}

// TestHandlerAllocs bounds the allocations of a query through the handler.
func TestHandlerAllocs(t *testing.T) {
	ix := fuzzIndex(t)
	prov := tsigProvider{ix}
	h := &Handler{ix: ix}
	for _, c := range []struct {
		name string
		typ  uint16
		max  float64
	}{
		{"mail.plain.test.", dns.TypeA, 40}, {"nope.plain.test.", dns.TypeA, 40}, {"big.plain.test.", dns.TypeTXT, 60},
		{"example.org.", dns.TypeA, 40}, {"c1.plain.test.", dns.TypeA, 50},
	} {
		m := new(dns.Msg)
		m.SetQuestion(c.name, c.typ)
		packet, _ := m.Pack()
		allocs := testing.AllocsPerRun(200, func() {
			if out, _ := serve(h, prov, packet, true); len(out) != 1 {
				t.Fatal("no reply")
			}
		})
		t.Logf("%s %s: %.0f allocations per query (unpack, handler, pack)", c.name, dns.TypeToString[c.typ], allocs)
		if allocs > c.max {
			t.Errorf("%s %s: %.0f allocations per query, want at most %.0f", c.name, dns.TypeToString[c.typ], allocs, c.max)
		}
	}
}
