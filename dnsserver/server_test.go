package dnsserver_test

// Protocol tests of the dns role over real sockets, against a real
// redis-server (storetest; TestMain is in tools_test.go): answers per
// RFC 1034 4.3.2 and the MX forwarding rule, table-driven over UDP and TCP;
// protocol edge cases (EDNS, FORMERR, NOTIMP, truncation, TSIG, AXFR,
// IXFR, RFC 7766); live updates; a Redis outage; response rate limiting.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mxport/mxport/dnsserver"
	"github.com/mxport/mxport/dnsserver/rrl"
	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
	"github.com/mxport/mxport/store/storetest"
)

var (
	protoMXHosts = []string{"mx1.fwd.test", "mx2.fwd.test"}
	protoOptions = store.Options{MXHosts: protoMXHosts, NS: []string{"ns1.fwd.test", "ns2.fwd.test"}}
	protoNets    = []string{"udp", "tcp"}
)

// Sizes the tests check against: the classic UDP limit and our EDNS cap.
const (
	classicSize = 512
	ourSize     = 1232
)

// The TSIG keys seeded by protoSeed.
const (
	keyPlain = "xfr-key." // plain.test and bulk.test
	keyOther = "other-key."
)

// protoServer is a running dnsserver.Server over a seeded store.
type protoServer struct {
	*dnsserver.Server
	addr    string // UDP and TCP
	st      *store.Store
	secrets map[string]string // key name -> base64 secret
}

// protoStore returns a fresh store (the shared redis-server) seeded with
// protoSeed's zones and keys.
func protoStore(t *testing.T) (*store.Store, map[string]string) {
	t.Helper()
	st := storetest.NewWith(t, protoOptions)
	return st, protoSeed(t, st)
}

// protoListen opens a UDP socket and a TCP listener on one loopback port.
func protoListen(t *testing.T) (net.PacketConn, net.Listener) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l
		}
		pc.Close()
		if attempt == 10 {
			t.Fatalf("no port free for both UDP and TCP: %v", err)
		}
	}
}

// protoStart serves st with cfg (MXHosts defaulted) on a fresh loopback
// port and waits until the index has loaded and knows every key of
// secrets. The server is shut down at t's cleanup.
func protoStart(t *testing.T, st *store.Store, secrets map[string]string, cfg dnsserver.Config) *protoServer {
	t.Helper()
	if cfg.MXHosts == nil {
		cfg.MXHosts = protoMXHosts
	}
	pc, l := protoListen(t)
	srv := dnsserver.New(st, cfg)
	protoRun(t, srv, secrets, func() error { return srv.Serve(context.Background(), []net.PacketConn{pc}, l) })
	return &protoServer{Server: srv, addr: pc.LocalAddr().String(), st: st, secrets: secrets}
}

// protoRun starts srv with start, stops it at cleanup, and waits until its
// index has loaded, TSIG keys named in secrets included.
func protoRun(t *testing.T, srv *dnsserver.Server, secrets map[string]string, start func() error) {
	t.Helper()
	if err := start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	protoPoll(t, 10*time.Second, "index loaded", func() error {
		if !srv.Index().Loaded() {
			return errors.New("not loaded")
		}
		for k := range secrets {
			if _, ok := srv.Index().Key(k); !ok {
				return fmt.Errorf("key %s not known", k)
			}
		}
		return nil
	})
}

// protoPoll calls f until it returns nil, failing the test with f's last
// error at the deadline.
func protoPoll(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, d, err)
		}
		time.Sleep(5 * time.Millisecond) // poll with a deadline
	}
}

func protoRec(name, typ string, ttl uint32, data string) record.Record {
	return record.Record{Name: name, Type: typ, TTL: ttl, Data: data}
}

// Data of the seeded zones.
var (
	txt255  = strings.Repeat("0123456789abcdef", 16)[:255]
	hex64   = strings.Repeat("0123456789abcdef", 4)
	bigA    = 60 // A records at big.plain.test: over 512 bytes, under 1232
	hugeTXT = 40 // TXT records of 100 bytes at huge.plain.test: over 1232
	bulkTXT = 700
)

// protoZones are the seeded zones, name -> SOA TTL and minimum and records.
func protoZones() map[string][]record.Record {
	plain := []record.Record{
		protoRec("@", "NS", 3600, "ns1.plain.test."),
		protoRec("@", "NS", 3600, "ns2.fwd.test."),
		protoRec("ns1", "A", 3600, "192.0.2.53"),
		protoRec("@", "MX", 3600, "10 mail.plain.test."),
		protoRec("mail", "A", 300, "192.0.2.10"),
		protoRec("mail", "AAAA", 300, "2001:db8::10"),
		protoRec("*.w", "A", 300, "192.0.2.99"),
		protoRec("*.w", "TXT", 300, `"wild"`),
		protoRec("a.e.w", "A", 300, "192.0.2.98"),
		protoRec("a.b.ent", "A", 300, "192.0.2.97"),
		protoRec("sub", "NS", 3600, "ns1.sub.plain.test."),
		protoRec("sub", "DS", 3600, "12345 13 2 "+hex64),
		protoRec("ns1.sub", "A", 3600, "192.0.2.54"),
		protoRec("ns1.sub", "AAAA", 3600, "2001:db8::54"),
		protoRec("c1", "CNAME", 300, "c2.plain.test."),
		protoRec("c2", "CNAME", 300, "mail.plain.test."),
		protoRec("dangle", "CNAME", 300, "nowhere.plain.test."),
		protoRec("out", "CNAME", 300, "www.example.org."),
		protoRec("cw", "CNAME", 300, "foo.w.plain.test."),
		protoRec("txt", "TXT", 300, `"one" "two" "three four"`),
		protoRec("long", "TXT", 300, `"`+txt255+`"`),
		protoRec("_sip._tcp", "SRV", 300, "10 5 5060 sip.plain.test."),
		protoRec("sip", "A", 300, "192.0.2.60"),
		protoRec("@", "CAA", 300, `0 issue "letsencrypt.org"`),
		protoRec("_25._tcp.mail", "TLSA", 300, "3 1 1 "+hex64),
		protoRec("host", "SSHFP", 300, "4 2 "+hex64),
		protoRec("@", "HTTPS", 300, "1 . alpn=h2,h3"),
		protoRec("_dns", "SVCB", 300, "1 dns.plain.test. alpn=dot"),
		protoRec("ptr", "PTR", 300, "host.plain.test."),
		protoRec("unk", "TYPE65280", 300, `\# 4 0a000001`),
	}
	for i := 1; i <= bigA; i++ {
		plain = append(plain, protoRec("big", "A", 300, fmt.Sprintf("10.0.0.%d", i)))
	}
	for i := 0; i < hugeTXT; i++ {
		plain = append(plain, protoRec("huge", "TXT", 300, fmt.Sprintf(`"%02d%s"`, i, strings.Repeat("h", 98))))
	}
	var bulk []record.Record
	for i := 0; i < bulkTXT; i++ {
		bulk = append(bulk, protoRec(fmt.Sprintf("n%03d", i), "TXT", 300, fmt.Sprintf(`"%03d%s"`, i, strings.Repeat("b", 97))))
	}
	bulk = append(bulk, protoRec("@", "NS", 3600, "ns1.fwd.test."))
	return map[string][]record.Record{
		"example.com": {
			protoRec("@", "NS", 3600, "ns1.fwd.test."),
			protoRec("@", "NS", 3600, "ns2.fwd.test."),
			protoRec("@", "MX", 3600, "10 mail.example.com:2525"),
			protoRec("@", "MX", 3600, "20 backup.example.net:25"),
			protoRec("mail", "A", 300, "192.0.2.25"),
			protoRec("www", "A", 300, "192.0.2.80"),
		},
		"plain.test": plain,
		"other.test": {protoRec("@", "NS", 3600, "ns1.fwd.test."), protoRec("@", "A", 300, "192.0.2.1")},
		"bulk.test":  bulk,
	}
}

