package update

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
	"github.com/mxport/mxport/store/storetest"
)

func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	storetest.Main(m)
}

var bg = context.Background()

const (
	zone = "example.com"
	key  = "acme-key."
)

var keyZones = []string{zone}

// base are the records every table case starts from, besides the apex NS
// records CreateZone makes (ns1.fwd.test., ns2.fwd.test.).
var base = []record.Record{
	{Name: "www", Type: "A", TTL: 300, Data: "192.0.2.1"},
	{Name: "www", Type: "A", TTL: 300, Data: "192.0.2.2"},
	{Name: "alias", Type: "CNAME", TTL: 300, Data: "www.example.com."},
	{Name: "@", Type: "MX", TTL: 3600, Data: "10 mail.example.com:2525"},
	{Name: "@", Type: "TXT", TTL: 300, Data: `"v=spf1 -all"`},
}

// newZone returns a store on a fresh database holding zone with recs.
func newZone(t testing.TB, zone string, recs ...record.Record) *store.Store {
	t.Helper()
	s := storetest.New(t)
	if _, err := s.CreateAccount(bg, "acme", store.RoleCustomer, ""); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, zone, recs)
	return s
}

func mustCreate(t testing.TB, s *store.Store, zone string, recs []record.Record) {
	t.Helper()
	if _, err := s.CreateZone(bg, zone, "acme"); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if _, err := s.AddRecord(bg, zone, r); err != nil {
			t.Fatalf("AddRecord(%+v): %v", r, err)
		}
	}
}

func mustData(t testing.TB, s *store.Store, zone string) store.ZoneData {
	t.Helper()
	zd, err := s.ZoneData(bg, zone)
	if err != nil {
		t.Fatal(err)
	}
	return zd
}

// lines returns records as sorted "name ttl type data" lines.
func lines(rs []record.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Name + " " + strconv.Itoa(int(r.TTL)) + " " + r.Type + " " + r.Data
	}
	sort.Strings(out)
	return out
}

// rr parses one record in presentation format.
func rr(s string) dns.RR {
	r, err := dns.NewRR(s)
	if err != nil || r == nil {
		panic(fmt.Sprintf("rr %q: %v", s, err))
	}
	return r
}

func rrs(ss ...string) []dns.RR {
	out := make([]dns.RR, len(ss))
	for i, s := range ss {
		out[i] = rr(s)
	}
	return out
}

// upd returns an UPDATE for zone built by fn.
func upd(zone string, fn func(m *dns.Msg)) *dns.Msg {
	m := new(dns.Msg)
	m.SetUpdate(dns.Fqdn(zone))
	if fn != nil {
		fn(m)
	}
	return m
}

// plus returns the lines of the base records (normalised, as stored) and
// the apex NS records, with add added and drop removed.
func plus(add []string, drop ...string) []string {
	recs := []record.Record{
		{Name: "@", Type: "NS", TTL: 3600, Data: "ns1.fwd.test."},
		{Name: "@", Type: "NS", TTL: 3600, Data: "ns2.fwd.test."},
	}
	for _, r := range base {
		n, err := record.Normalize(zone, r, record.Policy{})
		if err != nil {
			panic(err)
		}
		recs = append(recs, n)
	}
	out := lines(recs)
	for _, d := range drop {
		i := indexOf(out, d)
		if i < 0 {
			panic("plus: no line " + d)
		}
		out = append(out[:i], out[i+1:]...)
	}
	out = append(out, add...)
	sort.Strings(out)
	return out
}

func indexOf(ss []string, s string) int {
	for i, x := range ss {
		if x == s {
			return i
		}
	}
	return -1
}

