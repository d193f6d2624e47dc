// Package route is the forwarder's view of the zones: which domains it
// accepts mail for, and where each forwarded zone's mail goes now (late
// binding: read at every attempt). It follows the store in memory; it never
// asks Redis per RCPT.
//
// Index is a store.Follower kept current by store.Follow; Resolver turns a
// route's targets into addresses (hosted zones first, then DNS) and finds the
// mail exchangers of other domains, for bounces. The package knows no SMTP,
// no spool and no Redis.
package route

import (
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/cow"
	"github.com/mxport/mxport/store/record"
)

// Decision is what the forwarder does with mail for a recipient domain.
type Decision int

// The decisions of Lookup.
const (
	// Unknown: the index has never loaded (Redis down since start); the
	// forwarder cannot decide and answers 451 4.3.0.
	Unknown Decision = iota
	// Refuse: the domain is not hosted here, or hosted but not forwarded
	// (DESIGN.md, the MX forwarding rule): 550 5.7.1.
	Refuse
	// Accept: the domain is the apex of a forwarded zone.
	Accept
)

// String returns "unknown", "refuse" or "accept", for logs.
func (d Decision) String() string {
	switch d {
	case Unknown:
		return "unknown"
	case Refuse:
		return "refuse"
	case Accept:
		return "accept"
	}
	return "invalid"
}

// Index is a store.Follower: the zones, their routes, and the A/AAAA (and
// CNAME and MX) records of hosted names. It is safe for concurrent use:
// readers never lock; zones live in a copy-on-write map (store/cow), as in
// dnsserver's index.
type Index struct {
	zones  *cow.Map[*entry] // canonical zone name -> entry
	loaded atomic.Bool
	mu     sync.Mutex // serialises Load's compare-and-replace with other writers

	wmu     sync.Mutex
	waiters map[string]chan struct{} // zone -> closed at its next change
}

// entry is one zone as the forwarder sees it; immutable once built.
type entry struct {
	name    string
	version uint64
	gen     string
	route   []record.Target // nil: not forwarded
	nodes   map[string]*node
}

// node is the data of one owner name of a zone that the forwarder uses.
type node struct {
	v4, v6 []netip.Addr
	cname  string // target: lower case, no trailing dot; "" when none
	mx     []record.MX
}

// NewIndex returns an empty index that has not loaded (Lookup answers
// Unknown until the first Load).
func NewIndex() *Index {
	return &Index{zones: cow.New[*entry](), waiters: map[string]chan struct{}{}}
}

// get returns the entry of a canonical zone name, or nil.
func (ix *Index) get(zone string) *entry {
	e, _ := ix.zones.Get(zone)
	return e
}

// Loaded reports whether a first snapshot has been loaded (readiness).
func (ix *Index) Loaded() bool { return ix.loaded.Load() }

// Load implements store.Follower: it replaces every zone. Waiters of zones
// that changed or went away are woken.
func (ix *Index) Load(zds []store.ZoneData) {
	m := make(map[string]*entry, len(zds))
	for _, zd := range zds {
		e := build(zd)
		m[e.name] = e
	}
	ix.mu.Lock()
	var changed []string
	ix.zones.Range(func(name string, o *entry) {
		if n := m[name]; n == nil || n.gen != o.gen || n.version != o.version {
			changed = append(changed, name)
		}
	})
	for name := range m {
		if ix.get(name) == nil {
			changed = append(changed, name)
		}
	}
	ix.zones.Replace(m)
	ix.mu.Unlock()
	ix.loaded.Store(true)
	ix.wake(changed...)
}

// Update implements store.Follower: it adds or replaces one zone.
func (ix *Index) Update(zd store.ZoneData) {
	e := build(zd)
	ix.mu.Lock()
	ix.zones.Set(e.name, e)
	ix.mu.Unlock()
	ix.wake(e.name)
}

// Delete implements store.Follower: it removes one zone.
func (ix *Index) Delete(zone string) {
	name := canonical(zone)
	ix.mu.Lock()
	gone := ix.zones.Delete(name)
	ix.mu.Unlock()
	if gone {
		ix.wake(name)
	}
}

// Changed returns a channel that is closed at the next change of zone's
// data (an edit, its deletion or re-creation, or a reload that found it
// different), so a queue waiting on a zone can notice a route edit. Each
// call after a change returns a new channel. Call it before reading the
// route it guards, so that no edit falls between the two.
func (ix *Index) Changed(zone string) <-chan struct{} {
	name := canonical(zone)
	ix.wmu.Lock()
	defer ix.wmu.Unlock()
	c := ix.waiters[name]
	if c == nil {
		c = make(chan struct{})
		ix.waiters[name] = c
	}
	return c
}