// protoSeed writes protoZones to st (plain.test with SOA TTL 600 and
// minimum 900; the others with the defaults, TTL 3600 and minimum 300)
// and creates the TSIG keys; it returns their secrets.
func protoSeed(t *testing.T, st *store.Store) map[string]string {
	t.Helper()
	ctx := context.Background()
	if _, err := st.EnsureAccount(ctx, "proto", store.RoleCustomer); err != nil {
		t.Fatal(err)
	}
	for name, recs := range protoZones() {
		soa := st.DefaultSOA(name)
		if name == "plain.test" {
			soa.TTL, soa.Minimum = 600, 900
		}
		if _, err := st.ImportZone(ctx, name, "proto", soa, 0, recs, false); err != nil {
			t.Fatalf("import %s: %v", name, err)
		}
	}
	secrets := map[string]string{}
	for name, zones := range map[string][]string{keyPlain: {"plain.test", "bulk.test"}, keyOther: {"other.test"}} {
		k, err := st.CreateTSIGKey(ctx, name, "", zones)
		if err != nil {
			t.Fatal(err)
		}
		secrets[k.Name] = k.Secret
	}
	return secrets
}

// protoShared returns a server over protoSeed's data with no transfer ACL
// and no RRL, for read-only tests. Each test gets its own (the store and
// server die with the test), but queries never change it.
func protoShared(t *testing.T) *protoServer {
	t.Helper()
	st, secrets := protoStore(t)
	return protoStart(t, st, secrets, dnsserver.Config{})
}