func TestApply(t *testing.T) {
	t.Parallel()
	unchanged := []string(nil)
	cases := []struct {
		name  string
		zone  string // the zone section; default zone
		key   string // default key; "-" for unsigned
		zones []string
		msg   func(m *dns.Msg)
		rcode int
		want  []string // records after; nil: as before
	}{
		// Adds and deletes (RFC 2136 2.5, 3.4.2).
		{name: "add acme TXT", msg: func(m *dns.Msg) {
			m.Insert(rrs(`_acme-challenge.example.com. 120 IN TXT "token-1"`))
		}, want: plus([]string{`_acme-challenge 120 TXT "token-1"`})},
		{name: "add with mixed case owner", msg: func(m *dns.Msg) {
			m.Insert(rrs(`_ACME-Challenge.Example.COM. 120 IN TXT "token-1"`))
		}, want: plus([]string{`_acme-challenge 120 TXT "token-1"`})},
		{name: "delete one record", msg: func(m *dns.Msg) {
			m.Remove(rrs("www.example.com. 0 IN A 192.0.2.1"))
		}, want: plus(nil, "www 300 A 192.0.2.1")},
		{name: "delete absent record is a no-op", msg: func(m *dns.Msg) {
			m.Remove(rrs("www.example.com. 0 IN A 192.0.2.99"))
		}, want: unchanged},
		{name: "delete RRset", msg: func(m *dns.Msg) {
			m.RemoveRRset(rrs("www.example.com. 0 IN A 192.0.2.1"))
		}, want: plus(nil, "www 300 A 192.0.2.1", "www 300 A 192.0.2.2")},
		{name: "delete name", msg: func(m *dns.Msg) {
			m.RemoveName(rrs("alias.example.com. 0 IN A 0.0.0.0"))
		}, want: plus(nil, "alias 300 CNAME www.example.com.")},
		{name: "delete forwarded MX without port", msg: func(m *dns.Msg) {
			m.Remove(rrs("example.com. 0 IN MX 10 MAIL.example.com."))
		}, want: plus(nil, "@ 3600 MX 10 mail.example.com.:2525")},
		{name: "add identical MX keeps port, takes TTL", msg: func(m *dns.Msg) {
			m.Insert(rrs("example.com. 600 IN MX 10 mail.example.com."))
		}, want: plus([]string{"@ 600 MX 10 mail.example.com.:2525"}, "@ 3600 MX 10 mail.example.com.:2525")},
		{name: "add identical record is a no-op", msg: func(m *dns.Msg) {
			m.Insert(rrs("www.example.com. 300 IN A 192.0.2.1"))
		}, want: unchanged},
		{name: "add identical record with new TTL", msg: func(m *dns.Msg) {
			m.Insert(rrs("www.example.com. 60 IN A 192.0.2.1"))
		}, want: plus([]string{"www 60 A 192.0.2.1"}, "www 300 A 192.0.2.1")},
		{name: "add then delete in one update", msg: func(m *dns.Msg) {
			m.Insert(rrs("new.example.com. 300 IN A 192.0.2.9"))
			m.RemoveName(rrs("new.example.com. 0 IN A 0.0.0.0"))
		}, want: unchanged},
		{name: "replace CNAME by A", msg: func(m *dns.Msg) {
			m.RemoveName(rrs("alias.example.com. 0 IN A 0.0.0.0"))
			m.Insert(rrs("alias.example.com. 300 IN A 192.0.2.7"))
		}, want: plus([]string{"alias 300 A 192.0.2.7"}, "alias 300 CNAME www.example.com.")},
		{name: "CNAME replaces CNAME", msg: func(m *dns.Msg) {
			m.Insert(rrs("alias.example.com. 300 IN CNAME other.example.net."))
		}, want: plus([]string{"alias 300 CNAME other.example.net."}, "alias 300 CNAME www.example.com.")},

		// CNAME and other data (RFC 2136 3.4.2.2): ignored.
		{name: "CNAME where data exists ignored", msg: func(m *dns.Msg) {
			m.Insert(rrs("www.example.com. 300 IN CNAME other.example.net."))
		}, want: unchanged},
		{name: "data where CNAME exists ignored", msg: func(m *dns.Msg) {
			m.Insert(rrs("alias.example.com. 300 IN TXT hello"))
		}, want: unchanged},
		{name: "CNAME at apex ignored", msg: func(m *dns.Msg) {
			m.Insert(rrs("example.com. 300 IN CNAME other.example.net."))
		}, want: unchanged},
		{name: "CNAME ignored, rest applied", msg: func(m *dns.Msg) {
			m.Insert(rrs("www.example.com. 300 IN CNAME other.example.net.", "new.example.com. 300 IN AAAA 2001:db8::1"))
		}, want: plus([]string{"new 300 AAAA 2001:db8::1"})},

		// The apex (RFC 2136 3.4.2.3, 3.4.2.4).
		{name: "last apex NS delete ignored", msg: func(m *dns.Msg) {
			m.Remove(rrs("example.com. 0 IN NS ns1.fwd.test.", "example.com. 0 IN NS NS2.fwd.test."))
		}, want: plus(nil, "@ 3600 NS ns1.fwd.test.")},
		{name: "apex NS RRset delete ignored", msg: func(m *dns.Msg) {
			m.RemoveRRset(rrs("example.com. 0 IN NS ns1.fwd.test."))
		}, want: unchanged},
		{name: "apex SOA RRset delete ignored", msg: func(m *dns.Msg) {
			m.RemoveRRset(rrs("example.com. 0 IN SOA . . 0 0 0 0 0"))
		}, want: unchanged},
		{name: "ANY ANY at apex keeps NS", msg: func(m *dns.Msg) {
			m.RemoveName(rrs("example.com. 0 IN A 0.0.0.0"))
		}, want: plus(nil, "@ 3600 MX 10 mail.example.com.:2525", `@ 300 TXT "v=spf1 -all"`)},
		{name: "NS added next to apex NS", msg: func(m *dns.Msg) {
			m.Insert(rrs("example.com. 3600 IN NS ns3.example.net."))
		}, want: plus([]string{"@ 3600 NS ns3.example.net."})},

		// Prerequisites (RFC 2136 2.4, 3.2), each true then false.
		{name: "name in use", msg: func(m *dns.Msg) {
			m.NameUsed(rrs("www.example.com. 0 IN A 0.0.0.0"))
			m.Insert(rrs("x.example.com. 300 IN A 192.0.2.5"))
		}, want: plus([]string{"x 300 A 192.0.2.5"})},
		{name: "name in use: apex", msg: func(m *dns.Msg) {
			m.NameUsed(rrs("example.com. 0 IN A 0.0.0.0"))
		}, want: unchanged},
		{name: "name in use: false", msg: func(m *dns.Msg) {
			m.NameUsed(rrs("nx.example.com. 0 IN A 0.0.0.0"))
			m.Insert(rrs("x.example.com. 300 IN A 192.0.2.5"))
		}, rcode: dns.RcodeNameError},
		{name: "name not in use", msg: func(m *dns.Msg) {
			m.NameNotUsed(rrs("nx.example.com. 0 IN A 0.0.0.0"))
			m.Insert(rrs("nx.example.com. 300 IN A 192.0.2.5"))
		}, want: plus([]string{"nx 300 A 192.0.2.5"})},
		{name: "name not in use: false", msg: func(m *dns.Msg) {
			m.NameNotUsed(rrs("WWW.example.com. 0 IN A 0.0.0.0"))
			m.Insert(rrs("x.example.com. 300 IN A 192.0.2.5"))
		}, rcode: dns.RcodeYXDomain},
		{name: "RRset exists", msg: func(m *dns.Msg) {
			m.RRsetUsed(rrs("www.example.com. 0 IN A 0.0.0.0"))
			m.Insert(rrs("x.example.com. 300 IN A 192.0.2.5"))
		}, want: plus([]string{"x 300 A 192.0.2.5"})},
		{name: "RRset exists: SOA at apex", msg: func(m *dns.Msg) {
			m.RRsetUsed(rrs("example.com. 0 IN SOA . . 0 0 0 0 0"))
		}, want: unchanged},
		{name: "RRset exists: false", msg: func(m *dns.Msg) {
			m.RRsetUsed(rrs("www.example.com. 0 IN TXT x"))
			m.Insert(rrs("x.example.com. 300 IN A 192.0.2.5"))
		}, rcode: dns.RcodeNXRrset},
		{name: "RRset does not exist", msg: func(m *dns.Msg) {
			m.RRsetNotUsed(rrs("www.example.com. 0 IN TXT x"))
			m.Insert(rrs("www.example.com. 300 IN TXT hello"))
		}, want: plus([]string{`www 300 TXT "hello"`})},
		{name: "RRset does not exist: false", msg: func(m *dns.Msg) {
			m.RRsetNotUsed(rrs("www.example.com. 0 IN A 0.0.0.0"))
			m.Insert(rrs("x.example.com. 300 IN A 192.0.2.5"))
		}, rcode: dns.RcodeYXRrset},
		{name: "RRset equals (value dependent)", msg: func(m *dns.Msg) {
			m.Used(rrs("www.example.com. 300 IN A 192.0.2.2", "www.example.com. 300 IN A 192.0.2.1"))
			m.Insert(rrs("x.example.com. 300 IN A 192.0.2.5"))
		}, want: plus([]string{"x 300 A 192.0.2.5"})},
		{name: "RRset equals: case and MX port do not matter", msg: func(m *dns.Msg) {
			m.Used(rrs("alias.example.com. 300 IN CNAME WWW.Example.COM.", "example.com. 0 IN MX 10 mail.example.com."))
		}, want: unchanged},
		{name: "RRset equals: subset", msg: func(m *dns.Msg) {
			m.Used(rrs("www.example.com. 300 IN A 192.0.2.1"))
			m.Insert(rrs("x.example.com. 300 IN A 192.0.2.5"))
		}, rcode: dns.RcodeNXRrset},
		{name: "RRset equals: other value", msg: func(m *dns.Msg) {
			m.Used(rrs("www.example.com. 300 IN A 192.0.2.1", "www.example.com. 300 IN A 192.0.2.3"))
			m.Insert(rrs("x.example.com. 300 IN A 192.0.2.5"))
		}, rcode: dns.RcodeNXRrset},
		{name: "RRset equals: absent", msg: func(m *dns.Msg) {
			m.Used(rrs("nx.example.com. 300 IN A 192.0.2.1"))
		}, rcode: dns.RcodeNXRrset},
		{name: "later prerequisite fails", msg: func(m *dns.Msg) {
			m.NameUsed(rrs("www.example.com. 0 IN A 0.0.0.0"))
			m.RRsetNotUsed(rrs("www.example.com. 0 IN A 0.0.0.0"))
			m.Insert(rrs("x.example.com. 300 IN A 192.0.2.5"))
		}, rcode: dns.RcodeYXRrset},

		// Names outside the zone (RFC 2136 3.2, 3.4.1.3).
		{name: "prerequisite outside zone", msg: func(m *dns.Msg) {
			m.NameUsed(rrs("www.example.net. 0 IN A 0.0.0.0"))
		}, rcode: dns.RcodeNotZone},
		{name: "update outside zone", msg: func(m *dns.Msg) {
			m.Insert(rrs("x.example.com. 300 IN A 192.0.2.5", "www.notexample.com. 300 IN A 192.0.2.5"))
		}, rcode: dns.RcodeNotZone},
		{name: "update at parent", msg: func(m *dns.Msg) {
			m.Insert(rrs("com. 300 IN A 192.0.2.5"))
		}, rcode: dns.RcodeNotZone},

		// Permission (RFC 2136 3.3, RFC 8945).
		{name: "unsigned", key: "-", msg: func(m *dns.Msg) {
			m.Insert(rrs("x.example.com. 300 IN A 192.0.2.5"))
		}, rcode: dns.RcodeRefused},
		{name: "key of another zone", zones: []string{"other.test"}, msg: func(m *dns.Msg) {
			m.Insert(rrs("x.example.com. 300 IN A 192.0.2.5"))
		}, rcode: dns.RcodeNotAuth},
		{name: "zone not hosted", zone: "nothosted.test", zones: []string{"nothosted.test"}, msg: func(m *dns.Msg) {
			m.Insert(rrs("x.nothosted.test. 300 IN A 192.0.2.5"))
		}, rcode: dns.RcodeNotAuth},
		{name: "key zone not canonical", zones: []string{"Example.COM."}, msg: func(m *dns.Msg) {
			m.Insert(rrs("x.example.com. 300 IN A 192.0.2.5"))
		}, want: plus([]string{"x 300 A 192.0.2.5"})},

		// Format errors (RFC 2136 3.1.1, 3.2, 3.4.1.3).
		{name: "no zone", msg: func(m *dns.Msg) { m.Question = nil }, rcode: dns.RcodeFormatError},
		{name: "two zones", msg: func(m *dns.Msg) {
			m.Question = append(m.Question, m.Question[0])
		}, rcode: dns.RcodeFormatError},
		{name: "zone type not SOA", msg: func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeA }, rcode: dns.RcodeFormatError},
		{name: "zone class CH", msg: func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }, rcode: dns.RcodeFormatError},
		{name: "prerequisite TTL", msg: func(m *dns.Msg) {
			m.Answer = append(m.Answer, &dns.ANY{Hdr: dns.RR_Header{Name: "www.example.com.", Rrtype: dns.TypeA, Class: dns.ClassANY, Ttl: 5}})
		}, rcode: dns.RcodeFormatError},
		{name: "prerequisite ANY with data", msg: func(m *dns.Msg) {
			r := rr("www.example.com. 0 IN A 192.0.2.1")
			r.Header().Class = dns.ClassANY
			m.Answer = append(m.Answer, r)
		}, rcode: dns.RcodeFormatError},
		{name: "prerequisite class CH", msg: func(m *dns.Msg) {
			r := rr("www.example.com. 0 CH A 192.0.2.1")
			m.Answer = append(m.Answer, r)
		}, rcode: dns.RcodeFormatError},
		{name: "update class CH", msg: func(m *dns.Msg) {
			m.Ns = append(m.Ns, rr("www.example.com. 300 CH A 192.0.2.1"))
		}, rcode: dns.RcodeFormatError},
		{name: "update IN ANY", msg: func(m *dns.Msg) {
			m.Ns = append(m.Ns, &dns.ANY{Hdr: dns.RR_Header{Name: "www.example.com.", Rrtype: dns.TypeANY, Class: dns.ClassINET, Ttl: 300}})
		}, rcode: dns.RcodeFormatError},
		{name: "update ANY AXFR", msg: func(m *dns.Msg) {
			m.Ns = append(m.Ns, &dns.ANY{Hdr: dns.RR_Header{Name: "www.example.com.", Rrtype: dns.TypeAXFR, Class: dns.ClassANY}})
		}, rcode: dns.RcodeFormatError},
		{name: "update NONE ANY", msg: func(m *dns.Msg) {
			m.Ns = append(m.Ns, &dns.ANY{Hdr: dns.RR_Header{Name: "www.example.com.", Rrtype: dns.TypeANY, Class: dns.ClassNONE}})
		}, rcode: dns.RcodeFormatError},
		{name: "update NONE with TTL", msg: func(m *dns.Msg) {
			r := rr("www.example.com. 300 IN A 192.0.2.1")
			r.Header().Class = dns.ClassNONE
			m.Ns = append(m.Ns, r)
		}, rcode: dns.RcodeFormatError},
		{name: "update ANY with TTL", msg: func(m *dns.Msg) {
			m.Ns = append(m.Ns, &dns.ANY{Hdr: dns.RR_Header{Name: "www.example.com.", Rrtype: dns.TypeA, Class: dns.ClassANY, Ttl: 1}})
		}, rcode: dns.RcodeFormatError},
		{name: "nil RR", msg: func(m *dns.Msg) { m.Ns = append(m.Ns, nil) }, rcode: dns.RcodeFormatError},
		{name: "not an UPDATE", msg: func(m *dns.Msg) { m.Opcode = dns.OpcodeQuery }, rcode: dns.RcodeNotImplemented},

		// Data the store would not take: REFUSED, nothing changed.
		{name: "TTL below the minimum is raised to it", msg: func(m *dns.Msg) {
			m.Insert(rrs(`_acme-challenge.example.com. 10 IN TXT "certbot"`))
		}, want: plus([]string{`_acme-challenge 30 TXT "certbot"`})},
		{name: "TTL too high", msg: func(m *dns.Msg) {
			m.Insert(rrs("x.example.com. 300 IN A 192.0.2.5", "y.example.com. 99999999 IN A 192.0.2.5"))
		}, rcode: dns.RcodeRefused},
		{name: "type not stored", msg: func(m *dns.Msg) {
			m.Insert(rrs("x.example.com. 300 IN A 192.0.2.5", "x.example.com. 300 IN NSEC y.example.com. A"))
		}, rcode: dns.RcodeRefused},
		{name: "bad MX target", msg: func(m *dns.Msg) {
			m.Insert(rrs("example.com. 300 IN MX 10 192.0.2.1."))
		}, rcode: dns.RcodeRefused},
		{name: "empty rdata add", msg: func(m *dns.Msg) {
			m.Ns = append(m.Ns, &dns.ANY{Hdr: dns.RR_Header{Name: "x.example.com.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}})
		}, rcode: dns.RcodeRefused},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := newZone(t, zone, base...)
			before := mustData(t, s, zone)
			z := zone
			if c.zone != "" {
				z = c.zone
			}
			k, zs := key, keyZones
			if c.key == "-" {
				k = ""
			}
			if c.zones != nil {
				zs = c.zones
			}
			m := upd(z, c.msg)
			if got := New(s).Apply(bg, m, k, zs); got != c.rcode {
				t.Fatalf("rcode %s, want %s", dns.RcodeToString[got], dns.RcodeToString[c.rcode])
			}
			after := mustData(t, s, zone)
			want := c.want
			if want == nil {
				want = lines(before.Records)
			}
			if got := lines(after.Records); !reflect.DeepEqual(got, want) {
				t.Fatalf("records:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			// One serial bump when something changed, none otherwise.
			bumps := uint32(0)
			if !reflect.DeepEqual(lines(after.Records), lines(before.Records)) {
				bumps = 1
			}
			if after.Serial != before.Serial+bumps || after.Version != before.Version+uint64(bumps) {
				t.Fatalf("serial %d version %d, was %d %d: want %d bump(s)", after.Serial, after.Version, before.Serial, before.Version, bumps)
			}
		})
	}
}

// TestSOAPrerequisite checks the value-dependent prerequisite on the SOA,
// which is no stored record.
func TestSOAPrerequisite(t *testing.T) {
	t.Parallel()
	s := newZone(t, zone)
	zd := mustData(t, s, zone)
	soa := func(serial uint32) dns.RR {
		return rr(fmt.Sprintf("example.com. 0 IN SOA NS1.fwd.test. hostmaster.example.com. %d 3600 900 1209600 300", serial))
	}
	u := New(s)
	m := upd(zone, func(m *dns.Msg) {
		m.Used([]dns.RR{soa(zd.Serial - 1)})
		m.Insert(rrs("x.example.com. 300 IN A 192.0.2.5"))
	})
	if rc := u.Apply(bg, m, key, keyZones); rc != dns.RcodeNXRrset {
		t.Fatalf("rcode %s, want NXRRSET", dns.RcodeToString[rc])
	}
	m = upd(zone, func(m *dns.Msg) {
		m.Used([]dns.RR{soa(zd.Serial)})
		m.Insert(rrs("x.example.com. 300 IN A 192.0.2.5"))
	})
	if rc := u.Apply(bg, m, key, keyZones); rc != dns.RcodeSuccess {
		t.Fatalf("rcode %s", dns.RcodeToString[rc])
	}
	if after := mustData(t, s, zone); after.Serial != zd.Serial+1 {
		t.Fatalf("serial %d, want %d", after.Serial, zd.Serial+1)
	}
}

// TestOneSerialBump checks that an UPDATE of several operations changes
// the zone once: one serial bump, one version (RFC 2136 3.6, 3.7).
func TestOneSerialBump(t *testing.T) {
	t.Parallel()
	s := newZone(t, zone, base...)
	before := mustData(t, s, zone)
	m := upd(zone, func(m *dns.Msg) {
		m.Insert(rrs(`_acme-challenge.example.com. 60 IN TXT "a"`, `_acme-challenge.example.com. 60 IN TXT "b"`,
			"new.example.com. 300 IN A 192.0.2.9"))
		m.Remove(rrs("www.example.com. 0 IN A 192.0.2.1"))
		m.RemoveName(rrs("alias.example.com. 0 IN A 0.0.0.0"))
	})
	if rc := New(s).Apply(bg, m, key, keyZones); rc != dns.RcodeSuccess {
		t.Fatalf("rcode %s", dns.RcodeToString[rc])
	}
	after := mustData(t, s, zone)
	if after.Serial != before.Serial+1 || after.Version != before.Version+1 {
		t.Fatalf("serial %d -> %d, version %d -> %d: want one bump", before.Serial, after.Serial, before.Version, after.Version)
	}
	if len(after.Records) != len(before.Records)+3-2 {
		t.Fatalf("records: %q", lines(after.Records))
	}
	// The same UPDATE again changes nothing: no bump.
	if rc := New(s).Apply(bg, m, key, keyZones); rc != dns.RcodeSuccess {
		t.Fatalf("rcode %s", dns.RcodeToString[rc])
	}
	if again := mustData(t, s, zone); again.Serial != after.Serial || again.Version != after.Version {
		t.Fatalf("repeated UPDATE bumped serial %d -> %d", after.Serial, again.Serial)
	}
}

// TestSOA checks SOA adds: a newer serial replaces the SOA fields and sets
// the serial, an older one is ignored (RFC 2136 3.4.2.2).
func TestSOA(t *testing.T) {
	t.Parallel()
	s := newZone(t, zone)
	before := mustData(t, s, zone)
	u := New(s)
	old := fmt.Sprintf("example.com. 600 IN SOA ns9.example.net. admin.example.com. %d 7200 600 1209600 60", before.Serial-1)
	if rc := u.Apply(bg, upd(zone, func(m *dns.Msg) { m.Insert(rrs(old)) }), key, keyZones); rc != dns.RcodeSuccess {
		t.Fatalf("rcode %s", dns.RcodeToString[rc])
	}
	if zd := mustData(t, s, zone); zd.Serial != before.Serial || zd.SOA != before.SOA {
		t.Fatalf("an older SOA changed the zone: %+v", zd.Zone)
	}
	newer := before.Serial + 1000
	soa := fmt.Sprintf("example.com. 600 IN SOA NS9.example.net. admin.example.com. %d 7200 600 1209600 60", newer)
	if rc := u.Apply(bg, upd(zone, func(m *dns.Msg) { m.Insert(rrs(soa)) }), key, keyZones); rc != dns.RcodeSuccess {
		t.Fatalf("rcode %s", dns.RcodeToString[rc])
	}
	zd := mustData(t, s, zone)
	want := store.SOA{MName: "ns9.example.net.", RName: "admin.example.com.", Refresh: 7200, Retry: 600, Expire: 1209600, Minimum: 60, TTL: 600}
	if zd.Serial != newer || zd.SOA != want {
		t.Fatalf("zone after SOA add: serial %d %+v, want %d %+v", zd.Serial, zd.SOA, newer, want)
	}
	// The same SOA again: nothing to do.
	if rc := u.Apply(bg, upd(zone, func(m *dns.Msg) { m.Insert(rrs(soa)) }), key, keyZones); rc != dns.RcodeSuccess {
		t.Fatalf("rcode %s", dns.RcodeToString[rc])
	}
	if again := mustData(t, s, zone); again.Version != zd.Version {
		t.Fatalf("the current SOA re-added bumped the zone")
	}
	// Invalid SOA fields: REFUSED.
	bad := fmt.Sprintf("example.com. 600 IN SOA ns9.example.net. admin.example.com. %d 1 1 1 60", newer+1)
	if rc := u.Apply(bg, upd(zone, func(m *dns.Msg) { m.Insert(rrs(bad)) }), key, keyZones); rc != dns.RcodeRefused {
		t.Fatalf("rcode %s, want REFUSED", dns.RcodeToString[rc])
	}
}

// TestConcurrent applies UPDATEs to one zone from two goroutines. Through
// one Updater (one server) all are applied. Through two (two servers, which
// only the store's IfVersion keeps apart) each UPDATE is applied whole or,
// after maxAttempts lost races, not at all with SERVFAIL.
func TestConcurrent(t *testing.T) {
	t.Parallel()
	for _, shared := range []bool{true, false} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
			t.Parallel()
			s := newZone(t, zone)
			before := mustData(t, s, zone)
			const n = 50
			us := []*Updater{New(s), New(s)}
			if shared {
				us[1] = us[0]
			}
			var wg sync.WaitGroup
			var mu sync.Mutex
			applied := map[string]bool{}
			for g := range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range n {
						name := fmt.Sprintf("g%d-%d", g, i)
						m := upd(zone, func(m *dns.Msg) {
							m.NameNotUsed(rrs(name + ".example.com. 0 IN A 0.0.0.0"))
							m.Insert(rrs(name+".example.com. 300 IN TXT x", name+".example.com. 300 IN A 192.0.2.1"))
						})
						rc := us[g].Apply(bg, m, key, keyZones)
						switch {
						case rc == dns.RcodeSuccess:
							mu.Lock()
							applied[name] = true
							mu.Unlock()
						case rc != dns.RcodeServerFailure || shared:
							t.Errorf("%s: %s", name, dns.RcodeToString[rc])
						}
					}
				}()
			}
			wg.Wait()
			after := mustData(t, s, zone)
			got := map[string]int{}
			for _, r := range after.Records {
				if r.Name != record.Apex {
					got[r.Name]++
				}
			}
			for name, c := range got {
				if !applied[name] || c != 2 {
					t.Errorf("%s has %d records; applied: %v", name, c, applied[name])
				}
			}
			if len(got) != len(applied) || after.Version != before.Version+uint64(len(applied)) {
				t.Fatalf("%d names in the zone, version %d -> %d, %d UPDATEs applied", len(got), before.Version, after.Version, len(applied))
			}
			if shared && len(applied) != 2*n {
				t.Fatalf("%d UPDATEs applied, want %d", len(applied), 2*n)
			}
			t.Logf("%d of %d UPDATEs applied", len(applied), 2*n)
		})
	}
}

