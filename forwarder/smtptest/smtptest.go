// Package smtptest runs a real go-smtp server for tests: a home server or a
// sender's MX that fails on demand. For tests only.
//
// A Server listens on 127.0.0.1 and accepts every transaction unless told to
// fail at MAIL, RCPT or DATA, to delay its replies, or to go down. It records
// what it accepted, counts connections and checks at cleanup that every
// connection was closed by then (a client that forgets to QUIT or Close leaks).
package smtptest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// Message is one message the server accepted, with its envelope.
type Message struct {
	From     string              // reverse-path, "" for <>
	Rcpts    []string            // accepted recipients only
	Data     []byte              // the body as received (dot-unstuffed, CRLF kept)
	MailOpts *smtp.MailOptions   // MAIL parameters as parsed by go-smtp
	RcptOpts []*smtp.RcptOptions // RCPT parameters, one per entry of Rcpts
	TLS      bool                // the transaction ran under STARTTLS
	Helo     string              // the client's last EHLO/HELO name
}

// Server is a running test SMTP server. Its methods are safe for concurrent
// use; the fail hooks may be changed while sessions are running and apply
// from the next command on.
type Server struct {
	// Addr is the listening address, "127.0.0.1:port". It stays the same
	// across Close and Restart.
	Addr string

	tlsMode   int // 0 none, 1 working STARTTLS, 2 STARTTLS whose handshake fails
	dsn       bool
	smtputf8  bool
	maxSize   int64
	hostname  string
	sessCount atomic.Int64 // connections accepted
	open      atomic.Int64 // connections not yet closed
	backend   atomic.Int64 // go-smtp sessions not yet logged out

	mu       sync.Mutex
	failMail *smtp.SMTPError
	failRcpt map[string]*smtp.SMTPError
	failData *smtp.SMTPError
	hang     time.Duration
	msgs     []Message
	changed  chan struct{} // closed and replaced whenever msgs grows
	srv      *smtp.Server
	served   chan struct{} // closed when the current Serve returns
	down     chan struct{} // closed by Close: aborts delayed replies
	ln       net.Listener
	conns    map[*conn]struct{}
}

// Option configures a Server at Start.
type Option func(*Server)

// WithTLS makes the server offer STARTTLS with a self-signed certificate
// (for "localhost" and 127.0.0.1).
func WithTLS() Option { return func(s *Server) { s.tlsMode = 1 } }

// WithBrokenTLS makes the server offer STARTTLS whose handshake always fails,
// as a misconfigured home server does.
func WithBrokenTLS() Option { return func(s *Server) { s.tlsMode = 2 } }

// WithDSN makes the server offer DSN (RFC 3461), so clients pass NOTIFY,
// ORCPT, RET and ENVID; they show in Message.MailOpts and RcptOpts.
func WithDSN() Option { return func(s *Server) { s.dsn = true } }

// WithSMTPUTF8 makes the server offer SMTPUTF8 (RFC 6531).
func WithSMTPUTF8() Option { return func(s *Server) { s.smtputf8 = true } }

// WithMaxSize makes the server offer SIZE n (RFC 1870) and refuse bigger
// messages with 552 5.3.4.
func WithMaxSize(n int64) Option { return func(s *Server) { s.maxSize = n } }

// Start starts a server on 127.0.0.1:0. It stops at t.Cleanup, which first
// checks, waiting up to 5 s, that every connection has been closed.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{
		hostname: "smtptest.localhost",
		failRcpt: make(map[string]*smtp.SMTPError),
		changed:  make(chan struct{}),
		conns:    make(map[*conn]struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("smtptest: listen: %v", err)
	}
	s.Addr = ln.Addr().String()
	s.serve(ln)
	t.Cleanup(func() {
		s.checkLeaks(t)
		s.Close()
	})
	return s
}

// FailMail makes every MAIL fail with err from now on; nil accepts again.
func (s *Server) FailMail(err *smtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failMail = err
}

// FailRcpt makes RCPT to addr (compared case-insensitively) fail with err
// from now on; nil accepts again.
func (s *Server) FailRcpt(addr string, err *smtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		delete(s.failRcpt, strings.ToLower(addr))
		return
	}
	s.failRcpt[strings.ToLower(addr)] = err
}