// exchangeRaw sends one message (already packed) over network and returns
// the raw reply, or the read error (a timeout means no reply).
func exchangeRaw(network, addr string, q []byte, timeout time.Duration) ([]byte, error) {
	c, err := net.DialTimeout(network, addr, timeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if network == "tcp" {
		if err := writeFramed(c, q); err != nil {
			return nil, err
		}
		return readFramed(c)
	}
	if _, err := c.Write(q); err != nil {
		return nil, err
	}
	buf := make([]byte, 65536)
	n, err := c.Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

func writeFramed(c net.Conn, q []byte) error {
	b := make([]byte, 2+len(q))
	binary.BigEndian.PutUint16(b, uint16(len(q)))
	copy(b[2:], q)
	_, err := c.Write(b)
	return err
}

func readFramed(c net.Conn) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(c, b); err != nil {
		return nil, err
	}
	return b, nil
}

// ask sends m over network and returns the reply and its wire size; no
// reply or one that does not unpack fails the test.
func ask(t *testing.T, network, addr string, m *dns.Msg) (*dns.Msg, int) {
	t.Helper()
	q, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := exchangeRaw(network, addr, q, 2*time.Second)
	if err != nil {
		t.Fatalf("%s %v: %v", network, m.Question, err)
	}
	resp := new(dns.Msg)
	if err := resp.Unpack(raw); err != nil {
		t.Fatalf("%s: reply does not unpack: %v", network, err)
	}
	if resp.Id != m.Id {
		t.Fatalf("%s: reply id %d, query id %d", network, resp.Id, m.Id)
	}
	return resp, len(raw)
}

// query is a plain question with RD set, as stub resolvers send it.
func query(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

// rrStrings parses each record in presentation format and returns the
// records' String forms, sorted; SERIAL in an SOA is replaced by serial.
func rrStrings(t *testing.T, in []string, serials map[string]string) []string {
	t.Helper()
	var out []string
	for _, s := range in {
		for zone, serial := range serials {
			if strings.HasPrefix(s, zone+" ") {
				s = strings.Replace(s, "SERIAL", serial, 1)
			}
		}
		rr, err := dns.NewRR(s)
		if err != nil || rr == nil {
			t.Fatalf("bad expected record %q: %v", s, err)
		}
		out = append(out, rr.String())
	}
	sort.Strings(out)
	return out
}

func gotStrings(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		if rr.Header().Rrtype == dns.TypeOPT {
			continue
		}
		out = append(out, rr.String())
	}
	sort.Strings(out)
	return out
}

func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// protoCase is one question and the reply expected (CoreDNS test.Case).
type protoCase struct {
	name              string
	qname             string
	qtype             uint16
	rcode             int
	aa                bool
	answer, ns, extra []string // records in presentation format; nil: none
	check             func(t *testing.T, m *dns.Msg)
}

func protoCases() []protoCase {
	const (
		negPlain = "plain.test. 600 IN SOA ns1.fwd.test. hostmaster.plain.test. SERIAL 3600 900 1209600 900"
		negEx    = "example.com. 300 IN SOA ns1.fwd.test. hostmaster.example.com. SERIAL 3600 900 1209600 300"
	)
	mailExtra := []string{"mail.plain.test. 300 IN A 192.0.2.10", "mail.plain.test. 300 IN AAAA 2001:db8::10"}
	glue := []string{"ns1.sub.plain.test. 3600 IN A 192.0.2.54", "ns1.sub.plain.test. 3600 IN AAAA 2001:db8::54"}
	var big []string
	for i := 1; i <= bigA; i++ {
		big = append(big, fmt.Sprintf("big.plain.test. 300 IN A 10.0.0.%d", i))
	}
	return []protoCase{
		// The MX forwarding rule.
		{name: "forwarded MX", qname: "example.com.", qtype: dns.TypeMX, aa: true,
			answer: []string{"example.com. 3600 IN MX 10 mx1.fwd.test.", "example.com. 3600 IN MX 20 mx2.fwd.test."},
			check: func(t *testing.T, m *dns.Msg) {
				for _, rr := range append(append(m.Answer, m.Ns...), m.Extra...) {
					if s := rr.String(); strings.Contains(s, "mail.example.com") || strings.Contains(s, "backup.example.net") || strings.Contains(s, "2525") {
						t.Errorf("customer's MX target leaked: %s", s)
					}
				}
			}},
		{name: "forwarded zone A", qname: "mail.example.com.", qtype: dns.TypeA, aa: true,
			answer: []string{"mail.example.com. 300 IN A 192.0.2.25"}},
		{name: "forwarded zone NODATA", qname: "www.example.com.", qtype: dns.TypeMX, aa: true, ns: []string{negEx}},
		{name: "plain MX with additional", qname: "plain.test.", qtype: dns.TypeMX, aa: true,
			answer: []string{"plain.test. 3600 IN MX 10 mail.plain.test."}, extra: mailExtra},
		{name: "apex NS with in-zone address", qname: "plain.test.", qtype: dns.TypeNS, aa: true,
			answer: []string{"plain.test. 3600 IN NS ns1.plain.test.", "plain.test. 3600 IN NS ns2.fwd.test."},
			extra:  []string{"ns1.plain.test. 3600 IN A 192.0.2.53"}},
		{name: "apex SOA", qname: "plain.test.", qtype: dns.TypeSOA, aa: true,
			answer: []string{"plain.test. 600 IN SOA ns1.fwd.test. hostmaster.plain.test. SERIAL 3600 900 1209600 900"}},
		// Negative answers (RFC 2308): SOA TTL min(SOA TTL, minimum).
		{name: "NODATA (TTL is SOA TTL)", qname: "mail.plain.test.", qtype: dns.TypeTXT, aa: true, ns: []string{negPlain}},
		{name: "NODATA (TTL is minimum)", qname: "mail.example.com.", qtype: dns.TypeAAAA, aa: true, ns: []string{negEx}},
		{name: "NXDOMAIN", qname: "nope.plain.test.", qtype: dns.TypeA, rcode: dns.RcodeNameError, aa: true, ns: []string{negPlain}},
		{name: "NXDOMAIN below a name", qname: "x.mail.plain.test.", qtype: dns.TypeA, rcode: dns.RcodeNameError, aa: true, ns: []string{negPlain}},
		{name: "empty non-terminal", qname: "b.ent.plain.test.", qtype: dns.TypeA, aa: true, ns: []string{negPlain}},
		{name: "empty non-terminal 2", qname: "ent.plain.test.", qtype: dns.TypeAAAA, aa: true, ns: []string{negPlain}},
		{name: "below empty non-terminal", qname: "a.b.ent.plain.test.", qtype: dns.TypeA, aa: true,
			answer: []string{"a.b.ent.plain.test. 300 IN A 192.0.2.97"}},
		// Wildcards (RFC 4592).
		{name: "wildcard", qname: "x.w.plain.test.", qtype: dns.TypeA, aa: true,
			answer: []string{"x.w.plain.test. 300 IN A 192.0.2.99"}},
		{name: "wildcard two labels down", qname: "y.x.w.plain.test.", qtype: dns.TypeTXT, aa: true,
			answer: []string{`y.x.w.plain.test. 300 IN TXT "wild"`}},
		{name: "wildcard NODATA", qname: "x.w.plain.test.", qtype: dns.TypeMX, aa: true, ns: []string{negPlain}},
		{name: "wildcard owner itself", qname: "*.w.plain.test.", qtype: dns.TypeA, aa: true,
			answer: []string{"*.w.plain.test. 300 IN A 192.0.2.99"}},
		{name: "wildcard parent is empty non-terminal", qname: "w.plain.test.", qtype: dns.TypeA, aa: true, ns: []string{negPlain}},
		{name: "empty non-terminal blocks wildcard", qname: "z.e.w.plain.test.", qtype: dns.TypeA, rcode: dns.RcodeNameError, aa: true, ns: []string{negPlain}},
		{name: "existing name beside wildcard", qname: "e.w.plain.test.", qtype: dns.TypeA, aa: true, ns: []string{negPlain}},
		// Delegation: referral with glue, not authoritative.
		{name: "referral", qname: "www.sub.plain.test.", qtype: dns.TypeA,
			ns: []string{"sub.plain.test. 3600 IN NS ns1.sub.plain.test."}, extra: glue},
		{name: "referral at the cut", qname: "sub.plain.test.", qtype: dns.TypeNS,
			ns: []string{"sub.plain.test. 3600 IN NS ns1.sub.plain.test."}, extra: glue},
		{name: "glue is not authoritative data", qname: "ns1.sub.plain.test.", qtype: dns.TypeA,
			ns: []string{"sub.plain.test. 3600 IN NS ns1.sub.plain.test."}, extra: glue},
		{name: "DS at the cut", qname: "sub.plain.test.", qtype: dns.TypeDS, aa: true,
			answer: []string{"sub.plain.test. 3600 IN DS 12345 13 2 " + hex64}},
		// CNAME chains.
		{name: "CNAME chain in zone", qname: "c1.plain.test.", qtype: dns.TypeA, aa: true,
			answer: []string{"c1.plain.test. 300 IN CNAME c2.plain.test.", "c2.plain.test. 300 IN CNAME mail.plain.test.", "mail.plain.test. 300 IN A 192.0.2.10"}},
		{name: "CNAME asked for", qname: "c1.plain.test.", qtype: dns.TypeCNAME, aa: true,
			answer: []string{"c1.plain.test. 300 IN CNAME c2.plain.test."}},
		{name: "CNAME to NXDOMAIN", qname: "dangle.plain.test.", qtype: dns.TypeA, rcode: dns.RcodeNameError, aa: true,
			answer: []string{"dangle.plain.test. 300 IN CNAME nowhere.plain.test."}, ns: []string{negPlain}},
		{name: "CNAME out of zone", qname: "out.plain.test.", qtype: dns.TypeA, aa: true,
			answer: []string{"out.plain.test. 300 IN CNAME www.example.org."}},
		{name: "CNAME to wildcard", qname: "cw.plain.test.", qtype: dns.TypeA, aa: true,
			answer: []string{"cw.plain.test. 300 IN CNAME foo.w.plain.test.", "foo.w.plain.test. 300 IN A 192.0.2.99"}},
		{name: "CNAME chain to NODATA", qname: "c1.plain.test.", qtype: dns.TypeTXT, aa: true,
			answer: []string{"c1.plain.test. 300 IN CNAME c2.plain.test.", "c2.plain.test. 300 IN CNAME mail.plain.test."}, ns: []string{negPlain}},
		// ANY (RFC 8482): one RRset.
		{name: "ANY minimal", qname: "mail.plain.test.", qtype: dns.TypeANY, aa: true,
			answer: []string{"mail.plain.test. 300 IN A 192.0.2.10"}},
		{name: "ANY at apex", qname: "plain.test.", qtype: dns.TypeANY, aa: true,
			check: func(t *testing.T, m *dns.Msg) {
				if len(m.Answer) == 0 {
					t.Fatal("ANY at apex: no answer")
				}
				typ := m.Answer[0].Header().Rrtype
				for _, rr := range m.Answer {
					if rr.Header().Rrtype != typ {
						t.Errorf("ANY answered with more than one RRset: %v", m.Answer)
					}
				}
			}},
		// Not ours.
		{name: "REFUSED outside", qname: "example.org.", qtype: dns.TypeA, rcode: dns.RcodeRefused},
		{name: "REFUSED suffix not on a label", qname: "xplain.test.", qtype: dns.TypeA, rcode: dns.RcodeRefused},
		{name: "REFUSED root", qname: ".", qtype: dns.TypeNS, rcode: dns.RcodeRefused},
		// Record types.
		{name: "TXT several strings", qname: "txt.plain.test.", qtype: dns.TypeTXT, aa: true,
			answer: []string{`txt.plain.test. 300 IN TXT "one" "two" "three four"`}},
		{name: "TXT 255", qname: "long.plain.test.", qtype: dns.TypeTXT, aa: true,
			answer: []string{`long.plain.test. 300 IN TXT "` + txt255 + `"`}},
		{name: "SRV with additional", qname: "_sip._tcp.plain.test.", qtype: dns.TypeSRV, aa: true,
			answer: []string{"_sip._tcp.plain.test. 300 IN SRV 10 5 5060 sip.plain.test."},
			extra:  []string{"sip.plain.test. 300 IN A 192.0.2.60"}},
		{name: "AAAA", qname: "mail.plain.test.", qtype: dns.TypeAAAA, aa: true,
			answer: []string{"mail.plain.test. 300 IN AAAA 2001:db8::10"}},
		{name: "CAA", qname: "plain.test.", qtype: dns.TypeCAA, aa: true,
			answer: []string{`plain.test. 300 IN CAA 0 issue "letsencrypt.org"`}},
		{name: "TLSA", qname: "_25._tcp.mail.plain.test.", qtype: dns.TypeTLSA, aa: true,
			answer: []string{"_25._tcp.mail.plain.test. 300 IN TLSA 3 1 1 " + hex64}},
		{name: "SSHFP", qname: "host.plain.test.", qtype: dns.TypeSSHFP, aa: true,
			answer: []string{"host.plain.test. 300 IN SSHFP 4 2 " + hex64}},
		{name: "HTTPS", qname: "plain.test.", qtype: dns.TypeHTTPS, aa: true,
			answer: []string{"plain.test. 300 IN HTTPS 1 . alpn=h2,h3"}},
		{name: "SVCB", qname: "_dns.plain.test.", qtype: dns.TypeSVCB, aa: true,
			answer: []string{"_dns.plain.test. 300 IN SVCB 1 dns.plain.test. alpn=dot"}},
		{name: "PTR", qname: "ptr.plain.test.", qtype: dns.TypePTR, aa: true,
			answer: []string{"ptr.plain.test. 300 IN PTR host.plain.test."}},
		{name: "unknown type (RFC 3597)", qname: "unk.plain.test.", qtype: 65280, aa: true,
			answer: []string{`unk.plain.test. 300 IN TYPE65280 \# 4 0a000001`}},
		// Letter case (RFC 4343): the question comes back as asked.
		{name: "question case preserved", qname: "WwW.ExAmPlE.CoM.", qtype: dns.TypeA, aa: true,
			answer: []string{"www.example.com. 300 IN A 192.0.2.80"}},
		{name: "upper-case wildcard", qname: "X.W.PLAIN.TEST.", qtype: dns.TypeA, aa: true,
			answer: []string{"x.w.plain.test. 300 IN A 192.0.2.99"}},
		// A large RRset over TCP: whole (UDP truncation is TestTruncation's).
		{name: "large RRset", qname: "big.plain.test.", qtype: dns.TypeA, aa: true, answer: big},
	}
}

// TestProtocol asks every protoCase over UDP and over TCP.
func TestProtocol(t *testing.T) {
	s := protoShared(t)
	serials := map[string]string{}
	for _, z := range []string{"plain.test.", "example.com."} {
		serials[z] = strconv.FormatUint(uint64(s.Index().Zone(z).Serial()), 10)
	}
	for _, tc := range protoCases() {
		for _, network := range protoNets {
			if tc.qname == "big.plain.test." && network == "udp" {
				continue
			}
			t.Run(tc.name+"/"+network, func(t *testing.T) {
				m := query(tc.qname, tc.qtype)
				resp, size := ask(t, network, s.addr, m)
				if len(resp.Question) != 1 || resp.Question[0] != m.Question[0] {
					t.Errorf("question %v, want %v (case preserved)", resp.Question, m.Question)
				}
				if resp.Rcode != tc.rcode {
					t.Errorf("rcode %s, want %s", dns.RcodeToString[resp.Rcode], dns.RcodeToString[tc.rcode])
				}
				if resp.Authoritative != tc.aa {
					t.Errorf("AA %v, want %v", resp.Authoritative, tc.aa)
				}
				if resp.RecursionAvailable {
					t.Error("RA set")
				}
				if !resp.RecursionDesired {
					t.Error("RD not copied")
				}
				if resp.Truncated {
					t.Error("TC set")
				}
				for _, sec := range []struct {
					name      string
					got, want []string
				}{
					{"answer", gotStrings(resp.Answer), rrStrings(t, tc.answer, serials)},
					{"authority", gotStrings(resp.Ns), rrStrings(t, tc.ns, serials)},
					{"additional", gotStrings(resp.Extra), rrStrings(t, tc.extra, serials)},
				} {
					if tc.check != nil && sec.want == nil {
						continue
					}
					if !sameStrings(sec.got, sec.want) {
						t.Errorf("%s section:\n got  %q\n want %q", sec.name, sec.got, sec.want)
					}
				}
				if tc.check != nil {
					tc.check(t, resp)
				}
				// Name compression (RFC 1035 4.1.4) whenever it saves bytes.
				c := resp.Copy()
				c.Compress = false
				plain := c.Len()
				c.Compress = true
				if c.Len() < plain && size >= plain {
					t.Errorf("reply not compressed: %d bytes, %d uncompressed, %d compressed", size, plain, c.Len())
				}
			})
		}
	}
}

// TestEDNS checks RFC 6891: OPT back with our size, BADVERS, FORMERR on
// two OPTs, and advertised sizes below 512.
func TestEDNS(t *testing.T) {
	s := protoShared(t)
	for _, network := range protoNets {
		t.Run(network, func(t *testing.T) {
			for _, adv := range []uint16{0, 100, 512, 1232, 4096, 65535} {
				m := query("mail.plain.test.", dns.TypeA)
				m.SetEdns0(adv, false)
				resp, _ := ask(t, network, s.addr, m)
				opt := resp.IsEdns0()
				if opt == nil {
					t.Fatalf("size %d: no OPT in reply", adv)
				}
				if opt.UDPSize() != ourSize || opt.Version() != 0 {
					t.Errorf("size %d: OPT size %d version %d, want %d 0", adv, opt.UDPSize(), opt.Version(), ourSize)
				}
				if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 1 {
					t.Errorf("size %d: %s with %d answers", adv, dns.RcodeToString[resp.Rcode], len(resp.Answer))
				}
			}

			m := query("mail.plain.test.", dns.TypeA)
			m.SetEdns0(1232, false)
			m.IsEdns0().SetVersion(1)
			resp, _ := ask(t, network, s.addr, m)
			if resp.Rcode != dns.RcodeBadVers || resp.IsEdns0() == nil {
				t.Errorf("EDNS version 1: rcode %d (OPT %v), want BADVERS (16) with OPT", resp.Rcode, resp.IsEdns0())
			}
			if len(resp.Answer) != 0 {
				t.Errorf("BADVERS with answers: %v", resp.Answer)
			}

			m = query("mail.plain.test.", dns.TypeA)
			m.SetEdns0(1232, false)
			m.Extra = append(m.Extra, &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: 1232}})
			resp, _ = ask(t, network, s.addr, m)
			if resp.Rcode != dns.RcodeFormatError {
				t.Errorf("two OPT records: rcode %s, want FORMERR", dns.RcodeToString[resp.Rcode])
			}
		})
	}
}

