// Package zone is one hosted zone's immutable in-memory form, built from
// store data, and the authoritative lookup over it (RFC 1034 4.3.2). It knows
// no sockets and no Redis.
//
// Build does all the work once: it turns every stored record into a
// miekg/dns RR, applies the MX forwarding rule of DESIGN.md, indexes the
// records by owner name, marks empty non-terminals, zone cuts and wildcards,
// and precomputes the additional section of every RRset and the referral of
// every cut. Lookup then only walks the index: a plain positive answer, a
// referral and a negative answer allocate nothing and share the Zone's
// records, which callers must therefore never modify.
//
// What the zone publishes:
//   - Positive answers carry only the RRset asked for (minimal responses, as
//     Knot and NSD do by default); the additional section holds the A and
//     AAAA records of MX, NS and SRV targets found in this zone's
//     authoritative data (for NS also glue below a cut). Targets that exist
//     only through a wildcard get no additional records.
//   - Negative answers (NODATA, NXDOMAIN) carry the SOA in the authority
//     section with TTL min(SOA TTL, SOA MINIMUM) (RFC 2308 3).
//   - Empty non-terminals exist: NODATA, and they stop wildcard synthesis
//     below them (RFC 4592 2.2.2, 3.3.1).
//   - An NS RRset below the apex is a zone cut: names at or below it get a
//     referral (not authoritative, NS in authority, glue in additional),
//     except DS at the cut itself, which this side answers (RFC 4035 3.1.4.1).
//   - CNAME chains are followed inside the zone, at most 8 links, stopping
//     at a loop; the rcode is that of the last name (RFC 1034 4.3.2,
//     RFC 6604 2.1).
//   - qtype ANY gets one RRset, the one of smallest type code at the name
//     (RFC 8482 4.1); NODATA when the name has none.
//   - DNAME records are published as data; no CNAME is synthesised from
//     them (RFC 6672 is not implemented).
//   - RRsets whose records were stored with different TTLs are published
//     with the smallest one (RFC 2181 5.2).
package zone

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/miekg/dns"

	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
)

// maxChain is the most CNAME records one answer follows.
const maxChain = 8

// maxLabels is the most labels a domain name can have (255 octets).
const maxLabels = 128

// Options are settings that change what the zone publishes.
type Options struct {
	// MXHosts are the service's mail exchangers (--mx-hosts): a forwarded
	// zone's apex MX answer is these, priorities 10, 20, ... in order,
	// never the customer's targets; the TTL is the smallest of the
	// customer's apex MX records. Empty entries are skipped. A forwarded zone built with no MXHosts publishes
	// no apex MX at all (NODATA) rather than the customer's host:port,
	// which only the forwarder may use.
	MXHosts []string
}

// Zone is one zone, ready to answer. It is immutable: Lookup, Records and
// the accessors are safe for concurrent use. Records it returns are shared
// and must not be modified.
type Zone struct {
	name    string // FQDN, lower case
	serial  uint32
	soa     *dns.SOA
	negSOA  []dns.RR // the SOA with the negative TTL (RFC 2308 3)
	apex    *node
	nodes   map[string]*node // canonical lower-case FQDN -> node
	records []dns.RR         // AXFR order, SOA first
}

// node is one name of the zone: with data, or an empty non-terminal.
type node struct {
	name   string
	parent *node // nil at the apex
	sets   []rrset
	cname  *rrset // the CNAME RRset, when the name is an alias
	wild   *node  // the child "*.<name>", if any
	cut    bool   // NS below the apex: a delegation
	desc   bool   // has descendants; with no sets: an empty non-terminal
	// referral, for a cut: its NS RRset and glue.
	refNS, refGlue []dns.RR
}

// rrset is the records of one type at one name, with its additional section.
type rrset struct {
	typ   uint16
	rrs   []dns.RR
	extra []dns.RR
}