// FailData makes every DATA fail with err after the whole body has been
// received (the reply to the final dot); nil accepts again.
func (s *Server) FailData(err *smtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failData = err
}

// Hang delays every write the server makes (greeting, replies, TLS records)
// by d, for timeout tests; 0 stops delaying. A delayed write is abandoned as
// soon as the client goes away or the server is closed.
func (s *Server) Hang(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hang = d
}

// Messages returns a copy of the messages accepted so far, in order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Wait waits until at least n messages have been accepted and returns them
// all; after timeout it calls t.Fatal.
func (s *Server) Wait(t testing.TB, n int, timeout time.Duration) []Message {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if len(s.msgs) >= n {
			msgs := append([]Message(nil), s.msgs...)
			s.mu.Unlock()
			return msgs
		}
		changed := s.changed
		got := len(s.msgs)
		s.mu.Unlock()
		select {
		case <-changed:
		case <-timer.C:
			t.Fatalf("smtptest: %d of %d messages after %v", got, n, timeout)
			return nil
		}
	}
}

// Sessions returns the number of connections accepted so far, across
// restarts.
func (s *Server) Sessions() int { return int(s.sessCount.Load()) }

// Open returns the number of connections not yet closed.
func (s *Server) Open() int { return int(s.open.Load()) }

// Close stops listening and drops every connection now: the home server is
// down and connecting to Addr is refused. Restart brings it back. Close is
// idempotent.
func (s *Server) Close() {
	s.mu.Lock()
	srv, served, down, ln := s.srv, s.served, s.down, s.ln
	s.srv = nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	close(down)
	srv.Close()
	ln.Close() // Serve may not have registered it with srv yet
	<-served
	// go-smtp registers a connection only once its goroutine runs: close
	// the ones it may not know yet.
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// Restart listens again on the same Addr after Close, keeping the recorded
// messages and fail hooks. It calls t.Fatal if the address cannot be bound.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	running := s.srv != nil
	s.mu.Unlock()
	if running {
		t.Fatalf("smtptest: Restart while running")
	}
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		t.Fatalf("smtptest: listen again on %s: %v", s.Addr, err)
	}
	s.serve(ln)
}

func (s *Server) serve(ln net.Listener) {
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = s.hostname
	srv.ReadTimeout = time.Minute
	srv.MaxMessageBytes = s.maxSize
	srv.EnableDSN = s.dsn
	srv.EnableSMTPUTF8 = s.smtputf8
	srv.ErrorLog = log.New(io.Discard, "", 0)
	switch s.tlsMode {
	case 1:
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{certificate()}}
	case 2:
		srv.TLSConfig = &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return nil, errors.New("smtptest: broken TLS on purpose")
		}}
	}
	down := make(chan struct{})
	served := make(chan struct{})
	s.mu.Lock()
	s.srv, s.served, s.down, s.ln = srv, served, down, ln
	s.mu.Unlock()
	go func() {
		defer close(served)
		srv.Serve(&listener{Listener: ln, s: s, down: down})
	}()
}

// leakWait is how long cleanup waits for connections to close.
var leakWait = 5 * time.Second

func (s *Server) checkLeaks(t testing.TB) {
	deadline := time.Now().Add(leakWait)
	for s.open.Load() != 0 || s.backend.Load() != 0 {
		if time.Now().After(deadline) {
			t.Errorf("smtptest: leak at cleanup: %d connections open, %d sessions not logged out",
				s.open.Load(), s.backend.Load())
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *Server) hangFor() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hang
}

// listener counts connections and wraps them for Hang and leak checks.
type listener struct {
	net.Listener
	s    *Server
	down chan struct{}
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.s.sessCount.Add(1)
	l.s.open.Add(1)
	wc := &conn{Conn: c, s: l.s, down: l.down, gone: make(chan struct{})}
	l.s.mu.Lock()
	l.s.conns[wc] = struct{}{}
	l.s.mu.Unlock()
	return wc, nil
}

// conn delays writes while the server hangs and notices the client going.
type conn struct {
	net.Conn
	s        *Server
	down     chan struct{}
	gone     chan struct{} // closed on the first read error or Close
	goneOnce sync.Once
	closed   atomic.Bool
}

func (c *conn) markGone() { c.goneOnce.Do(func() { close(c.gone) }) }

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.markGone()
	}
	return n, err
}

