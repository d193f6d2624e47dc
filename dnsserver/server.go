// Package dnsserver is the dns role: an authoritative DNS server over UDP
// and TCP that answers from an in-memory index of the store's zones, kept
// current by the store's change events. Redis is never on the query path.
// It sends NOTIFY to secondaries, serves AXFR to TSIG keys and allowed
// networks, and applies RFC 2136 UPDATEs through the store.
package dnsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/netutil"
	"golang.org/x/sys/unix"

	"github.com/mxport/mxport/dnsserver/rrl"
	"github.com/mxport/mxport/dnsserver/xfr"
	"github.com/mxport/mxport/dnsserver/zone"
	"github.com/mxport/mxport/store"
)

// Config configures the DNS role.
type Config struct {
	// Addr is the host:port to listen on, UDP and TCP.
	Addr string
	// UDPSockets is the number of SO_REUSEPORT UDP sockets, each with its
	// own reader; default GOMAXPROCS.
	UDPSockets int
	// MXHosts are the service's MX hosts, published for forwarded zones.
	MXHosts []string
	// Notify are the secondaries (host:port) told of every serial change.
	Notify []string
	// AllowTransfer are the networks that may AXFR without TSIG.
	AllowTransfer []netip.Prefix
	// RRL configures response rate limiting of UDP answers.
	RRL rrl.Config
	// MaxTCPConns bounds concurrent TCP connections (default 1000);
	// TCPIdle is the idle timeout of a TCP connection (default 10 s,
	// RFC 7766 6.2.3); MaxTCPQueries bounds queries per connection
	// (default 1000).
	MaxTCPConns   int
	TCPIdle       time.Duration
	MaxTCPQueries int
	// Updater applies UPDATEs; nil answers them NOTIMP.
	Updater Updater
	// Metrics counts responses; nil counts nothing.
	Metrics *Metrics
}

// Server is a running DNS role.
type Server struct {
	cfg      Config
	st       *store.Store
	ix       *Index
	notifier *xfr.Notifier
	handler  *Handler
	servers  []*dns.Server // TCP
	udp      []*udpServer
	wg       sync.WaitGroup
	cancel   context.CancelFunc
}

// New prepares a server over st; Start runs it.
func New(st *store.Store, cfg Config) *Server {
	if cfg.UDPSockets <= 0 {
		cfg.UDPSockets = runtime.GOMAXPROCS(0)
	}
	if cfg.MaxTCPConns <= 0 {
		cfg.MaxTCPConns = 1000
	}
	if cfg.TCPIdle <= 0 {
		cfg.TCPIdle = 10 * time.Second
	}
	if cfg.MaxTCPQueries <= 0 {
		cfg.MaxTCPQueries = 1000
	}
	s := &Server{cfg: cfg, st: st}
	s.ix = NewIndex(zone.Options{MXHosts: cfg.MXHosts}, func(z *zone.Zone) { s.notifier.Notify(z) })
	s.handler = &Handler{ix: s.ix, updater: cfg.Updater, allowTransfer: cfg.AllowTransfer, metrics: cfg.Metrics}
	if cfg.RRL.ResponsesPerSecond > 0 {
		s.handler.rrl = rrl.New(cfg.RRL)
	}
	return s
}

// Addr returns the address the server answers on (its first UDP socket's),
// useful after Start on port 0.
func (s *Server) Addr() string {
	if len(s.udp) > 0 {
		return s.udp[0].pc.LocalAddr().String()
	}
	return ""
}

// Index returns the server's zone index (readiness, tests).
func (s *Server) Index() *Index { return s.ix }

// Start follows the store and starts serving on cfg.Addr. It returns once
// every socket listens; the first snapshot loads in the background (see
// Index().Loaded). Stop it with Shutdown.
func (s *Server) Start(ctx context.Context) error {
	pcs, l, err := listen(s.cfg.Addr, s.cfg.UDPSockets)
	if err != nil {
		return err
	}
	return s.Serve(ctx, pcs, l)
}