// TestMalformed checks the requests that are not a plain query.
func TestMalformed(t *testing.T) {
	s := protoShared(t)
	for _, network := range protoNets {
		t.Run(network, func(t *testing.T) {
			// QDCOUNT 0 and 2: FORMERR.
			m := new(dns.Msg)
			m.Id = dns.Id()
			resp, _ := ask(t, network, s.addr, m)
			if resp.Rcode != dns.RcodeFormatError {
				t.Errorf("QDCOUNT 0: %s, want FORMERR", dns.RcodeToString[resp.Rcode])
			}
			m = query("mail.plain.test.", dns.TypeA)
			m.Question = append(m.Question, dns.Question{Name: "plain.test.", Qtype: dns.TypeSOA, Qclass: dns.ClassINET})
			resp, _ = ask(t, network, s.addr, m)
			if resp.Rcode != dns.RcodeFormatError || len(resp.Answer) != 0 {
				t.Errorf("QDCOUNT 2: %s with %d answers, want FORMERR", dns.RcodeToString[resp.Rcode], len(resp.Answer))
			}

			// Unknown opcodes: NOTIMP, the request's flags not echoed.
			for _, op := range []int{dns.OpcodeStatus, 3, 6, 15} {
				m = query("mail.plain.test.", dns.TypeA)
				m.Opcode = op
				m.Authoritative, m.Truncated, m.RecursionAvailable, m.AuthenticatedData = true, true, true, true
				resp, _ = ask(t, network, s.addr, m)
				if resp.Rcode != dns.RcodeNotImplemented || !resp.Response || resp.Opcode != op {
					t.Errorf("opcode %d: rcode %s QR %v opcode %d, want NOTIMP", op, dns.RcodeToString[resp.Rcode], resp.Response, resp.Opcode)
				}
				if resp.Authoritative || resp.Truncated || resp.RecursionAvailable || resp.AuthenticatedData {
					t.Errorf("opcode %d: flags echoed: %s", op, resp.MsgHdr.String())
				}
				if len(resp.Answer)+len(resp.Ns) != 0 {
					t.Errorf("opcode %d: records in NOTIMP: %v", op, resp)
				}
			}

			// Class CH (version.bind and friends): REFUSED.
			m = new(dns.Msg)
			m.Id = dns.Id()
			m.Question = []dns.Question{{Name: "version.bind.", Qtype: dns.TypeTXT, Qclass: dns.ClassCHAOS}}
			resp, _ = ask(t, network, s.addr, m)
			if resp.Rcode != dns.RcodeRefused || len(resp.Answer) != 0 {
				t.Errorf("CH TXT version.bind: %s with %d answers, want REFUSED", dns.RcodeToString[resp.Rcode], len(resp.Answer))
			}
			m.Question[0].Name = "plain.test."
			resp, _ = ask(t, network, s.addr, m)
			if resp.Rcode != dns.RcodeRefused {
				t.Errorf("CH TXT plain.test: %s, want REFUSED", dns.RcodeToString[resp.Rcode])
			}

			// NOTIFY to a primary: acknowledged for a hosted zone.
			m = new(dns.Msg)
			m.SetNotify("plain.test.")
			resp, _ = ask(t, network, s.addr, m)
			if resp.Rcode != dns.RcodeSuccess || resp.Opcode != dns.OpcodeNotify || !resp.Response {
				t.Errorf("NOTIFY: %s opcode %d", dns.RcodeToString[resp.Rcode], resp.Opcode)
			}
		})
	}

	// A response (QR set) gets no answer; garbage gets none or FORMERR,
	// and the server keeps answering.
	m := query("mail.plain.test.", dns.TypeA)
	m.Response = true
	q, _ := m.Pack()
	if raw, err := exchangeRaw("udp", s.addr, q, 300*time.Millisecond); !isTimeout(err) {
		t.Errorf("response packet answered: %d bytes, err %v", len(raw), err)
	}
	garbage := [][]byte{
		{0x12},
		[]byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07garbage"),
		[]byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01"), // a pointer loop
		[]byte("\x12\x34\x01\x00\x00\x01\x00\x05\x00\x00\x00\x00\x00\x00\x01\x00\x01\xff\xff\xff"),
		append([]byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01\x00\x00\x01\x00\x01"), make([]byte, 200)...),
		append([]byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01\x00\x00\x01\x00\x01\x00\x00\x29\x04\xd0\x00\x00\x00\x00\xff\xff"), make([]byte, 20)...), // OPT with an RDLENGTH past the end
	}
	for _, g := range garbage {
		raw, err := exchangeRaw("udp", s.addr, g, 200*time.Millisecond)
		if err == nil {
			var resp dns.Msg
			if uerr := resp.Unpack(raw); uerr != nil || !resp.Response || len(resp.Answer) != 0 {
				t.Errorf("garbage %q: reply %v (unpack %v), want an error or nothing", g, resp.MsgHdr, uerr)
			}
		} else if !isTimeout(err) {
			t.Errorf("garbage %q: %v", g, err)
		}
		for _, network := range protoNets {
			if resp, _ := ask(t, network, s.addr, query("mail.plain.test.", dns.TypeA)); len(resp.Answer) != 1 {
				t.Fatalf("after garbage %q: %v", g, resp)
			}
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestTruncation checks answers that do not fit: TC and 512 bytes without
// EDNS, our cap of 1232 with EDNS, the whole answer over TCP.
func TestTruncation(t *testing.T) {
	s := protoShared(t)
	check := func(t *testing.T, name string, edns uint16, limit int, wantTC bool) *dns.Msg {
		t.Helper()
		qtype, want := uint16(dns.TypeA), bigA
		if strings.HasPrefix(name, "huge") {
			qtype, want = dns.TypeTXT, hugeTXT
		}
		m := query(name, qtype)
		if edns > 0 {
			m.SetEdns0(edns, false)
		}
		resp, size := ask(t, "udp", s.addr, m)
		if size > limit {
			t.Errorf("%s EDNS %d: %d bytes over UDP, limit %d", name, edns, size, limit)
		}
		if resp.Truncated != wantTC {
			t.Errorf("%s EDNS %d: TC %v, want %v (%d answers, %d bytes)", name, edns, resp.Truncated, wantTC, len(resp.Answer), size)
		}
		if resp.Rcode != dns.RcodeSuccess || !resp.Authoritative {
			t.Errorf("%s EDNS %d: %s AA %v", name, edns, dns.RcodeToString[resp.Rcode], resp.Authoritative)
		}
		if edns > 0 && resp.IsEdns0() == nil {
			t.Errorf("%s EDNS %d: truncated reply lost its OPT", name, edns)
		}
		// The retry over TCP gets everything.
		tm := m.Copy()
		tresp, _ := ask(t, "tcp", s.addr, tm)
		if tresp.Truncated || len(tresp.Answer) != want {
			t.Errorf("%s over TCP: TC %v, %d answers, want %d", name, tresp.Truncated, len(tresp.Answer), want)
		}
		return resp
	}
	t.Run("no EDNS", func(t *testing.T) { check(t, "big.plain.test.", 0, classicSize, true) })
	t.Run("EDNS below 512", func(t *testing.T) { check(t, "big.plain.test.", 100, classicSize, true) })
	t.Run("EDNS 1232 fits", func(t *testing.T) {
		if resp := check(t, "big.plain.test.", 1232, ourSize, false); len(resp.Answer) != bigA {
			t.Errorf("%d answers, want %d", len(resp.Answer), bigA)
		}
	})
	t.Run("EDNS 4096 capped", func(t *testing.T) { check(t, "huge.plain.test.", 4096, ourSize, true) })
	t.Run("EDNS 65535 capped", func(t *testing.T) { check(t, "huge.plain.test.", 65535, ourSize, true) })
}

// xfrRead reads a zone transfer from c until the closing SOA. When secret
// is set every message must be signed and verify (RFC 8945 5.3.1: the
// first against the request's MAC, the later ones timers only); it
// returns the records and the number of messages.
func xfrRead(t *testing.T, c net.Conn, secret, reqMAC string) ([]dns.RR, int) {
	t.Helper()
	var rrs []dns.RR
	n, soas := 0, 0
	mac := reqMAC
	for soas < 2 {
		raw, err := readFramed(c)
		if err != nil {
			t.Fatalf("transfer message %d: %v (%d records so far)", n, err, len(rrs))
		}
		m := new(dns.Msg)
		if err := m.Unpack(raw); err != nil {
			t.Fatalf("transfer message %d: %v", n, err)
		}
		if m.Rcode != dns.RcodeSuccess {
			t.Fatalf("transfer message %d: %s", n, dns.RcodeToString[m.Rcode])
		}
		if secret != "" {
			ts := m.IsTsig()
			if ts == nil {
				t.Fatalf("transfer message %d is not signed", n)
			}
			if err := dns.TsigVerify(raw, secret, mac, n > 0); err != nil {
				t.Fatalf("transfer message %d does not verify: %v", n, err)
			}
			mac = ts.MAC
		} else if m.IsTsig() != nil {
			t.Fatalf("transfer message %d signed, request was not", n)
		}
		n++
		for _, rr := range m.Answer {
			if rr.Header().Rrtype == dns.TypeSOA {
				soas++
				if soas == 2 && rr != m.Answer[len(m.Answer)-1] {
					t.Fatalf("closing SOA not last: %v", m.Answer)
				}
			}
			if soas == 0 {
				t.Fatalf("transfer does not start with the SOA: %v", rr)
			}
			rrs = append(rrs, rr)
		}
	}
	return rrs, n
}

// xfrAsk sends a transfer request (signed with secret under key when
// key is set) over TCP and returns the connection and the request MAC.
func xfrAsk(t *testing.T, addr, zone string, qtype uint16, key, secret string) (net.Conn, string) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(zone, qtype)
	if qtype == dns.TypeIXFR {
		m.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET},
			Ns: "ns.", Mbox: "h.", Serial: 1}}
	}
	buf, mac := packSigned(t, m, key, secret, time.Now())
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := writeFramed(c, buf); err != nil {
		t.Fatal(err)
	}
	return c, mac
}

// packSigned packs m, signed with key and secret at time at when key is
// set, and returns it and its MAC.
func packSigned(t *testing.T, m *dns.Msg, key, secret string, at time.Time) ([]byte, string) {
	t.Helper()
	if key == "" {
		buf, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return buf, ""
	}
	m.SetTsig(key, dns.HmacSHA256, 300, at.Unix())
	buf, mac, err := dns.TsigGenerate(m, secret, "", false)
	if err != nil {
		t.Fatal(err)
	}
	return buf, mac
}

// wantRecords is the record count of a transfer of zone: its stored
// records and the SOA twice.
func wantRecords(t *testing.T, st *store.Store, zone string) int {
	t.Helper()
	zd, err := st.ZoneData(context.Background(), zone)
	if err != nil {
		t.Fatal(err)
	}
	return len(zd.Records) + 2
}

// TestTransfer checks AXFR and IXFR authorisation and content.
func TestTransfer(t *testing.T) {
	st, secrets := protoStore(t)
	closed := protoStart(t, st, secrets, dnsserver.Config{})
	open := protoStart(t, st, secrets, dnsserver.Config{AllowTransfer: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})

	refused := func(t *testing.T, network, addr, zone string, qtype uint16, key, secret string) {
		t.Helper()
		m := query(zone, qtype)
		buf, mac := packSigned(t, m, key, secret, time.Now())
		raw, err := exchangeRaw(network, addr, buf, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		resp := new(dns.Msg)
		if err := resp.Unpack(raw); err != nil {
			t.Fatal(err)
		}
		if resp.Rcode != dns.RcodeRefused || len(resp.Answer) != 0 {
			t.Errorf("%s %s %s key %q: %s with %d answers, want REFUSED", network, dns.TypeToString[qtype], zone, key, dns.RcodeToString[resp.Rcode], len(resp.Answer))
		}
		if key != "" {
			if resp.IsTsig() == nil {
				t.Errorf("refusal of a signed request is not signed")
			} else if err := dns.TsigVerify(raw, secret, mac, false); err != nil {
				t.Errorf("refusal of a signed request does not verify: %v", err)
			}
		}
	}

	t.Run("AXFR over UDP refused", func(t *testing.T) {
		refused(t, "udp", open.addr, "plain.test.", dns.TypeAXFR, "", "")
		refused(t, "udp", closed.addr, "plain.test.", dns.TypeAXFR, keyPlain, secrets[keyPlain])
	})
	t.Run("AXFR without TSIG or ACL refused", func(t *testing.T) {
		refused(t, "tcp", closed.addr, "plain.test.", dns.TypeAXFR, "", "")
		refused(t, "tcp", closed.addr, "plain.test.", dns.TypeIXFR, "", "")
	})
	t.Run("AXFR with a key of another zone refused", func(t *testing.T) {
		refused(t, "tcp", closed.addr, "plain.test.", dns.TypeAXFR, keyOther, secrets[keyOther])
		refused(t, "tcp", closed.addr, "example.com.", dns.TypeAXFR, keyPlain, secrets[keyPlain])
	})
	t.Run("AXFR of a name below the apex refused", func(t *testing.T) {
		refused(t, "tcp", open.addr, "mail.plain.test.", dns.TypeAXFR, "", "")
	})
	t.Run("AXFR allowed by ACL", func(t *testing.T) {
		for _, zone := range []string{"plain.test.", "example.com."} {
			c, _ := xfrAsk(t, open.addr, zone, dns.TypeAXFR, "", "")
			rrs, _ := xfrRead(t, c, "", "")
			if want := wantRecords(t, st, zone); len(rrs) != want {
				t.Errorf("AXFR %s: %d records, want %d", zone, len(rrs), want)
			}
			if rrs[0].Header().Rrtype != dns.TypeSOA || rrs[len(rrs)-1].Header().Rrtype != dns.TypeSOA {
				t.Errorf("AXFR %s: not framed by SOAs", zone)
			}
			for _, rr := range rrs {
				if mx, ok := rr.(*dns.MX); ok && zone == "example.com." && !strings.HasSuffix(mx.Mx, ".fwd.test.") {
					t.Errorf("AXFR of a forwarded zone leaks the customer's MX: %v", mx)
				}
			}
		}
	})
	t.Run("AXFR with the zone's key", func(t *testing.T) {
		c, mac := xfrAsk(t, closed.addr, "plain.test.", dns.TypeAXFR, keyPlain, secrets[keyPlain])
		rrs, _ := xfrRead(t, c, secrets[keyPlain], mac)
		if want := wantRecords(t, st, "plain.test"); len(rrs) != want {
			t.Errorf("%d records, want %d", len(rrs), want)
		}
		// Through miekg/dns's client as a secondary would.
		tr := &dns.Transfer{TsigSecret: secrets}
		m := new(dns.Msg)
		m.SetAxfr("plain.test.")
		m.SetTsig(keyPlain, dns.HmacSHA256, 300, time.Now().Unix())
		ch, err := tr.In(m, closed.addr)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for env := range ch {
			if env.Error != nil {
				t.Fatalf("dns.Transfer: %v", env.Error)
			}
			n += len(env.RR)
		}
		if want := wantRecords(t, st, "plain.test"); n != want {
			t.Errorf("dns.Transfer: %d records, want %d", n, want)
		}
	})
	t.Run("signed AXFR over several messages", func(t *testing.T) {
		c, mac := xfrAsk(t, closed.addr, "bulk.test.", dns.TypeAXFR, keyPlain, secrets[keyPlain])
		rrs, msgs := xfrRead(t, c, secrets[keyPlain], mac)
		if want := wantRecords(t, st, "bulk.test"); len(rrs) != want {
			t.Errorf("%d records, want %d", len(rrs), want)
		}
		if msgs < 2 {
			t.Errorf("%d messages: the zone was meant to need several", msgs)
		}
	})
	t.Run("IXFR over TCP is a full transfer", func(t *testing.T) {
		c, _ := xfrAsk(t, open.addr, "plain.test.", dns.TypeIXFR, "", "")
		rrs, _ := xfrRead(t, c, "", "")
		if want := wantRecords(t, st, "plain.test"); len(rrs) != want {
			t.Errorf("%d records, want %d", len(rrs), want)
		}
		c, mac := xfrAsk(t, closed.addr, "plain.test.", dns.TypeIXFR, keyPlain, secrets[keyPlain])
		if rrs, _ := xfrRead(t, c, secrets[keyPlain], mac); len(rrs) != wantRecords(t, st, "plain.test") {
			t.Errorf("signed IXFR: %d records", len(rrs))
		}
	})
	t.Run("IXFR over UDP is the SOA", func(t *testing.T) {
		m := query("plain.test.", dns.TypeIXFR)
		m.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: "plain.test.", Rrtype: dns.TypeSOA, Class: dns.ClassINET}, Ns: "ns.", Mbox: "h.", Serial: 1}}
		resp, _ := ask(t, "udp", open.addr, m)
		if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 1 || resp.Answer[0].Header().Rrtype != dns.TypeSOA {
			t.Errorf("IXFR over UDP: %s %v, want the SOA alone", dns.RcodeToString[resp.Rcode], resp.Answer)
		} else if got, want := resp.Answer[0].(*dns.SOA).Serial, open.Index().Zone("plain.test").Serial(); got != want {
			t.Errorf("IXFR over UDP: serial %d, want %d", got, want)
		}
	})
}