// Result is an answer's sections; the server copies them into its reply.
// Owner names are lower case. The slices may be shared with the Zone: read
// them, never modify them or the records in them.
type Result struct {
	// Rcode is dns.RcodeSuccess or dns.RcodeNameError; dns.RcodeRefused
	// only when Lookup was given a name outside the zone.
	Rcode int
	// Authoritative is false for referrals.
	Authoritative     bool
	Answer, Ns, Extra []dns.RR
}

// Build makes a Zone from store data (a zone and its normalised records).
// It fails only on data the store would never hold: a record that does not
// parse, an SOA among the records, a CNAME beside other data. The caller
// then keeps serving the old Zone and logs the error.
func Build(zd store.ZoneData, o Options) (*Zone, error) {
	zn := strings.ToLower(strings.TrimSuffix(zd.Name, "."))
	if zn == "" {
		return nil, errors.New("zone: build: empty zone name")
	}
	origin := zn + "."
	z := &Zone{name: origin, serial: zd.Serial, nodes: make(map[string]*node, len(zd.Records)+1)}
	z.soa = &dns.SOA{
		Hdr:     dns.RR_Header{Name: origin, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: zd.SOA.TTL},
		Ns:      dns.Fqdn(strings.ToLower(zd.SOA.MName)),
		Mbox:    dns.Fqdn(strings.ToLower(zd.SOA.RName)),
		Serial:  zd.Serial,
		Refresh: zd.SOA.Refresh,
		Retry:   zd.SOA.Retry,
		Expire:  zd.SOA.Expire,
		Minttl:  zd.SOA.Minimum,
	}
	neg := *z.soa
	neg.Hdr.Ttl = min(zd.SOA.TTL, zd.SOA.Minimum)
	z.negSOA = []dns.RR{&neg}
	z.apex = &node{name: origin}
	z.nodes[origin] = z.apex
	all := make([]dns.RR, 0, len(zd.Records)+len(o.MXHosts)+1)
	all = append(all, z.soa)
	z.add(z.soa)

	// The MX forwarding rule (DESIGN.md): a forwarded zone publishes the
	// service's MX hosts at the apex instead of the customer's MX records.
	forwarded := record.Route(zd.Records) != nil
	var mxTTL uint32
	for _, r := range zd.Records {
		if forwarded && r.Type == "MX" && r.Name == record.Apex {
			if mxTTL == 0 || r.TTL < mxTTL {
				mxTTL = r.TTL
			}
			continue
		}
		rr, err := r.RR(zn)
		if err != nil {
			return nil, fmt.Errorf("zone: build %s: %w", zn, err)
		}
		if err := z.check(rr); err != nil {
			return nil, fmt.Errorf("zone: build %s: record %s %s: %w", zn, r.Name, r.Type, err)
		}
		all = append(all, rr)
		z.add(rr)
	}
	if forwarded {
		pref := 0
		for _, h := range o.MXHosts {
			h = strings.ToLower(strings.TrimSpace(h))
			if h == "" || h == "." {
				continue
			}
			pref += 10
			rr := &dns.MX{
				Hdr:        dns.RR_Header{Name: origin, Rrtype: dns.TypeMX, Class: dns.ClassINET, Ttl: mxTTL},
				Preference: uint16(min(pref, 65535)),
				Mx:         dns.Fqdn(h),
			}
			all = append(all, rr)
			z.add(rr)
		}
	}
	if err := z.finish(); err != nil {
		return nil, fmt.Errorf("zone: build %s: %w", zn, err)
	}
	z.records = sortRecords(all)
	return z, nil
}

// check refuses records that cannot be part of the zone's data.
func (z *Zone) check(rr dns.RR) error {
	h := rr.Header()
	h.Name = strings.ToLower(h.Name)
	switch h.Rrtype {
	case dns.TypeSOA:
		return errors.New("SOA belongs to the zone, not its records")
	case dns.TypeANY, dns.TypeOPT, dns.TypeAXFR, dns.TypeIXFR, dns.TypeTSIG, dns.TypeNone:
		return errors.New("meta type")
	}
	if !inZone(h.Name, z.name) {
		return fmt.Errorf("owner %s is outside the zone", h.Name)
	}
	return nil
}

