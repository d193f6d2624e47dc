// Package smtpd is the forwarder's inbound SMTP server (go-smtp Backend and
// Session): it accepts mail only for forwarded zones, streams each message
// to the spool with a Received header and answers 250 only after it is
// fsync'd.
//
// It owns the accept policy (RFC 5321 7.1: never an open relay), the
// Received header and loop check (RFC 5321 4.4, 6.3) and the hand-over to
// the spool and queue. It does not deliver, schedule or talk to Redis: the
// Router answers from memory and the Queue takes what is on disk.
//
// Replies:
//
//	RCPT  250  a forwarded zone's apex (route.Accept)
//	      550 5.7.1  not forwarded here, or a relay trick (user%other@zone,
//	                 "user@other"@zone, other!user@zone, user@[192.0.2.1];
//	                 go-smtp drops a source route, @zone:user@other, so it
//	                 is judged as user@other)
//	      451 4.3.0  the route index never loaded: cannot decide, never 5xx
//	      451 4.5.3  a second zone in one transaction (see below)
//	      452 4.5.3  more than MaxRcpts recipients
//	DATA  250 2.0.0  fsync'd and queued ("OK: queued as ID")
//	      552 5.3.4  bigger than MaxSize (also at MAIL, from SIZE=)
//	      554 5.4.6  more than MaxReceived Received headers (a loop)
//	      451 4.3.0  the spool failed; nothing of the message is kept
//
// One zone per message: every recipient of a transaction must belong to
// the same forwarded zone, because a spooled message has one route. A
// recipient of another zone gets 451 4.5.3 "one zone per message, send the
// rest separately"; RFC 5321 4.5.3.1.10 makes the sender deliver the
// recipients it accepted and retry the others in a later transaction, as
// it does for 452 too many recipients. Nothing is refused for good.
//
// Only CRLF.CRLF ends DATA (go-smtp's reader follows that state machine:
// a bare LF or bare CR never starts the end-of-data line), so SMTP
// smuggling with <LF>.<LF> or <CR>.<CR> cannot split a message.
package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxport/mxport/forwarder/route"
	"github.com/mxport/mxport/forwarder/spool"
	"github.com/mxport/mxport/store"
)

// Router decides per recipient domain (route.Index satisfies it). domain is
// lower-case ASCII (A-labels).
type Router interface {
	Lookup(domain string) (zone string, d route.Decision)
}

// Queue takes a message once it is on disk (forwarder/queue satisfies it).
// Enqueue is called before the client gets its 250, so it must not block
// for long; m is the queue's own from then on.
type Queue interface {
	Enqueue(m *spool.Meta)
}

// Defaults of Config.
const (
	DefaultMaxSize       = 50 << 20
	DefaultMaxRcpts      = 100
	DefaultReadTimeout   = 5 * time.Minute  // RFC 5321 4.5.3.2.7: server timeout per command
	DefaultWriteTimeout  = 5 * time.Minute  // per reply
	DefaultDataTimeout   = 30 * time.Minute // a whole DATA or BDAT body
	DefaultMaxLineLength = 4096             // 1000 (RFC 5321 4.5.3.1.6) with room for sloppy senders
	rdnsTimeout          = 5 * time.Second
)

// Config configures NewServer. Spool, Router and Queue are required.
type Config struct {
	Hostname string // greeting, Received "by"; default os.Hostname
	// MaxSize bounds the body in bytes, advertised as SIZE (RFC 1870) and
	// checked at MAIL SIZE=, per BDAT chunk and while DATA streams (552
	// 5.3.4); default 50 MiB. go-smtp's DATA reader refuses a body of
	// exactly MaxSize bytes too (it fails the read after the last byte).
	MaxSize  int64
	MaxRcpts int         // default 100 (more: 452 4.5.3)
	TLS      *tls.Config // STARTTLS (RFC 3207); nil = none
	Spool    *spool.Spool
	Router   Router
	Queue    Queue
	// Log, optional, receives an "accepted" event per recipient for the
	// zone's delivery log (store.Delivery). It is called before the 250,
	// so it must not block: hand the event to a buffered writer.
	Log func(zone string, d store.Delivery)
	// ReadTimeout bounds the wait for each command line, WriteTimeout each
	// reply (RFC 5321 4.5.3.2). Defaults: 5 min each.
	ReadTimeout, WriteTimeout time.Duration
	// DataTimeout bounds a whole message body; within it each read must
	// still come within ReadTimeout. Default 30 min.
	DataTimeout time.Duration
	// MaxLineLength bounds every line, commands and DATA alike (go-smtp
	// has one limit; BDAT chunks are exempt); a longer line gets 500
	// (5.6.0 inside DATA, nothing kept) and go-smtp closes the session.
	// Default 4096.
	MaxLineLength int
	Metrics       *Metrics     // optional Prometheus counters
	Logger        *slog.Logger // default slog.Default()
	// Resolver finds the client's reverse name for Received (forward
	// confirmed); default net.DefaultResolver.
	Resolver *net.Resolver
}

