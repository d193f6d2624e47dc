package dnsserver

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/mxport/mxport/dnsserver/rrl"
	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
)

// testUDP returns a socketless udpServer over h, as serve() in the UDP
// loop runs it, and a writer for it.
func testUDP(h *Handler) (*udpServer, *udpWriter) {
	ix := h.ix
	u := &udpServer{h: h, tp: tsigProvider{ix}, cache: newAnswerCache(cacheEntries, cacheBytes), key: make([]byte, 0, 260)}
	return u, &udpWriter{tp: tsigProvider{ix}}
}

var testClient = netip.MustParseAddrPort("192.0.2.1:5353")

// run answers pkt through the cache (fast: u.handle) or the Handler alone
// (u.slow) and returns a copy of the reply, nil when none.
func run(u *udpServer, w *udpWriter, pkt []byte, fast bool) []byte {
	w.reset(testClient, make([]byte, 0, 1500))
	if fast {
		u.handle(w, bytes.Clone(pkt))
	} else {
		u.slow(w, bytes.Clone(pkt))
	}
	return bytes.Clone(w.out)
}

// mixedCase returns name with every other letter upper case.
func mixedCase(name string) string {
	b := []byte(name)
	for i := 0; i < len(b); i += 2 {
		if b[i] >= 'a' && b[i] <= 'z' {
			b[i] -= 'a' - 'A'
		}
	}
	return string(b)
}

// fastQueries are questions of every kind the zone package answers, each
// in lower and mixed case, without EDNS and with several sizes, with and
// without RD and CD, with and without a cookie.
func fastQueries(t *testing.T) [][]byte {
	t.Helper()
	names := []string{
		"example.com.", "mail.example.com.", "www.example.com.", // forwarded MX, A, NODATA
		"plain.test.", "mail.plain.test.", "ns1.plain.test.",
		"x.w.plain.test.", "y.x.w.plain.test.", "*.w.plain.test.", "w.plain.test.", // wildcards
		"a.b.ent.plain.test.", "b.ent.plain.test.", "ent.plain.test.", // empty non-terminals
		"sub.plain.test.", "www.sub.plain.test.", "ns1.sub.plain.test.", // referral, glue
		"c1.plain.test.", "c2.plain.test.", "loop.plain.test.", // CNAME chain, loop
		"nope.plain.test.", "x.mail.plain.test.", // NXDOMAIN
		"big.plain.test.", "_sip._tcp.plain.test.", "unk.plain.test.",
		"example.org.", "xplain.test.", ".", // REFUSED
	}
	types := []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeMX, dns.TypeNS, dns.TypeSOA, dns.TypeTXT,
		dns.TypeCNAME, dns.TypeSRV, dns.TypeDS, dns.TypeANY, 65280}
	var pkts [][]byte
	rnd := rand.New(rand.NewPCG(1, 2))
	for _, name := range names {
		for _, typ := range types {
			for _, n := range []string{name, mixedCase(name)} {
				for _, edns := range []int{-1, 0, 512, 1232, 4096} {
					m := new(dns.Msg)
					m.SetQuestion(n, typ)
					m.Id = uint16(rnd.Uint32())
					m.RecursionDesired = rnd.IntN(2) == 0
					m.CheckingDisabled = rnd.IntN(4) == 0
					if edns >= 0 {
						m.SetEdns0(uint16(edns), rnd.IntN(2) == 0)
						if rnd.IntN(3) == 0 {
							m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"})
						}
					}
					b, err := m.Pack()
					if err != nil {
						t.Fatal(err)
					}
					pkts = append(pkts, b)
				}
			}
		}
	}
	return pkts
}

// TestFastPathIdentical sends every fastQueries packet through the cache
// twice (a miss, then a hit for lower-case names) with a new ID, RD and
// CD each time, and checks the replies are byte for byte the Handler's.
func TestFastPathIdentical(t *testing.T) {
	h := &Handler{ix: fuzzIndex(t)}
	u, w := testUDP(h)
	_, sw := testUDP(h)
	hits := 0
	for _, pkt := range fastQueries(t) {
		for i := range 3 {
			p := bytes.Clone(pkt)
			p[0], p[1] = byte(i), byte(len(pkt))
			p[2] ^= byte(i) & 1      // RD
			p[3] ^= byte(i) & 2 << 3 // CD
			_, hit := u.cache.get(mustKey(p), h.ix.generation())
			got, want := run(u, w, p, true), run(u, sw, p, false)
			if !bytes.Equal(got, want) {
				var q dns.Msg
				q.Unpack(p)
				t.Fatalf("%v (hit %v):\n fast %x\n slow %x", q.Question, hit, got, want)
			}
			if hit {
				hits++
			}
		}
	}
	if hits == 0 {
		t.Fatal("no query was answered from the cache")
	}
	t.Logf("%d hits", hits)
}

// mustKey is the cache key of a packet, or nil.
func mustKey(pkt []byte) []byte {
	key, _, _, ok := plainQuery(pkt, nil)
	if !ok {
		return nil
	}
	return key
}

