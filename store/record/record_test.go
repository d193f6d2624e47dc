package record_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/mxport/mxport/store/record"
	"github.com/mxport/mxport/store/storetest"
)

const zone = "example.com"

var policy = record.Policy{MXHosts: []string{"mx1.fwd.test", "MX2.fwd.test."}}

var long300 = strings.Repeat("a", 300)

// normalizeCases are records that must be accepted, with the exact canonical
// form expected. They also seed FuzzNormalize.
var normalizeCases = []struct {
	name string
	in   record.Record
	want record.Record
}{
	{"A", record.Record{Name: "@", Type: "A", TTL: 300, Data: "192.0.2.1"},
		record.Record{Name: "@", Type: "A", TTL: 300, Data: "192.0.2.1"}},
	{"NS target case folded", record.Record{Name: "sub", Type: "NS", TTL: 300, Data: "NS1.Example.NET"},
		record.Record{Name: "sub", Type: "NS", TTL: 300, Data: "ns1.example.net."}},
	{"CNAME target case folded", record.Record{Name: "www", Type: "CNAME", TTL: 300, Data: "Host.Example.COM."},
		record.Record{Name: "www", Type: "CNAME", TTL: 300, Data: "host.example.com."}},
	{"SRV target case folded", record.Record{Name: "_sip._tcp", Type: "SRV", TTL: 300, Data: "0 5 5060 SIP.example.com"},
		record.Record{Name: "_sip._tcp", Type: "SRV", TTL: 300, Data: "0 5 5060 sip.example.com."}},
	{"A padded, lower-case type", record.Record{Name: "www", Type: "a", TTL: 300, Data: "  192.0.2.7 "},
		record.Record{Name: "www", Type: "A", TTL: 300, Data: "192.0.2.7"}},
	{"AAAA compressed", record.Record{Name: "www", Type: "aaaa", TTL: 300, Data: "2001:DB8:0:0::0001"},
		record.Record{Name: "www", Type: "AAAA", TTL: 300, Data: "2001:db8::1"}},
	{"CNAME absolute", record.Record{Name: "www", Type: "CNAME", TTL: 300, Data: "target.example.net."},
		record.Record{Name: "www", Type: "CNAME", TTL: 300, Data: "target.example.net."}},
	{"CNAME without dot", record.Record{Name: "www", Type: "CNAME", TTL: 300, Data: "target.example.net"},
		record.Record{Name: "www", Type: "CNAME", TTL: 300, Data: "target.example.net."}},
	{"MX", record.Record{Name: "@", Type: "MX", TTL: 3600, Data: "10 mail.example.net"},
		record.Record{Name: "@", Type: "MX", TTL: 3600, Data: "10 mail.example.net."}},
	{"MX with port", record.Record{Name: "@", Type: "MX", TTL: 3600, Data: "10 Mail.Example.com:2525"},
		record.Record{Name: "@", Type: "MX", TTL: 3600, Data: "10 mail.example.com.:2525"}},
	{"MX with absolute target and port", record.Record{Name: "@", Type: "MX", TTL: 3600, Data: "20   mail.example.com.:587"},
		record.Record{Name: "@", Type: "MX", TTL: 3600, Data: "20 mail.example.com.:587"}},
	{"MX with port 25 drops it", record.Record{Name: "@", Type: "MX", TTL: 3600, Data: "10 mail.example.com:25"},
		record.Record{Name: "@", Type: "MX", TTL: 3600, Data: "10 mail.example.com."}},
	{"MX port 65535", record.Record{Name: "@", Type: "MX", TTL: 3600, Data: "10 mail.example.com:65535"},
		record.Record{Name: "@", Type: "MX", TTL: 3600, Data: "10 mail.example.com.:65535"}},
	{"non-apex MX without port", record.Record{Name: "sub", Type: "MX", TTL: 3600, Data: "5 mail.example.com"},
		record.Record{Name: "sub", Type: "MX", TTL: 3600, Data: "5 mail.example.com."}},
	{"null MX", record.Record{Name: "@", Type: "MX", TTL: 3600, Data: "0 ."},
		record.Record{Name: "@", Type: "MX", TTL: 3600, Data: "0 ."}},
	{"own MX host without port", record.Record{Name: "@", Type: "MX", TTL: 3600, Data: "10 mx1.fwd.test"},
		record.Record{Name: "@", Type: "MX", TTL: 3600, Data: "10 mx1.fwd.test."}},
	{"NS", record.Record{Name: "@", Type: "NS", TTL: 3600, Data: "ns1.example.net"},
		record.Record{Name: "@", Type: "NS", TTL: 3600, Data: "ns1.example.net."}},
	{"NS delegation", record.Record{Name: "sub", Type: "ns", TTL: 3600, Data: "ns1.sub.example.com."},
		record.Record{Name: "sub", Type: "NS", TTL: 3600, Data: "ns1.sub.example.com."}},
	{"TXT one string", record.Record{Name: "@", Type: "TXT", TTL: 300, Data: `"v=spf1 -all"`},
		record.Record{Name: "@", Type: "TXT", TTL: 300, Data: `"v=spf1 -all"`}},
	{"TXT several strings", record.Record{Name: "@", Type: "TXT", TTL: 300, Data: `"v=spf1 -all" "second string"  "third"`},
		record.Record{Name: "@", Type: "TXT", TTL: 300, Data: `"v=spf1 -all" "second string" "third"`}},
	{"TXT unquoted words", record.Record{Name: "@", Type: "TXT", TTL: 300, Data: `unquoted words`},
		record.Record{Name: "@", Type: "TXT", TTL: 300, Data: `"unquoted" "words"`}},
	{"TXT embedded quotes", record.Record{Name: "@", Type: "TXT", TTL: 300, Data: `"say \"hi\" now"`},
		record.Record{Name: "@", Type: "TXT", TTL: 300, Data: `"say \"hi\" now"`}},
	{"TXT 300 characters split at 255", record.Record{Name: "@", Type: "TXT", TTL: 300, Data: `"` + long300 + `"`},
		record.Record{Name: "@", Type: "TXT", TTL: 300, Data: `"` + long300[:255] + `" "` + long300[255:] + `"`}},
	{"TXT _dmarc", record.Record{Name: "_dmarc", Type: "TXT", TTL: 300, Data: `"v=DMARC1; p=reject"`},
		record.Record{Name: "_dmarc", Type: "TXT", TTL: 300, Data: `"v=DMARC1; p=reject"`}},
	{"SRV", record.Record{Name: "_sip._tcp", Type: "SRV", TTL: 300, Data: "10 60 5060 sip.example.com"},
		record.Record{Name: "_sip._tcp", Type: "SRV", TTL: 300, Data: "10 60 5060 sip.example.com."}},
	{"SRV no service", record.Record{Name: "_imap._tcp", Type: "SRV", TTL: 300, Data: "0 0 0 ."},
		record.Record{Name: "_imap._tcp", Type: "SRV", TTL: 300, Data: "0 0 0 ."}},
	{"CAA", record.Record{Name: "@", Type: "CAA", TTL: 300, Data: `0 issue "letsencrypt.org"`},
		record.Record{Name: "@", Type: "CAA", TTL: 300, Data: `0 issue "letsencrypt.org"`}},
	{"PTR", record.Record{Name: "1", Type: "PTR", TTL: 300, Data: "host.example.com"},
		record.Record{Name: "1", Type: "PTR", TTL: 300, Data: "host.example.com."}},
	{"TLSA", record.Record{Name: "_25._tcp.mail", Type: "TLSA", TTL: 300, Data: "3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
		record.Record{Name: "_25._tcp.mail", Type: "TLSA", TTL: 300, Data: "3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}},
	{"SSHFP", record.Record{Name: "host", Type: "SSHFP", TTL: 300, Data: "4 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
		record.Record{Name: "host", Type: "SSHFP", TTL: 300, Data: "4 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF"}},
	{"DS", record.Record{Name: "sub", Type: "DS", TTL: 300, Data: "12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
		record.Record{Name: "sub", Type: "DS", TTL: 300, Data: "12345 13 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF"}},
	{"HTTPS", record.Record{Name: "@", Type: "HTTPS", TTL: 300, Data: `1 . alpn="h2,h3"`},
		record.Record{Name: "@", Type: "HTTPS", TTL: 300, Data: `1 . alpn="h2,h3"`}},
	{"SVCB", record.Record{Name: "_svc", Type: "SVCB", TTL: 300, Data: `1 svc.example.net port=8443`},
		record.Record{Name: "_svc", Type: "SVCB", TTL: 300, Data: `1 svc.example.net. port="8443"`}},
	{"NAPTR", record.Record{Name: "@", Type: "NAPTR", TTL: 300, Data: `100 10 "S" "SIP+D2U" "" _sip._udp.example.com.`},
		record.Record{Name: "@", Type: "NAPTR", TTL: 300, Data: `100 10 "S" "SIP+D2U" "" _sip._udp.example.com.`}},
	{"LOC", record.Record{Name: "@", Type: "LOC", TTL: 300, Data: `52 22 23.000 N 4 53 32.000 E -2.00m 0.00m 10000m 10m`},
		record.Record{Name: "@", Type: "LOC", TTL: 300, Data: `52 22 23.000 N 04 53 32.000 E -2m 0.00m 10000m 10m`}},
	{"RFC 3597 unknown type", record.Record{Name: "@", Type: "TYPE65280", TTL: 300, Data: `\# 4 0a000001`},
		record.Record{Name: "@", Type: "TYPE65280", TTL: 300, Data: `\# 4 0a000001`}},
	{"RFC 3597 lower-case type", record.Record{Name: "x", Type: "type65280", TTL: 300, Data: `\# 2 abcd`},
		record.Record{Name: "x", Type: "TYPE65280", TTL: 300, Data: `\# 2 abcd`}},
	{"RFC 3597 empty unknown type", record.Record{Name: "@", Type: "TYPE65280", TTL: 300, Data: `\# 0`},
		record.Record{Name: "@", Type: "TYPE65280", TTL: 300, Data: `\# 0`}},
	{"RFC 3597 form of a known type", record.Record{Name: "@", Type: "TYPE1", TTL: 300, Data: `\# 4 0a000001`},
		record.Record{Name: "@", Type: "A", TTL: 300, Data: "10.0.0.1"}},
	{"ID kept", record.Record{ID: "42", Name: "www", Type: "A", TTL: 30, Data: "192.0.2.1"},
		record.Record{ID: "42", Name: "www", Type: "A", TTL: 30, Data: "192.0.2.1"}},
	{"max TTL", record.Record{Name: "www", Type: "A", TTL: record.MaxTTL, Data: "192.0.2.1"},
		record.Record{Name: "www", Type: "A", TTL: record.MaxTTL, Data: "192.0.2.1"}},
}

func TestNormalize(t *testing.T) {
	for _, tc := range normalizeCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := record.Normalize(zone, tc.in, policy)
			if err != nil {
				t.Fatalf("Normalize(%+v): %v", tc.in, err)
			}
			if got != tc.want {
				t.Fatalf("Normalize(%+v)\n got %+v\nwant %+v", tc.in, got, tc.want)
			}
			// Canonical data is a fixed point: the stored form read back
			// and saved again does not change.
			again, err := record.Normalize(zone, got, policy)
			if err != nil {
				t.Fatalf("Normalize(canonical %+v): %v", got, err)
			}
			if again != got {
				t.Fatalf("not idempotent:\nonce  %+v\ntwice %+v", got, again)
			}
			// The record converts to a miekg/dns RR of the same type.
			rr, err := got.RR(zone)
			if err != nil {
				t.Fatalf("RR: %v", err)
			}
			if rr.Header().Name != record.FQDN(zone, got.Name) || rr.Header().Ttl != got.TTL {
				t.Fatalf("RR header %v does not match %+v", rr.Header(), got)
			}
		})
	}
}

func TestOwner(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"@", "@"},
		{"", "@"},
		{"  ", "@"},
		{"example.com", "@"},
		{"example.com.", "@"},
		{"EXAMPLE.COM.", "@"},
		{"www", "www"},
		{"WWW", "www"},
		{"a.b.c", "a.b.c"},
		{"www.example.com", "www"},
		{"www.example.com.", "www"},
		{"Www.Example.Com.", "www"},
		{"*", "*"},
		{"*.dev", "*.dev"},
		{"*.dev.example.com.", "*.dev"},
		{"_dmarc", "_dmarc"},
		{"_dmarc.example.com.", "_dmarc"},
		{"_25._tcp.mail", "_25._tcp.mail"},
	} {
		got, err := record.Owner(zone, tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Owner(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
		// Through Normalize too.
		r, err := record.Normalize(zone, record.Record{Name: tc.in, Type: "TXT", TTL: 300, Data: `"x"`}, policy)
		if err != nil || r.Name != tc.want {
			t.Errorf("Normalize name %q = %q, %v; want %q", tc.in, r.Name, err, tc.want)
		}
	}
	for _, bad := range []string{"a.other.com.", "example.com.other.", "xexample.com.", "a..b", ".a", "a b", "x*", "*.*", "a.*", "m@il",
		strings.Repeat("a", 64), strings.Repeat("abcdefghi.", 26)} {
		if got, err := record.Owner(zone, bad); record.Field(err) != "name" {
			t.Errorf("Owner(%q) = %q, %v; want a name error", bad, got, err)
		}
	}
}

func TestZoneName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"example.com", "example.com"},
		{"Example.COM.", "example.com"},
		{" example.com ", "example.com"},
		{"xn--bcher-kva.example", "xn--bcher-kva.example"},
		{"_tcp.example.com", "_tcp.example.com"},
	} {
		if got, err := record.ZoneName(tc.in); err != nil || got != tc.want {
			t.Errorf("ZoneName(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", ".", "a..b", "a b.com", "*.example.com", "ex\"ample.com", strings.Repeat("a", 64) + ".com"} {
		if got, err := record.ZoneName(bad); record.Field(err) != "name" {
			t.Errorf("ZoneName(%q) = %q, %v; want a name error", bad, got, err)
		}
	}
}

func TestNormalizeRefuses(t *testing.T) {
	rec := func(name, typ string, ttl uint32, data string) record.Record {
		return record.Record{Name: name, Type: typ, TTL: ttl, Data: data}
	}
	for _, tc := range []struct {
		name  string
		in    record.Record
		field string
	}{
		{"name outside zone", rec("www.example.net.", "A", 300, "192.0.2.1"), "name"},
		{"port on a null MX", rec("@", "MX", 300, "0 .:2525"), "data"},
		{"name is a suffix but not a subdomain", rec("badexample.com.", "A", 300, "192.0.2.1"), "name"},
		{"bad label", rec("a b", "A", 300, "192.0.2.1"), "name"},
		{"bad label character", rec("w!w", "A", 300, "192.0.2.1"), "name"},
		{"empty label", rec("a..b", "A", 300, "192.0.2.1"), "name"},
		{"wildcard not leftmost", rec("a.*", "A", 300, "192.0.2.1"), "name"},
		{"label too long", rec(strings.Repeat("x", 64), "A", 300, "192.0.2.1"), "name"},
		{"type empty", rec("www", "", 300, "192.0.2.1"), "type"},
		{"type unknown", rec("www", "FOO", 300, "192.0.2.1"), "type"},
		{"type number out of range", rec("www", "TYPE70000", 300, `\# 0`), "type"},
		{"type SOA", rec("@", "SOA", 300, "ns1.example.com. hostmaster.example.com. 1 3600 900 1209600 300"), "type"},
		{"type OPT", rec("@", "OPT", 300, `\# 0`), "type"},
		{"type ANY", rec("@", "ANY", 300, "x"), "type"},
		{"type AXFR", rec("@", "AXFR", 300, "x"), "type"},
		{"type RRSIG", rec("@", "RRSIG", 300, "A 13 2 300 20300101000000 20200101000000 12345 example.com. AAAA"), "type"},
		{"type NSEC", rec("@", "NSEC", 300, "www.example.com. A"), "type"},
		{"type TSIG", rec("@", "TSIG", 300, "x"), "type"},
		{"type SOA as TYPE6", rec("@", "TYPE6", 300, `\# 0`), "type"},
		{"TTL 0", rec("www", "A", 0, "192.0.2.1"), "ttl"},
		{"TTL below MinTTL", rec("www", "A", record.MinTTL-1, "192.0.2.1"), "ttl"},
		{"TTL above MaxTTL", rec("www", "A", record.MaxTTL+1, "192.0.2.1"), "ttl"},
		{"empty data", rec("www", "A", 300, ""), "data"},
		{"blank data", rec("www", "A", 300, " \t "), "data"},
		{"data with newline", rec("www", "TXT", 300, "\"a\"\n\"b\""), "data"},
		{"data with CR", rec("www", "TXT", 300, "\"a\"\r"+"x"), "data"},
		{"data with NUL", rec("www", "TXT", 300, "\"a\x00b\""), "data"},
		{"data with zone-file newline in A", rec("www", "A", 300, "192.0.2.1\nwww 300 IN A 192.0.2.2"), "data"},
		{"A 300.1.1.1", rec("www", "A", 300, "300.1.1.1"), "data"},
		{"A with IPv6", rec("www", "A", 300, "2001:db8::1"), "data"},
		{"A with two addresses", rec("www", "A", 300, "192.0.2.1 192.0.2.2"), "data"},
		{"AAAA x", rec("www", "AAAA", 300, "x"), "data"},
		{"AAAA with IPv4", rec("www", "AAAA", 300, "192.0.2.1"), "data"},
		{"MX ten mail", rec("@", "MX", 300, "ten mail.example.com"), "data"},
		{"MX preference too big", rec("@", "MX", 300, "65536 mail.example.com"), "data"},
		{"MX one field", rec("@", "MX", 300, "mail.example.com"), "data"},
		{"MX three fields", rec("@", "MX", 300, "10 mail.example.com 2525"), "data"},
		{"CAA bad", rec("@", "CAA", 300, "x issue y"), "data"},
		{"SRV short", rec("_sip._tcp", "SRV", 300, "10 60 sip.example.com"), "data"},
		{"unknown type with presentation data", rec("@", "TYPE65280", 300, "hello"), "data"},
		{"RFC 3597 length mismatch", rec("@", "TYPE65280", 300, `\# 5 0a000001`), "data"},
		// Found by FuzzNormalize: inputs miekg/dns parses into records
		// with no data, or prints in a form it cannot read back.
		{"RFC 3597 empty A", rec("@", "TYPE1", 300, `\# 0`), "data"},
		{"RFC 3597 empty A by name", rec("@", "A", 300, `\# 0`), "data"},
		{"RFC 3597 empty HTTPS", rec("@", "TYPE65", 300, `\# 0`), "data"},
		{"RFC 3597 short A", rec("@", "A", 300, `\# 2 0a00`), "data"},
		{"CAA with an empty tag", rec("@", "CAA", 300, `0" "0`), "data"},
		{"CNAME at apex", rec("@", "CNAME", 300, "target.example.net"), "type"},
		{"CNAME at apex, absolute owner", rec("example.com.", "CNAME", 300, "target.example.net"), "type"},
		{"MX target IPv4", rec("@", "MX", 300, "10 192.0.2.1"), "data"},
		{"MX target IPv4 with port", rec("@", "MX", 300, "10 192.0.2.1:2525"), "data"},
		{"MX target underscore", rec("@", "MX", 300, "10 _mail.example.com"), "data"},
		{"MX target numeric TLD", rec("@", "MX", 300, "10 mail.123"), "data"},
		{"MX target leading hyphen", rec("@", "MX", 300, "10 -mail.example.com"), "data"},
		{"MX target root with preference", rec("@", "MX", 300, "10 ."), "data"},
		{"NS target IPv4", rec("@", "NS", 300, "192.0.2.53"), "data"},
		{"NS target underscore", rec("sub", "NS", 300, "_ns.example.net"), "data"},
		{"NS target numeric TLD", rec("sub", "NS", 300, "ns1.42"), "data"},
		{"SRV target IPv4", rec("_sip._tcp", "SRV", 300, "10 60 5060 192.0.2.1"), "data"},
		{"SRV target underscore", rec("_sip._tcp", "SRV", 300, "10 60 5060 _sip.example.com"), "data"},
		{"SRV target numeric TLD", rec("_sip._tcp", "SRV", 300, "10 60 5060 sip.1"), "data"},
		{"MX port 0", rec("@", "MX", 300, "10 mail.example.com:0"), "data"},
		{"MX port 99999", rec("@", "MX", 300, "10 mail.example.com:99999"), "data"},
		{"MX port x", rec("@", "MX", 300, "10 mail.example.com:x"), "data"},
		{"MX port empty", rec("@", "MX", 300, "10 mail.example.com:"), "data"},
		{"MX port negative", rec("@", "MX", 300, "10 mail.example.com:-1"), "data"},
		{"MX port on a non-apex MX", rec("sub", "MX", 300, "10 mail.example.com:2525"), "data"},
		{"forwarding to our own MX host", rec("@", "MX", 300, "10 mx1.fwd.test:2525"), "data"},
		{"forwarding to our own MX host, other case and dot", rec("@", "MX", 300, "10 MX1.Fwd.Test.:2525"), "data"},
		{"forwarding to our second MX host", rec("@", "MX", 300, "10 mx2.fwd.test:2526"), "data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := record.Normalize(zone, tc.in, policy)
			if err == nil {
				t.Fatalf("Normalize(%+v) = %+v, want an error on field %q", tc.in, got, tc.field)
			}
			if f := record.Field(err); f != tc.field {
				t.Fatalf("Normalize(%+v): error %q names field %q, want %q", tc.in, err, f, tc.field)
			}
			if err.Error() == tc.field+": " {
				t.Fatalf("error without a message: %q", err)
			}
		})
	}
}

