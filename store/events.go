package store

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// EventKind says what an Event reports.
type EventKind int

// The kinds of Event.
const (
	// EventZone: a zone was created or changed; Zone, Version, Serial, Gen set.
	EventZone EventKind = iota + 1
	// EventZoneDeleted: a zone was deleted; Zone and Gen set.
	EventZoneDeleted
	// EventTSIG: a TSIG key was created or deleted; Key set.
	EventTSIG
	// EventResync: the subscription was re-established after a connection
	// loss; events may have been missed, so reload everything.
	EventResync
)

// Event is one change notice, published by the write that made the change.
type Event struct {
	Kind    EventKind
	Zone    string
	Version uint64
	Serial  uint32
	Gen     string
	Key     string
}

// parseEvent reads "Z zone ver serial gen", "D zone gen" or "K key".
func parseEvent(payload string) (Event, bool) {
	f := strings.Fields(payload)
	switch {
	case len(f) == 5 && f[0] == "Z":
		return Event{Kind: EventZone, Zone: f[1], Version: parseUint64(f[2]), Serial: parseUint32(f[3]), Gen: f[4]}, true
	case len(f) == 3 && f[0] == "D":
		return Event{Kind: EventZoneDeleted, Zone: f[1], Gen: f[2]}, true
	case len(f) == 2 && f[0] == "K":
		return Event{Kind: EventTSIG, Key: f[1]}, true
	}
	return Event{}, false
}

// Subscription delivers change events in the order they were published.
// After a reconnect it delivers EventResync first.
type Subscription struct {
	// C delivers the events; it is closed when the subscription ends.
	C      <-chan Event
	ps     *redis.PubSub
	cancel context.CancelFunc
}

// Close ends the subscription.
func (sub *Subscription) Close() error {
	sub.cancel()
	return sub.ps.Close()
}

// Subscribe subscribes to change events and returns once Redis confirmed
// the subscription: every write that completes after Subscribe returns is
// delivered. A slow reader stalls the subscription rather than losing events.
func (s *Store) Subscribe(ctx context.Context) (*Subscription, error) {
	ps := s.rdb.Subscribe(ctx, s.events)
	if _, err := ps.Receive(ctx); err != nil {
		ps.Close()
		return nil, unavailable(err)
	}
	in := ps.ChannelWithSubscriptions(
		redis.WithChannelSize(1024),
		redis.WithChannelHealthCheckInterval(time.Second),
		redis.WithChannelSendTimeout(time.Hour),
	)
	out := make(chan Event, 1024)
	cctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(out)
		for {
			var msg any
			select {
			case <-cctx.Done():
				return
			case m, ok := <-in:
				if !ok {
					return
				}
				msg = m
			}
			var ev Event
			switch m := msg.(type) {
			case *redis.Subscription:
				if m.Kind != "subscribe" {
					continue
				}
				ev = Event{Kind: EventResync}
			case *redis.Message:
				var ok bool
				if ev, ok = parseEvent(m.Payload); !ok {
					slog.Warn("store event unknown", "payload", m.Payload)
					continue
				}
			default:
				continue
			}
			select {
			case out <- ev:
			case <-cctx.Done():
				return
			}
		}
	}()
	return &Subscription{C: out, ps: ps, cancel: cancel}, nil
}

// Follower keeps an in-memory copy of the zones. Follow calls its methods
// from one goroutine, never concurrently.
type Follower interface {
	// Load replaces the whole copy with a snapshot.
	Load(zones []ZoneData)
	// Update adds or replaces one zone.
	Update(zone ZoneData)
	// Delete removes one zone.
	Delete(zone string)
}

// KeyFollower is a Follower that also keeps the TSIG keys; Follow calls
// Keys with all keys at every load and after every key change.
type KeyFollower interface {
	Follower
	Keys(keys []TSIGKey)
}

// FollowOptions tune Follow.
type FollowOptions struct {
	// Resync is how often the follower compares its versions with Redis,
	// to catch anything missed; default 5 minutes.
	Resync time.Duration
	// Retry is the first delay before retrying a failed read; default
	// 200 ms, doubling to 5 s.
	Retry time.Duration
}

// Follow keeps f current until ctx ends: it subscribes, loads a snapshot,
// then applies each event by re-reading the zone it names, skipping stale
// events by version. After a reconnect it reloads everything. While Redis is
// unreachable f keeps what it has, and Follow retries with backoff. Follow
// returns ctx's error.
func (s *Store) Follow(ctx context.Context, f Follower, o FollowOptions) error {
	if o.Resync <= 0 {
		o.Resync = 5 * time.Minute
	}
	if o.Retry <= 0 {
		o.Retry = 200 * time.Millisecond
	}
	fl := &follow{s: s, f: f, o: o, held: map[string]held{}}
	delay := o.Retry
	for ctx.Err() == nil {
		sub, err := s.Subscribe(ctx)
		if err != nil {
			slog.Warn("store subscribe failed", "err", err, "retry", delay)
			sleep(ctx, delay)
			delay = min(2*delay, 5*time.Second)
			continue
		}
		delay = o.Retry
		fl.run(ctx, sub)
		sub.Close()
	}
	return ctx.Err()
}

