package dnsserver

import (
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/miekg/dns"

	"github.com/mxport/mxport/dnsserver/zone"
	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/cow"
)

// Index is the live set of zones the server answers from, in a
// copy-on-write map (store/cow): queries never lock and never touch Redis,
// and a change to one zone copies one shard, not every zone. It implements
// store.KeyFollower; store.Follow keeps it current.
type Index struct {
	opts    zone.Options
	zones   *cow.Map[*zone.Zone] // FQDN -> zone
	keys    atomic.Pointer[map[string]store.TSIGKey]
	loaded  atomic.Bool
	gen     atomic.Uint64 // moves after every change of zones
	changed func(z *zone.Zone)
}

// NewIndex returns an empty index. changed, when not nil, is called after
// a zone was added or changed (and, after a reload, for every zone whose
// serial moved), for NOTIFY.
func NewIndex(o zone.Options, changed func(z *zone.Zone)) *Index {
	ix := &Index{opts: o, zones: cow.New[*zone.Zone](), changed: changed}
	noKeys := map[string]store.TSIGKey{}
	ix.keys.Store(&noKeys)
	return ix
}

// Loaded reports whether a first snapshot has been loaded (readiness).
func (ix *Index) Loaded() bool { return ix.loaded.Load() }

// Load implements store.Follower: it replaces every zone. A zone that does
// not build keeps its previous version.
func (ix *Index) Load(zds []store.ZoneData) {
	m := make(map[string]*zone.Zone, len(zds))
	for _, zd := range zds {
		z, err := zone.Build(zd, ix.opts)
		if err != nil {
			slog.Error("zone build failed", "zone", zd.Name, "err", err)
			if prev, ok := ix.zones.Get(dns.Fqdn(zd.Name)); ok {
				m[prev.Name()] = prev
			}
			continue
		}
		m[z.Name()] = z
	}
	var moved []*zone.Zone
	if ix.changed != nil && ix.loaded.Load() {
		// A reload after a reconnect announces what changed meanwhile;
		// the first load announces nothing (secondaries poll at their
		// refresh).
		for name, z := range m {
			if prev, ok := ix.zones.Get(name); !ok || prev.Serial() != z.Serial() {
				moved = append(moved, z)
			}
		}
	}
	ix.zones.Replace(m)
	ix.gen.Add(1)
	ix.loaded.Store(true)
	for _, z := range moved {
		ix.changed(z)
	}
}

// Update implements store.Follower: it adds or replaces one zone.
func (ix *Index) Update(zd store.ZoneData) {
	z, err := zone.Build(zd, ix.opts)
	if err != nil {
		slog.Error("zone build failed", "zone", zd.Name, "err", err)
		return
	}
	ix.zones.Set(z.Name(), z)
	ix.gen.Add(1)
	if ix.changed != nil {
		ix.changed(z)
	}
}

// Delete implements store.Follower: it removes one zone.
func (ix *Index) Delete(name string) {
	ix.zones.Delete(dns.Fqdn(name))
	ix.gen.Add(1)
}

// generation changes after every change of the zones, once the change is
// visible to Find: answers computed after reading a generation are at
// least as new as it.
func (ix *Index) generation() uint64 { return ix.gen.Load() }

// Keys implements store.KeyFollower: it replaces the TSIG keys.
func (ix *Index) Keys(keys []store.TSIGKey) {
	m := make(map[string]store.TSIGKey, len(keys))
	for _, k := range keys {
		m[k.Name] = k
	}
	ix.keys.Store(&m)
}

// Key returns the TSIG key of that name (absolute, any case).
func (ix *Index) Key(name string) (store.TSIGKey, bool) {
	k, ok := (*ix.keys.Load())[strings.ToLower(name)]
	return k, ok
}

// Find returns the zone that holds qname: the hosted zone with the longest
// matching suffix, or nil.
func (ix *Index) Find(qname string) *zone.Zone {
	name := qname
	if hasUpper(name) {
		name = strings.ToLower(name)
	}
	for off, end := 0, false; !end; off, end = dns.NextLabel(name, off) {
		if z, ok := ix.zones.Get(name[off:]); ok {
			return z
		}
	}
	return nil
}

// Zone returns the zone named exactly name (FQDN), or nil.
func (ix *Index) Zone(name string) *zone.Zone {
	z, _ := ix.zones.Get(strings.ToLower(dns.Fqdn(name)))
	return z
}

// Len returns the number of zones.
func (ix *Index) Len() int { return ix.zones.Len() }

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return true
		}
	}
	return false
}