func TestParseMX(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want record.MX
		str  string
	}{
		{"10 mail.example.com", record.MX{Pref: 10, Host: "mail.example.com.", Port: 25}, "10 mail.example.com."},
		{"10 Mail.Example.com.:2525", record.MX{Pref: 10, Host: "mail.example.com.", Port: 2525}, "10 mail.example.com.:2525"},
		{"0 .", record.MX{Pref: 0, Host: ".", Port: 25}, "0 ."},
		{"65535 a.b:1", record.MX{Pref: 65535, Host: "a.b.", Port: 1}, "65535 a.b.:1"},
	} {
		got, err := record.ParseMX(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseMX(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			continue
		}
		if s := got.String(); s != tc.str {
			t.Errorf("MX%+v.String() = %q, want %q", got, s, tc.str)
		}
	}
}

func TestParseType(t *testing.T) {
	for _, tc := range []struct {
		in   string
		code uint16
		name string
	}{
		{"mx", 15, "MX"},
		{" A ", 1, "A"},
		{"TYPE65280", 65280, "TYPE65280"},
		{"TYPE15", 15, "MX"},
		{"https", 65, "HTTPS"},
	} {
		code, name, err := record.ParseType(tc.in)
		if err != nil || code != tc.code || name != tc.name {
			t.Errorf("ParseType(%q) = %d, %q, %v; want %d, %q", tc.in, code, name, err, tc.code, tc.name)
		}
	}
}

