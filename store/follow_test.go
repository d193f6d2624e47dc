package store_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
	"github.com/mxport/mxport/store/storetest"
)

// recorder is a KeyFollower that keeps what Follow tells it.
type recorder struct {
	mu      sync.Mutex
	zones   map[string]store.ZoneData
	keys    []store.TSIGKey
	loads   int
	updates int
	deletes []string
	changed chan struct{} // a token after every call
}

func newRecorder() *recorder {
	return &recorder{zones: map[string]store.ZoneData{}, changed: make(chan struct{}, 1)}
}

func (r *recorder) poke() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) Load(zones []store.ZoneData) {
	r.mu.Lock()
	r.zones = make(map[string]store.ZoneData, len(zones))
	for _, z := range zones {
		r.zones[z.Name] = z
	}
	r.loads++
	r.mu.Unlock()
	r.poke()
}

func (r *recorder) Update(z store.ZoneData) {
	r.mu.Lock()
	r.zones[z.Name] = z
	r.updates++
	r.mu.Unlock()
	r.poke()
}

func (r *recorder) Delete(zone string) {
	r.mu.Lock()
	delete(r.zones, zone)
	r.deletes = append(r.deletes, zone)
	r.mu.Unlock()
	r.poke()
}

func (r *recorder) Keys(keys []store.TSIGKey) {
	r.mu.Lock()
	r.keys = keys
	r.mu.Unlock()
	r.poke()
}

// state returns a copy of the zones held.
func (r *recorder) state() map[string]store.ZoneData {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := make(map[string]store.ZoneData, len(r.zones))
	for k, v := range r.zones {
		m[k] = v
	}
	return m
}

// waitFor waits until cond holds, checking after every follower call and
// at least every 50 ms (cond may depend on Redis too), failing after d.
func (r *recorder) waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-r.changed:
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
	}
}

// follow runs s.Follow(f) until the test ends.
func follow(t *testing.T, s *store.Store, f store.Follower) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Follow(ctx, f, store.FollowOptions{Retry: 20 * time.Millisecond}) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Follow returned %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Follow did not return after cancel")
		}
	})
}

// snapshot returns s.LoadAll as a map.
func snapshot(t *testing.T, s *store.Store) (map[string]store.ZoneData, error) {
	zs, err := s.LoadAll(bg)
	if err != nil {
		return nil, err
	}
	m := make(map[string]store.ZoneData, len(zs))
	for _, z := range zs {
		m[z.Name] = z
	}
	return m, nil
}

// inSync reports whether the recorder holds exactly what Redis holds.
func inSync(t *testing.T, s *store.Store, r *recorder) bool {
	want, err := snapshot(t, s)
	return err == nil && reflect.DeepEqual(r.state(), want)
}

func TestFollow(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	mustZone(t, s, "before.test")
	mustAdd(t, s, "before.test", "www", "A", 300, "192.0.2.1")

	r := newRecorder()
	follow(t, s, r)
	r.waitFor(t, 10*time.Second, "the snapshot", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.loads == 1
	})
	if !inSync(t, s, r) {
		t.Fatalf("snapshot %+v differs from LoadAll", r.state())
	}

	// Live: a new zone, a change, a deletion.
	mustZone(t, s, "after.test")
	r.waitFor(t, 10*time.Second, "after.test", func() bool { _, ok := r.state()["after.test"]; return ok })
	rec := mustAdd(t, s, "before.test", "mail", "A", 300, "192.0.2.25")
	r.waitFor(t, 10*time.Second, "the new record", func() bool {
		for _, x := range r.state()["before.test"].Records {
			if x.ID == rec.ID {
				return true
			}
		}
		return false
	})
	if err := s.DeleteZone(bg, "after.test"); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, 10*time.Second, "the deletion", func() bool { _, ok := r.state()["after.test"]; return !ok })
	r.waitFor(t, 10*time.Second, "the follower in sync", func() bool { return inSync(t, s, r) })
	r.mu.Lock()
	loads, updates, deletes := r.loads, r.updates, append([]string(nil), r.deletes...)
	r.mu.Unlock()
	if loads != 1 || updates < 2 || !reflect.DeepEqual(deletes, []string{"after.test"}) {
		t.Fatalf("loads %d, updates %d, deletes %q; want 1 load, live updates and one delete", loads, updates, deletes)
	}

	// TSIG keys reach a KeyFollower.
	k, err := s.CreateTSIGKey(bg, "Acme-Key", "", []string{"before.test"})
	if err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, 10*time.Second, "the TSIG key", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.keys) == 1 && reflect.DeepEqual(r.keys[0], k)
	})
	if err := s.DeleteTSIGKey(bg, "acme-key."); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, 10*time.Second, "the TSIG key deletion", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.keys) == 0
	})
}