// add files rr under its owner, creating the owner and its ancestors.
func (z *Zone) add(rr dns.RR) {
	n := z.ensure(rr.Header().Name)
	t := rr.Header().Rrtype
	for i := range n.sets {
		if n.sets[i].typ == t {
			n.sets[i].rrs = append(n.sets[i].rrs, rr)
			return
		}
	}
	n.sets = append(n.sets, rrset{typ: t, rrs: []dns.RR{rr}})
}

// ensure returns the node of name (lower case, in the zone), creating it and
// any missing ancestor, which then exist as empty non-terminals.
func (z *Zone) ensure(name string) *node {
	if n := z.nodes[name]; n != nil {
		return n
	}
	i, _ := dns.NextLabel(name, 0)
	p := z.ensure(name[i:])
	p.desc = true
	n := &node{name: name, parent: p}
	z.nodes[name] = n
	return n
}

// finish sorts the RRsets and precomputes cuts, wildcards, CNAMEs,
// additional sections and referrals.
func (z *Zone) finish() error {
	for _, n := range z.nodes {
		sort.SliceStable(n.sets, func(i, j int) bool { return n.sets[i].typ < n.sets[j].typ })
		for i := range n.sets {
			s := &n.sets[i]
			ttl := s.rrs[0].Header().Ttl
			for _, rr := range s.rrs[1:] {
				ttl = min(ttl, rr.Header().Ttl)
			}
			for _, rr := range s.rrs {
				rr.Header().Ttl = ttl // RFC 2181 5.2
			}
			switch s.typ {
			case dns.TypeCNAME:
				if len(n.sets) > 1 || len(s.rrs) > 1 {
					return fmt.Errorf("%s: a CNAME must be the only record at its name", n.name)
				}
				n.cname = s
			case dns.TypeNS:
				n.cut = n != z.apex
			}
		}
		if strings.HasPrefix(n.name, "*.") && n.parent != nil {
			n.parent.wild = n
		}
	}
	for _, n := range z.nodes {
		occluded := z.occluded(n)
		for i := range n.sets {
			s := &n.sets[i]
			switch s.typ {
			case dns.TypeMX, dns.TypeSRV:
				if !occluded {
					s.extra = z.additional(s.rrs, false)
				}
			case dns.TypeNS:
				s.extra = z.additional(s.rrs, true)
				if n.cut {
					n.refNS, n.refGlue = s.rrs, s.extra
				}
			}
		}
	}
	return nil
}

// occluded reports whether n's data lies at or below a zone cut, where only
// the cut's NS and DS and glue addresses are meaningful.
func (z *Zone) occluded(n *node) bool {
	for ; n != nil; n = n.parent {
		if n.cut {
			return true
		}
	}
	return false
}

// additional returns the in-zone A and AAAA records of the targets of rrs
// (MX, NS or SRV): authoritative data only, or also glue (addresses at or
// below a cut) when glue is set.
func (z *Zone) additional(rrs []dns.RR, glue bool) []dns.RR {
	var extra []dns.RR
	seen := make(map[string]bool, len(rrs))
	for _, rr := range rrs {
		var t string
		switch v := rr.(type) {
		case *dns.MX:
			t = v.Mx
		case *dns.NS:
			t = v.Ns
		case *dns.SRV:
			t = v.Target
		}
		t = strings.ToLower(t)
		if seen[t] {
			continue
		}
		seen[t] = true
		n := z.nodes[t]
		if n == nil || (!glue && z.occluded(n)) {
			continue
		}
		for _, typ := range [...]uint16{dns.TypeA, dns.TypeAAAA} {
			if s := n.get(typ); s != nil {
				extra = append(extra, s.rrs...)
			}
		}
	}
	return extra
}

// get returns n's RRset of type t, or nil.
func (n *node) get(t uint16) *rrset {
	for i := range n.sets {
		if n.sets[i].typ == t {
			return &n.sets[i]
		}
	}
	return nil
}

