// Package queue schedules deliveries of the messages in the spool: a heap
// of due times, one delivery per zone at a time, limits per destination and
// overall, the retry schedule until the maximum age, and bounces. Routes are
// bound late: every attempt asks the Router for the zone's current targets.
// The spool is the truth; the store's queue mirror is only a view.
package queue

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mxport/mxport/forwarder/batch"
	"github.com/mxport/mxport/forwarder/courier"
	"github.com/mxport/mxport/forwarder/dsn"
	"github.com/mxport/mxport/forwarder/route"
	"github.com/mxport/mxport/forwarder/spool"
	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
)

// Router finds where mail goes now (forwarder/route satisfies it through
// the forwarder's wiring).
type Router interface {
	// Route is the zone's current forwarding route; nil when not forwarded.
	Route(zone string) []record.Target
	// Addrs resolves a target; an error is temporary.
	Addrs(ctx context.Context, t record.Target) ([]netip.AddrPort, error)
	// MX finds the mail exchangers of a domain that is not ours (bounces).
	MX(ctx context.Context, domain string) ([]record.Target, error)
}

// Courier makes one delivery attempt (forwarder/courier.Deliver).
type Courier func(ctx context.Context, host, addr string, env courier.Envelope, body io.Reader) ([]courier.Result, error)

// Mirror is the store's queue view (store.Store satisfies it).
type Mirror interface {
	Mirror(ctx context.Context, ops []store.MirrorOp) error
}

// Config configures a Queue.
type Config struct {
	Spool    *spool.Spool
	Router   Router
	Courier  Courier
	Hostname string // reporting MTA of bounces, the mirror's node name
	// Retry is the delay before each retry, the last repeating
	// (--retry-schedule); MaxAge is when waiting mail bounces
	// (--max-queue-age); DelayWarning is when a "delayed" DSN goes out
	// (default 4 h, RFC 3461 allows the sender to refuse with NOTIFY).
	Retry        []time.Duration
	MaxAge       time.Duration
	DelayWarning time.Duration
	// MaxDeliveries bounds concurrent deliveries (default 20);
	// MaxPerTarget bounds them per host:port and MaxPerZone per zone
	// (default 10 each: half of Postfix's default destination concurrency;
	// a home server gets a few connections, not a flood).
	MaxDeliveries int
	MaxPerTarget  int
	MaxPerZone    int
	// AttemptTimeout bounds one attempt (default 10 min).
	AttemptTimeout time.Duration
	// Log records delivery events (the store's delivery log); optional.
	Log func(zone string, d store.Delivery)
	// Mirror is told of every queued message; optional.
	Mirror Mirror
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Metrics counts outcomes and the queue's size; optional.
	Metrics *Metrics
}

// Queue is the delivery scheduler. Its methods are safe for concurrent use.
type Queue struct {
	cfg     Config
	mu      sync.Mutex
	items   map[string]*item   // by id: every message on disk
	due     dueHeap            // items waiting, by next attempt
	busy    map[string]int     // deliveries running per zone
	parked  map[string][]*item // due items waiting for a busy zone, in due order
	running int
	perDest map[string]*slots // delivery slots per host:port with an attempt holding or waiting for one
	kick    chan struct{}
	mirrors chan store.MirrorOp // to the one mirror writer, in order
	wg      sync.WaitGroup
}

type item struct {
	m       *spool.Meta
	view    spool.Meta // a copy of m for List, refreshed when no delivery runs
	index   int        // in the heap; -1 when not in it
	active  bool       // a delivery runs
	removed bool       // removed while active
}