func TestTSIGKeys(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	mustZone(t, s, "a.test")
	mustZone(t, s, "b.test")
	k, err := s.CreateTSIGKey(bg, "Key1", "hmac-sha512", []string{"A.test.", "b.test"})
	if err != nil {
		t.Fatal(err)
	}
	if k.Name != "key1." || k.Algorithm != "hmac-sha512." || len(k.Secret) != 88 || !reflect.DeepEqual(k.Zones, []string{"a.test", "b.test"}) {
		t.Fatalf("CreateTSIGKey = %+v", k)
	}
	for _, tc := range []struct {
		name, alg string
		zones     []string
		is        error
		field     string
	}{
		{"key1", "", []string{"a.test"}, store.ErrExists, "name"},
		{"key2", "", []string{"missing.test"}, store.ErrNotFound, ""},
		{"key2", "hmac-md5", []string{"a.test"}, nil, "algorithm"},
		{"key2", "", nil, nil, "zones"},
		{"bad name..", "", []string{"a.test"}, nil, "name"},
	} {
		_, err := s.CreateTSIGKey(bg, tc.name, tc.alg, tc.zones)
		if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) || record.Field(err) != tc.field {
			t.Errorf("CreateTSIGKey(%q, %q, %q): %v (field %q); want %v on %q", tc.name, tc.alg, tc.zones, err, record.Field(err), tc.is, tc.field)
		}
	}
	k2, err := s.CreateTSIGKey(bg, "key0", "", []string{"a.test"})
	if err != nil || k2.Algorithm != "hmac-sha256." || len(k2.Secret) != 44 {
		t.Fatalf("CreateTSIGKey default = %+v, %v", k2, err)
	}
	keys, err := s.TSIGKeys(bg)
	if err != nil || !reflect.DeepEqual(keys, []store.TSIGKey{k2, k}) {
		t.Fatalf("TSIGKeys = %+v, %v", keys, err)
	}
	if err := s.DeleteTSIGKey(bg, "KEY1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteTSIGKey(bg, "key1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second DeleteTSIGKey: %v, want ErrNotFound", err)
	}
	if keys, err := s.TSIGKeys(bg); err != nil || !reflect.DeepEqual(keys, []store.TSIGKey{k2}) {
		t.Fatalf("TSIGKeys after delete = %+v, %v", keys, err)
	}
}