// NewServer returns a configured go-smtp server: SMTPUTF8, DSN, 8BITMIME,
// SIZE, CHUNKING (BDAT), PIPELINING, ENHANCEDSTATUSCODES, STARTTLS when
// cfg.TLS is set, Domain = Hostname, timeouts, MaxMessageBytes and
// MaxRecipients. The caller runs Serve on its listener and Close or
// Shutdown at the end. It panics if Spool, Router or Queue is nil.
func NewServer(cfg Config) *smtp.Server {
	if cfg.Spool == nil || cfg.Router == nil || cfg.Queue == nil {
		panic("smtpd: NewServer needs Spool, Router and Queue")
	}
	if cfg.Hostname == "" {
		cfg.Hostname, _ = os.Hostname()
		if cfg.Hostname == "" {
			cfg.Hostname = "localhost"
		}
	}
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = DefaultMaxSize
	}
	if cfg.MaxRcpts <= 0 {
		cfg.MaxRcpts = DefaultMaxRcpts
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.DataTimeout <= 0 {
		cfg.DataTimeout = DefaultDataTimeout
	}
	if cfg.MaxLineLength <= 0 {
		cfg.MaxLineLength = DefaultMaxLineLength
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	s := smtp.NewServer(&backend{cfg: cfg})
	s.Domain = cfg.Hostname
	s.MaxMessageBytes = cfg.MaxSize
	s.MaxRecipients = cfg.MaxRcpts
	s.MaxLineLength = cfg.MaxLineLength
	s.ReadTimeout = cfg.ReadTimeout
	s.WriteTimeout = cfg.WriteTimeout
	s.TLSConfig = cfg.TLS
	s.EnableSMTPUTF8 = true
	s.EnableDSN = true
	s.ErrorLog = errorLog{cfg.Logger}
	return s
}

// errorLog turns go-smtp's internal error reports into slog lines.
type errorLog struct{ l *slog.Logger }

func (e errorLog) Printf(format string, v ...any) {
	e.l.Warn("smtp server", "err", strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func (e errorLog) Println(v ...any) {
	e.l.Warn("smtp server", "err", strings.TrimSpace(fmt.Sprintln(v...)))
}

type backend struct {
	cfg  Config
	rdns rdnsCache
}

// NewSession runs at the first EHLO/HELO, and again after STARTTLS.
func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	b.cfg.Metrics.session()
	if strings.ContainsFunc(c.Hostname(), func(r rune) bool { return r < 32 || r == 127 }) {
		// go-smtp would echo it in its reply; refuse it instead.
		return nil, smtpErr(501, smtp.EnhancedCode{5, 5, 2}, "Bad HELO argument")
	}
	nc := c.Conn()
	s := &session{b: b, c: c, nc: nc}
	if ap, err := netip.ParseAddrPort(nc.RemoteAddr().String()); err == nil {
		s.ip = ap.Addr().Unmap().String()
		s.remote = nc.RemoteAddr().String()
	} else {
		s.remote = nc.RemoteAddr().String()
	}
	if st, ok := c.TLSConnectionState(); ok {
		s.tls = &st
	}
	ctx, cancel := context.WithTimeout(context.Background(), rdnsTimeout)
	s.cancel = cancel
	s.rdnsDone = make(chan struct{})
	go func() {
		defer close(s.rdnsDone)
		if s.ip != "" {
			s.rdns = b.rdns.name(ctx, b.cfg.Resolver, s.ip)
		}
	}()
	return s, nil
}

// reverseName returns ip's forward-confirmed reverse name (a PTR name
// whose addresses include ip), or "". final is false when a lookup failed
// (timeout, server failure) rather than found no name: then another try
// may find one.
func reverseName(ctx context.Context, r *net.Resolver, ip string) (name string, final bool) {
	want, err := netip.ParseAddr(ip)
	if err != nil {
		return "", true
	}
	names, err := r.LookupAddr(ctx, ip)
	if err != nil {
		return "", notFound(err)
	}
	final = true
	for i, n := range names {
		if i == 3 {
			break
		}
		n, err := checkDomain(strings.TrimSuffix(n, "."), false)
		if err != nil {
			continue
		}
		addrs, err := r.LookupNetIP(ctx, "ip", n)
		if err != nil {
			final = final && notFound(err)
			continue
		}
		for _, a := range addrs {
			if a.Unmap() == want {
				return n, true
			}
		}
	}
	return "", final
}

// notFound reports whether a lookup error says the name has no such
// records, an answer rather than a failure.
func notFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// rdnsCache remembers clients' reverse names (and their absence) for
// rdnsTTL, so that a sender's many connections, and the second session of a
// connection that starts TLS, cost no DNS queries. Failed lookups are not
// remembered.
type rdnsCache struct {
	mu sync.Mutex
	m  map[string]rdnsEntry // by IP
}

type rdnsEntry struct {
	name    string
	expires time.Time
}

const (
	rdnsTTL     = time.Minute
	rdnsEntries = 10000 // at most; when full, expired entries go, or all
)

// name returns ip's reverse name, from the cache or looked up through r.
func (c *rdnsCache) name(ctx context.Context, r *net.Resolver, ip string) string {
	now := time.Now()
	c.mu.Lock()
	e, ok := c.m[ip]
	c.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.name
	}
	name, final := reverseName(ctx, r, ip)
	if final {
		c.put(ip, rdnsEntry{name: name, expires: now.Add(rdnsTTL)})
	}
	return name
}

func (c *rdnsCache) put(ip string, e rdnsEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]rdnsEntry{}
	}
	if len(c.m) >= rdnsEntries {
		now := time.Now()
		maps.DeleteFunc(c.m, func(_ string, e rdnsEntry) bool { return !now.Before(e.expires) })
		if len(c.m) >= rdnsEntries {
			clear(c.m)
		}
	}
	c.m[ip] = e
}

