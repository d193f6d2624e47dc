package update

import (
	"testing"

	"github.com/miekg/dns"

	"github.com/mxport/mxport/store/record"
)

// rcodes are the codes Apply may return.
var rcodes = map[int]bool{
	dns.RcodeSuccess: true, dns.RcodeFormatError: true, dns.RcodeServerFailure: true,
	dns.RcodeNotImplemented: true, dns.RcodeRefused: true, dns.RcodeYXDomain: true,
	dns.RcodeYXRrset: true, dns.RcodeNameError: true, dns.RcodeNXRrset: true,
	dns.RcodeNotAuth: true, dns.RcodeNotZone: true,
}

// FuzzApply applies arbitrary messages, unpacked from the fuzz input, as
// UPDATEs to a store zone: Apply must not panic, must return one of its
// codes, and must leave the zone with its apex NS records. With rehome set,
// the message is moved into the zone (zone section and owner names) so
// that the fuzzer reaches the prerequisites and the update itself.
func FuzzApply(f *testing.F) {
	const fz = "fuzz.test"
	for _, m := range []*dns.Msg{
		upd(fz, func(m *dns.Msg) { m.Insert(rrs(`_acme-challenge.fuzz.test. 120 IN TXT "tok"`)) }),
		upd(fz, func(m *dns.Msg) { m.Remove(rrs(`_acme-challenge.fuzz.test. 0 IN TXT "tok"`)) }),
		upd(fz, func(m *dns.Msg) {
			m.NameUsed(rrs("www.fuzz.test. 0 IN A 0.0.0.0"))
			m.NameNotUsed(rrs("nx.fuzz.test. 0 IN A 0.0.0.0"))
			m.RRsetUsed(rrs("www.fuzz.test. 0 IN A 0.0.0.0"))
			m.RRsetNotUsed(rrs("www.fuzz.test. 0 IN TXT x"))
			m.Used(rrs("www.fuzz.test. 0 IN A 192.0.2.1"))
			m.Insert(rrs("www.fuzz.test. 300 IN AAAA 2001:db8::1", "fuzz.test. 300 IN MX 10 mail.fuzz.test."))
		}),
		upd(fz, func(m *dns.Msg) {
			m.RemoveName(rrs("fuzz.test. 0 IN A 0.0.0.0"))
			m.RemoveRRset(rrs("www.fuzz.test. 0 IN A 0.0.0.0"))
			m.Remove(rrs("fuzz.test. 0 IN NS ns1.fwd.test.", "fuzz.test. 0 IN NS ns2.fwd.test."))
		}),
		upd(fz, func(m *dns.Msg) {
			m.Insert(rrs("alias.fuzz.test. 300 IN CNAME www.fuzz.test.", "alias.fuzz.test. 300 IN A 192.0.2.3",
				"fuzz.test. 300 IN SOA ns1.fwd.test. h.fuzz.test. 4000000000 3600 900 1209600 300",
				"srv._tcp.fuzz.test. 300 IN SRV 0 0 25 mail.fuzz.test.", "x.fuzz.test. 300 IN TYPE65280 \\# 2 abcd"))
		}),
	} {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
		f.Add(b, true)
	}

	s := newZone(f, fz, record.Record{Name: "www", Type: "A", TTL: 300, Data: "192.0.2.1"})
	u := New(s)
	runs := 0
	f.Fuzz(func(t *testing.T, b []byte, rehome bool) {
		m := new(dns.Msg)
		if m.Unpack(b) != nil {
			return
		}
		m.Opcode = dns.OpcodeUpdate
		if rehome {
			m.Question = []dns.Question{{Name: fz + ".", Qtype: dns.TypeSOA, Qclass: dns.ClassINET}}
			for _, sec := range [][]dns.RR{m.Answer, m.Ns} {
				for _, r := range sec {
					h := r.Header()
					if !dns.IsSubDomain(fz+".", h.Name) {
						if l := dns.SplitDomainName(h.Name); len(l) > 0 {
							h.Name = l[0] + "." + fz + "."
						} else {
							h.Name = fz + "."
						}
					}
				}
			}
		}
		// Keep the zone small: start afresh now and then.
		if runs++; runs%200 == 0 {
			if err := s.DeleteZone(bg, fz); err != nil {
				t.Fatal(err)
			}
			mustCreate(t, s, fz, nil)
		}
		rc := u.Apply(bg, m, key, []string{fz})
		if !rcodes[rc] {
			t.Fatalf("rcode %d", rc)
		}
		if rc == dns.RcodeServerFailure {
			t.Fatalf("SERVFAIL with the store up")
		}
		ns := 0
		for _, r := range mustData(t, s, fz).Records {
			if r.Name == record.Apex && r.Type == "NS" {
				ns++
			}
		}
		if ns == 0 {
			t.Fatalf("the zone lost its apex NS records")
		}
	})
}