// TestConflictRetry changes the zone between Apply's read and its write:
// Apply reads again and evaluates the prerequisites against the new zone.
func TestConflictRetry(t *testing.T) {
	t.Parallel()
	s := newZone(t, zone)
	u := New(s)
	u.beforeChange = func(attempt int) {
		if attempt == 1 {
			if _, err := s.AddRecord(bg, zone, record.Record{Name: "other", Type: "A", TTL: 300, Data: "192.0.2.1"}); err != nil {
				t.Error(err)
			}
		}
	}
	m := upd(zone, func(m *dns.Msg) { m.Insert(rrs("x.example.com. 300 IN A 192.0.2.5")) })
	if rc := u.Apply(bg, m, key, keyZones); rc != dns.RcodeSuccess {
		t.Fatalf("rcode %s", dns.RcodeToString[rc])
	}
	got := lines(mustData(t, s, zone).Records)
	if indexOf(got, "x 300 A 192.0.2.5") < 0 || indexOf(got, "other 300 A 192.0.2.1") < 0 {
		t.Fatalf("records %q", got)
	}

	// Now the concurrent write makes the prerequisite false.
	u.beforeChange = func(attempt int) {
		if attempt == 1 {
			if _, err := s.AddRecord(bg, zone, record.Record{Name: "y", Type: "A", TTL: 300, Data: "192.0.2.1"}); err != nil {
				t.Error(err)
			}
		}
	}
	m = upd(zone, func(m *dns.Msg) {
		m.NameNotUsed(rrs("y.example.com. 0 IN A 0.0.0.0"))
		m.Insert(rrs("y.example.com. 300 IN TXT mine"))
	})
	if rc := u.Apply(bg, m, key, keyZones); rc != dns.RcodeYXDomain {
		t.Fatalf("rcode %s, want YXDOMAIN", dns.RcodeToString[rc])
	}
	if got := lines(mustData(t, s, zone).Records); indexOf(got, `y 300 TXT "mine"`) >= 0 {
		t.Fatalf("records %q", got)
	}

	// A zone that keeps changing: SERVFAIL after maxAttempts.
	n := 0
	u.beforeChange = func(attempt int) {
		n++
		if _, err := s.AddRecord(bg, zone, record.Record{Name: "busy", Type: "TXT", TTL: 300, Data: strconv.Itoa(n)}); err != nil {
			t.Error(err)
		}
	}
	m = upd(zone, func(m *dns.Msg) { m.Insert(rrs("z.example.com. 300 IN A 192.0.2.5")) })
	if rc := u.Apply(bg, m, key, keyZones); rc != dns.RcodeServerFailure || n != maxAttempts {
		t.Fatalf("rcode %s after %d attempts, want SERVFAIL after %d", dns.RcodeToString[rc], n, maxAttempts)
	}

	// The zone deleted meanwhile: NOTAUTH.
	u.beforeChange = func(int) { s.DeleteZone(bg, zone) }
	if rc := u.Apply(bg, m, key, keyZones); rc != dns.RcodeNotAuth {
		t.Fatalf("rcode %s, want NOTAUTH", dns.RcodeToString[rc])
	}
}