func (c *conn) Write(p []byte) (int, error) {
	if d := c.s.hangFor(); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		// While hanging nobody reads, so look for the client going away.
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
	wait:
		for {
			select {
			case <-t.C:
				break wait
			case <-tick.C:
				if peerClosed(c.Conn) {
					c.markGone()
					return 0, net.ErrClosed
				}
			case <-c.gone:
				return 0, net.ErrClosed
			case <-c.down:
				return 0, net.ErrClosed
			}
		}
	}
	return c.Conn.Write(p)
}

// peerClosed reports whether the client has closed its end, peeking at the
// socket without consuming anything.
func peerClosed(nc net.Conn) bool {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return false
	}
	sc, err := tc.SyscallConn()
	if err != nil {
		return true
	}
	closed := false
	var buf [1]byte
	err = sc.Read(func(fd uintptr) bool {
		n, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		closed = (n == 0 && rerr == nil) || (rerr != nil && rerr != syscall.EAGAIN && rerr != syscall.EINTR)
		return true
	})
	return closed || err != nil
}

func (c *conn) Close() error {
	c.markGone()
	err := c.Conn.Close()
	if c.closed.CompareAndSwap(false, true) {
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
		c.s.open.Add(-1)
	}
	return err
}

// session records one transaction at a time.
type session struct {
	s        *Server
	tls      bool
	helo     string
	from     string
	mailOpts *smtp.MailOptions
	rcpts    []string
	rcptOpts []*smtp.RcptOptions
	loggedIn atomic.Bool
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	_, isTLS := c.TLSConnectionState()
	s.backend.Add(1)
	sess := &session{s: s, tls: isTLS, helo: c.Hostname()}
	sess.loggedIn.Store(true)
	return sess, nil
}

func (ss *session) Reset() {
	ss.from, ss.mailOpts, ss.rcpts, ss.rcptOpts = "", nil, nil, nil
}

func (ss *session) Logout() error {
	if ss.loggedIn.CompareAndSwap(true, false) {
		ss.s.backend.Add(-1)
	}
	return nil
}

func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	ss.s.mu.Lock()
	fail := ss.s.failMail
	ss.s.mu.Unlock()
	if fail != nil {
		return fail
	}
	ss.Reset()
	ss.from = from
	if opts != nil {
		o := *opts
		ss.mailOpts = &o
	} else {
		ss.mailOpts = &smtp.MailOptions{}
	}
	return nil
}

func (ss *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	ss.s.mu.Lock()
	fail := ss.s.failRcpt[strings.ToLower(to)]
	ss.s.mu.Unlock()
	if fail != nil {
		return fail
	}
	o := &smtp.RcptOptions{}
	if opts != nil {
		c := *opts
		c.Notify = append([]smtp.DSNNotify(nil), opts.Notify...)
		o = &c
	}
	ss.rcpts = append(ss.rcpts, to)
	ss.rcptOpts = append(ss.rcptOpts, o)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	if ss.s.failData != nil {
		return ss.s.failData
	}
	ss.s.msgs = append(ss.s.msgs, Message{
		From:     ss.from,
		Rcpts:    append([]string(nil), ss.rcpts...),
		Data:     data,
		MailOpts: ss.mailOpts,
		RcptOpts: append([]*smtp.RcptOptions(nil), ss.rcptOpts...),
		TLS:      ss.tls,
		Helo:     ss.helo,
	})
	close(ss.s.changed)
	ss.s.changed = make(chan struct{})
	return nil
}

var (
	certOnce sync.Once
	cert     tls.Certificate
)

// certificate returns a self-signed certificate for localhost, made once.
func certificate() tls.Certificate {
	certOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic("smtptest: key: " + err.Error())
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1),
			Subject:      pkix.Name{CommonName: "localhost"},
			DNSNames:     []string{"localhost"},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic("smtptest: certificate: " + err.Error())
		}
		cert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	})
	return cert
}