func TestRoute(t *testing.T) {
	mx := func(name, data string) record.Record {
		return record.Record{Name: name, Type: "MX", TTL: 300, Data: data}
	}
	for _, tc := range []struct {
		name string
		recs []record.Record
		want []record.Target
	}{
		{"no records", nil, nil},
		{"no MX", []record.Record{{Name: "@", Type: "A", TTL: 300, Data: "192.0.2.1"}}, nil},
		{"plain MX is not forwarded", []record.Record{mx("@", "10 mail.example.com."), mx("@", "20 backup.example.com.")}, nil},
		{"null MX is not forwarded", []record.Record{mx("@", "0 .")}, nil},
		{"one forwarded MX", []record.Record{mx("@", "10 mail.example.com.:2525")},
			[]record.Target{{Pref: 10, Host: "mail.example.com", Port: 2525}}},
		{"priority order and default port", []record.Record{
			mx("@", "30 c.example.com."),
			mx("@", "10 a.example.com.:2525"),
			mx("@", "20 b.example.com.:587"),
		}, []record.Target{
			{Pref: 10, Host: "a.example.com", Port: 2525},
			{Pref: 20, Host: "b.example.com", Port: 587},
			{Pref: 30, Host: "c.example.com", Port: 25},
		}},
		{"ties by host", []record.Record{
			mx("@", "10 z.example.com.:2525"),
			mx("@", "10 b.example.com.:2525"),
			mx("@", "5 y.example.com."),
			mx("@", "10 m.example.com."),
		}, []record.Target{
			{Pref: 5, Host: "y.example.com", Port: 25},
			{Pref: 10, Host: "b.example.com", Port: 2525},
			{Pref: 10, Host: "m.example.com", Port: 25},
			{Pref: 10, Host: "z.example.com", Port: 2525},
		}},
		{"non-apex MX neither forwards nor joins", []record.Record{
			mx("sub", "10 other.example.com.:2525"),
			mx("@", "10 mail.example.com."),
		}, nil},
		{"non-apex MX left out of a forwarded route", []record.Record{
			mx("sub", "1 other.example.com."),
			mx("@", "10 mail.example.com.:2525"),
		}, []record.Target{{Pref: 10, Host: "mail.example.com", Port: 2525}}},
		{"null MX skipped in a forwarded route", []record.Record{
			mx("@", "0 ."),
			mx("@", "10 mail.example.com.:2525"),
		}, []record.Target{{Pref: 10, Host: "mail.example.com", Port: 2525}}},
		{"unparsable data skipped", []record.Record{
			mx("@", "garbage"),
			mx("@", "10 mail.example.com.:2525"),
		}, []record.Target{{Pref: 10, Host: "mail.example.com", Port: 2525}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := record.Route(tc.recs)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Route = %+v, want %+v", got, tc.want)
			}
		})
	}
	if a := (record.Target{Host: "mail.example.com", Port: 2525}).Address(); a != "mail.example.com:2525" {
		t.Errorf("Address = %q", a)
	}
}

