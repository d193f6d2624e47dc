package dnsserver

import (
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"

	"github.com/mxport/mxport/dnsserver/zone"
	"github.com/mxport/mxport/store"
)

// Index is the live set of zones the server answers from: an immutable map
// behind an atomic pointer, swapped whole on every change, so queries never
// lock and never touch Redis. It implements store.KeyFollower; store.Follow
// keeps it current.
type Index struct {
	opts    zone.Options
	zones   atomic.Pointer[map[string]*zone.Zone] // FQDN -> zone
	keys    atomic.Pointer[map[string]store.TSIGKey]
	loaded  atomic.Bool
	mu      sync.Mutex // serialises writers (Follow calls from one goroutine, tests may not)
	changed func(z *zone.Zone)
}

// NewIndex returns an empty index. changed, when not nil, is called after
// a zone was added or changed (not at full loads), for NOTIFY.
func NewIndex(o zone.Options, changed func(z *zone.Zone)) *Index {
	ix := &Index{opts: o, changed: changed}
	empty := map[string]*zone.Zone{}
	ix.zones.Store(&empty)
	noKeys := map[string]store.TSIGKey{}
	ix.keys.Store(&noKeys)
	return ix
}

// Loaded reports whether a first snapshot has been loaded (readiness).
func (ix *Index) Loaded() bool { return ix.loaded.Load() }

// Load implements store.Follower: it replaces every zone.
func (ix *Index) Load(zds []store.ZoneData) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	old := *ix.zones.Load()
	m := make(map[string]*zone.Zone, len(zds))
	for _, zd := range zds {
		z, err := zone.Build(zd, ix.opts)
		if err != nil {
			slog.Error("zone build failed", "zone", zd.Name, "err", err)
			if prev := old[dns.Fqdn(zd.Name)]; prev != nil {
				m[prev.Name()] = prev
			}
			continue
		}
		m[z.Name()] = z
	}
	ix.zones.Store(&m)
	first := !ix.loaded.Swap(true)
	// A reload after a reconnect announces what changed meanwhile; the
	// first load announces nothing (secondaries poll at their refresh).
	if ix.changed != nil && !first {
		for name, z := range m {
			if prev := old[name]; prev == nil || prev.Serial() != z.Serial() {
				ix.changed(z)
			}
		}
	}
}

// Update implements store.Follower: it adds or replaces one zone.
func (ix *Index) Update(zd store.ZoneData) {
	z, err := zone.Build(zd, ix.opts)
	if err != nil {
		slog.Error("zone build failed", "zone", zd.Name, "err", err)
		return
	}
	ix.mu.Lock()
	old := *ix.zones.Load()
	m := make(map[string]*zone.Zone, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[z.Name()] = z
	ix.zones.Store(&m)
	ix.mu.Unlock()
	if ix.changed != nil {
		ix.changed(z)
	}
}

// Delete implements store.Follower: it removes one zone.
func (ix *Index) Delete(name string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	old := *ix.zones.Load()
	fq := dns.Fqdn(name)
	if _, ok := old[fq]; !ok {
		return
	}
	m := make(map[string]*zone.Zone, len(old))
	for k, v := range old {
		if k != fq {
			m[k] = v
		}
	}
	ix.zones.Store(&m)
}

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
	zones := *ix.zones.Load()
	name := qname
	if hasUpper(name) {
		name = strings.ToLower(name)
	}
	for off, end := 0, false; !end; off, end = dns.NextLabel(name, off) {
		if z := zones[name[off:]]; z != nil {
			return z
		}
	}
	return nil
}

// Zone returns the zone named exactly name (FQDN), or nil.
func (ix *Index) Zone(name string) *zone.Zone {
	return (*ix.zones.Load())[strings.ToLower(dns.Fqdn(name))]
}

// Len returns the number of zones.
func (ix *Index) Len() int { return len(*ix.zones.Load()) }

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return true
		}
	}
	return false
}