// session is one client's session. go-smtp calls Mail, Rcpt and Reset from
// the connection's goroutine, but Data of a BDAT transfer runs in another
// one while Reset or Logout may come: mu guards the transaction and Data
// works on a copy.
type session struct {
	b      *backend
	c      *smtp.Conn // only from the connection's goroutine
	nc     net.Conn   // as at NewSession (a new session follows STARTTLS)
	remote string
	ip     string // "" when the peer is not IP (tests over pipes)
	tls    *tls.ConnectionState

	cancel   context.CancelFunc
	rdnsDone chan struct{}
	rdns     string // set before rdnsDone closes

	mu sync.Mutex
	tx transaction
}

// transaction is the envelope of the message being received.
type transaction struct {
	helo     string // the HELO/EHLO argument at MAIL
	hasFrom  bool
	from     string
	utf8     bool
	body8bit bool
	ret      string
	envID    string
	zone     string
	rcpts    []spool.Rcpt
}

func (s *session) log() *slog.Logger { return s.b.cfg.Logger }

func smtpErr(code int, ec smtp.EnhancedCode, msg string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: msg}
}

// recoverTo turns a panic in a session method into 451 4.3.0 (STYLE 6).
func (s *session) recoverTo(err *error) {
	if r := recover(); r != nil {
		s.log().Error("smtp panic", "remote", s.remote, "err", fmt.Sprint(r))
		*err = smtpErr(451, smtp.EnhancedCode{4, 3, 0}, "Local error, try again later")
	}
}

// Reset ends the transaction (RSET, EHLO again, after DATA).
func (s *session) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tx = transaction{}
}

// Logout ends the session.
func (s *session) Logout() error {
	s.cancel()
	return nil
}

// Mail starts a transaction. The null reverse-path is accepted (RFC 5321
// 4.5.5); any other must be a Mailbox.
func (s *session) Mail(from string, opts *smtp.MailOptions) (err error) {
	defer s.recoverTo(&err)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tx.hasFrom {
		return smtpErr(503, smtp.EnhancedCode{5, 5, 1}, "Nested MAIL command")
	}
	if opts == nil {
		opts = &smtp.MailOptions{}
	}
	if from != "" {
		mb, err := parseSender(from, opts.UTF8)
		switch {
		case errors.Is(err, errNonASCII):
			return smtpErr(553, smtp.EnhancedCode{5, 6, 7}, "Non-ASCII sender address needs SMTPUTF8")
		case err != nil:
			return smtpErr(501, smtp.EnhancedCode{5, 1, 7}, "Bad sender address syntax")
		}
		from = mb.String()
	}
	s.tx = transaction{
		helo:     s.c.Hostname(),
		hasFrom:  true,
		from:     from,
		utf8:     opts.UTF8,
		body8bit: opts.Body == smtp.Body8BitMIME,
		ret:      string(opts.Return),
		envID:    opts.EnvelopeID,
	}
	return nil
}

