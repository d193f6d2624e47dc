package store

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxport/mxport/store/record"
)

// MaxDeliveries is how many events a zone's delivery log keeps.
const MaxDeliveries = 1000

// Delivery is one event of a zone's mail: accepted, delivered, deferred
// (with the remote reply), bounced or expired.
type Delivery struct {
	Time   time.Time `json:"time"`
	ID     string    `json:"id"`    // queue id
	Event  string    `json:"event"` // accepted, delivered, deferred, bounced, expired
	From   string    `json:"from"`
	Rcpt   string    `json:"rcpt,omitempty"`
	Target string    `json:"target,omitempty"` // host:port tried
	Code   int       `json:"code,omitempty"`   // SMTP reply code
	Reply  string    `json:"reply,omitempty"`  // the remote's reply, or why it failed
}

// LogDelivery appends an event to zone's delivery log, which keeps the
// newest MaxDeliveries.
func (s *Store) LogDelivery(ctx context.Context, zone string, d Delivery) error {
	return s.LogDeliveries(ctx, []ZoneDelivery{{Zone: zone, Delivery: d}})
}

// ZoneDelivery is one event of a zone's delivery log, for LogDeliveries.
type ZoneDelivery struct {
	Zone string
	Delivery
}

// LogDeliveries appends events to their zones' delivery logs in one round
// trip, in order; each log keeps its newest MaxDeliveries. An event for a
// zone name that is not valid makes the whole call fail with ErrNotFound
// before anything is written.
func (s *Store) LogDeliveries(ctx context.Context, events []ZoneDelivery) error {
	type zoneLog struct {
		key  string
		vals []any
	}
	var logs []*zoneLog
	byZone := make(map[string]*zoneLog)
	for _, e := range events {
		zn, err := record.ZoneName(e.Zone)
		if err != nil {
			return fmt.Errorf("log delivery: zone %q: %w", e.Zone, ErrNotFound)
		}
		if e.Time.IsZero() {
			e.Time = s.opts.Now().UTC()
		}
		buf, err := json.Marshal(e.Delivery)
		if err != nil {
			return fmt.Errorf("log delivery %s: %w", zn, err)
		}
		l := byZone[zn]
		if l == nil {
			l = &zoneLog{key: keyDeliveries(zn)}
			byZone[zn] = l
			logs = append(logs, l)
		}
		l.vals = append(l.vals, buf)
	}
	if len(logs) == 0 {
		return nil
	}
	// Not a transaction: the keys of several zones may live on several
	// Cluster nodes. Each zone's push comes before its trim.
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, l := range logs {
			p.LPush(ctx, l.key, l.vals...)
			p.LTrim(ctx, l.key, 0, MaxDeliveries-1)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("log %d deliveries: %w", len(events), unavailable(err))
	}
	return nil
}

// Deliveries returns up to n events of zone's delivery log, newest first.
func (s *Store) Deliveries(ctx context.Context, zone string, n int) ([]Delivery, error) {
	zn, err := record.ZoneName(zone)
	if err != nil {
		return nil, fmt.Errorf("zone %q: %w", zone, ErrNotFound)
	}
	if n <= 0 || n > MaxDeliveries {
		n = MaxDeliveries
	}
	vals, err := s.rdb.LRange(ctx, keyDeliveries(zn), 0, int64(n-1)).Result()
	if err != nil {
		return nil, fmt.Errorf("read deliveries %s: %w", zn, unavailable(err))
	}
	out := make([]Delivery, 0, len(vals))
	for _, v := range vals {
		var d Delivery
		if err := json.Unmarshal([]byte(v), &d); err != nil {
			continue // a corrupt entry is skipped, not fatal for the log
		}
		out = append(out, d)
	}
	return out, nil
}

// Control is an instruction to every node's forwarder, sent through the
// store so that all nodes hear it.
type Control struct {
	// Kind is "flush" (retry Zone's waiting mail now; every zone when Zone
	// is "") or "remove" (drop queued message ID).
	Kind string `json:"kind"`
	Zone string `json:"zone,omitempty"`
	ID   string `json:"id,omitempty"`
}