// Name returns the zone's name: an FQDN in lower case ("example.com.").
func (z *Zone) Name() string { return z.name }

// Serial returns the zone's SOA serial.
func (z *Zone) Serial() uint32 { return z.serial }

// SOA returns the apex SOA record (its TTL is the SOA TTL). It is shared.
func (z *Zone) SOA() *dns.SOA { return z.soa }

// Records returns every record of the zone for AXFR (RFC 5936), SOA first,
// then in canonical order (RFC 4034 6.1), occluded data and glue included.
// The closing SOA is the server's to add. The slice is the caller's; the
// records are shared.
func (z *Zone) Records() []dns.RR {
	return append([]dns.RR(nil), z.records...)
}

// Lookup answers qname/qtype from the zone (RFC 1034 4.3.2). qname is an
// absolute name in any letter case; a name outside the zone gets
// dns.RcodeRefused. The records returned are shared: callers must not
// modify them, and copy them when the owner name's case must follow the
// question's. Plain positive answers, referrals and negative answers
// allocate nothing.
func (z *Zone) Lookup(qname string, qtype uint16) Result {
	// strings.ToLower returns qname itself, without allocating, when it has
	// no upper-case letter.
	q := strings.ToLower(qname)
	if !strings.HasSuffix(q, ".") {
		q += "."
	}
	if !inZone(q, z.name) {
		return Result{Rcode: dns.RcodeRefused}
	}
	r, next := z.step(q, qtype)
	if next == "" {
		return r
	}
	// Follow the CNAME chain inside the zone (RFC 1034 4.3.2 step 3a).
	answer := make([]dns.RR, len(r.Answer), len(r.Answer)+4)
	copy(answer, r.Answer)
	for range maxChain - 1 {
		if visited(answer, next) {
			break // a loop: answer with the chain so far
		}
		r, next = z.step(next, qtype)
		answer = append(answer, r.Answer...)
		if next == "" {
			break
		}
	}
	r.Answer = answer
	// The CNAME records are authoritative even when the chain ends in a
	// referral.
	r.Authoritative = true
	if next != "" {
		// Loop or too long: the last CNAME is not followed further.
		r.Rcode, r.Ns, r.Extra = dns.RcodeSuccess, nil, nil
	}
	return r
}

// visited reports whether name already owns a record of answer.
func visited(answer []dns.RR, name string) bool {
	for _, rr := range answer {
		if rr.Header().Name == name {
			return true
		}
	}
	return false
}

// step looks up one name (lower case, in the zone). It returns a CNAME
// target in the zone to follow next, or "".
func (z *Zone) step(q string, qtype uint16) (Result, string) {
	var starts [maxLabels]int
	k, ok := labelStarts(q[:len(q)-len(z.name)], &starts)
	if !ok {
		return z.nxdomain(), ""
	}
	// Walk down from the apex, one label at a time: a cut on the way means
	// a referral; a missing name means the last one found is the closest
	// encloser (RFC 4592 3.3.1).
	n := z.apex
	for i := k - 1; i >= 0; i-- {
		c := z.nodes[q[starts[i]:]]
		if c == nil {
			return z.missing(n, q, qtype)
		}
		if c.cut && !(i == 0 && qtype == dns.TypeDS) {
			return referral(c), ""
		}
		n = c
	}
	return z.answer(n, q, qtype, false)
}

// missing answers for q, which does not exist below its closest encloser
// ce: from the wildcard "*.<ce>" if there is one, NXDOMAIN otherwise.
func (z *Zone) missing(ce *node, q string, qtype uint16) (Result, string) {
	w := ce.wild
	if w == nil {
		return z.nxdomain(), ""
	}
	if w.cut {
		// NS at a wildcard (RFC 4592 4.2): the name is delegated.
		return referral(w), ""
	}
	return z.answer(w, q, qtype, true)
}

