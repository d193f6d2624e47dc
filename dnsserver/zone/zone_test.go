package zone

import (
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"

	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
)

// rec is a record as a customer would enter it.
type rec struct {
	name, typ string
	ttl       uint32
	data      string
}

var testSOA = store.SOA{MName: "ns1.example.com.", RName: "hostmaster.example.com.",
	Refresh: 3600, Retry: 900, Expire: 1209600, Minimum: 300, TTL: 3600}

// zoneData normalises recs with record.Normalize, as the store does, and
// returns them as the store would hand them over.
func zoneData(t testing.TB, name string, soa store.SOA, p record.Policy, recs []rec) store.ZoneData {
	t.Helper()
	zd := store.ZoneData{Zone: store.Zone{Name: name, Serial: 2024010100, SOA: soa}}
	for i, r := range recs {
		n, err := record.Normalize(name, record.Record{Name: r.name, Type: r.typ, TTL: r.ttl, Data: r.data}, p)
		if err != nil {
			t.Fatalf("normalize %v: %v", r, err)
		}
		n.ID = string(rune('a' + i%26))
		zd.Records = append(zd.Records, n)
	}
	store.SortRecords(zd.Records)
	return zd
}

var exampleRecs = []rec{
	{"@", "NS", 3600, "ns1.example.com."},
	{"@", "NS", 3600, "ns2.example.net."},
	{"@", "A", 300, "192.0.2.1"},
	{"@", "AAAA", 300, "2001:db8::1"},
	{"@", "MX", 3600, "10 mail.example.com"},
	{"@", "MX", 3600, "20 mx.example.net:25"},
	{"@", "TXT", 300, "\"v=spf1 mx -all\""},
	{"ns1", "A", 3600, "192.0.2.53"},
	{"mail", "A", 300, "192.0.2.25"},
	{"mail", "AAAA", 300, "2001:db8::25"},
	{"www", "A", 300, "192.0.2.10"},
	{"multi", "TXT", 300, "\"part one\" \"part two\""},
	{"_sip._tcp", "SRV", 300, "10 5 5060 sip.example.com."},
	{"sip", "A", 300, "192.0.2.60"},
	{"x.ent", "A", 300, "192.0.2.70"},
	{"*.wild", "A", 300, "192.0.2.80"},
	{"*.wild", "MX", 300, "10 mail.example.com."},
	{"sub.wild", "TXT", 300, "\"exists\""},
	{"*.blk", "A", 300, "192.0.2.90"},
	{"a.b.blk", "A", 300, "192.0.2.91"},
	{"*.cn", "CNAME", 300, "www.example.com."},
	{"alias", "CNAME", 300, "www.example.com."},
	{"alias2", "CNAME", 300, "alias.example.com."},
	{"dangling", "CNAME", 300, "nothere.example.com."},
	{"tonodata", "CNAME", 300, "x.ent.example.com."},
	{"out", "CNAME", 300, "www.example.net."},
	{"loop1", "CNAME", 300, "loop2.example.com."},
	{"loop2", "CNAME", 300, "loop1.example.com."},
	{"tocut", "CNAME", 300, "host.sub.example.com."},
	{"sub", "NS", 3600, "ns1.sub.example.com."},
	{"sub", "NS", 3600, "ns.example.net."},
	{"sub", "NS", 3600, "ns1.example.com."},
	{"sub", "DS", 3600, "12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
	{"ns1.sub", "A", 3600, "192.0.2.100"},
	{"www.sub", "A", 300, "192.0.2.101"},
	{"nods", "NS", 3600, "ns1.example.com."},
	{"unk", "TYPE65280", 300, `\# 2 abcd`},
	{"ttl", "A", 600, "192.0.2.11"},
	{"ttl", "A", 300, "192.0.2.12"},
}

func exampleZone(t testing.TB) *Zone {
	t.Helper()
	z, err := Build(zoneData(t, "example.com", testSOA, record.Policy{}, exampleRecs), Options{MXHosts: []string{"mx1.fwd.example.net"}})
	if err != nil {
		t.Fatal(err)
	}
	return z
}

// tc is one question and the exact answer expected (CoreDNS test.Case).
type tc struct {
	qname             string
	qtype             uint16
	rcode             int
	aa                bool
	answer, ns, extra []string
}

const (
	negSOA = "example.com. 300 IN SOA ns1.example.com. hostmaster.example.com. 2024010100 3600 900 1209600 300"
	subNS1 = "sub.example.com. 3600 IN NS ns1.sub.example.com."
	subNS2 = "sub.example.com. 3600 IN NS ns.example.net."
	subNS3 = "sub.example.com. 3600 IN NS ns1.example.com."
)

var (
	mailAddrs = []string{"mail.example.com. 300 IN A 192.0.2.25", "mail.example.com. 300 IN AAAA 2001:db8::25"}
	subGlue   = []string{"ns1.sub.example.com. 3600 IN A 192.0.2.100", "ns1.example.com. 3600 IN A 192.0.2.53"}
	subNS     = []string{subNS1, subNS2, subNS3}
	neg       = []string{negSOA}
)

func TestLookup(t *testing.T) {
	z := exampleZone(t)
	run(t, z, []tc{
		// Positive answers.
		{qname: "www.example.com.", qtype: dns.TypeA, aa: true, answer: []string{"www.example.com. 300 IN A 192.0.2.10"}},
		{qname: "example.com.", qtype: dns.TypeAAAA, aa: true, answer: []string{"example.com. 300 IN AAAA 2001:db8::1"}},
		{qname: "example.com.", qtype: dns.TypeTXT, aa: true, answer: []string{`example.com. 300 IN TXT "v=spf1 mx -all"`}},
		{qname: "multi.example.com.", qtype: dns.TypeTXT, aa: true, answer: []string{`multi.example.com. 300 IN TXT "part one" "part two"`}},
		{qname: "unk.example.com.", qtype: 65280, aa: true, answer: []string{`unk.example.com. 300 IN TYPE65280 \# 2 abcd`}},
		{qname: "example.com.", qtype: dns.TypeSOA, aa: true, answer: []string{"example.com. 3600 IN SOA ns1.example.com. hostmaster.example.com. 2024010100 3600 900 1209600 300"}},
		// RRset TTLs are made equal, to the smallest (RFC 2181 5.2).
		{qname: "ttl.example.com.", qtype: dns.TypeA, aa: true, answer: []string{"ttl.example.com. 300 IN A 192.0.2.11", "ttl.example.com. 300 IN A 192.0.2.12"}},
		// Non-forwarded MX as entered (":25" is no port); additional for in-zone targets.
		{qname: "example.com.", qtype: dns.TypeMX, aa: true,
			answer: []string{"example.com. 3600 IN MX 10 mail.example.com.", "example.com. 3600 IN MX 20 mx.example.net."},
			extra:  mailAddrs},
		{qname: "example.com.", qtype: dns.TypeNS, aa: true,
			answer: []string{"example.com. 3600 IN NS ns1.example.com.", "example.com. 3600 IN NS ns2.example.net."},
			extra:  []string{"ns1.example.com. 3600 IN A 192.0.2.53"}},
		{qname: "_sip._tcp.example.com.", qtype: dns.TypeSRV, aa: true,
			answer: []string{"_sip._tcp.example.com. 300 IN SRV 10 5 5060 sip.example.com."},
			extra:  []string{"sip.example.com. 300 IN A 192.0.2.60"}},
		// Case-insensitive; owners come back in lower case.
		{qname: "WwW.ExAmple.COM.", qtype: dns.TypeA, aa: true, answer: []string{"www.example.com. 300 IN A 192.0.2.10"}},
		{qname: "MAIL.example.com.", qtype: dns.TypeAAAA, aa: true, answer: []string{"mail.example.com. 300 IN AAAA 2001:db8::25"}},

		// NODATA, NXDOMAIN: SOA with TTL min(3600, 300).
		{qname: "www.example.com.", qtype: dns.TypeAAAA, aa: true, ns: neg},
		{qname: "example.com.", qtype: dns.TypeDS, aa: true, ns: neg},
		{qname: "nope.example.com.", qtype: dns.TypeA, rcode: dns.RcodeNameError, aa: true, ns: neg},
		{qname: "a.nope.example.com.", qtype: dns.TypeA, rcode: dns.RcodeNameError, aa: true, ns: neg},
		{qname: "a.www.example.com.", qtype: dns.TypeA, rcode: dns.RcodeNameError, aa: true, ns: neg},
		// Empty non-terminals.
		{qname: "ent.example.com.", qtype: dns.TypeA, aa: true, ns: neg},
		{qname: "_tcp.example.com.", qtype: dns.TypeSRV, aa: true, ns: neg},
		{qname: "b.blk.example.com.", qtype: dns.TypeA, aa: true, ns: neg},

		// Wildcards (RFC 4592).
		{qname: "foo.wild.example.com.", qtype: dns.TypeA, aa: true, answer: []string{"foo.wild.example.com. 300 IN A 192.0.2.80"}},
		{qname: "a.b.c.wild.example.com.", qtype: dns.TypeA, aa: true, answer: []string{"a.b.c.wild.example.com. 300 IN A 192.0.2.80"}},
		{qname: "Foo.WILD.example.com.", qtype: dns.TypeMX, aa: true, answer: []string{"foo.wild.example.com. 300 IN MX 10 mail.example.com."}, extra: mailAddrs},
		{qname: "foo.wild.example.com.", qtype: dns.TypeAAAA, aa: true, ns: neg},
		{qname: "*.wild.example.com.", qtype: dns.TypeA, aa: true, answer: []string{"*.wild.example.com. 300 IN A 192.0.2.80"}},
		{qname: "wild.example.com.", qtype: dns.TypeA, aa: true, ns: neg},
		// Existing names are not covered by the wildcard.
		{qname: "sub.wild.example.com.", qtype: dns.TypeA, aa: true, ns: neg},
		{qname: "x.sub.wild.example.com.", qtype: dns.TypeA, rcode: dns.RcodeNameError, aa: true, ns: neg},
		// The empty non-terminal b.blk blocks *.blk below it.
		{qname: "z.blk.example.com.", qtype: dns.TypeA, aa: true, answer: []string{"z.blk.example.com. 300 IN A 192.0.2.90"}},
		{qname: "c.b.blk.example.com.", qtype: dns.TypeA, rcode: dns.RcodeNameError, aa: true, ns: neg},
		// Wildcard CNAME, followed.
		{qname: "x.cn.example.com.", qtype: dns.TypeA, aa: true, answer: []string{"x.cn.example.com. 300 IN CNAME www.example.com.", "www.example.com. 300 IN A 192.0.2.10"}},
		{qname: "x.cn.example.com.", qtype: dns.TypeCNAME, aa: true, answer: []string{"x.cn.example.com. 300 IN CNAME www.example.com."}},

		// CNAME chains.
		{qname: "alias.example.com.", qtype: dns.TypeA, aa: true, answer: []string{"alias.example.com. 300 IN CNAME www.example.com.", "www.example.com. 300 IN A 192.0.2.10"}},
		{qname: "alias2.example.com.", qtype: dns.TypeA, aa: true, answer: []string{"alias2.example.com. 300 IN CNAME alias.example.com.", "alias.example.com. 300 IN CNAME www.example.com.", "www.example.com. 300 IN A 192.0.2.10"}},
		{qname: "alias.example.com.", qtype: dns.TypeAAAA, aa: true, answer: []string{"alias.example.com. 300 IN CNAME www.example.com."}, ns: neg},
		{qname: "alias.example.com.", qtype: dns.TypeCNAME, aa: true, answer: []string{"alias.example.com. 300 IN CNAME www.example.com."}},
		{qname: "dangling.example.com.", qtype: dns.TypeA, rcode: dns.RcodeNameError, aa: true, answer: []string{"dangling.example.com. 300 IN CNAME nothere.example.com."}, ns: neg},
		{qname: "tonodata.example.com.", qtype: dns.TypeMX, aa: true, answer: []string{"tonodata.example.com. 300 IN CNAME x.ent.example.com."}, ns: neg},
		{qname: "out.example.com.", qtype: dns.TypeA, aa: true, answer: []string{"out.example.com. 300 IN CNAME www.example.net."}},
		{qname: "loop1.example.com.", qtype: dns.TypeA, aa: true, answer: []string{"loop1.example.com. 300 IN CNAME loop2.example.com.", "loop2.example.com. 300 IN CNAME loop1.example.com."}},
		// A chain into a delegation ends with the referral.
		{qname: "tocut.example.com.", qtype: dns.TypeA, aa: true, answer: []string{"tocut.example.com. 300 IN CNAME host.sub.example.com."}, ns: subNS, extra: subGlue},

		// Referrals, glue, occluded data, DS at the cut.
		{qname: "sub.example.com.", qtype: dns.TypeA, ns: subNS, extra: subGlue},
		{qname: "sub.example.com.", qtype: dns.TypeNS, ns: subNS, extra: subGlue},
		{qname: "www.sub.example.com.", qtype: dns.TypeA, ns: subNS, extra: subGlue},
		{qname: "ns1.sub.example.com.", qtype: dns.TypeA, ns: subNS, extra: subGlue},
		{qname: "a.b.sub.example.com.", qtype: dns.TypeDS, ns: subNS, extra: subGlue},
		{qname: "sub.example.com.", qtype: dns.TypeDS, aa: true, answer: []string{"sub.example.com. 3600 IN DS 12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}},
		{qname: "nods.example.com.", qtype: dns.TypeDS, aa: true, ns: neg},
		{qname: "nods.example.com.", qtype: dns.TypeANY, ns: []string{"nods.example.com. 3600 IN NS ns1.example.com."}, extra: []string{"ns1.example.com. 3600 IN A 192.0.2.53"}},

		// ANY: the RRset of smallest type (RFC 8482).
		{qname: "example.com.", qtype: dns.TypeANY, aa: true, answer: []string{"example.com. 300 IN A 192.0.2.1"}},
		{qname: "mail.example.com.", qtype: dns.TypeANY, aa: true, answer: []string{"mail.example.com. 300 IN A 192.0.2.25"}},
		{qname: "multi.example.com.", qtype: dns.TypeANY, aa: true, answer: []string{`multi.example.com. 300 IN TXT "part one" "part two"`}},
		{qname: "alias.example.com.", qtype: dns.TypeANY, aa: true, answer: []string{"alias.example.com. 300 IN CNAME www.example.com."}},
		{qname: "ent.example.com.", qtype: dns.TypeANY, aa: true, ns: neg},
		{qname: "foo.wild.example.com.", qtype: dns.TypeANY, aa: true, answer: []string{"foo.wild.example.com. 300 IN A 192.0.2.80"}},
		{qname: "nope.example.com.", qtype: dns.TypeANY, rcode: dns.RcodeNameError, aa: true, ns: neg},

		// Outside the zone.
		{qname: "example.net.", qtype: dns.TypeA, rcode: dns.RcodeRefused},
		{qname: "badexample.com.", qtype: dns.TypeA, rcode: dns.RcodeRefused},
		{qname: `www\.example.com.`, qtype: dns.TypeA, rcode: dns.RcodeRefused},
		// No trailing dot: taken as absolute.
		{qname: "www.example.com", qtype: dns.TypeA, aa: true, answer: []string{"www.example.com. 300 IN A 192.0.2.10"}},
	})
}

func TestForwarded(t *testing.T) {
	soa := store.SOA{MName: "ns1.fwd.example.", RName: "hostmaster.fwd.example.",
		Refresh: 3600, Retry: 900, Expire: 1209600, Minimum: 600, TTL: 120}
	p := record.Policy{MXHosts: []string{"mx1.fwd.example.net", "mx2.fwd.example.net"}}
	recs := []rec{
		{"@", "NS", 3600, "ns1.fwd.example."},
		{"@", "MX", 3600, "10 home.fwd.example:2525"},
		{"@", "MX", 600, "20 backup.example.net"},
		{"home", "A", 300, "198.51.100.7"},
		{"shop", "MX", 300, "10 home.fwd.example."},
	}
	zd := zoneData(t, "fwd.example", soa, p, recs)
	negFwd := []string{"fwd.example. 120 IN SOA ns1.fwd.example. hostmaster.fwd.example. 2024010100 3600 900 1209600 600"}

	z, err := Build(zd, Options{MXHosts: p.MXHosts})
	if err != nil {
		t.Fatal(err)
	}
	run(t, z, []tc{
		// The service's MX hosts, 10, 20, with the smallest customer TTL;
		// never home.fwd.example.
		{qname: "fwd.example.", qtype: dns.TypeMX, aa: true, answer: []string{"fwd.example. 600 IN MX 10 mx1.fwd.example.net.", "fwd.example. 600 IN MX 20 mx2.fwd.example.net."}},
		{qname: "FWD.example.", qtype: dns.TypeMX, aa: true, answer: []string{"fwd.example. 600 IN MX 10 mx1.fwd.example.net.", "fwd.example. 600 IN MX 20 mx2.fwd.example.net."}},
		// A non-apex MX is untouched.
		{qname: "shop.fwd.example.", qtype: dns.TypeMX, aa: true, answer: []string{"shop.fwd.example. 300 IN MX 10 home.fwd.example."}, extra: []string{"home.fwd.example. 300 IN A 198.51.100.7"}},
		// Negative TTL is the SOA TTL when below MINIMUM.
		{qname: "nope.fwd.example.", qtype: dns.TypeMX, rcode: dns.RcodeNameError, aa: true, ns: negFwd},
	})
	for _, rr := range z.Records() {
		if strings.Contains(rr.String(), "2525") || strings.Contains(rr.String(), "backup.example.net") {
			t.Errorf("AXFR publishes the customer's MX: %s", rr)
		}
	}

	// No MX hosts configured: no apex MX at all, never host:port.
	z, err = Build(zd, Options{})
	if err != nil {
		t.Fatal(err)
	}
	run(t, z, []tc{
		{qname: "fwd.example.", qtype: dns.TypeMX, aa: true, ns: negFwd},
		{qname: "fwd.example.", qtype: dns.TypeANY, aa: true, answer: []string{"fwd.example. 3600 IN NS ns1.fwd.example."}},
	})

	// An MX host inside the zone gets its address in the additional section.
	zd.Records = append(zd.Records, record.Record{ID: "z", Name: "mx", Type: "A", TTL: 300, Data: "192.0.2.5"})
	z, err = Build(zd, Options{MXHosts: []string{"MX.fwd.example", " ", "mx9.fwd.example.net."}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, z, []tc{
		{qname: "fwd.example.", qtype: dns.TypeMX, aa: true,
			answer: []string{"fwd.example. 600 IN MX 10 mx.fwd.example.", "fwd.example. 600 IN MX 20 mx9.fwd.example.net."},
			extra:  []string{"mx.fwd.example. 300 IN A 192.0.2.5"}},
	})
}

func TestRecords(t *testing.T) {
	zd := zoneData(t, "example.org", testSOA, record.Policy{}, []rec{
		{"www", "A", 300, "192.0.2.10"},
		{"@", "NS", 3600, "ns1.example.com."},
		{"*.www", "TXT", 300, "\"w\""},
		{"a.b", "A", 300, "192.0.2.2"},
		{"@", "A", 300, "192.0.2.1"},
		{"z", "AAAA", 300, "2001:db8::1"},
		{"b", "TXT", 300, "\"b\""},
		{"sub", "NS", 300, "ns.example.net."},
		{"x.sub", "A", 300, "192.0.2.3"},
		{"@", "MX", 300, "10 mail.example.net:2525"},
	})
	z, err := Build(zd, Options{MXHosts: []string{"mx1.fwd.example.net"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, rr := range z.Records() {
		got = append(got, rr.String())
	}
	want := parse(t, []string{
		"example.org. 3600 IN SOA ns1.example.com. hostmaster.example.com. 2024010100 3600 900 1209600 300",
		"example.org. 300 IN A 192.0.2.1",
		"example.org. 3600 IN NS ns1.example.com.",
		"example.org. 300 IN MX 10 mx1.fwd.example.net.",
		`b.example.org. 300 IN TXT "b"`,
		"a.b.example.org. 300 IN A 192.0.2.2",
		"sub.example.org. 300 IN NS ns.example.net.",
		"x.sub.example.org. 300 IN A 192.0.2.3",
		"www.example.org. 300 IN A 192.0.2.10",
		`*.www.example.org. 300 IN TXT "w"`,
		"z.example.org. 300 IN AAAA 2001:db8::1",
	})
	if !slices.Equal(got, want) {
		t.Errorf("Records:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
	// The caller owns the slice.
	rs := z.Records()
	rs[0] = nil
	if z.Records()[0] != z.SOA() {
		t.Error("Records shares its slice")
	}
	if z.Name() != "example.org." || z.Serial() != 2024010100 || z.SOA().Hdr.Ttl != 3600 || z.SOA().Serial != 2024010100 {
		t.Errorf("Name %q Serial %d SOA %v", z.Name(), z.Serial(), z.SOA())
	}
}

func TestBuildErrors(t *testing.T) {
	base := store.ZoneData{Zone: store.Zone{Name: "example.com", Serial: 1, SOA: testSOA}}
	for name, recs := range map[string][]record.Record{
		"cname and data": {{Name: "www", Type: "CNAME", TTL: 300, Data: "a.example.net."}, {Name: "www", Type: "A", TTL: 300, Data: "192.0.2.1"}},
		"two cnames":     {{Name: "www", Type: "CNAME", TTL: 300, Data: "a.example.net."}, {Name: "www", Type: "CNAME", TTL: 300, Data: "b.example.net."}},
		"soa":            {{Name: "@", Type: "SOA", TTL: 300, Data: "a. b. 1 2 3 4 5"}},
		"bad data":       {{Name: "www", Type: "A", TTL: 300, Data: "not an address"}},
		"bad mx":         {{Name: "@", Type: "MX", TTL: 300, Data: "ten mail.example.com."}},
	} {
		zd := base
		zd.Records = recs
		if _, err := Build(zd, Options{}); err == nil {
			t.Errorf("%s: Build succeeded", name)
		}
	}
	if _, err := Build(store.ZoneData{}, Options{}); err == nil {
		t.Error("empty zone name: Build succeeded")
	}
	// Only the SOA: every name but the apex is NXDOMAIN.
	z, err := Build(base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	run(t, z, []tc{
		{qname: "example.com.", qtype: dns.TypeSOA, aa: true, answer: []string{"example.com. 3600 IN SOA ns1.example.com. hostmaster.example.com. 1 3600 900 1209600 300"}},
		{qname: "www.example.com.", qtype: dns.TypeA, rcode: dns.RcodeNameError, aa: true, ns: []string{"example.com. 300 IN SOA ns1.example.com. hostmaster.example.com. 1 3600 900 1209600 300"}},
	})
}

// TestShared checks that answers share the zone's records where they may,
// and that wildcard answers never do.
func TestShared(t *testing.T) {
	z := exampleZone(t)
	a := z.Lookup("foo.wild.example.com.", dns.TypeA)
	a.Answer[0].Header().Name = "changed."
	if b := z.Lookup("bar.wild.example.com.", dns.TypeA); b.Answer[0].Header().Name != "bar.wild.example.com." {
		t.Errorf("wildcard answer shares the zone's record: %s", b.Answer[0])
	}
	if b := z.Lookup("*.wild.example.com.", dns.TypeA); b.Answer[0].Header().Name != "*.wild.example.com." {
		t.Errorf("synthesis changed the wildcard record: %s", b.Answer[0])
	}
	for _, c := range []struct {
		name  string
		qtype uint16
	}{{"www.example.com.", dns.TypeA}, {"example.com.", dns.TypeMX}, {"nope.example.com.", dns.TypeA},
		{"www.example.com.", dns.TypeTXT}, {"www.sub.example.com.", dns.TypeA}, {"ent.example.com.", dns.TypeA}} {
		if n := testing.AllocsPerRun(100, func() { z.Lookup(c.name, c.qtype) }); n > 0 {
			t.Errorf("Lookup(%s, %s): %v allocations", c.name, dns.TypeToString[c.qtype], n)
		}
	}
}

func TestConcurrent(t *testing.T) {
	z := exampleZone(t)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				for _, q := range []string{"www.example.com.", "x.cn.example.com.", "foo.wild.example.com.", "loop1.example.com.", "sub.example.com."} {
					z.Lookup(q, dns.TypeA)
				}
				z.Records()
			}
		})
	}
	wg.Wait()
}

func run(t *testing.T, z *Zone, cases []tc) {
	t.Helper()
	for _, c := range cases {
		r := z.Lookup(c.qname, c.qtype)
		name := c.qname + " " + dns.TypeToString[c.qtype]
		if c.qtype == 65280 {
			name = c.qname + " TYPE65280"
		}
		if r.Rcode != c.rcode {
			t.Errorf("%s: rcode %s, want %s", name, dns.RcodeToString[r.Rcode], dns.RcodeToString[c.rcode])
		}
		if r.Authoritative != c.aa {
			t.Errorf("%s: authoritative %v, want %v", name, r.Authoritative, c.aa)
		}
		section(t, name, "answer", r.Answer, parse(t, c.answer))
		section(t, name, "authority", r.Ns, parse(t, c.ns))
		section(t, name, "additional", r.Extra, parse(t, c.extra))
	}
}

func section(t *testing.T, name, sec string, got []dns.RR, want []string) {
	t.Helper()
	g := make([]string, len(got))
	for i, rr := range got {
		g[i] = rr.String()
	}
	if !slices.Equal(g, want) {
		t.Errorf("%s: %s section\n got %q\nwant %q", name, sec, g, want)
	}
}

// parse turns records in zone-file form into rr.String() form.
func parse(t testing.TB, ss []string) []string {
	t.Helper()
	out := make([]string, len(ss))
	for i, s := range ss {
		rr, err := dns.NewRR(s)
		if err != nil || rr == nil {
			t.Fatalf("test record %q: %v", s, err)
		}
		out[i] = rr.String()
	}
	return out
}

// FuzzLookup asks random names and types of a fixed zone: Lookup never
// panics, answers in-zone names with success or NXDOMAIN, and every
// negative answer carries the SOA.
func FuzzLookup(f *testing.F) {
	z := exampleZone(f)
	for _, s := range []string{"www", "x.cn", "a.b.blk", "c.b.blk", "foo.wild", "sub.wild", "x.sub", "loop1", "alias2", "ent", "*.wild", "_sip._tcp", "WWW", `a\.b`, `\065`, "a..b", ""} {
		f.Add(s, uint16(dns.TypeA))
	}
	f.Add("sub", uint16(dns.TypeDS))
	f.Add("mail", uint16(dns.TypeANY))
	f.Add("unk", uint16(65280))
	labels := []string{"www", "*", "sub", "ns1", "x", "ent", "wild", "blk", "b", "a", "cn", "alias", "loop1", "mail", "_tcp", "_sip", "nods", "Www", "zz"}
	f.Fuzz(func(t *testing.T, s string, qtype uint16) {
		// The string as raw labels: anything may come back, but no panic.
		raw := s + ".example.com."
		r := z.Lookup(raw, qtype)
		check(t, z, raw, qtype, r, true)

		// The string's bytes choosing labels known to the zone: in-zone
		// names whose answers must be consistent.
		var b strings.Builder
		for i := 0; i < len(s) && i < 8; i++ {
			b.WriteString(labels[int(s[i])%len(labels)])
			b.WriteByte('.')
		}
		q := b.String() + "example.com."
		check(t, z, q, qtype, z.Lookup(q, qtype), false)
	})
}

func check(t *testing.T, z *Zone, q string, qtype uint16, r Result, mayRefuse bool) {
	t.Helper()
	switch r.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	case dns.RcodeRefused:
		if !mayRefuse {
			t.Fatalf("%s %d: REFUSED for a name in the zone", q, qtype)
		}
		if r.Answer != nil || r.Ns != nil || r.Extra != nil {
			t.Fatalf("%s %d: REFUSED with records", q, qtype)
		}
		return
	default:
		t.Fatalf("%s %d: rcode %d", q, qtype, r.Rcode)
	}
	if r.Rcode == dns.RcodeNameError {
		if len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA || r.Ns[0].Header().Name != z.Name() {
			t.Fatalf("%s %d: NXDOMAIN without the SOA: %v", q, qtype, r.Ns)
		}
	}
	if !r.Authoritative {
		if len(r.Answer) != 0 || len(r.Ns) == 0 {
			t.Fatalf("%s %d: referral with answer %v, authority %v", q, qtype, r.Answer, r.Ns)
		}
		for _, rr := range r.Ns {
			if rr.Header().Rrtype != dns.TypeNS {
				t.Fatalf("%s %d: referral with %s", q, qtype, rr)
			}
		}
	}
	if r.Authoritative && len(r.Answer) == 0 && (len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA) {
		t.Fatalf("%s %d: negative answer without the SOA: %v", q, qtype, r.Ns)
	}
	if len(r.Answer) > 0 && r.Answer[0].Header().Name != strings.ToLower(q) {
		t.Fatalf("%s %d: first answer owned by %s", q, qtype, r.Answer[0].Header().Name)
	}
	if len(r.Answer) > maxChain+1 {
		t.Fatalf("%s %d: %d answers", q, qtype, len(r.Answer))
	}
}

func BenchmarkLookup(b *testing.B) {
	z := exampleZone(b)
	for _, c := range []struct {
		name, qname string
		qtype       uint16
	}{
		{"positive", "www.example.com.", dns.TypeA},
		{"positive-upper", "WWW.Example.com.", dns.TypeA},
		{"mx-additional", "example.com.", dns.TypeMX},
		{"nodata", "www.example.com.", dns.TypeAAAA},
		{"nxdomain", "nope.example.com.", dns.TypeA},
		{"wildcard", "foo.wild.example.com.", dns.TypeA},
		{"cname-chain", "alias2.example.com.", dns.TypeA},
		{"referral", "www.sub.example.com.", dns.TypeA},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				z.Lookup(c.qname, c.qtype)
			}
		})
	}
}