// TestFastPathNotCached checks what the cache must leave to the Handler:
// mixed case, truncated replies, transfers, TSIG, other opcodes, EDNS
// versions and options it does not know.
func TestFastPathNotCached(t *testing.T) {
	h := &Handler{ix: fuzzIndex(t)}
	u, w := testUDP(h)
	q := func(name string, typ uint16, f func(m *dns.Msg)) []byte {
		m := new(dns.Msg)
		m.SetQuestion(name, typ)
		if f != nil {
			f(m)
		}
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for name, pkt := range map[string][]byte{
		"mixed case":     q("MaIl.plain.test.", dns.TypeA, nil),
		"truncated":      q("big.plain.test.", dns.TypeTXT, nil),
		"truncated EDNS": q("big.plain.test.", dns.TypeTXT, func(m *dns.Msg) { m.SetEdns0(1232, false) }),
		"AXFR":           q("plain.test.", dns.TypeAXFR, nil),
		"IXFR":           q("plain.test.", dns.TypeIXFR, nil),
		"CHAOS":          q("version.bind.", dns.TypeTXT, func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }),
		"NOTIFY":         q("plain.test.", dns.TypeSOA, func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }),
		"EDNS version 1": q("mail.plain.test.", dns.TypeA, func(m *dns.Msg) { m.SetEdns0(1232, false); m.IsEdns0().SetVersion(1) }),
		"EDNS option": q("mail.plain.test.", dns.TypeA, func(m *dns.Msg) {
			m.SetEdns0(1232, false)
			m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_NSID{Code: dns.EDNS0NSID}}
		}),
		"two OPT": q("mail.plain.test.", dns.TypeA, func(m *dns.Msg) { m.SetEdns0(1232, false); m.SetEdns0(1232, false) }),
		"answer section": q("mail.plain.test.", dns.TypeA, func(m *dns.Msg) {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "a.", Rrtype: dns.TypeA, Class: dns.ClassINET}}}
		}),
		"other additions": q("mail.plain.test.", dns.TypeA, func(m *dns.Msg) {
			m.Extra = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "a.", Rrtype: dns.TypeA, Class: dns.ClassINET}}}
		}),
	} {
		for range 2 {
			got, want := run(u, w, pkt, true), run(u, w, pkt, false)
			if !bytes.Equal(got, want) {
				t.Errorf("%s:\n fast %x\n slow %x", name, got, want)
			}
		}
		if n := u.cache.size(); n != 0 {
			t.Errorf("%s: cached (%d entries)", name, n)
		}
	}
	// Trailing bytes after the question: not a plain query.
	pkt := append(q("mail.plain.test.", dns.TypeA, nil), 0)
	if _, _, _, ok := plainQuery(pkt, nil); ok {
		t.Error("trailing byte accepted")
	}
}

// TestFastPathRRL checks that the cache's replies go through RRL as the
// Handler's do: a bucket sends once, then every reply slips (TC, no
// records, the OPT kept), identical to the Handler's slip.
func TestFastPathRRL(t *testing.T) {
	ix := fuzzIndex(t)
	limiter := func() *rrl.Limiter { return rrl.New(rrl.Config{ResponsesPerSecond: 1, Window: 1, Slip: 1}) }
	fast, fw := testUDP(&Handler{ix: ix, rrl: limiter()})
	slow, sw := testUDP(&Handler{ix: ix, rrl: limiter()})
	for _, edns := range []bool{false, true} {
		for _, name := range []string{"mail.plain.test.", "nope.plain.test.", "www.sub.plain.test.", "example.org."} {
			m := new(dns.Msg)
			m.SetQuestion(name, dns.TypeA)
			if edns {
				m.SetEdns0(1232, false)
			}
			pkt, _ := m.Pack()
			for i := range 4 {
				got, want := run(fast, fw, pkt, true), run(slow, sw, pkt, false)
				if !bytes.Equal(got, want) {
					// A bucket may refill between the two calls:
					// once more, both limited.
					got, want = run(fast, fw, pkt, true), run(slow, sw, pkt, false)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("%s EDNS %v, query %d:\n fast %x\n slow %x", name, edns, i, got, want)
				}
				var r dns.Msg
				if err := r.Unpack(got); err != nil {
					t.Fatal(err)
				}
				if i > 0 && (!r.Truncated || len(r.Answer)+len(r.Ns) != 0 || (r.IsEdns0() != nil) != edns) {
					t.Errorf("%s EDNS %v, query %d: not slipped: %v", name, edns, i, &r)
				}
			}
		}
	}
	if fast.cache.size() == 0 {
		t.Error("nothing cached with RRL on")
	}
}