// New returns a queue; Load fills it from the spool, Run delivers.
func New(cfg Config) *Queue {
	if len(cfg.Retry) == 0 {
		cfg.Retry = []time.Duration{time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 20 * time.Minute, 30 * time.Minute, time.Hour}
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 14 * 24 * time.Hour
	}
	if cfg.DelayWarning <= 0 {
		cfg.DelayWarning = 4 * time.Hour
	}
	if cfg.MaxDeliveries <= 0 {
		cfg.MaxDeliveries = 20
	}
	if cfg.MaxPerTarget <= 0 {
		cfg.MaxPerTarget = 10
	}
	if cfg.MaxPerZone <= 0 {
		cfg.MaxPerZone = 10
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = 10 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Queue{cfg: cfg, items: map[string]*item{}, busy: map[string]int{}, parked: map[string][]*item{},
		perDest: map[string]*slots{}, mirrors: make(chan store.MirrorOp, 10000), kick: make(chan struct{}, 1)}
}

// Load rebuilds the queue from the spool (spool.Scan). Messages due
// already are spread over a short boot delay, so a restart does not send a
// burst (maddy, chasquid).
func (q *Queue) Load() error {
	metas, err := q.cfg.Spool.Scan()
	if err != nil {
		return fmt.Errorf("queue: load: %w", err)
	}
	now := q.cfg.Now()
	for _, m := range metas {
		if m.NextAttempt.Before(now) {
			m.NextAttempt = now.Add(time.Duration(rand.Int64N(int64(2 * time.Second))))
		}
		q.add(m)
	}
	slog.Info("queue loaded", "messages", len(metas))
	return nil
}

// Enqueue takes a message the spool holds (Put returned nil) and makes it
// due now.
func (q *Queue) Enqueue(m *spool.Meta) {
	c := *m // the queue owns its copy: the caller may go on reading m
	c.Rcpts = slices.Clone(m.Rcpts)
	m = &c
	if m.NextAttempt.IsZero() {
		m.NextAttempt = q.cfg.Now()
	}
	q.add(m)
}

func (q *Queue) add(m *spool.Meta) {
	q.mu.Lock()
	it := &item{m: m, index: -1}
	it.refresh()
	q.items[m.ID] = it
	heap.Push(&q.due, it)
	q.cfg.Metrics.setSize(len(q.items))
	// Under q.mu: once it is unlocked a delivery may start and change m.
	q.mirror(m)
	q.mu.Unlock()
	q.wake()
}

func (q *Queue) wake() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// Flush makes every waiting message of zone due now ("" = every zone): the
// home server is back (dyndns update, "retry now", queue flush).
func (q *Queue) Flush(zone string) int {
	q.mu.Lock()
	now, n := q.cfg.Now(), 0
	for _, it := range q.items {
		if it.index >= 0 && (zone == "" || it.m.Zone == zone) {
			it.m.NextAttempt, it.view.NextAttempt = now, now
			heap.Fix(&q.due, it.index)
			n++
		}
	}
	q.mu.Unlock()
	if n > 0 {
		slog.Info("queue flush", "zone", zone, "messages", n)
		q.wake()
	}
	return n
}

// ErrNotFound: no such message in the queue.
var ErrNotFound = errors.New("queue: no such message")

// Remove drops a message without delivering it or bouncing it (operator
// action). A message being delivered is dropped when the attempt ends.
func (q *Queue) Remove(id string) error {
	q.mu.Lock()
	it, ok := q.items[id]
	if !ok {
		q.mu.Unlock()
		return ErrNotFound
	}
	if it.active {
		it.removed = true
		q.mu.Unlock()
		return nil
	}
	if it.index >= 0 {
		heap.Remove(&q.due, it.index)
	}
	delete(q.items, id)
	q.cfg.Metrics.setSize(len(q.items))
	q.mu.Unlock()
	slog.Info("queue remove", "id", id, "zone", it.m.Zone)
	return q.drop(it.m)
}

// List returns copies of the queued messages' metas, oldest first.
func (q *Queue) List() []spool.Meta {
	q.mu.Lock()
	out := make([]spool.Meta, 0, len(q.items))
	for _, it := range q.items {
		m := it.view
		m.Rcpts = slices.Clone(m.Rcpts)
		out = append(out, m)
	}
	q.mu.Unlock()
	slices.SortFunc(out, func(a, b spool.Meta) int { return a.Arrived.Compare(b.Arrived) })
	return out
}

// Len is the number of messages queued.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// Run delivers until ctx ends, then waits for running deliveries.
func (q *Queue) Run(ctx context.Context) {
	if q.cfg.Mirror != nil {
		mirrored := make(chan struct{})
		go func() { defer close(mirrored); q.writeMirror(ctx) }()
		defer func() { <-mirrored }()
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := q.dispatch(ctx)
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			q.wg.Wait()
			return
		case <-q.kick:
		case <-timer.C:
		}
	}
}