// TestConcurrentWrites: 50 writers × 100 records on one zone. Every write
// lands, bumps the serial once, and publishes one event, in order.
func TestConcurrentWrites(t *testing.T) {
	t.Parallel()
	const writers, each = 50, 100
	c := newClock(day(2024, 3, 5))
	s := newStoreAt(t, c)
	z := mustZone(t, s, "busy.test")
	start := mustData(t, s, "busy.test")

	sub, err := s.Subscribe(bg)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	type result struct {
		events []store.Event
		err    error
	}
	got := make(chan result, 1)
	go func() {
		var evs []store.Event
		timeout := time.After(60 * time.Second)
		for len(evs) < writers*each {
			select {
			case ev, ok := <-sub.C:
				if !ok {
					got <- result{evs, errors.New("subscription closed")}
					return
				}
				if ev.Kind == store.EventResync {
					got <- result{evs, errors.New("resync: events were lost")}
					return
				}
				if ev.Zone == "busy.test" && ev.Gen == z.Gen {
					evs = append(evs, ev)
				}
			case <-timeout:
				got <- result{evs, errors.New("timeout")}
				return
			}
		}
		got <- result{evs, nil}
	}()

	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				data := fmt.Sprintf(`"w-%d-%d"`, g, i)
				if _, err := s.AddRecord(bg, "busy.test", record.Record{Name: fmt.Sprintf("o%d", i%50), Type: "TXT", TTL: 300, Data: data}); err != nil {
					errs <- fmt.Errorf("writer %d record %d: %w", g, i, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	end := mustData(t, s, "busy.test")
	if n := len(end.Records); n != writers*each+2 {
		t.Fatalf("%d records, want %d + 2 NS", n, writers*each)
	}
	seen := map[string]bool{}
	ids := map[string]bool{}
	for _, r := range end.Records {
		seen[r.Type+" "+r.Data] = true
		ids[r.ID] = true
	}
	if len(ids) != len(end.Records) {
		t.Fatalf("%d distinct ids for %d records", len(ids), len(end.Records))
	}
	for g := 0; g < writers; g++ {
		for i := 0; i < each; i++ {
			if k := fmt.Sprintf(`TXT "w-%d-%d"`, g, i); !seen[k] {
				t.Fatalf("record %s missing", k)
			}
		}
	}
	if end.Serial != start.Serial+writers*each || end.Version != start.Version+writers*each {
		t.Fatalf("serial %d → %d, version %d → %d; want both +%d", start.Serial, end.Serial, start.Version, end.Version, writers*each)
	}

	res := <-got
	if res.err != nil {
		t.Fatalf("subscriber: %v after %d events", res.err, len(res.events))
	}
	for i, ev := range res.events {
		if ev.Kind != store.EventZone || ev.Version != start.Version+uint64(i)+1 {
			t.Fatalf("event %d: %+v; want version %d", i, ev, start.Version+uint64(i)+1)
		}
		if i > 0 && ev.Serial <= res.events[i-1].Serial {
			t.Fatalf("event %d: serial %d after %d", i, ev.Serial, res.events[i-1].Serial)
		}
	}
	if lastEv := res.events[len(res.events)-1]; lastEv.Serial != end.Serial {
		t.Fatalf("last event serial %d, zone serial %d", lastEv.Serial, end.Serial)
	}
	// Nothing more for this zone is pending.
	select {
	case ev := <-sub.C:
		if ev.Zone == "busy.test" && ev.Gen == z.Gen {
			t.Fatalf("extra event %+v", ev)
		}
	default:
	}
}

// TestFollowReconnect restarts Redis under a follower: it keeps its data
// while Redis is down and converges on what Redis holds afterwards.
func TestFollowReconnect(t *testing.T) {
	t.Parallel()
	srv := storetest.Start(t)
	// Keep every write across the restart (the default everysec may lose
	// the last second).
	if err := rawClient(t, srv.URL(0)).ConfigSet(bg, "appendfsync", "always").Err(); err != nil {
		t.Fatal(err)
	}
	s := srv.Open(t, storetest.Options)
	withAccount(t, s)
	for _, n := range []string{"a.test", "b.test", "c.test"} {
		mustZone(t, s, n)
	}
	rec := mustAdd(t, s, "a.test", "www", "A", 300, "192.0.2.1")

	r := newRecorder()
	follow(t, s, r)
	r.waitFor(t, 10*time.Second, "the first snapshot", func() bool { return inSync(t, s, r) && len(r.state()) == 3 })
	held := r.state()

	srv.Stop()
	if _, err := s.AddRecord(bg, "a.test", record.Record{Name: "x", Type: "A", TTL: 300, Data: "192.0.2.9"}); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("AddRecord with Redis down: %v, want ErrUnavailable", err)
	}
	if err := s.Ping(bg); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Ping with Redis down: %v, want ErrUnavailable", err)
	}
	if !reflect.DeepEqual(r.state(), held) {
		t.Fatalf("follower lost its data while Redis was down")
	}

	srv.Restart(t)
	// Writes after the restart: a new zone, a changed record, a deletion.
	var werr error
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) { // the pool may hand out a dead connection first
		if _, werr = s.CreateZone(bg, "d.test", "acme"); !errors.Is(werr, store.ErrUnavailable) {
			break
		}
	}
	if werr != nil && !errors.Is(werr, store.ErrExists) { // ErrExists: a retry after a lost reply
		t.Fatalf("CreateZone after restart: %v", werr)
	}
	if _, err := s.UpdateRecord(bg, "a.test", rec.ID, record.Record{Name: "www", Type: "A", TTL: 300, Data: "192.0.2.2"}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteZone(bg, "b.test"); err != nil {
		t.Fatal(err)
	}

	r.waitFor(t, 20*time.Second, "the follower in sync after the restart", func() bool { return inSync(t, s, r) })
	got := r.state()
	names := make([]string, 0, len(got))
	for n := range got {
		names = append(names, n)
	}
	sort.Strings(names)
	if !reflect.DeepEqual(names, []string{"a.test", "c.test", "d.test"}) {
		t.Fatalf("follower holds %q", names)
	}
	if got := brief(got["a.test"].Records); !reflect.DeepEqual(got, []string{"@ NS ns1.fwd.test.", "@ NS ns2.fwd.test.", "www A 192.0.2.2"}) {
		t.Fatalf("a.test records %q", got)
	}
}