// TestRRDropsPort checks that the record DNS would publish for a forwarded
// MX carries no port.
func TestRRDropsPort(t *testing.T) {
	r := record.Record{Name: "@", Type: "MX", TTL: 300, Data: "10 mail.example.com.:2525"}
	rr, err := r.RR(zone)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := rr.String(), "example.com.\t300\tIN\tMX\t10 mail.example.com."; got != want {
		t.Fatalf("RR = %q, want %q", got, want)
	}
}

// FuzzNormalize checks that Normalize never panics, that what it accepts is
// canonical (normalising it again changes nothing) and converts to an RR,
// and that every error names a field.
func FuzzNormalize(f *testing.F) {
	for _, tc := range normalizeCases {
		f.Add(tc.in.Name, tc.in.Type, tc.in.TTL, tc.in.Data)
	}
	f.Add("a..b", "MX", uint32(300), "10 mx1.fwd.test:2525")
	f.Add("@", "TYPE65280", uint32(300), `\# 0`)
	f.Add("@", "TXT", uint32(300), `"\255\000"`)
	f.Add("@", "MX", uint32(300), "10 [::1]:25")
	f.Fuzz(func(t *testing.T, name, typ string, ttl uint32, data string) {
		in := record.Record{Name: name, Type: typ, TTL: ttl, Data: data}
		got, err := record.Normalize(zone, in, policy)
		if err != nil {
			if record.Field(err) == "" {
				t.Fatalf("Normalize(%+v): error %q names no field", in, err)
			}
			return
		}
		again, err := record.Normalize(zone, got, policy)
		if err != nil {
			t.Fatalf("Normalize(%+v) = %+v, which is refused: %v", in, got, err)
		}
		if again != got {
			t.Fatalf("Normalize(%+v) not idempotent:\nonce  %+v\ntwice %+v", in, got, again)
		}
		if strings.ContainsAny(got.Name+got.Type+got.Data, "\t\r\n") {
			t.Fatalf("Normalize(%+v) = %+v: tab or newline in the stored form", in, got)
		}
		if _, err := got.RR(zone); err != nil {
			t.Fatalf("RR(%+v): %v", got, err)
		}
		record.Route([]record.Record{got})
	})
}

func TestMain(m *testing.M) { storetest.Main(m) }