// Rcpt applies the accept policy (see the package comment).
func (s *session) Rcpt(to string, opts *smtp.RcptOptions) (err error) {
	defer s.recoverTo(&err)
	s.mu.Lock()
	defer s.mu.Unlock()
	cfg := &s.b.cfg
	refuse := func(reason string, e *smtp.SMTPError) error {
		cfg.Metrics.refused(reason)
		s.log().Info("rejected", "remote", s.remote, "from", s.tx.from, "rcpt", to,
			"code", e.Code, "reason", reason)
		return e
	}
	if !s.tx.hasFrom {
		return smtpErr(503, smtp.EnhancedCode{5, 5, 1}, "MAIL first")
	}
	if len(s.tx.rcpts) >= cfg.MaxRcpts {
		return refuse(reasonTooMany, smtpErr(452, smtp.EnhancedCode{4, 5, 3},
			"Too many recipients, send the rest separately"))
	}
	mb, perr := parseRecipient(to, s.tx.utf8)
	switch {
	case errors.Is(perr, errRelay):
		return refuse(reasonRelay, smtpErr(550, smtp.EnhancedCode{5, 7, 1}, "Relaying denied"))
	case errors.Is(perr, errNonASCII):
		return refuse(reasonSyntax, smtpErr(553, smtp.EnhancedCode{5, 6, 7},
			"Non-ASCII recipient address needs SMTPUTF8"))
	case perr != nil:
		return refuse(reasonSyntax, smtpErr(501, smtp.EnhancedCode{5, 1, 3}, "Bad recipient address syntax"))
	}
	zone, d := cfg.Router.Lookup(mb.ascii)
	switch d {
	case route.Accept:
	case route.Refuse:
		return refuse(reasonNotForwarded, smtpErr(550, smtp.EnhancedCode{5, 7, 1},
			"Relaying denied: no mail is forwarded for this domain here"))
	default: // Unknown, or anything new: unsure is 4xx (STYLE 6)
		return refuse(reasonUnknown, smtpErr(451, smtp.EnhancedCode{4, 3, 0},
			"Cannot check the recipient now, try again later"))
	}
	if s.tx.zone != "" && zone != s.tx.zone {
		return refuse(reasonOtherZone, smtpErr(451, smtp.EnhancedCode{4, 5, 3},
			"One zone per message, send the rest separately"))
	}
	addr := mb.String()
	for _, r := range s.tx.rcpts {
		if r.Addr == addr {
			return nil // a duplicate is delivered once
		}
	}
	r := spool.Rcpt{Addr: addr, State: spool.Pending}
	if opts != nil {
		if len(opts.Notify) > 0 {
			n := make([]string, len(opts.Notify))
			for i, v := range opts.Notify {
				n[i] = string(v)
			}
			r.Notify = strings.Join(n, ",")
		}
		if opts.OriginalRecipientType != "" {
			r.ORcpt = string(opts.OriginalRecipientType) + ";" + opts.OriginalRecipient
		}
	}
	s.tx.zone = zone
	s.tx.rcpts = append(s.tx.rcpts, r)
	return nil
}