// dispatch starts every due delivery it may and returns how long until the
// next one is due.
func (q *Queue) dispatch(ctx context.Context) time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.cfg.Now()
	// Parked items are due: they go first, as their zones free up.
	for zone, its := range q.parked {
		for len(its) > 0 && q.busy[zone] < q.cfg.MaxPerZone && q.running < q.cfg.MaxDeliveries {
			it := its[0]
			its = its[1:]
			if q.items[it.m.ID] == it { // not removed meanwhile
				q.start(ctx, it)
			}
		}
		if len(its) == 0 {
			delete(q.parked, zone)
		} else {
			q.parked[zone] = its
		}
	}
	for q.due.Len() > 0 && q.running < q.cfg.MaxDeliveries {
		it := q.due[0]
		if wait := it.m.NextAttempt.Sub(now); wait > 0 {
			return wait
		}
		heap.Pop(&q.due)
		if q.busy[it.m.Zone] >= q.cfg.MaxPerZone {
			// Park it with its zone: it is started when a delivery
			// of the zone ends, without passing the heap again.
			q.parked[it.m.Zone] = append(q.parked[it.m.Zone], it)
			continue
		}
		q.start(ctx, it)
	}
	if q.due.Len() > 0 && q.running < q.cfg.MaxDeliveries {
		return max(0, q.due[0].m.NextAttempt.Sub(now))
	}
	return time.Hour
}

// start runs a delivery of it; q.mu is held.
func (q *Queue) start(ctx context.Context, it *item) {
	it.active = true
	q.busy[it.m.Zone]++
	q.running++
	q.wg.Add(1)
	go q.deliver(ctx, it)
}

// deliver runs one attempt of it and puts it back or drops it.
func (q *Queue) deliver(ctx context.Context, it *item) {
	defer q.wg.Done()
	done := q.attempt(ctx, it.m)
	q.mu.Lock()
	it.active = false
	if q.busy[it.m.Zone]--; q.busy[it.m.Zone] <= 0 {
		delete(q.busy, it.m.Zone)
	}
	q.running--
	removed := it.removed
	it.refresh()
	if done || removed {
		delete(q.items, it.m.ID)
		q.cfg.Metrics.setSize(len(q.items))
	} else {
		heap.Push(&q.due, it)
	}
	q.mu.Unlock()
	if removed && !done {
		q.drop(it.m)
	}
	q.wake()
}

// drop removes a message from the spool and the mirror.
func (q *Queue) drop(m *spool.Meta) error {
	if err := q.cfg.Spool.Remove(m.ID); err != nil {
		slog.Error("spool remove failed", "id", m.ID, "err", err)
		return err
	}
	q.toMirror(store.MirrorOp{Item: store.QueueItem{ID: m.ID, Zone: m.Zone}, Gone: true})
	return nil
}

// toMirror hands a write to the mirror writer without waiting: the mirror
// is a view, and Redis must never hold up a 250 or a delivery.
func (q *Queue) toMirror(op store.MirrorOp) {
	if q.cfg.Mirror == nil {
		return
	}
	select {
	case q.mirrors <- op:
	default:
		slog.Warn("queue mirror behind, update dropped", "id", op.Item.ID)
	}
}

// storeLinger is how long the mirror writer waits to batch changes (see
// batch.Drain): the mirror is a view, and may be this much behind.
const storeLinger = 20 * time.Millisecond

// writeMirror applies mirror writes in order, in batches, until ctx ends,
// then what is left with a short deadline.
func (q *Queue) writeMirror(ctx context.Context) {
	batch.Drain(ctx, q.mirrors, 256, storeLinger, func(ops []store.MirrorOp) {
		wctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := q.cfg.Mirror.Mirror(wctx, ops); err != nil {
			slog.Warn("queue mirror failed", "changes", len(ops), "err", err)
		}
	})
}

func (q *Queue) mirror(m *spool.Meta) {
	if q.cfg.Mirror == nil {
		return
	}
	var rcpts []string
	for _, r := range m.Rcpts {
		if r.State == spool.Pending {
			rcpts = append(rcpts, r.Addr)
		}
	}
	it := store.QueueItem{ID: m.ID, Node: q.cfg.Hostname, Zone: m.Zone, From: m.From, Rcpts: rcpts, Size: m.Size,
		Arrived: m.Arrived, Attempts: m.Attempts, NextAttempt: m.NextAttempt, LastReply: m.LastReply}
	q.toMirror(store.MirrorOp{Item: it})
}

func (q *Queue) log(m *spool.Meta, d store.Delivery) {
	q.cfg.Metrics.outcome(d.Event)
	if q.cfg.Log == nil {
		return
	}
	d.ID, d.From = m.ID, m.From
	d.Time = q.cfg.Now().UTC()
	q.cfg.Log(m.Zone, d)
}

// retryDelay is the delay after attempt n (1-based) with ±10 % jitter, so
// messages deferred together do not retry together.
func (q *Queue) retryDelay(n int) time.Duration {
	d := q.cfg.Retry[min(n-1, len(q.cfg.Retry)-1)]
	j := time.Duration(rand.Int64N(int64(d)/5+1)) - d/10
	return d + j
}

