// Package forwarder is the smtp role: it wires the inbound SMTP server
// (smtpd), the disk spool, the delivery queue, the courier and the route
// index, keeps the route index current from the store, and obeys the
// store's control messages (flush, remove) so every node hears them.
package forwarder

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/netutil"

	"github.com/mxport/mxport/forwarder/batch"
	"github.com/mxport/mxport/forwarder/courier"
	"github.com/mxport/mxport/forwarder/queue"
	"github.com/mxport/mxport/forwarder/route"
	"github.com/mxport/mxport/forwarder/smtpd"
	"github.com/mxport/mxport/forwarder/spool"
	"github.com/mxport/mxport/store"
)

// Config configures the smtp role.
type Config struct {
	Addr      string         // --smtp
	Hostname  string         // --hostname
	SpoolDir  string         // --spool
	SpoolSync spool.SyncMode // --spool-sync; zero = spool.SyncFS
	MXHosts   []string
	Resolver  string // --resolver host:port; "" = system
	Retry     []time.Duration
	MaxAge    time.Duration
	MaxSize   int64       // default 50 MiB
	TLS       *tls.Config // nil: a self-signed certificate kept in the spool
	Registry  prometheus.Registerer
}

// Forwarder is a running smtp role.
type Forwarder struct {
	cfg    Config
	st     *store.Store
	ix     *route.Index
	sp     *spool.Spool
	q      *queue.Queue
	pool   *courier.Pool
	srv    *smtp.Server
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New prepares the role; Start runs it.
func New(st *store.Store, cfg Config) *Forwarder {
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = 50 << 20
	}
	return &Forwarder{cfg: cfg, st: st, ix: route.NewIndex()}
}

// Queue returns the delivery queue (tests, readiness).
func (f *Forwarder) Queue() *queue.Queue { return f.q }

// Index returns the route index (readiness).
func (f *Forwarder) Index() *route.Index { return f.ix }

// Start opens the spool, reloads the queue from it, follows the store and
// listens on cfg.Addr. It returns once the listener is open. Accepted
// connections have no TCP keepalive (which costs four setsockopt calls
// each): the session's timeouts already end one whose client is gone.
func (f *Forwarder) Start(ctx context.Context) error {
	lc := net.ListenConfig{KeepAlive: -1}
	l, err := lc.Listen(ctx, "tcp", f.cfg.Addr)
	if err != nil {
		return fmt.Errorf("smtp: listen %s: %w", f.cfg.Addr, err)
	}
	return f.Serve(ctx, l)
}

// Serve is Start on a listener the caller opened.
func (f *Forwarder) Serve(ctx context.Context, l net.Listener) error {
	sp, err := spool.OpenMode(f.cfg.SpoolDir, f.cfg.SpoolSync)
	if err != nil {
		l.Close()
		return fmt.Errorf("smtp: %w", err)
	}
	f.sp = sp
	tlsConf := f.cfg.TLS
	if tlsConf == nil {
		if tlsConf, err = smtpd.SelfSignedTLS(f.cfg.SpoolDir, f.cfg.Hostname); err != nil {
			l.Close()
			return fmt.Errorf("smtp: %w", err)
		}
	}
	res := route.NewResolver(f.ix, route.ResolverConfig{Server: f.cfg.Resolver, Own: f.cfg.MXHosts,
		OwnAddrs: ownAddrs(l.Addr()), OwnPort: l.Addr().(*net.TCPAddr).Port, Timeout: 5 * time.Second})
	events := make(chan store.ZoneDelivery, 10000)
	logEvent := func(zone string, d store.Delivery) {
		select { // never hold an SMTP reply or a delivery for Redis
		case events <- store.ZoneDelivery{Zone: zone, Delivery: d}:
		default:
			slog.Warn("delivery log full, event dropped", "zone", zone, "id", d.ID, "event", d.Event)
		}
	}
	// Deliveries to a busy target reuse its connections.
	f.pool = courier.NewPool(courier.Config{Hostname: f.cfg.Hostname, Timeout: 5 * time.Minute}, courier.PoolConfig{})
	var metrics *smtpd.Metrics
	var qmetrics *queue.Metrics
	if f.cfg.Registry != nil {
		metrics = smtpd.NewMetrics(f.cfg.Registry)
		qmetrics = queue.NewMetrics(f.cfg.Registry)
		f.cfg.Registry.MustRegister(poolCollector{f.pool})
	}
	f.q = queue.New(queue.Config{
		Spool: sp, Router: router{f.ix, res}, Hostname: f.cfg.Hostname, Courier: f.pool.Deliver,
		Retry: f.cfg.Retry, MaxAge: f.cfg.MaxAge, Log: logEvent, Mirror: f.st, Metrics: qmetrics,
	})
	if err := f.q.Load(); err != nil {
		l.Close()
		return err
	}
	f.srv = smtpd.NewServer(smtpd.Config{Hostname: f.cfg.Hostname, MaxSize: f.cfg.MaxSize, TLS: tlsConf,
		Spool: sp, Router: f.ix, Queue: f.q, Log: logEvent, Metrics: metrics})

	ctx, f.cancel = context.WithCancel(ctx)
	f.wg.Add(4)
	go func() { defer f.wg.Done(); f.writeLog(ctx, events) }()
	go func() { defer f.wg.Done(); f.st.Follow(ctx, f.ix, store.FollowOptions{}) }()
	go func() { defer f.wg.Done(); f.q.Run(ctx) }()
	go func() { defer f.wg.Done(); f.control(ctx) }()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		ln := smtpd.ETRNListener(netutil.LimitListener(l, maxSessions), f.etrn)
		if err := f.srv.Serve(ln); err != nil && ctx.Err() == nil {
			slog.Error("smtp server stopped", "err", err)
		}
	}()
	slog.Info("smtp listening", "addr", l.Addr().String(), "spool", f.cfg.SpoolDir, "queued", f.q.Len())
	return nil
}

