// Package update applies RFC 2136 DNS UPDATE messages to the store: zone
// section checks, prerequisites, permission, then one atomic store.Change.
// It knows no sockets.
//
// The caller (dnsserver) verifies TSIG (RFC 8945) and writes the reply; Apply
// only returns the RCODE. An UPDATE is applied as RFC 2136 3 describes, with
// these choices where mxport's model differs from a plain zone:
//
//   - The zone's SOA is not a record: it always exists at the apex for
//     prerequisites. An SOA added at the apex whose serial is not older
//     (RFC 1982) than the zone's replaces the SOA fields (RFC 2136 3.4.2.2);
//     its serial is kept only when above the one the change would get
//     anyway (store.Change.Serial). Other SOA adds, and SOA deletions
//     (3.4.2.4), are ignored.
//   - MX records compare by preference and host only: the ":PORT" a
//     forwarded zone's MX carries cannot be expressed in DNS, so an MX RR
//     "10 mail.example.com." matches the stored "10 mail.example.com.:2525"
//     (prerequisites, deletions, and adds, which then keep the port and only
//     take the new TTL).
//   - A TTL below record.MinTTL is raised to it (ACME clients ask for 10 s
//     or 60 s; refusing them would break certificate renewal).
//   - RFC 2136 has no code for "invalid data": a record that the store
//     would not take (record.Normalize refuses it: TTL above record.MaxTTL,
//     a type mxport does not store, bad data),
//     or a change that breaks a store limit (store.MaxOwnerRecords,
//     store.MaxZoneRecords), gets REFUSED and changes nothing.
//   - Adding a record identical to one present (same data; TTL may differ)
//     replaces its TTL only; other records of the RRset keep theirs.
//   - Permission is checked before the zone is read: an unsigned UPDATE gets
//     REFUSED, and a key not given the zone gets NOTAUTH, without touching
//     Redis, whether or not the zone is hosted.
package update

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
)

// maxAttempts is how often Apply reads the zone and tries its change when
// another writer changed the zone in between (store.ErrConflict).
const maxAttempts = 8

// Updater applies UPDATEs through the store. It is safe for concurrent use;
// UPDATEs to one zone through one Updater are applied one at a time.
type Updater struct {
	st *store.Store

	mu    sync.Mutex
	locks map[string]*zoneLock

	// beforeChange, when set (by tests), runs between reading the zone
	// and writing the change, with the attempt number (1, 2, ...).
	beforeChange func(attempt int)
}

// zoneLock serialises one zone's UPDATEs inside this process, so that
// they do not make each other retry; writers elsewhere (panel, other
// servers) are caught by store.Change's IfVersion.
type zoneLock struct {
	ch   chan struct{}
	refs int
}

// New returns an Updater writing to st.
func New(st *store.Store) *Updater {
	return &Updater{st: st, locks: make(map[string]*zoneLock)}
}