// attempt makes one delivery attempt of m; true when m is settled (every
// recipient delivered or failed) and gone from the spool.
func (q *Queue) attempt(ctx context.Context, m *spool.Meta) bool {
	now := q.cfg.Now()
	// Save a retry before dialing, so a crash mid-attempt cannot cause a
	// retry storm (mox). A first attempt is not saved: after a crash it is
	// made again at start, which is when it was due anyway, and the
	// common case (delivered at once) costs no spool write.
	m.Attempts++
	m.NextAttempt = now.Add(q.retryDelay(m.Attempts))
	if m.Attempts > 1 {
		if err := q.cfg.Spool.Update(m); err != nil {
			slog.Error("spool update failed", "id", m.ID, "err", err)
			m.NextAttempt = now.Add(q.cfg.Retry[0])
			return false
		}
	}
	ctx, cancel := context.WithTimeout(ctx, q.cfg.AttemptTimeout)
	defer cancel()
	lastReply := q.try(ctx, m)
	if lastReply != "" {
		m.LastReply = lastReply
	}
	var failed, pending []int
	for i, r := range m.Rcpts {
		switch r.State {
		case spool.Failed:
			failed = append(failed, i)
		case spool.Pending:
			pending = append(pending, i)
		}
	}
	age := q.cfg.Now().Sub(m.Arrived)
	if len(pending) > 0 && age >= q.cfg.MaxAge {
		for _, i := range pending {
			r := &m.Rcpts[i]
			r.State = spool.Failed
			if r.Reply == "" {
				r.Reply = "no delivery within " + q.cfg.MaxAge.String() + ": " + m.LastReply
			}
			q.log(m, store.Delivery{Event: "expired", Rcpt: r.Addr, Target: r.Target, Code: r.Code, Reply: r.Reply})
		}
		failed = append(failed, pending...)
		pending = nil
	}
	q.bounce(m, failed, dsn.Failed)
	if len(pending) == 0 {
		slog.Info("queue done", "id", m.ID, "zone", m.Zone, "attempts", m.Attempts)
		q.drop(m)
		return true
	}
	if !m.Delayed && age >= q.cfg.DelayWarning {
		m.Delayed = true
		q.bounce(m, pending, dsn.Delayed)
	}
	// Failed recipients are reported: from now on only pending ones count.
	if err := q.cfg.Spool.Update(m); err != nil {
		slog.Error("spool update failed", "id", m.ID, "err", err)
	}
	q.mirror(m)
	return false
}

// try delivers m's pending recipients to the first target that answers and
// returns the last error or reply text when nothing was delivered.
func (q *Queue) try(ctx context.Context, m *spool.Meta) string {
	targets, err := q.targets(ctx, m)
	if errors.Is(err, route.ErrNullMX) || errors.Is(err, route.ErrNoDomain) {
		// The bounce's destination cannot take mail: give up now.
		for i := range m.Rcpts {
			if r := &m.Rcpts[i]; r.State == spool.Pending {
				r.State, r.Code, r.Reply = spool.Failed, 550, err.Error()
				q.log(m, store.Delivery{Event: "bounced", Rcpt: r.Addr, Code: 550, Reply: err.Error()})
			}
		}
		return err.Error()
	}
	if err != nil {
		q.deferAll(m, "", 0, err.Error())
		return err.Error()
	}
	last := ""
	for _, t := range targets {
		addrs, err := q.cfg.Router.Addrs(ctx, t)
		if err != nil {
			last = fmt.Sprintf("%s: %v", t.Address(), err)
			continue
		}
		for _, a := range addrs {
			answered, reply := q.send(ctx, m, t, a)
			if answered {
				return reply
			}
			last = reply
		}
	}
	if last == "" {
		last = "no target answered"
	}
	q.deferAll(m, "", 0, last)
	return last
}

// targets are the hops for m: the zone's route for forwarded mail, the
// recipient domain's MX at port 25 for a bounce.
func (q *Queue) targets(ctx context.Context, m *spool.Meta) ([]record.Target, error) {
	if m.DSN {
		_, domain, _ := strings.Cut(m.Rcpts[0].Addr, "@")
		ts, err := q.cfg.Router.MX(ctx, domain)
		if err != nil {
			return nil, fmt.Errorf("mail exchangers of %s: %w", domain, err)
		}
		return ts, nil
	}
	ts := q.cfg.Router.Route(m.Zone)
	if len(ts) == 0 {
		// The zone is being edited, or no longer forwarded: wait;
		// only the maximum age turns this into a bounce.
		return nil, fmt.Errorf("zone %s has no forwarding route now", m.Zone)
	}
	return ts, nil
}