// Data streams the message to the spool behind a new Received header,
// counting Received headers on the way, and queues it once Put has
// fsync'd it. The 250 carries the queue id.
func (s *session) Data(r io.Reader) (err error) {
	defer s.recoverTo(&err)
	cfg := &s.b.cfg
	s.mu.Lock()
	tx := s.tx
	tx.rcpts = append([]spool.Rcpt(nil), s.tx.rcpts...)
	s.mu.Unlock()
	if !tx.hasFrom || len(tx.rcpts) == 0 {
		return smtpErr(503, smtp.EnhancedCode{5, 5, 1}, "No valid recipients")
	}

	id := cfg.Spool.NewID()
	start := time.Now()
	fast := fastBody(s.nc, cfg.MaxLineLength)
	if fast != nil {
		r = fast
	}
	body := &deadlineReader{r: r, nc: s.nc, idle: cfg.ReadTimeout, end: start.Add(cfg.DataTimeout)}
	if fast != nil {
		// A refused message is read to its end here, not by go-smtp.
		defer fast.Drain(body)
	}
	guard := newLoopGuard(body)

	ti := traceInfo{helo: tx.helo, ip: s.ip, rdns: s.reverse(), hostname: cfg.Hostname,
		tls: s.tls, utf8: tx.utf8, id: id, now: start}
	if len(tx.rcpts) == 1 {
		ti.rcpts = []string{tx.rcpts[0].Addr}
	}
	hdr := receivedHeader(ti)

	m := &spool.Meta{
		ID:       id,
		Zone:     tx.zone,
		From:     tx.from,
		Rcpts:    tx.rcpts,
		Ret:      tx.ret,
		EnvID:    tx.envID,
		UTF8:     tx.utf8,
		Body8Bit: tx.body8bit,
		Arrived:  start.UTC(),
	}
	perr := cfg.Spool.Put(m, io.MultiReader(strings.NewReader(hdr), guard), cfg.MaxSize+int64(len(hdr)))
	if perr != nil {
		var reason string
		var e *smtp.SMTPError
		switch {
		case errors.Is(perr, errLoop):
			reason = reasonLoop
			e = smtpErr(554, smtp.EnhancedCode{5, 4, 6}, fmt.Sprintf(
				"Mail loop: more than %d Received headers", MaxReceived))
		case errors.Is(perr, spool.ErrTooBig), errors.Is(perr, smtp.ErrDataTooLarge):
			reason = reasonTooBig
			e = smtpErr(552, smtp.EnhancedCode{5, 3, 4}, "Message too big")
		case errors.Is(guard.readErr, smtp.ErrTooLongLine):
			reason = reasonSyntax
			e = smtpErr(500, smtp.EnhancedCode{5, 6, 0}, fmt.Sprintf(
				"Line too long (more than %d octets), message not kept", cfg.MaxLineLength))
		case guard.readErr != nil:
			reason = reasonAborted
			e = smtpErr(451, smtp.EnhancedCode{4, 4, 2}, "Message transfer failed, nothing kept")
		default:
			reason = reasonSpool
			e = smtpErr(451, smtp.EnhancedCode{4, 3, 0}, "Local error, nothing kept, try again later (id "+id+")")
		}
		cfg.Metrics.refused(reason)
		lvl := slog.LevelInfo
		if reason == reasonSpool {
			lvl = slog.LevelError
		}
		s.log().Log(context.Background(), lvl, "rejected", "id", id, "zone", tx.zone, "remote", s.remote,
			"from", tx.from, "code", e.Code, "reason", reason, "err", perr)
		return e
	}

	// Logged before it is queued: its delivery may start, and be logged, at once.
	cfg.Metrics.accepted(m.Size)
	s.log().Info("accepted", "id", id, "zone", tx.zone, "remote", s.remote, "from", tx.from,
		"rcpts", len(tx.rcpts), "size", m.Size, "dur", time.Since(start))
	if cfg.Log != nil {
		for _, rc := range tx.rcpts {
			cfg.Log(tx.zone, store.Delivery{Time: m.Arrived, ID: id, Event: "accepted", From: tx.from, Rcpt: rc.Addr})
		}
	}
	cfg.Queue.Enqueue(m)
	// go-smtp writes a returned SMTPError's code and text whatever the
	// code, which is the only way to put the queue id in the 250.
	return smtpErr(250, smtp.EnhancedCode{2, 0, 0}, "OK: queued as "+id)
}

// reverse waits (bounded by rdnsTimeout from NewSession) for the client's
// reverse name.
func (s *session) reverse() string {
	<-s.rdnsDone
	return s.rdns
}

// deadlineReader re-arms the connection's read deadline before each read
// of a message body: idle from now, never past end (DataTimeout from the
// start of DATA), so a body may take long while it flows, but a client
// that dribbles cannot hold the session past end.
type deadlineReader struct {
	r    io.Reader
	nc   net.Conn
	idle time.Duration
	end  time.Time
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	dl := time.Now().Add(d.idle)
	if dl.After(d.end) {
		dl = d.end
	}
	d.nc.SetReadDeadline(dl)
	return d.r.Read(p)
}