// PublishControl sends c to every node.
func (s *Store) PublishControl(ctx context.Context, c Control) error {
	switch c.Kind {
	case "flush", "remove":
	default:
		return &record.FieldError{Field: "kind", Msg: fmt.Sprintf("unknown control %q", c.Kind)}
	}
	buf, _ := json.Marshal(c)
	if err := s.rdb.Publish(ctx, s.events+":control", buf).Err(); err != nil {
		return fmt.Errorf("publish control: %w", unavailable(err))
	}
	return nil
}

// SubscribeControl delivers control messages published after it returns,
// until ctx ends (then the channel is closed). Across a Redis outage
// messages are lost: a flush is a hint, the retry schedule the guarantee.
func (s *Store) SubscribeControl(ctx context.Context) (<-chan Control, error) {
	ps := s.rdb.Subscribe(ctx, s.events+":control")
	if _, err := ps.Receive(ctx); err != nil {
		ps.Close()
		return nil, unavailable(err)
	}
	out := make(chan Control, 64)
	go func() {
		defer close(out)
		defer ps.Close()
		in := ps.Channel(redis.WithChannelHealthCheckInterval(time.Second))
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-in:
				if !ok {
					return
				}
				var c Control
				if err := json.Unmarshal([]byte(m.Payload), &c); err != nil {
					slog.Warn("store control unknown", "payload", m.Payload)
					continue
				}
				select {
				case out <- c:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// QueueItem is one queued message as the queue mirror shows it.
type QueueItem struct {
	ID          string    `json:"id"`
	Node        string    `json:"node"` // the --hostname holding it on disk
	Zone        string    `json:"zone"`
	From        string    `json:"from"`
	Rcpts       []string  `json:"rcpts"`
	Size        int64     `json:"size"`
	Arrived     time.Time `json:"arrived"`
	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"next_attempt"`
	LastReply   string    `json:"last_reply,omitempty"`
}

func keyQueue(zone string) string { return "mx:q:{" + zone + "}" } // hash: id -> QueueItem JSON

// MirrorQueued records (or updates) a queued message in the queue mirror.
// The mirror is a view for the panel and CLI; the spool on disk decides.
func (s *Store) MirrorQueued(ctx context.Context, it QueueItem) error {
	return s.Mirror(ctx, []MirrorOp{{Item: it}})
}

// MirrorGone removes a message from the queue mirror.
func (s *Store) MirrorGone(ctx context.Context, zone, id string) error {
	return s.Mirror(ctx, []MirrorOp{{Item: QueueItem{ID: id, Zone: zone}, Gone: true}})
}

// MirrorOp is one change of the queue mirror: Item queued or updated, or
// (Gone) the message Item.ID of Item.Zone removed.
type MirrorOp struct {
	Item QueueItem
	Gone bool
}

// Mirror applies changes to the queue mirror in one round trip, in order.
func (s *Store) Mirror(ctx context.Context, ops []MirrorOp) error {
	if len(ops) == 0 {
		return nil
	}
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, op := range ops {
			if op.Gone {
				p.HDel(ctx, keyQueue(op.Item.Zone), op.Item.ID)
				continue
			}
			buf, err := json.Marshal(op.Item)
			if err != nil {
				return err
			}
			p.HSet(ctx, keyQueue(op.Item.Zone), op.Item.ID, buf)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("mirror %d queue changes: %w", len(ops), unavailable(err))
	}
	return nil
}

// Queued lists the mirrored queue of zone, oldest first.
func (s *Store) Queued(ctx context.Context, zone string) ([]QueueItem, error) {
	vals, err := s.rdb.HVals(ctx, keyQueue(zone)).Result()
	if err != nil {
		return nil, fmt.Errorf("read queue %s: %w", zone, unavailable(err))
	}
	out := make([]QueueItem, 0, len(vals))
	for _, v := range vals {
		var it QueueItem
		if json.Unmarshal([]byte(v), &it) == nil {
			out = append(out, it)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Arrived.Before(out[j].Arrived) })
	return out, nil
}