// answer answers from n's data for q. synth is set when n is the wildcard
// matching q: the records are then copied with q as their owner.
func (z *Zone) answer(n *node, q string, qtype uint16, synth bool) (Result, string) {
	var s *rrset
	switch {
	case qtype == dns.TypeANY:
		// RFC 8482 4.1: one RRset, the one of smallest type code.
		if len(n.sets) > 0 {
			s = &n.sets[0]
		}
	case n.cname != nil && qtype != dns.TypeCNAME:
		next := strings.ToLower(n.cname.rrs[0].(*dns.CNAME).Target)
		if !inZone(next, z.name) {
			next = ""
		}
		return Result{Authoritative: true, Answer: rewrite(n.cname.rrs, q, synth)}, next
	default:
		s = n.get(qtype)
	}
	if s == nil {
		return Result{Authoritative: true, Ns: z.negSOA}, ""
	}
	return Result{Authoritative: true, Answer: rewrite(s.rrs, q, synth), Extra: s.extra}, ""
}

// rewrite returns rrs, or when synth is set copies of them owned by q
// (RFC 4592 2.1.1, 3.3.1).
func rewrite(rrs []dns.RR, q string, synth bool) []dns.RR {
	if !synth {
		return rrs
	}
	out := make([]dns.RR, len(rrs))
	for i, rr := range rrs {
		out[i] = dns.Copy(rr)
		out[i].Header().Name = q
	}
	return out
}

// referral returns the referral to the cut n (RFC 1034 4.3.2 step 3b).
func referral(n *node) Result {
	return Result{Ns: n.refNS, Extra: n.refGlue}
}

func (z *Zone) nxdomain() Result {
	return Result{Rcode: dns.RcodeNameError, Authoritative: true, Ns: z.negSOA}
}

// inZone reports whether the lower-case FQDN q is origin or below it.
func inZone(q, origin string) bool {
	if q == origin {
		return true
	}
	if len(q) <= len(origin) || !strings.HasSuffix(q, origin) || q[len(q)-len(origin)-1] != '.' {
		return false
	}
	// The dot before origin must not be an escaped one ("a\.example.com.").
	_, ok := labelStarts(q[:len(q)-len(origin)], new([maxLabels]int))
	return ok
}

// labelStarts stores the offsets of the labels of rel, a relative name that
// ends with a dot ("www.dev.", or "" for none), in starts, and returns their
// number. ok is false when rel is not such a name: an empty label, a last
// dot escaped, too many labels.
func labelStarts(rel string, starts *[maxLabels]int) (k int, ok bool) {
	begin := 0
	for i := 0; i < len(rel); i++ {
		switch rel[i] {
		case '\\':
			i++ // skip the escaped character ("\." or the first of "\DDD")
		case '.':
			if i == begin || k == maxLabels {
				return 0, false
			}
			starts[k] = begin
			k++
			begin = i + 1
		}
	}
	return k, begin == len(rel)
}

// sortRecords orders rrs for AXFR: the SOA (rrs[0]) first, then by owner
// in canonical order (RFC 4034 6.1), then by type, keeping the order of
// records within an RRset.
func sortRecords(rrs []dns.RR) []dns.RR {
	keys := make(map[string][]string, len(rrs))
	for _, rr := range rrs {
		n := rr.Header().Name
		if _, ok := keys[n]; !ok {
			l := dns.SplitDomainName(n)
			for i, j := 0, len(l)-1; i < j; i, j = i+1, j-1 {
				l[i], l[j] = l[j], l[i]
			}
			keys[n] = l
		}
	}
	rest := rrs[1:]
	sort.SliceStable(rest, func(i, j int) bool {
		a, b := rest[i].Header(), rest[j].Header()
		if a.Name != b.Name {
			return canonicalLess(keys[a.Name], keys[b.Name])
		}
		return a.Rrtype < b.Rrtype
	})
	return rrs
}

// canonicalLess compares names given as labels from the root down.
func canonicalLess(a, b []string) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return len(a) < len(b)
}