// Apply applies the UPDATE msg (already TSIG-verified by the server). key is
// the verified TSIG key name ("" when the request was not signed) and
// keyZones the zones (canonical names, see record.ZoneName) that key may
// touch. It returns the RCODE for the response: dns.RcodeSuccess,
// FormatError, ServerFailure (store unavailable: "try again"),
// NotImplemented, Refused, YXDomain, YXRrset, NXDomain, NXRrset, NotAuth,
// NotZone. Apply never modifies msg beyond transiently setting the Rdlength
// of its RRs (restored before it returns).
func (u *Updater) Apply(ctx context.Context, msg *dns.Msg, key string, keyZones []string) int {
	if msg == nil {
		return dns.RcodeFormatError
	}
	if msg.Opcode != dns.OpcodeUpdate {
		return dns.RcodeNotImplemented
	}
	// RFC 2136 3.1.1: one zone, type SOA, of our class.
	if len(msg.Question) != 1 {
		return dns.RcodeFormatError
	}
	q := msg.Question[0]
	if q.Qtype != dns.TypeSOA || q.Qclass != dns.ClassINET {
		return dns.RcodeFormatError
	}
	zone, err := record.ZoneName(q.Name)
	if err != nil {
		return dns.RcodeNotAuth // no zone of that name can be hosted (RFC 2136 3.1.2)
	}
	log := slog.Default().With("zone", zone, "key", key)
	// RFC 2136 3.3; RFC 8945 5.2: a key without authority for the zone.
	if key == "" {
		log.Info("update denied", "code", "REFUSED", "err", "not signed")
		return dns.RcodeRefused
	}
	if !allowed(zone, keyZones) {
		log.Info("update denied", "code", "NOTAUTH", "err", "key not allowed for zone")
		return dns.RcodeNotAuth
	}

	unlock, err := u.lock(ctx, zone)
	if err != nil {
		log.Warn("update failed", "code", "SERVFAIL", "err", err)
		return dns.RcodeServerFailure
	}
	defer unlock()

	for attempt := 1; ; attempt++ {
		zd, err := u.st.ZoneData(ctx, zone)
		if errors.Is(err, store.ErrNotFound) {
			return dns.RcodeNotAuth // RFC 2136 3.1.2
		}
		if err != nil {
			log.Warn("update failed", "code", "SERVFAIL", "err", err)
			return dns.RcodeServerFailure
		}
		p := newPlan(zone, zd, u.st.Policy())
		if rc := p.prerequisites(msg.Answer); rc != dns.RcodeSuccess {
			return rc
		}
		if rc := p.prescan(msg.Ns); rc != dns.RcodeSuccess {
			return rc
		}
		if err := p.normalize(msg.Ns); err != nil {
			log.Info("update refused", "code", "REFUSED", "err", err)
			return dns.RcodeRefused
		}
		p.apply(msg.Ns)
		ch := p.change()
		if len(ch.Ops) == 0 && ch.SOA == nil {
			return dns.RcodeSuccess // RFC 2136 3.7: nothing changed, no serial bump
		}
		ch.IfVersion = zd.Version
		if u.beforeChange != nil {
			u.beforeChange(attempt)
		}
		res, err := u.st.Change(ctx, zone, ch)
		var fe *record.FieldError
		switch {
		case err == nil:
			log.Info("update", "serial", res.Serial, "ops", len(ch.Ops))
			return dns.RcodeSuccess
		case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrNotFound):
			// Changed (or deleted) since we read it: prerequisites and
			// record ids must be taken again.
			if attempt >= maxAttempts {
				log.Warn("update failed", "code", "SERVFAIL", "attempt", attempt, "err", err)
				return dns.RcodeServerFailure
			}
			if err := pause(ctx, attempt); err != nil {
				log.Warn("update failed", "code", "SERVFAIL", "err", err)
				return dns.RcodeServerFailure
			}
		case errors.As(err, &fe), errors.Is(err, store.ErrExists):
			log.Info("update refused", "code", "REFUSED", "err", err)
			return dns.RcodeRefused
		default: // store.ErrUnavailable and anything unforeseen: try again
			log.Warn("update failed", "code", "SERVFAIL", "err", err)
			return dns.RcodeServerFailure
		}
	}
}

// allowed reports whether zone is one of keyZones.
func allowed(zone string, keyZones []string) bool {
	for _, z := range keyZones {
		if zn, err := record.ZoneName(z); err == nil && zn == zone {
			return true
		}
	}
	return false
}