// TestTSIG checks signed queries and the TSIG errors (RFC 8945 5.2).
func TestTSIG(t *testing.T) {
	s := protoShared(t)
	secret := s.secrets[keyPlain]
	wrong := "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="
	for _, network := range protoNets {
		t.Run(network, func(t *testing.T) {
			// A signed SOA query (certbot-dns-rfc2136) gets a signed reply.
			for _, zone := range []string{"plain.test.", "example.com."} {
				m := query(zone, dns.TypeSOA)
				buf, mac := packSigned(t, m, keyPlain, secret, time.Now())
				raw, err := exchangeRaw(network, s.addr, buf, 2*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				resp := new(dns.Msg)
				if err := resp.Unpack(raw); err != nil {
					t.Fatal(err)
				}
				if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 1 {
					t.Errorf("signed SOA %s: %s %v", zone, dns.RcodeToString[resp.Rcode], resp.Answer)
				}
				if resp.IsTsig() == nil {
					t.Fatalf("signed SOA %s: reply not signed", zone)
				}
				if err := dns.TsigVerify(raw, secret, mac, false); err != nil {
					t.Errorf("signed SOA %s: reply does not verify: %v", zone, err)
				}
			}

			tsigErr := func(what, key, sec string, at time.Time, wantErr uint16) {
				t.Helper()
				m := query("plain.test.", dns.TypeSOA)
				buf, reqMAC := packSigned(t, m, key, sec, at)
				raw, err := exchangeRaw(network, s.addr, buf, 2*time.Second)
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				resp := new(dns.Msg)
				if err := resp.Unpack(raw); err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				if resp.Rcode != dns.RcodeNotAuth || len(resp.Answer) != 0 {
					t.Errorf("%s: %s with %d answers, want NOTAUTH", what, dns.RcodeToString[resp.Rcode], len(resp.Answer))
				}
				ts := resp.IsTsig()
				if ts == nil {
					t.Fatalf("%s: no TSIG in the reply", what)
				}
				if ts.Error != wantErr || !strings.EqualFold(ts.Hdr.Name, key) {
					t.Errorf("%s: TSIG %s error %d, want %s %d", what, ts.Hdr.Name, ts.Error, key, wantErr)
				}
				if wantErr != dns.RcodeBadTime {
					if ts.MAC != "" {
						t.Errorf("%s: the error reply is signed", what)
					}
					return
				}
				// BADTIME (RFC 8945 5.2.3): signed with the key over the
				// request's MAC, the request's time, ours in Other Data.
				// (miekg/dns's TsigVerify refuses any NOTAUTH reply, so
				// the MAC is recomputed here from the reply's fields.)
				chk := resp.Copy()
				e := *ts
				e.MAC = ""
				chk.Extra = append(chk.Extra[:len(chk.Extra)-1], &e)
				chk.Compress = true
				if _, want, err := dns.TsigGenerate(chk, sec, reqMAC, false); err != nil || ts.MAC == "" || !strings.EqualFold(want, ts.MAC) {
					t.Errorf("%s: reply MAC %q, want %q (%v)", what, ts.MAC, want, err)
				}
				if ts.TimeSigned != uint64(at.Unix()) {
					t.Errorf("%s: time signed %d, want the request's %d", what, ts.TimeSigned, at.Unix())
				}
				ours, err := strconv.ParseUint(ts.OtherData, 16, 64)
				if d := time.Since(time.Unix(int64(ours), 0)); err != nil || ts.OtherLen != 6 || d < -5*time.Second || d > 5*time.Second {
					t.Errorf("%s: other data %q (%d octets), want the server's time now", what, ts.OtherData, ts.OtherLen)
				}
			}
			// A TSIG record with no RDATA (no algorithm): BADKEY, in a
			// reply that parses (found by FuzzHandler).
			bare := []byte("\x12\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00\x01" +
				"\x05plain\x04test\x00\x00\x06\x00\x01" +
				"\x07xfr-key\x00\x00\xfa\x00\xff\x00\x00\x00\x00\x00\x00")
			raw, err := exchangeRaw(network, s.addr, bare, 2*time.Second)
			if err != nil {
				t.Fatalf("TSIG without RDATA: %v", err)
			}
			resp := new(dns.Msg)
			if err := resp.Unpack(raw); err != nil {
				t.Fatalf("TSIG without RDATA: reply does not parse: %v (%x)", err, raw)
			}
			if ts := resp.IsTsig(); resp.Rcode != dns.RcodeNotAuth || ts == nil || ts.Error != dns.RcodeBadKey {
				t.Errorf("TSIG without RDATA: %s %v, want NOTAUTH with BADKEY", dns.RcodeToString[resp.Rcode], ts)
			}
			tsigErr("wrong secret", keyPlain, wrong, time.Now(), dns.RcodeBadSig)
			tsigErr("unknown key", "nokey.", wrong, time.Now(), dns.RcodeBadKey)
			tsigErr("time outside fudge", keyPlain, secret, time.Now().Add(-time.Hour), dns.RcodeBadTime)
		})
	}
}

// TestSignedUDPFits checks that a signed reply over UDP, MAC included,
// stays within the client's size.
func TestSignedUDPFits(t *testing.T) {
	s := protoShared(t)
	secret := s.secrets[keyPlain]
	// Replies whose size without the MAC is just under 512: a TXT
	// answer of a chosen length.
	ctx := context.Background()
	var names []string
	for extra := 0; extra < 48; extra += 4 {
		name := fmt.Sprintf("fit%02d", extra)
		data := `"` + strings.Repeat("f", 200) + `" "` + strings.Repeat("g", 200+extra) + `"`
		if _, err := s.st.AddRecord(ctx, "plain.test", protoRec(name, "TXT", 300, data)); err != nil {
			t.Fatal(err)
		}
		names = append(names, name+".plain.test.")
	}
	protoPoll(t, 5*time.Second, "records loaded", func() error {
		if res := s.Index().Zone("plain.test").Lookup(names[len(names)-1], dns.TypeTXT); len(res.Answer) == 0 {
			return errors.New("not yet")
		}
		return nil
	})
	for _, name := range names {
		for _, edns := range []uint16{0, 512} {
			m := query(name, dns.TypeTXT)
			if edns > 0 {
				m.SetEdns0(edns, false)
			}
			buf, mac := packSigned(t, m, keyPlain, secret, time.Now())
			raw, err := exchangeRaw("udp", s.addr, buf, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if len(raw) > classicSize {
				t.Errorf("%s EDNS %d: signed reply of %d bytes over UDP", name, edns, len(raw))
			}
			if err := dns.TsigVerify(raw, secret, mac, false); err != nil {
				t.Errorf("%s: reply does not verify: %v", name, err)
			}
		}
	}
}

// TestTCP checks RFC 7766: several queries on one connection, answered in
// order, and the idle timeout.
func TestTCP(t *testing.T) {
	st, secrets := protoStore(t)
	s := protoStart(t, st, secrets, dnsserver.Config{TCPIdle: 200 * time.Millisecond})
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	names := []string{"mail.plain.test.", "nope.plain.test.", "example.com.", "c1.plain.test.", "big.plain.test.", "x.w.plain.test."}
	var ids []uint16
	var pipelined []byte
	for _, n := range names {
		m := query(n, dns.TypeA)
		ids = append(ids, m.Id)
		buf, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		pipelined = binary.BigEndian.AppendUint16(pipelined, uint16(len(buf)))
		pipelined = append(pipelined, buf...)
	}
	if _, err := c.Write(pipelined); err != nil { // all at once
		t.Fatal(err)
	}
	for i, n := range names {
		raw, err := readFramed(c)
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		m := new(dns.Msg)
		if err := m.Unpack(raw); err != nil {
			t.Fatal(err)
		}
		if m.Id != ids[i] || !strings.EqualFold(m.Question[0].Name, n) {
			t.Errorf("reply %d: id %d for %s, want id %d for %s", i, m.Id, m.Question[0].Name, ids[i], n)
		}
	}
	// Idle: the server closes the connection after TCPIdle.
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err = readFramed(c)
	idle := time.Since(start)
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !strings.Contains(fmt.Sprint(err), "reset") {
		t.Errorf("idle connection: %v after %v, want EOF", err, idle)
	}
	if idle < 150*time.Millisecond || idle > 2*time.Second {
		t.Errorf("idle connection closed after %v, want about 200ms", idle)
	}
	t.Logf("idle TCP connection closed after %v", idle)

	// A connection that never sends is closed too.
	c2, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := readFramed(c2); !errors.Is(err, io.EOF) && !strings.Contains(fmt.Sprint(err), "reset") {
		t.Errorf("silent connection: %v, want EOF", err)
	}
}

// TestConcurrentQueries asks from many goroutines at once: the race
// detector sees any write to the zone's shared records.
func TestConcurrentQueries(t *testing.T) {
	s := protoShared(t)
	names := []struct {
		name string
		typ  uint16
	}{{"plain.test.", dns.TypeMX}, {"x.w.plain.test.", dns.TypeA}, {"www.sub.plain.test.", dns.TypeA},
		{"c1.plain.test.", dns.TypeA}, {"big.plain.test.", dns.TypeA}, {"example.com.", dns.TypeMX}, {"nope.plain.test.", dns.TypeA}}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			network := protoNets[g%2]
			for i := 0; i < 40; i++ {
				q := names[(g+i)%len(names)]
				m := query(q.name, q.typ)
				m.SetEdns0(1232, false)
				buf, _ := m.Pack()
				raw, err := exchangeRaw(network, s.addr, buf, 2*time.Second)
				if err == nil {
					var resp dns.Msg
					err = resp.Unpack(raw)
				}
				if err != nil {
					errs <- fmt.Errorf("%s %s: %w", network, q.name, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestLiveUpdate checks that store writes reach a running server: a new
// record, a new zone, a deleted zone.
func TestLiveUpdate(t *testing.T) {
	s := protoShared(t)
	ctx := context.Background()
	answers := func(name string, qtype uint16, rcode int, n int) func() error {
		return func() error {
			m := query(name, qtype)
			buf, _ := m.Pack()
			raw, err := exchangeRaw("udp", s.addr, buf, time.Second)
			if err != nil {
				return err
			}
			var resp dns.Msg
			if err := resp.Unpack(raw); err != nil {
				return err
			}
			if resp.Rcode != rcode || len(resp.Answer) != n {
				return fmt.Errorf("%s %s: %s with %d answers", name, dns.TypeToString[qtype], dns.RcodeToString[resp.Rcode], len(resp.Answer))
			}
			return nil
		}
	}
	if err := answers("live.plain.test.", dns.TypeA, dns.RcodeNameError, 0)(); err != nil {
		t.Fatal(err)
	}
	var worst time.Duration
	for i := 0; i < 5; i++ {
		start := time.Now()
		if _, err := s.st.AddRecord(ctx, "plain.test", protoRec("live", "A", 300, fmt.Sprintf("192.0.2.%d", 200+i))); err != nil {
			t.Fatal(err)
		}
		protoPoll(t, 2*time.Second, "new record answered", answers("live.plain.test.", dns.TypeA, dns.RcodeSuccess, i+1))
		d := time.Since(start)
		worst = max(worst, d)
		t.Logf("store write answered by DNS after %v", d)
	}
	if worst >= time.Second {
		t.Errorf("a store write took %v to be answered, want < 1s", worst)
	}

	// A new zone, then its deletion.
	if err := answers("fresh.test.", dns.TypeSOA, dns.RcodeRefused, 0)(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := s.st.CreateZone(ctx, "fresh.test", "proto"); err != nil {
		t.Fatal(err)
	}
	protoPoll(t, 2*time.Second, "new zone answered", answers("fresh.test.", dns.TypeSOA, dns.RcodeSuccess, 1))
	t.Logf("zone create answered after %v", time.Since(start))
	start = time.Now()
	if err := s.st.DeleteZone(ctx, "fresh.test"); err != nil {
		t.Fatal(err)
	}
	protoPoll(t, 2*time.Second, "deleted zone refused", answers("fresh.test.", dns.TypeSOA, dns.RcodeRefused, 0))
	t.Logf("zone delete answered after %v", time.Since(start))
	if d := time.Since(start); d >= time.Second {
		t.Errorf("zone delete took %v", d)
	}
}

// TestRedisOutage checks that the server answers from memory while Redis
// is down and resynchronises when it is back.
func TestRedisOutage(t *testing.T) {
	rs := storetest.Start(t)
	ctx := context.Background()
	st := rs.Open(t, protoOptions)
	secrets := protoSeed(t, st)
	s := protoStart(t, st, secrets, dnsserver.Config{})

	want := func(name string, qtype uint16, n int) func() error {
		return func() error {
			for _, network := range protoNets {
				m := query(name, qtype)
				buf, _ := m.Pack()
				raw, err := exchangeRaw(network, s.addr, buf, time.Second)
				if err != nil {
					return err
				}
				var resp dns.Msg
				if err := resp.Unpack(raw); err != nil {
					return err
				}
				if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != n {
					return fmt.Errorf("%s %s: %s with %d answers", network, name, dns.RcodeToString[resp.Rcode], len(resp.Answer))
				}
			}
			return nil
		}
	}
	if err := want("example.com.", dns.TypeMX, 2)(); err != nil {
		t.Fatal(err)
	}
	rs.Stop()
	if err := st.Ping(ctx); err == nil {
		t.Fatal("redis still answers after Stop")
	}
	for i := 0; i < 5; i++ {
		for _, q := range []struct {
			name string
			typ  uint16
			n    int
		}{{"example.com.", dns.TypeMX, 2}, {"mail.plain.test.", dns.TypeA, 1}, {"x.w.plain.test.", dns.TypeA, 1}} {
			if err := want(q.name, q.typ, q.n)(); err != nil {
				t.Fatalf("during the outage: %v", err)
			}
		}
	}
	rs.Restart(t)
	// The store's client reconnects on its next command.
	protoPoll(t, 10*time.Second, "store write after restart", func() error {
		_, err := st.AddRecord(ctx, "plain.test", protoRec("back", "A", 300, "192.0.2.201"))
		return err
	})
	start := time.Now()
	protoPoll(t, 20*time.Second, "resynchronised", want("back.plain.test.", dns.TypeA, 1))
	t.Logf("resynchronised %v after the first write following the restart", time.Since(start))
	if err := want("example.com.", dns.TypeMX, 2)(); err != nil {
		t.Fatal(err)
	}
}

// TestRRL checks response rate limiting: a burst of identical UDP
// queries is partly answered, partly slipped (TC, empty), partly
// dropped; TCP is not limited.
func TestRRL(t *testing.T) {
	st, secrets := protoStore(t)
	reg := prometheus.NewRegistry()
	s := protoStart(t, st, secrets, dnsserver.Config{
		RRL:     rrl.Config{ResponsesPerSecond: 5, Slip: 2},
		Metrics: dnsserver.NewMetrics(reg),
	})
	c, err := net.Dial("udp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 100
	sent := map[uint16]bool{}
	for i := 0; i < n; i++ {
		m := query("mail.plain.test.", dns.TypeA)
		m.Id = uint16(1000 + i)
		sent[m.Id] = true
		buf, _ := m.Pack()
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	answered, slipped := 0, 0
	buf := make([]byte, 65536)
	for {
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		k, err := c.Read(buf)
		if isTimeout(err) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var resp dns.Msg
		if err := resp.Unpack(buf[:k]); err != nil {
			t.Fatal(err)
		}
		if !sent[resp.Id] {
			t.Fatalf("unexpected or duplicate reply id %d", resp.Id)
		}
		delete(sent, resp.Id)
		switch {
		case resp.Truncated && len(resp.Answer)+len(resp.Ns)+len(resp.Extra) == 0:
			slipped++
		case !resp.Truncated && len(resp.Answer) == 1:
			answered++
		default:
			t.Errorf("reply neither answer nor slip: %v", &resp)
		}
	}
	dropped := len(sent)
	t.Logf("RRL: %d answered, %d slipped, %d dropped of %d", answered, slipped, dropped, n)
	if answered == 0 || answered >= n/2 || slipped == 0 || dropped == 0 {
		t.Errorf("RRL: %d answered, %d slipped, %d dropped of %d; want some of each, most not answered", answered, slipped, dropped, n)
	}
	// Slip 2: about every second limited response goes out truncated.
	if diff := slipped - dropped; diff < -2 || diff > 2 {
		t.Errorf("RRL slip 2: %d slipped, %d dropped; want about half each", slipped, dropped)
	}
	// TCP is never limited.
	for i := 0; i < 20; i++ {
		if resp, _ := ask(t, "tcp", s.addr, query("mail.plain.test.", dns.TypeA)); len(resp.Answer) != 1 || resp.Truncated {
			t.Fatalf("TCP query %d limited: %v", i, resp)
		}
	}
	// Counted in metrics.
	counts := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "mxport_dns_rrl_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				counts[l.GetValue()] += m.GetCounter().GetValue()
			}
		}
	}
	if counts["drop"] != float64(dropped) || counts["slip"] != float64(slipped) {
		t.Errorf("RRL metrics %v, want drop %d slip %d", counts, dropped, slipped)
	}
}