// maxSessions bounds concurrent inbound SMTP sessions.
const maxSessions = 1000

// logLinger is how long the delivery log waits to batch events: at 2,000
// messages a second it makes one store write of ~80 events, not hundreds of
// small ones, and the panel shows an event at most this late.
const logLinger = 20 * time.Millisecond

// writeLog writes delivery events to the store's log, in batches, off the
// SMTP and delivery paths; what is pending when ctx ends is written with a
// short deadline.
func (f *Forwarder) writeLog(ctx context.Context, events <-chan store.ZoneDelivery) {
	batch.Drain(ctx, events, 256, logLinger, func(evs []store.ZoneDelivery) {
		lctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := f.st.LogDeliveries(lctx, evs); err != nil {
			slog.Warn("delivery log failed", "events", len(evs), "err", err)
		}
	})
}

// etrn flushes a forwarded zone's queue on every node (RFC 1985): here at
// once, elsewhere through the store's control channel.
func (f *Forwarder) etrn(domain string) bool {
	zone, d := f.ix.Lookup(domain)
	if d != route.Accept {
		return false
	}
	f.q.Flush(zone)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := f.st.PublishControl(ctx, store.Control{Kind: "flush", Zone: zone}); err != nil {
		slog.Warn("etrn: publish flush failed", "zone", zone, "err", err)
	}
	slog.Info("etrn", "zone", zone)
	return true
}

// control obeys the store's control messages until ctx ends, resubscribing
// after failures.
func (f *Forwarder) control(ctx context.Context) {
	for ctx.Err() == nil {
		ch, err := f.st.SubscribeControl(ctx)
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		for c := range ch {
			switch c.Kind {
			case "flush":
				f.q.Flush(c.Zone)
			case "remove":
				if err := f.q.Remove(c.ID); err != nil && err != queue.ErrNotFound {
					slog.Warn("queue remove failed", "id", c.ID, "err", err)
				}
			}
		}
	}
}

// Shutdown stops accepting mail, then lets running deliveries end, until
// ctx ends: what is still running then (a session waiting for its spool
// commit, which has not had its 250) is left to the process's exit; the
// spool keeps every message that was acknowledged. Once they have ended it
// closes the spool, making the removals of delivered messages durable.
func (f *Forwarder) Shutdown(ctx context.Context) error {
	var err error
	if f.srv != nil {
		err = f.srv.Shutdown(ctx)
	}
	if f.cancel != nil {
		f.cancel()
	}
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("smtp: shutdown: %w", ctx.Err())
	}
	if f.pool != nil {
		f.pool.Close()
	}
	if f.sp != nil {
		if cerr := f.sp.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("smtp: shutdown: %w", cerr))
		}
	}
	return err
}

// poolCollector exports the courier pool's connection counts.
type poolCollector struct{ p *courier.Pool }

var poolConnsDesc = prometheus.NewDesc("mxport_delivery_connections_total",
	"Outbound SMTP connections dialled (connection=dialled) and transactions made on a pooled connection (connection=reused).",
	[]string{"connection"}, nil)

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) { ch <- poolConnsDesc }

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	dials, reuses := c.p.Stats()
	ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.CounterValue, float64(dials), "dialled")
	ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.CounterValue, float64(reuses), "reused")
}

// router joins the index (routes) and the resolver (addresses, MX).
type router struct {
	*route.Index
	*route.Resolver
}

// ownAddrs are the addresses mail must never be forwarded to: the
// listener's, or every local address when it listens on all.
func ownAddrs(a net.Addr) []netip.Addr {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return nil
	}
	if ip, ok := netip.AddrFromSlice(ta.IP); ok && !ip.Unmap().IsUnspecified() {
		return []netip.Addr{ip.Unmap()}
	}
	var out []netip.Addr
	ifaddrs, _ := net.InterfaceAddrs()
	for _, ia := range ifaddrs {
		if n, ok := ia.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}