// lock takes zone's in-process lock, giving up when ctx ends.
func (u *Updater) lock(ctx context.Context, zone string) (func(), error) {
	u.mu.Lock()
	l := u.locks[zone]
	if l == nil {
		l = &zoneLock{ch: make(chan struct{}, 1)}
		u.locks[zone] = l
	}
	l.refs++
	u.mu.Unlock()
	release := func() {
		u.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(u.locks, zone)
		}
		u.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

// pause waits a little before another attempt, longer each time and
// jittered, so that writers racing on one zone drift apart.
func pause(ctx context.Context, attempt int) error {
	t := time.NewTimer(rand.N(time.Duration(attempt) * 5 * time.Millisecond))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// plan is one attempt at an UPDATE: the zone as read, and the records as the
// update section changes them, turned into store ops.
type plan struct {
	zone   string
	zd     store.ZoneData
	policy record.Policy
	stored map[string][]record.Record // owner -> records as read
	owners map[string][]*entry        // owner -> working records, loaded lazily

	adds []*record.Record // per update RR: the normalised record to add, or nil

	ops    []store.Op
	dead   []bool // ops cancelled by a later RR (a pending add deleted again)
	soa    *store.SOA
	serial uint32
}

// entry is a record of the working zone: a stored one (rec.ID set) or one
// added by this UPDATE (op is then its OpAdd's index).
type entry struct {
	rec  record.Record
	key  string // comparison form of the data, see compareKey
	op   int
	gone bool
}

func newPlan(zone string, zd store.ZoneData, policy record.Policy) *plan {
	p := &plan{zone: zone, zd: zd, policy: policy, serial: zd.Serial,
		stored: make(map[string][]record.Record), owners: make(map[string][]*entry)}
	for _, r := range zd.Records {
		p.stored[r.Name] = append(p.stored[r.Name], r)
	}
	return p
}

// owner returns the canonical owner of name, or false when name is not
// inside the zone.
func (p *plan) owner(name string) (string, bool) {
	fq := dns.Fqdn(name)
	if !dns.IsSubDomain(p.zone+".", fq) {
		return "", false
	}
	return record.RelativeOwner(p.zone, fq)
}

// live returns the working records at owner that are still there.
func (p *plan) live(owner string) []*entry {
	es, ok := p.owners[owner]
	if !ok {
		for _, r := range p.stored[owner] {
			k := r.Data
			if n, err := normalize(p.zone, r.Name, r.Type, r.Data); err == nil {
				k = n.Data
			}
			es = append(es, &entry{rec: r, key: compareKey(r.Type, k), op: -1})
		}
		p.owners[owner] = es
	}
	out := make([]*entry, 0, len(es))
	for _, e := range es {
		if !e.gone {
			out = append(out, e)
		}
	}
	return out
}

// inUse reports whether owner has any data (the apex always has its SOA).
func (p *plan) inUse(owner string) bool {
	return owner == record.Apex || len(p.live(owner)) > 0
}

// rrsetExists reports whether owner has records of type typ.
func (p *plan) rrsetExists(owner, typ string) bool {
	if typ == "SOA" {
		return owner == record.Apex
	}
	for _, e := range p.live(owner) {
		if e.rec.Type == typ {
			return true
		}
	}
	return false
}

// prerequisites checks the prerequisite section (RFC 2136 3.2).
func (p *plan) prerequisites(rrs []dns.RR) int {
	type rrset struct{ owner, typ string }
	var order []rrset
	temp := map[rrset][]dns.RR{}
	for _, rr := range rrs {
		if rr == nil {
			return dns.RcodeFormatError
		}
		h := rr.Header()
		if h.Ttl != 0 {
			return dns.RcodeFormatError
		}
		owner, ok := p.owner(h.Name)
		if !ok {
			return dns.RcodeNotZone
		}
		typ := typeName(h.Rrtype)
		switch h.Class {
		case dns.ClassANY:
			if !emptyRdata(rr) {
				return dns.RcodeFormatError
			}
			if h.Rrtype == dns.TypeANY {
				if !p.inUse(owner) {
					return dns.RcodeNameError
				}
			} else if !p.rrsetExists(owner, typ) {
				return dns.RcodeNXRrset
			}
		case dns.ClassNONE:
			if !emptyRdata(rr) {
				return dns.RcodeFormatError
			}
			if h.Rrtype == dns.TypeANY {
				if p.inUse(owner) {
					return dns.RcodeYXDomain
				}
			} else if p.rrsetExists(owner, typ) {
				return dns.RcodeYXRrset
			}
		case dns.ClassINET:
			k := rrset{owner, typ}
			if _, seen := temp[k]; !seen {
				order = append(order, k)
			}
			temp[k] = append(temp[k], rr)
		default:
			return dns.RcodeFormatError
		}
	}
	// RFC 2136 3.2.3: each RRset must exist with exactly these RRs
	// (value dependent; TTLs do not count).
	for _, k := range order {
		if !p.rrsetEquals(k.owner, k.typ, temp[k]) {
			return dns.RcodeNXRrset
		}
	}
	return dns.RcodeSuccess
}

// rrsetEquals reports whether the zone's RRset owner/typ is exactly rrs, as
// sets, comparing data in normalised form.
func (p *plan) rrsetEquals(owner, typ string, rrs []dns.RR) bool {
	want := map[string]bool{}
	if typ == "SOA" {
		if owner != record.Apex {
			return false
		}
		for _, rr := range rrs {
			soa, ok := rr.(*dns.SOA)
			if !ok || !p.isSOA(soa) {
				return false
			}
		}
		return true
	}
	for _, rr := range rrs {
		r, err := normalize(p.zone, owner, typ, rdataText(rr))
		if err != nil {
			return false // not a record the zone could hold
		}
		want[compareKey(typ, r.Data)] = true
	}
	have := map[string]bool{}
	for _, e := range p.live(owner) {
		if e.rec.Type == typ {
			have[e.key] = true
		}
	}
	if len(have) != len(want) {
		return false
	}
	for k := range want {
		if !have[k] {
			return false
		}
	}
	return true
}

// isSOA reports whether soa's data is the zone's current SOA.
func (p *plan) isSOA(soa *dns.SOA) bool {
	z := p.zd.SOA
	return strings.EqualFold(dns.Fqdn(soa.Ns), z.MName) && strings.EqualFold(dns.Fqdn(soa.Mbox), z.RName) &&
		soa.Serial == p.zd.Serial && soa.Refresh == z.Refresh && soa.Retry == z.Retry &&
		soa.Expire == z.Expire && soa.Minttl == z.Minimum
}

// prescan checks the update section's form (RFC 2136 3.4.1.3).
func (p *plan) prescan(rrs []dns.RR) int {
	for _, rr := range rrs {
		if rr == nil {
			return dns.RcodeFormatError
		}
		h := rr.Header()
		if _, ok := p.owner(h.Name); !ok {
			return dns.RcodeNotZone
		}
		switch h.Class {
		case dns.ClassINET:
			if h.Rrtype == dns.TypeANY || meta(h.Rrtype) {
				return dns.RcodeFormatError
			}
		case dns.ClassANY:
			if h.Ttl != 0 || !emptyRdata(rr) || meta(h.Rrtype) {
				return dns.RcodeFormatError
			}
		case dns.ClassNONE:
			if h.Ttl != 0 || h.Rrtype == dns.TypeANY || meta(h.Rrtype) {
				return dns.RcodeFormatError
			}
		default:
			return dns.RcodeFormatError
		}
	}
	return dns.RcodeSuccess
}

// meta reports whether t is a type that exists only in messages and may
// not appear in an update section (RFC 2136 3.4.1.3, plus OPT, TSIG, TKEY
// and IXFR).
func meta(t uint16) bool {
	switch t {
	case dns.TypeAXFR, dns.TypeIXFR, dns.TypeMAILA, dns.TypeMAILB, dns.TypeOPT, dns.TypeTSIG, dns.TypeTKEY:
		return true
	}
	return false
}

// normalize validates the records the update section adds, before anything
// is applied, so an UPDATE with one bad record changes nothing. Adds that
// are ignored whatever their data (SOA, CNAME at the apex, which always
// has other data: the SOA) are left nil.
func (p *plan) normalize(rrs []dns.RR) error {
	p.adds = make([]*record.Record, len(rrs))
	for i, rr := range rrs {
		h := rr.Header()
		if h.Class != dns.ClassINET || h.Rrtype == dns.TypeSOA {
			continue
		}
		owner, _ := p.owner(h.Name)
		if owner == record.Apex && h.Rrtype == dns.TypeCNAME {
			continue // RFC 2136 3.4.2.2
		}
		r, err := record.Normalize(p.zone, record.Record{Name: record.FQDN(p.zone, owner),
			Type: typeName(h.Rrtype), TTL: clampTTL(h.Ttl), Data: rdataText(rr)}, p.policy)
		if err != nil {
			return err
		}
		p.adds[i] = &r
	}
	return nil
}

// apply runs RFC 2136 3.4.2 over the working zone, collecting store ops.
// prescan and normalize have accepted rrs.
func (p *plan) apply(rrs []dns.RR) {
	for i, rr := range rrs {
		h := rr.Header()
		owner, _ := p.owner(h.Name)
		typ := typeName(h.Rrtype)
		switch h.Class {
		case dns.ClassINET:
			if h.Rrtype == dns.TypeSOA {
				p.addSOA(owner, rr)
			} else if r := p.adds[i]; r != nil {
				p.add(*r)
			}
		case dns.ClassANY:
			if h.Rrtype == dns.TypeANY { // RFC 2136 3.4.2.3
				for _, e := range p.live(owner) {
					if owner == record.Apex && e.rec.Type == "NS" {
						continue
					}
					p.remove(e)
				}
				continue
			}
			if owner == record.Apex && (typ == "NS" || typ == "SOA") {
				continue
			}
			for _, e := range p.live(owner) {
				if e.rec.Type == typ {
					p.remove(e)
				}
			}
		case dns.ClassNONE: // RFC 2136 3.4.2.4
			if typ == "SOA" {
				continue
			}
			r, err := normalize(p.zone, owner, typ, rdataText(rr))
			if err != nil {
				continue // no such record can be in the zone
			}
			k := compareKey(typ, r.Data)
			var match *entry
			n := 0
			for _, e := range p.live(owner) {
				if e.rec.Type == typ {
					n++
					if e.key == k {
						match = e
					}
				}
			}
			if match == nil || owner == record.Apex && typ == "NS" && n == 1 {
				continue // the last apex NS stays
			}
			p.remove(match)
		}
	}
}

// add adds r (normalised) to the working zone (RFC 2136 3.4.2.2).
func (p *plan) add(r record.Record) {
	k := compareKey(r.Type, r.Data)
	es := p.live(r.Name)
	for _, e := range es {
		if (r.Type == "CNAME") != (e.rec.Type == "CNAME") {
			return // CNAME and other data never share a name
		}
	}
	for _, e := range es {
		if e.rec.Type != r.Type || r.Type != "CNAME" && e.key != k {
			continue
		}
		// The same record, or a CNAME replacing a CNAME: take the new
		// TTL (and CNAME target). An MX keeps its stored port.
		nr := e.rec
		nr.TTL = r.TTL
		if r.Type == "CNAME" {
			nr.Data = r.Data
		}
		if nr == e.rec {
			return
		}
		e.rec, e.key = nr, k
		if e.op >= 0 {
			p.ops[e.op].Record = withoutID(nr)
		} else {
			p.ops = append(p.ops, store.Op{Kind: store.OpPut, ID: nr.ID, Record: withoutID(nr)})
			p.dead = append(p.dead, false)
		}
		return
	}
	p.owners[r.Name] = append(p.owners[r.Name], &entry{rec: r, key: k, op: len(p.ops)})
	p.ops = append(p.ops, store.Op{Kind: store.OpAdd, Quiet: true, Record: r})
	p.dead = append(p.dead, false)
}

// addSOA takes an SOA added at the apex when its serial is newer (RFC 2136
// 3.4.2.2, RFC 1982).
func (p *plan) addSOA(owner string, rr dns.RR) {
	soa, ok := rr.(*dns.SOA)
	if !ok || owner != record.Apex || int32(soa.Serial-p.serial) < 0 {
		return
	}
	n := store.SOA{MName: strings.ToLower(dns.Fqdn(soa.Ns)), RName: strings.ToLower(dns.Fqdn(soa.Mbox)),
		Refresh: soa.Refresh, Retry: soa.Retry, Expire: soa.Expire, Minimum: soa.Minttl, TTL: soa.Hdr.Ttl}
	cur := p.zd.SOA
	if p.soa != nil {
		cur = *p.soa
	}
	if soa.Serial == p.serial && n == cur {
		return // the SOA the zone has: nothing to do
	}
	p.soa, p.serial = &n, soa.Serial
}

// remove deletes e from the working zone.
func (p *plan) remove(e *entry) {
	e.gone = true
	if e.op >= 0 {
		p.dead[e.op] = true
		return
	}
	p.ops = append(p.ops, store.Op{Kind: store.OpDelete, ID: e.rec.ID, Quiet: true})
	p.dead = append(p.dead, false)
}

// change returns the store change the plan built.
func (p *plan) change() store.Change {
	var ch store.Change
	for i, op := range p.ops {
		if !p.dead[i] {
			ch.Ops = append(ch.Ops, op)
		}
	}
	if p.soa != nil {
		ch.SOA, ch.Serial = p.soa, p.serial
	}
	return ch
}

func withoutID(r record.Record) record.Record {
	r.ID = ""
	return r
}

// normalize canonicalises data of type typ at owner for comparison; the TTL
// does not matter, nor does the service's MX policy.
func normalize(zone, owner, typ, data string) (record.Record, error) {
	return record.Normalize(zone, record.Record{Name: record.FQDN(zone, owner), Type: typ, TTL: record.MinTTL, Data: data}, record.Policy{})
}

// compareKey is the form in which records of type typ with normalised data
// compare: the data, but for MX only preference and host (a DNS RR has no
// port).
func compareKey(typ, data string) string {
	if typ == "MX" {
		if mx, err := record.ParseMX(data); err == nil {
			return strconv.Itoa(int(mx.Pref)) + " " + mx.Host
		}
	}
	return data
}

// typeName returns the mnemonic of t as record.ParseType gives it.
func typeName(t uint16) string {
	return dns.Type(t).String()
}

// rdataText returns rr's RDATA in presentation format.
func rdataText(rr dns.RR) string {
	if u, ok := rr.(*dns.RFC3597); ok {
		// RFC3597.String prints its own header (RFC 3597 5).
		return strings.TrimSpace(`\# ` + strconv.Itoa(len(u.Rdata)/2) + " " + u.Rdata)
	}
	return strings.TrimPrefix(rr.String(), rr.Header().String())
}

// emptyRdata reports whether rr has no RDATA (RDLENGTH 0), whether it came
// off the wire or was built (dns.ANY).
func emptyRdata(rr dns.RR) bool {
	switch rr.(type) {
	case *dns.ANY, *dns.RR_Header:
		return true
	}
	h := rr.Header()
	saved := h.Rdlength
	defer func() { h.Rdlength = saved }()
	buf := make([]byte, dns.Len(rr)+16)
	if _, err := dns.PackRR(rr, buf, 0, nil, false); err != nil {
		return false
	}
	return h.Rdlength == 0
}

// clampTTL raises a TTL below the store's minimum to it.
func clampTTL(ttl uint32) uint32 {
	return max(ttl, record.MinTTL)
}