// TestStoreDown checks that an UPDATE while Redis is down gets SERVFAIL
// ("try again").
func TestStoreDown(t *testing.T) {
	t.Parallel()
	srv := storetest.Start(t)
	s := srv.Open(t, storetest.Options)
	if _, err := s.CreateAccount(bg, "acme", store.RoleCustomer, ""); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, zone, nil)
	srv.Stop()
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	m := upd(zone, func(m *dns.Msg) { m.Insert(rrs("x.example.com. 300 IN A 192.0.2.5")) })
	if rc := New(s).Apply(ctx, m, key, keyZones); rc != dns.RcodeServerFailure {
		t.Fatalf("rcode %s, want SERVFAIL", dns.RcodeToString[rc])
	}
}

// TestWireRdlength checks the RDLENGTH rules on messages as they come off
// the wire, where an RR without RDATA is a typed, empty RR.
func TestWireRdlength(t *testing.T) {
	t.Parallel()
	s := newZone(t, zone, base...)
	u := New(s)
	roundTrip := func(m *dns.Msg) *dns.Msg {
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		out := new(dns.Msg)
		if err := out.Unpack(b); err != nil {
			t.Fatal(err)
		}
		return out
	}
	m := roundTrip(upd(zone, func(m *dns.Msg) {
		m.RRsetUsed(rrs("www.example.com. 0 IN A 0.0.0.0"))
		m.RemoveRRset(rrs("www.example.com. 0 IN A 0.0.0.0"))
	}))
	if _, ok := m.Ns[0].(*dns.A); !ok {
		t.Logf("unpacked empty RR is %T", m.Ns[0])
	}
	if rc := u.Apply(bg, m, key, keyZones); rc != dns.RcodeSuccess {
		t.Fatalf("rcode %s", dns.RcodeToString[rc])
	}
	m = roundTrip(upd(zone, func(m *dns.Msg) {
		r := rr("alias.example.com. 0 IN A 192.0.2.1")
		r.Header().Class = dns.ClassANY
		m.Ns = append(m.Ns, r)
	}))
	if rc := u.Apply(bg, m, key, keyZones); rc != dns.RcodeFormatError {
		t.Fatalf("rcode %s, want FORMERR", dns.RcodeToString[rc])
	}
}

// TestStoreLimit checks that an UPDATE breaking a store limit gets REFUSED
// and changes nothing.
func TestStoreLimit(t *testing.T) {
	t.Parallel()
	o := storetest.Options
	o.MaxOwnerRecords = 2
	s := storetest.NewWith(t, o)
	if _, err := s.CreateAccount(bg, "acme", store.RoleCustomer, ""); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, zone, nil)
	before := mustData(t, s, zone)
	m := upd(zone, func(m *dns.Msg) {
		m.Insert(rrs("x.example.com. 300 IN TXT a", "x.example.com. 300 IN TXT b", "x.example.com. 300 IN TXT c"))
	})
	if rc := New(s).Apply(bg, m, key, keyZones); rc != dns.RcodeRefused {
		t.Fatalf("rcode %s, want REFUSED", dns.RcodeToString[rc])
	}
	if after := mustData(t, s, zone); after.Version != before.Version {
		t.Fatalf("refused UPDATE changed the zone: %q", lines(after.Records))
	}
}