// TestFastPathInvalidation checks that a change of the index is answered
// at once: a changed zone, a new zone below a hosted one, a removed zone.
func TestFastPathInvalidation(t *testing.T) {
	ix := fuzzIndex(t)
	h := &Handler{ix: ix}
	u, w := testUDP(h)
	ask := func(name string, typ uint16) *dns.Msg {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion(name, typ)
		pkt, _ := m.Pack()
		var r dns.Msg
		for range 2 { // the second is a hit, when nothing changed
			if err := r.Unpack(run(u, w, pkt, true)); err != nil {
				t.Fatal(err)
			}
		}
		return &r
	}
	zd := func(name string, recs ...record.Record) store.ZoneData {
		z := store.ZoneData{Zone: store.Zone{Name: name, Serial: 2026010101, SOA: store.SOA{
			MName: "ns1.fwd.test.", RName: "hostmaster." + name + ".", Refresh: 3600, Retry: 900,
			Expire: 1209600, Minimum: 300, TTL: 3600}}}
		for _, r := range recs {
			n, err := record.Normalize(name, r, record.Policy{})
			if err != nil {
				t.Fatal(err)
			}
			z.Records = append(z.Records, n)
		}
		return z
	}
	if r := ask("new.plain.test.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Fatalf("before: %v", r)
	}
	if r := ask("x.other.test.", dns.TypeA); r.Rcode != dns.RcodeRefused {
		t.Fatalf("before: %v", r)
	}
	ix.Update(zd("plain.test", record.Record{Name: "new", Type: "A", TTL: 300, Data: "192.0.2.1"}))
	if r := ask("new.plain.test.", dns.TypeA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("after the zone changed: %v", r)
	}
	ix.Update(zd("other.test", record.Record{Name: "x", Type: "A", TTL: 300, Data: "192.0.2.2"}))
	if r := ask("x.other.test.", dns.TypeA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("after a zone was added: %v", r)
	}
	ix.Update(zd("sub.new.plain.test"))
	if r := ask("sub.new.plain.test.", dns.TypeSOA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("after a zone was added below another: %v", r)
	}
	ix.Delete("other.test")
	if r := ask("x.other.test.", dns.TypeA); r.Rcode != dns.RcodeRefused {
		t.Errorf("after the zone was removed: %v", r)
	}
	ix.Load(nil)
	if r := ask("new.plain.test.", dns.TypeA); r.Rcode != dns.RcodeRefused {
		t.Errorf("after a reload without zones: %v", r)
	}
}

// TestAnswerCacheBounds checks the entry and byte bounds, and that what
// is kept is found again.
func TestAnswerCacheBounds(t *testing.T) {
	c := newAnswerCache(10, 2000)
	msg := func(i int) ([]byte, []byte) {
		m := new(dns.Msg)
		m.SetQuestion(fmt.Sprintf("n%d.test.", i), dns.TypeA)
		b, _ := m.Pack()
		b = append(b, make([]byte, i%200)...)
		key, _, _, _ := plainQuery(b[:len(b)-i%200], nil)
		return key, b
	}
	for i := range 1000 {
		key, b := msg(i)
		c.put(key, cachedAnswer{msg: b})
		if c.size() > 10 || c.bytes > 2000 {
			t.Fatalf("after %d puts: %d entries, %d bytes", i+1, c.size(), c.bytes)
		}
		if a, ok := c.get(key, 0); !ok || !bytes.Equal(a.msg, b) {
			t.Fatalf("put %d: not found", i)
		}
	}
	sum, held := 0, 0
	for _, a := range c.entries {
		if a.msg != nil {
			sum += len(a.msg)
			held++
		}
	}
	if sum != c.bytes || held != c.size() {
		t.Errorf("%d bytes in %d entries counted, %d in %d held", c.bytes, c.size(), sum, held)
	}
	if _, ok := c.get([]byte("\x02n9\x04test\x00\x00\x01\x00"), 1); ok {
		t.Error("an entry of another generation was served")
	}
	key, _ := msg(5000)
	c.put(key, cachedAnswer{msg: make([]byte, 3000)})
	if _, ok := c.get(key, 0); ok {
		t.Error("an entry over the byte bound was kept")
	}
}

// TestFastPathAllocs checks that a cache hit allocates nothing, with RRL
// and metrics on.
func TestFastPathAllocs(t *testing.T) {
	for _, withRRL := range []bool{false, true} {
		h := &Handler{ix: fuzzIndex(t)}
		if withRRL {
			h.rrl = rrl.New(rrl.Config{ResponsesPerSecond: 1 << 30})
		}
		u, w := testUDP(h)
		for _, name := range []string{"mail.plain.test.", "nope.plain.test.", "x.w.plain.test.", "example.org."} {
			m := new(dns.Msg)
			m.SetQuestion(name, dns.TypeA)
			m.SetEdns0(1232, false)
			pkt, _ := m.Pack()
			run(u, w, pkt, true)
			buf := make([]byte, 0, 1500)
			allocs := testing.AllocsPerRun(100, func() {
				w.reset(testClient, buf)
				u.handle(w, pkt)
				if w.out == nil {
					t.Fatal("no reply")
				}
			})
			if allocs != 0 {
				t.Errorf("%s (RRL %v): %.0f allocations per cached answer", strings.TrimSuffix(name, "."), withRRL, allocs)
			}
		}
	}
}