// Serve is Start on sockets the caller opened.
func (s *Server) Serve(ctx context.Context, pcs []net.PacketConn, l net.Listener) error {
	ctx, s.cancel = context.WithCancel(ctx)
	if len(s.cfg.Notify) > 0 {
		s.notifier = xfr.NewNotifier(ctx, s.cfg.Notify)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.st.Follow(ctx, s.ix, store.FollowOptions{})
	}()
	tp := tsigProvider{s.ix}
	for _, pc := range pcs {
		u, err := newUDPServer(pc, s.handler, tp)
		if err != nil {
			s.cancel()
			return fmt.Errorf("dns: %w", err)
		}
		s.udp = append(s.udp, u)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			u.serve()
		}()
	}
	var servers []*dns.Server
	if l != nil {
		servers = append(servers, &dns.Server{Listener: netutil.LimitListener(l, s.cfg.MaxTCPConns),
			Handler: s.handler, TsigProvider: tp, MsgAcceptFunc: accept,
			MaxTCPQueries: s.cfg.MaxTCPQueries, IdleTimeout: func() time.Duration { return s.cfg.TCPIdle },
			ReadTimeout: s.cfg.TCPIdle, WriteTimeout: 10 * time.Second})
	}
	started := make(chan error, len(servers))
	for _, srv := range servers {
		srv.NotifyStartedFunc = func() { started <- nil }
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := srv.ActivateAndServe(); err != nil {
				started <- err
				slog.Error("dns server stopped", "err", err)
			}
		}()
	}
	for range servers {
		if err := <-started; err != nil {
			s.cancel()
			return fmt.Errorf("dns: %w", err)
		}
	}
	s.servers = servers
	slog.Info("dns listening", "addr", addrString(pcs, l), "udp_sockets", len(pcs))
	return nil
}

// Shutdown stops the servers and the store follower.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(5 * time.Second)
	}
	for _, u := range s.udp {
		errs = append(errs, u.stop(deadline))
	}
	for _, srv := range s.servers {
		errs = append(errs, srv.ShutdownContext(ctx))
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// accept is the server's early filter (miekg/dns's default refuses UPDATE).
// Unknown opcodes and a QDCOUNT other than 1 go to the handler, which
// answers NOTIMP or FORMERR with a header of its own: miekg/dns's reject
// path echoes the request's flags (AA, TC, RA, AD) into its reply.
func accept(dh dns.Header) dns.MsgAcceptAction {
	if dh.Bits&(1<<15) != 0 { // QR: a response, not a request
		return dns.MsgIgnore
	}
	switch int(dh.Bits>>11) & 0xF {
	case dns.OpcodeQuery, dns.OpcodeNotify:
		if dh.Ancount > 1 || dh.Nscount > 1 || dh.Arcount > 3 {
			return dns.MsgReject
		}
	}
	return dns.MsgAccept
}

// listen opens n SO_REUSEPORT UDP sockets and one TCP listener on addr. A
// port 0 is resolved by the first UDP socket and shared by the rest; when
// TCP cannot have that port too (another process holds it), it tries again
// with a new one.
func listen(addr string, n int) ([]net.PacketConn, net.Listener, error) {
	_, port, _ := net.SplitHostPort(addr)
	tries := 1
	if port == "0" {
		tries = 20
	}
	var err error
	for i := 0; i < tries; i++ {
		var pcs []net.PacketConn
		var l net.Listener
		if pcs, l, err = listenOnce(addr, n); err == nil {
			return pcs, l, nil
		}
	}
	return nil, nil, err
}

func listenOnce(addr string, n int) ([]net.PacketConn, net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	ctx := context.Background()
	var pcs []net.PacketConn
	closeAll := func() {
		for _, pc := range pcs {
			pc.Close()
		}
	}
	for i := 0; i < n; i++ {
		pc, err := lc.ListenPacket(ctx, "udp", addr)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("dns: listen udp %s: %w", addr, err)
		}
		pcs = append(pcs, pc)
		addr = pc.LocalAddr().String()
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("dns: listen tcp %s: %w", addr, err)
	}
	return pcs, l, nil
}

func addrString(pcs []net.PacketConn, l net.Listener) string {
	if len(pcs) > 0 {
		return pcs[0].LocalAddr().String()
	}
	if l != nil {
		return l.Addr().String()
	}
	return ""
}