func (ix *Index) wake(zones ...string) {
	ix.wmu.Lock()
	defer ix.wmu.Unlock()
	if len(ix.waiters) == 0 {
		return
	}
	for _, z := range zones {
		if c := ix.waiters[z]; c != nil {
			close(c)
			delete(ix.waiters, z)
		}
	}
}

// Lookup decides for a recipient domain (any case, may carry a trailing
// dot). Only a forwarded zone's apex domain is accepted (mail for
// user@example.com); a domain below it (sub.example.com) is refused, as is
// a hosted zone that is not forwarded and any other domain. The domain must
// be ASCII (A-labels, RFC 5890): the caller converts an internationalised
// domain; a non-ASCII one is refused. zone is the canonical zone name when
// d is Accept, "" otherwise.
func (ix *Index) Lookup(domain string) (zone string, d Decision) {
	if !ix.loaded.Load() {
		return "", Unknown
	}
	name := canonical(domain)
	if name == "" {
		return "", Refuse
	}
	e := ix.get(name)
	if e == nil || e.route == nil {
		return "", Refuse
	}
	return e.name, Accept
}

// Route returns the zone's current forwarding route (record.Route of its
// records: apex MX targets in priority order, each with its port), nil when
// the zone is not, or no longer, hosted and forwarded. The slice is the
// caller's own.
func (ix *Index) Route(zone string) []record.Target {
	e := ix.get(canonical(zone))
	if e == nil || e.route == nil {
		return nil
	}
	return append([]record.Target(nil), e.route...)
}

// find returns the hosted zone holding name (canonical) by longest suffix,
// with name's owner in it, or nil.
func (ix *Index) find(name string) (*entry, string) {
	for n := name; n != ""; {
		if e := ix.get(n); e != nil {
			if n == name {
				return e, record.Apex
			}
			return e, name[:len(name)-len(n)-1]
		}
		i := strings.IndexByte(n, '.')
		if i < 0 {
			break
		}
		n = n[i+1:]
	}
	return nil, ""
}

// hostAddrs returns the hosted addresses of name (canonical), following a
// CNAME once into any hosted zone; ok is false when the hosted data has no
// address for it (the caller then asks DNS).
func (ix *Index) hostAddrs(name string) (v4, v6 []netip.Addr, ok bool) {
	for hop := 0; hop < 2; hop++ {
		e, owner := ix.find(name)
		if e == nil {
			return nil, nil, false
		}
		n := e.nodes[owner]
		if n == nil {
			return nil, nil, false
		}
		if n.cname != "" {
			name = n.cname
			continue
		}
		if len(n.v4)+len(n.v6) == 0 {
			return nil, nil, false
		}
		return n.v4, n.v6, true
	}
	return nil, nil, false
}

// build makes an entry of a zone's data. Records that do not parse are
// skipped (the store validated them; this only guards against corruption).
func build(zd store.ZoneData) *entry {
	e := &entry{name: canonical(zd.Name), version: zd.Version, gen: zd.Gen,
		route: zd.Route(), nodes: map[string]*node{}}
	at := func(owner string) *node {
		n := e.nodes[owner]
		if n == nil {
			n = &node{}
			e.nodes[owner] = n
		}
		return n
	}
	for _, r := range zd.Records {
		owner := strings.ToLower(r.Name)
		switch r.Type {
		case "A", "AAAA":
			a, err := netip.ParseAddr(strings.TrimSpace(r.Data))
			if err != nil {
				slog.Warn("route record skipped", "zone", e.name, "name", r.Name, "type", r.Type, "err", err)
				continue
			}
			a = a.Unmap()
			n := at(owner)
			if a.Is4() {
				n.v4 = append(n.v4, a)
			} else {
				n.v6 = append(n.v6, a)
			}
		case "CNAME":
			at(owner).cname = canonical(r.Data)
		case "MX":
			mx, err := record.ParseMX(r.Data)
			if err != nil {
				slog.Warn("route record skipped", "zone", e.name, "name", r.Name, "type", r.Type, "err", err)
				continue
			}
			n := at(owner)
			n.mx = append(n.mx, mx)
		default:
			at(owner) // the name exists
		}
	}
	return e
}

// canonical lowers a domain name and drops surrounding space and the
// trailing dot; it gives "" for a name that cannot be a hosted one.
func canonical(s string) string {
	s = strings.TrimSuffix(strings.TrimSpace(s), ".")
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return ""
		}
	}
	return strings.ToLower(s)
}