// send makes one SMTP transaction with one address; answered is false when
// no SMTP conversation took place (the next address is tried).
func (q *Queue) send(ctx context.Context, m *spool.Meta, t record.Target, a netip.AddrPort) (bool, string) {
	dest := a.String()
	sl := q.acquire(ctx, dest)
	if sl == nil {
		return false, dest + ": no delivery slot before the attempt's deadline"
	}
	defer q.release(dest, sl)
	body, err := q.cfg.Spool.Body(m.ID)
	if err != nil {
		return false, "spool: " + err.Error()
	}
	defer body.Close()
	// SMTPUTF8 is needed only when the envelope is not ASCII; clients set
	// it whenever we offer it (Go's net/smtp does), and a home server
	// without it must still get ASCII-addressed mail (as Postfix does).
	env := courier.Envelope{From: m.From, Ret: m.Ret, EnvID: m.EnvID, UTF8: m.UTF8 && !asciiEnvelope(m),
		Body8Bit: m.Body8Bit, Size: m.Size}
	var idx []int
	for i, r := range m.Rcpts {
		if r.State == spool.Pending {
			env.Rcpts = append(env.Rcpts, courier.Rcpt{Addr: r.Addr, Notify: r.Notify, ORcpt: r.ORcpt})
			idx = append(idx, i)
		}
	}
	start := q.cfg.Now()
	results, err := q.cfg.Courier(ctx, t.Host, dest, env, io.Reader(body))
	target := t.Host + ":" + fmt.Sprint(t.Port)
	if err != nil {
		slog.Info("attempt failed", "id", m.ID, "zone", m.Zone, "target", target, "addr", dest, "attempt", m.Attempts, "err", err, "dur", q.cfg.Now().Sub(start))
		return false, fmt.Sprintf("%s: %v", target, err)
	}
	last := ""
	for k, res := range results {
		if k >= len(idx) {
			break
		}
		r := &m.Rcpts[idx[k]]
		r.Code, r.Reply, r.Target = res.Code, res.Reply, target
		switch {
		case res.Delivered:
			r.State = spool.Delivered
			q.log(m, store.Delivery{Event: "delivered", Rcpt: r.Addr, Target: target, Code: res.Code, Reply: res.Reply})
			slog.Info("delivered", "id", m.ID, "zone", m.Zone, "rcpt", r.Addr, "target", target, "code", res.Code)
		case res.Permanent:
			r.State = spool.Failed
			q.log(m, store.Delivery{Event: "bounced", Rcpt: r.Addr, Target: target, Code: res.Code, Reply: res.Reply})
			slog.Info("bounced", "id", m.ID, "zone", m.Zone, "rcpt", r.Addr, "target", target, "code", res.Code, "reply", res.Reply)
		default:
			last = res.Reply
			q.log(m, store.Delivery{Event: "deferred", Rcpt: r.Addr, Target: target, Code: res.Code, Reply: res.Reply})
			slog.Info("deferred", "id", m.ID, "zone", m.Zone, "rcpt", r.Addr, "target", target, "code", res.Code, "reply", res.Reply)
		}
	}
	return true, last
}

func asciiEnvelope(m *spool.Meta) bool {
	isASCII := func(s string) bool {
		for i := 0; i < len(s); i++ {
			if s[i] >= 0x80 {
				return false
			}
		}
		return true
	}
	if !isASCII(m.From) {
		return false
	}
	for _, r := range m.Rcpts {
		if !isASCII(r.Addr) {
			return false
		}
	}
	return true
}

// deferAll records a temporary failure that reached no server.
func (q *Queue) deferAll(m *spool.Meta, target string, code int, reply string) {
	for i := range m.Rcpts {
		r := &m.Rcpts[i]
		if r.State == spool.Pending {
			r.Code, r.Reply = code, reply
			q.log(m, store.Delivery{Event: "deferred", Rcpt: r.Addr, Target: target, Code: code, Reply: reply})
		}
	}
	slog.Info("deferred", "id", m.ID, "zone", m.Zone, "attempt", m.Attempts, "err", reply, "next", m.NextAttempt)
}

// slots are one destination's delivery slots.
type slots struct {
	sem   chan struct{} // a token per delivery under way, MaxPerTarget at most
	users int           // attempts holding or waiting for a slot; at 0 the entry goes
}

