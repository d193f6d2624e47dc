// Package cow is the copy-on-write map in which the roles keep their
// in-memory copy of the store's zones: reads never lock, and a write copies
// one of 64 shards, not every zone, so a change to one zone among 100,000
// stays cheap. It knows nothing of zones or Redis.
package cow

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

const nshards = 64

// Map is a string-keyed map for many readers and few writers. Its methods
// are safe for concurrent use; writers are serialised.
type Map[V any] struct {
	seed   maphash.Seed
	shards [nshards]atomic.Pointer[map[string]V]
	mu     sync.Mutex
}

// New returns an empty map.
func New[V any]() *Map[V] {
	m := &Map[V]{seed: maphash.MakeSeed()}
	for i := range m.shards {
		s := map[string]V{}
		m.shards[i].Store(&s)
	}
	return m
}

func (m *Map[V]) shard(k string) int { return int(maphash.String(m.seed, k) % nshards) }

// Get returns the value of k.
func (m *Map[V]) Get(k string) (V, bool) {
	v, ok := (*m.shards[m.shard(k)].Load())[k]
	return v, ok
}

// Set sets k to v.
func (m *Map[V]) Set(k string, v V) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sh := &m.shards[m.shard(k)]
	old := *sh.Load()
	n := make(map[string]V, len(old)+1)
	for key, val := range old {
		n[key] = val
	}
	n[k] = v
	sh.Store(&n)
}

// Delete removes k and reports whether it was there.
func (m *Map[V]) Delete(k string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	sh := &m.shards[m.shard(k)]
	old := *sh.Load()
	if _, ok := old[k]; !ok {
		return false
	}
	n := make(map[string]V, len(old))
	for key, val := range old {
		if key != k {
			n[key] = val
		}
	}
	sh.Store(&n)
	return true
}

// Replace swaps in all as the whole content (all is not kept). Readers see
// each shard switch at once, not the whole map at once.
func (m *Map[V]) Replace(all map[string]V) {
	var ns [nshards]map[string]V
	for i := range ns {
		ns[i] = map[string]V{}
	}
	for k, v := range all {
		ns[m.shard(k)][k] = v
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range m.shards {
		m.shards[i].Store(&ns[i])
	}
}

// Range calls f for every entry of a snapshot of each shard.
func (m *Map[V]) Range(f func(k string, v V)) {
	for i := range m.shards {
		for k, v := range *m.shards[i].Load() {
			f(k, v)
		}
	}
}

// Len returns the number of entries.
func (m *Map[V]) Len() int {
	n := 0
	for i := range m.shards {
		n += len(*m.shards[i].Load())
	}
	return n
}