type held struct {
	version uint64
	gen     string
}

type follow struct {
	s     *Store
	f     Follower
	o     FollowOptions
	held  map[string]held
	dirty map[string]bool // zones to re-read; nil when a full load is due
}

func (fl *follow) run(ctx context.Context, sub *Subscription) {
	fl.dirty = nil
	delay := fl.o.Retry
	retry := time.NewTimer(0)
	defer retry.Stop()
	resync := time.NewTicker(fl.o.Resync)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-sub.C:
			if !ok {
				return
			}
			fl.note(ev)
			if fl.dirty != nil && len(fl.dirty) < 64 {
				fl.sync(ctx) // fast path: apply now
				if fl.dirty != nil && len(fl.dirty) == 0 {
					continue
				}
			}
			retry.Reset(0)
		case <-resync.C:
			fl.reconcile(ctx)
		case <-retry.C:
			if fl.sync(ctx) {
				delay = fl.o.Retry
			} else {
				retry.Reset(delay)
				delay = min(2*delay, 5*time.Second)
			}
		}
	}
}

// note records what an event makes stale.
func (fl *follow) note(ev Event) {
	switch ev.Kind {
	case EventResync:
		fl.dirty = nil
	case EventZone:
		h, ok := fl.held[ev.Zone]
		if fl.dirty != nil && (!ok || h.gen != ev.Gen || h.version < ev.Version) {
			fl.dirty[ev.Zone] = true
		}
	case EventZoneDeleted:
		if fl.dirty != nil {
			fl.dirty[ev.Zone] = true
		}
	case EventTSIG:
		if fl.dirty != nil {
			fl.dirty[""] = true // "" stands for the keys
		}
	}
}

// sync performs the pending full load or zone re-reads; false if Redis
// failed (what is pending stays pending).
func (fl *follow) sync(ctx context.Context) bool {
	if fl.dirty == nil {
		zones, err := fl.s.LoadAll(ctx)
		if err == nil {
			err = fl.keys(ctx)
		}
		if err != nil {
			slog.Warn("store load failed", "err", err)
			return false
		}
		fl.held = make(map[string]held, len(zones))
		for _, z := range zones {
			fl.held[z.Name] = held{z.Version, z.Gen}
		}
		fl.f.Load(zones)
		fl.dirty = map[string]bool{}
		slog.Info("store loaded", "zones", len(zones))
		return true
	}
	if fl.dirty[""] {
		if err := fl.keys(ctx); err != nil {
			slog.Warn("store load keys failed", "err", err)
			return false
		}
		delete(fl.dirty, "")
	}
	if len(fl.dirty) == 0 {
		return true
	}
	names := make([]string, 0, len(fl.dirty))
	for n := range fl.dirty {
		names = append(names, n)
	}
	zs, err := fl.s.readZones(ctx, names)
	if err != nil {
		slog.Warn("store read zones failed", "zones", len(names), "err", err)
		return false
	}
	for i, n := range names {
		delete(fl.dirty, n)
		z := zs[i]
		h, ok := fl.held[n]
		switch {
		case z == nil && ok:
			delete(fl.held, n)
			fl.f.Delete(n)
		case z != nil && (!ok || h.gen != z.Gen || h.version < z.Version):
			fl.held[n] = held{z.Version, z.Gen}
			fl.f.Update(*z)
		}
	}
	return true
}

func (fl *follow) keys(ctx context.Context) error {
	kf, ok := fl.f.(KeyFollower)
	if !ok {
		return nil
	}
	keys, err := fl.s.TSIGKeys(ctx)
	if err != nil {
		return err
	}
	kf.Keys(keys)
	return nil
}

// reconcile compares held versions with Redis and marks what differs, in
// case an event was lost without a reconnect.
func (fl *follow) reconcile(ctx context.Context) {
	if fl.dirty == nil {
		return
	}
	names, err := fl.s.rdb.SMembers(ctx, keyZones).Result()
	if err != nil {
		return
	}
	cmds := make([]*redis.SliceCmd, len(names))
	_, err = fl.s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, n := range names {
			cmds[i] = p.HMGet(ctx, keyZone(n), "ver", "gen")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return
	}
	seen := make(map[string]bool, len(names))
	for i, n := range names {
		v := cmds[i].Val()
		if len(v) != 2 || v[0] == nil {
			continue
		}
		seen[n] = true
		ver, _ := v[0].(string)
		gen, _ := v[1].(string)
		if h, ok := fl.held[n]; !ok || h.gen != gen || h.version != parseUint64(ver) {
			fl.dirty[n] = true
		}
	}
	for n := range fl.held {
		if !seen[n] {
			fl.dirty[n] = true
		}
	}
	fl.sync(ctx)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