// acquire waits for one of the destination's MaxPerTarget slots and returns
// them, for release; nil when ctx ended first.
func (q *Queue) acquire(ctx context.Context, dest string) *slots {
	q.mu.Lock()
	sl := q.perDest[dest]
	if sl == nil {
		sl = &slots{sem: make(chan struct{}, q.cfg.MaxPerTarget)}
		q.perDest[dest] = sl
	}
	sl.users++
	q.mu.Unlock()
	select {
	case sl.sem <- struct{}{}:
		return sl
	case <-ctx.Done():
		q.leave(dest, sl)
		return nil
	}
}

// release gives back a slot of dest taken by acquire.
func (q *Queue) release(dest string, sl *slots) {
	<-sl.sem
	q.leave(dest, sl)
}

// leave ends a use of dest's slots; the last one forgets dest, so that
// destinations no longer delivered to cost nothing.
func (q *Queue) leave(dest string, sl *slots) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if sl.users--; sl.users == 0 {
		delete(q.perDest, dest)
	}
}

// bounce queues a DSN to m's sender for the recipients at idx, when the
// sender is not null, m is not itself a bounce, and they asked for it.
func (q *Queue) bounce(m *spool.Meta, idx []int, action dsn.Action) {
	if len(idx) == 0 || m.From == "" || m.DSN {
		return
	}
	r := dsn.Report{ReportingMTA: q.cfg.Hostname, From: m.From, Arrival: m.Arrived, EnvID: m.EnvID,
		QueueID: m.ID, ReturnFull: m.Ret == "FULL", Now: q.cfg.Now()}
	for _, i := range idx {
		rc := m.Rcpts[i]
		if !dsn.Wanted(rc.Notify, action) {
			continue
		}
		rr := dsn.Recipient{Addr: rc.Addr, ORcpt: rc.ORcpt, Action: action, LastAttempt: q.cfg.Now()}
		switch {
		case rc.Code >= 500:
			rr.Status = dsn.StatusOf(rc.Code, rc.Reply)
		case action == dsn.Failed:
			rr.Status = "5.4.7" // delivery time expired (RFC 3463)
		case rc.Code > 0:
			rr.Status = dsn.StatusOf(rc.Code, rc.Reply)
		default:
			rr.Status = "4.4.1" // no answer from host
		}
		if rc.Code > 0 {
			rr.Diagnostic = rc.Reply
			rr.RemoteMTA, _, _ = strings.Cut(rc.Target, ":")
		}
		if action == dsn.Delayed {
			rr.WillRetryUntil = m.Arrived.Add(q.cfg.MaxAge)
		}
		r.Recipients = append(r.Recipients, rr)
	}
	if len(r.Recipients) == 0 {
		return
	}
	if err := q.queueReport(m, r); err != nil {
		slog.Error("dsn failed", "id", m.ID, "to", m.From, "err", err)
	}
}

// queueReport writes the report into the spool as a new message from <>.
func (q *Queue) queueReport(m *spool.Meta, r dsn.Report) error {
	orig, err := q.cfg.Spool.Body(m.ID)
	if err != nil {
		return err
	}
	defer orig.Close()
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(dsn.Build(pw, r, orig)) }()
	b := &spool.Meta{ID: q.cfg.Spool.NewID(), Zone: m.Zone, From: "", DSN: true, Arrived: q.cfg.Now(),
		Body8Bit: m.Body8Bit || m.UTF8, UTF8: m.UTF8,
		Rcpts: []spool.Rcpt{{Addr: m.From, Notify: "NEVER", State: spool.Pending}}}
	if err := q.cfg.Spool.Put(b, pr, 0); err != nil {
		pr.CloseWithError(err)
		return err
	}
	slog.Info("dsn queued", "id", b.ID, "for", m.ID, "to", m.From, "action", string(r.Recipients[0].Action))
	q.Enqueue(b)
	return nil
}

// refresh copies the meta for List; call it under q.mu while no delivery
// runs.
func (it *item) refresh() {
	it.view = *it.m
	it.view.Rcpts = slices.Clone(it.m.Rcpts)
}

// dueHeap orders items by next attempt.
type dueHeap []*item

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].m.NextAttempt.Before(h[j].m.NextAttempt) }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *dueHeap) Push(x any) {
	it := x.(*item)
	it.index = len(*h)
	*h = append(*h, it)
}
func (h *dueHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	it.index = -1
	*h = old[:len(old)-1]
	return it
}
