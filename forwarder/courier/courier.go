// Package courier makes one delivery attempt of one message to one target
// host:port over SMTP (go-smtp client), with opportunistic STARTTLS and
// PIPELINING, and reports a result per recipient. It knows no queue, disk or
// Redis. Deliver uses a new session each time; a Pool keeps sessions open
// between messages to a busy target.
//
// Outcomes follow RFC 5321 and STYLE.md section 6: only a remote 5xx reply is
// permanent (552 at RCPT counts as 452, RFC 5321 4.5.3.1.10); network, TLS and
// timeout failures are temporary. The remote's reply is kept exactly, on one
// line, for the DSN and the delivery log.
package courier

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// DefaultTimeout is the per-command timeout when Config.Timeout is zero
// (RFC 5321 4.5.3.2 suggests 5 minutes for most commands).
const DefaultTimeout = 5 * time.Minute

// Envelope is what one attempt sends.
type Envelope struct {
	From  string // reverse-path ("" = null, sent as MAIL FROM:<>)
	Rcpts []Rcpt
	Ret   string // DSN RET (FULL/HDRS), passed on when the server offers DSN
	EnvID string // DSN ENVID (decoded), passed on when the server offers DSN
	// UTF8 says SMTPUTF8 is needed: if the server lacks it, every recipient
	// fails permanently with 553 5.6.7 (RFC 6531 3.2) and nothing is sent.
	UTF8 bool
	// Body8Bit says the body has 8-bit data. go-smtp declares BODY=8BITMIME
	// whenever the server offers 8BITMIME; a server without it still gets
	// the body unchanged (no downgrade), as most MTAs do.
	Body8Bit bool
	Size     int64 // body size in bytes, declared with SIZE when offered (RFC 1870); 0 = unknown
}

// Rcpt is one recipient with its DSN parameters (RFC 3461), passed on when the
// server offers DSN.
type Rcpt struct {
	Addr   string
	Notify string // "" or NEVER, or a comma list of SUCCESS, FAILURE, DELAY; invalid values are dropped
	ORcpt  string // "rfc822;addr", "utf-8;addr" or a bare address (taken as rfc822), decoded; "" = none
}

// Result is the outcome of one recipient.
type Result struct {
	Rcpt string
	// Code is the remote's SMTP reply code, or 0 when there was no reply for
	// this recipient (connection, TLS or timeout error).
	Code int
	// Reply is the remote's reply exactly ("250 2.0.0 Ok: queued as X",
	// lines of a multi-line reply joined by a space), or the local error text
	// when Code is 0.
	Reply string
	// Permanent is set only for a remote 5xx for this recipient (MAIL, RCPT
	// or DATA; 552 at RCPT is temporary, RFC 5321 4.5.3.1.10) and for a
	// missing SMTPUTF8 (553 5.6.7). Everything else is temporary.
	Permanent bool
	// Delivered is set when the remote accepted the message for this
	// recipient (250 after the final dot).
	Delivered bool
}

// Config is the courier's configuration; the zero value works.
type Config struct {
	Hostname string        // our EHLO name; "" = "localhost"
	Timeout  time.Duration // per command, TLS handshake and body write; 0 = DefaultTimeout. The whole attempt also ends with ctx.
	// TLS is the STARTTLS configuration; ServerName is set to the target host
	// when empty. nil = opportunistic and unverified (InsecureSkipVerify).
	TLS *tls.Config
}

// Deliver makes one attempt to deliver a message to addr (ip:port): EHLO,
// STARTTLS when offered (if STARTTLS fails, it redials and goes plain), MAIL
// (with SIZE, BODY, SMTPUTF8, RET/ENVID when offered), one RCPT per recipient
// (NOTIFY/ORCPT when DSN is offered), DATA streaming body, QUIT; MAIL, the
// RCPTs and DATA go in one write when PIPELINING is offered (RFC 2920). host
// is the target's name, for TLS ServerName and error texts.
//
// It returns one Result per recipient, in the order of env.Rcpts. err is
// non-nil only when the attempt failed temporarily before any recipient was
// tried (connection, greeting, EHLO, TLS, a 4xx or no reply to MAIL); then
// every Result is temporary and carries that failure, and another address or
// MX may be tried. A 5xx to MAIL (e.g. 552 for SIZE) or a missing SMTPUTF8
// (553 5.6.7) is an answer for every recipient: err is nil and every Result
// is permanent.
//
// When ctx ends, the connection is closed and Deliver returns at once with
// the unfinished recipients temporary. Deliver is safe for concurrent use.
func Deliver(ctx context.Context, cfg Config, host, addr string, env Envelope, body io.Reader) ([]Result, error) {
	if len(env.Rcpts) == 0 {
		return nil, errNoRcpts
	}
	a := newAttempt(ctx, cfg.withDefaults(), host, addr, env, nil)
	s, err := a.open()
	if err != nil {
		return a.failAll(err)
	}
	defer s.raw.Close()
	stop := context.AfterFunc(ctx, func() { s.raw.Close() })
	defer stop()
	res, end, err := a.transaction(s, body)
	if end.answers() {
		s.c.Quit() // the outcome is known; a failed QUIT changes nothing
	}
	return res, err
}

var errNoRcpts = errors.New("courier: no recipients")

// withDefaults fills in the zero fields.
func (cfg Config) withDefaults() Config {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "localhost"
	}
	return cfg
}

// newAttempt starts an attempt with every result unsettled. dials, when not
// nil, counts the TCP connections the attempt dials.
func newAttempt(ctx context.Context, cfg Config, host, addr string, env Envelope, dials *atomic.Int64) *attempt {
	a := &attempt{ctx: ctx, cfg: cfg, host: host, addr: addr, env: env, dials: dials}
	a.results = make([]Result, len(env.Rcpts))
	for i, r := range env.Rcpts {
		a.results[i].Rcpt = r.Addr
	}
	return a
}

// session is one greeted SMTP session, with or without TLS, ready for MAIL.
type session struct {
	c    *smtp.Client
	raw  net.Conn // the TCP connection: closing it ends the session at once
	wire net.Conn // the connection c reads and writes (over TLS or not)
	// replies reads wire in pipelined transactions only (RFC 2920), beside
	// go-smtp's own reader. Both are empty at a transaction's boundaries,
	// where the server has nothing more to say; see pipelined.
	replies *textproto.Reader

	// Used by Pool only.
	born      time.Time // when it was dialed
	idleSince time.Time // when it last went back to the pool
	uses      int       // transactions run on it
}

// open dials a new session: EHLO, and STARTTLS when offered; if STARTTLS
// fails, it redials and goes plain.
func (a *attempt) open() (*session, error) {
	s, err := a.connect(true)
	var tlsErr *startTLSError
	if errors.As(err, &tlsErr) && a.ctx.Err() == nil {
		// RFC 3207 4.1: a client may go on without TLS; the broken session
		// is unusable, so start a new one that does not ask for it.
		s, err = a.connect(false)
	}
	if err != nil {
		return nil, err
	}
	s.born = time.Now()
	return s, nil
}

type attempt struct {
	ctx     context.Context
	cfg     Config
	host    string
	addr    string
	env     Envelope
	results []Result
	dials   *atomic.Int64 // nil = not counted
}

// startTLSError marks a failure of STARTTLS itself, after which a plain
// session is worth trying.
type startTLSError struct{ err error }

func (e *startTLSError) Error() string { return "starttls: " + e.err.Error() }
func (e *startTLSError) Unwrap() error { return e.err }

// greetError marks a failed greeting or EHLO: even a 5xx there says nothing
// about the recipients, so it is temporary.
type greetError struct{ err error }

func (e *greetError) Error() string { return e.err.Error() }
func (e *greetError) Unwrap() error { return e.err }

// connect dials and greets; with tryTLS it upgrades when STARTTLS is offered.
// On success the session's raw TCP connection is the caller's to close.
func (a *attempt) connect(tryTLS bool) (*session, error) {
	if a.dials != nil {
		a.dials.Add(1)
	}
	d := net.Dialer{Timeout: a.cfg.Timeout}
	raw, err := d.DialContext(a.ctx, "tcp", a.addr)
	if err != nil {
		return nil, err
	}
	// go-smtp clears deadlines after every command: closing the connection
	// is the only way to stop it when the attempt's context ends.
	stop := context.AfterFunc(a.ctx, func() { raw.Close() })
	defer stop()
	conn := &timeoutConn{Conn: raw, timeout: a.cfg.Timeout}

	c := a.newClient(conn)
	if err := c.Hello(a.cfg.Hostname); err != nil {
		raw.Close()
		return nil, &greetError{err}
	}
	if !offers(c, "STARTTLS") || !tryTLS {
		return newSession(c, raw, conn), nil
	}
	c, wire, err := a.startTLS(conn)
	if err != nil {
		raw.Close()
		return nil, &startTLSError{err}
	}
	return newSession(c, raw, wire), nil
}

// newSession returns the session of client c, which reads and writes wire
// over the TCP connection raw.
func newSession(c *smtp.Client, raw, wire net.Conn) *session {
	return &session{c: c, raw: raw, wire: wire, replies: newReplyReader(wire)}
}

// offers reports whether the server offers the EHLO keyword ext (upper
// case), as go-smtp's Client looks it up.
func offers(c *smtp.Client, ext string) bool {
	ok, _ := c.Extension(ext)
	return ok
}

func (a *attempt) newClient(conn net.Conn) *smtp.Client {
	c := smtp.NewClient(conn)
	c.CommandTimeout = a.cfg.Timeout
	c.SubmissionTimeout = a.cfg.Timeout
	return c
}

// startTLS sends STARTTLS on a session that has said EHLO, and returns a new
// client over TLS that has said EHLO again (RFC 3207 4.2), and the
// connection it writes to. go-smtp v0.25 has
// no exported StartTLS on a Client after Hello, so the command is sent here
// and the new client is handed a stand-in greeting.
func (a *attempt) startTLS(conn *timeoutConn) (*smtp.Client, net.Conn, error) {
	conn.SetDeadline(time.Now().Add(a.cfg.Timeout))
	if _, err := io.WriteString(conn, "STARTTLS\r\n"); err != nil {
		return nil, nil, err
	}
	// The server sends nothing after its reply until our ClientHello, so this
	// reader cannot swallow TLS bytes.
	tr := textproto.NewReader(bufio.NewReaderSize(conn, 1024))
	if _, _, err := tr.ReadResponse(220); err != nil {
		var pe *textproto.Error
		if errors.As(err, &pe) {
			return nil, nil, smtpError(pe)
		}
		return nil, nil, err
	}
	conn.SetDeadline(time.Time{})

	cfg := a.cfg.TLS
	if cfg == nil {
		cfg = &tls.Config{InsecureSkipVerify: true}
	}
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName = strings.TrimSuffix(a.host, ".")
	}
	tc := tls.Client(conn, cfg)
	hctx, cancel := context.WithTimeout(a.ctx, a.cfg.Timeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return nil, nil, err
	}
	wire := &greetedConn{Conn: tc, greeting: []byte("220 " + a.host + " TLS\r\n")}
	c := a.newClient(wire)
	if err := c.Hello(a.cfg.Hostname); err != nil {
		return nil, nil, err
	}
	return c, wire, nil
}

// end is the state a transaction leaves its session in, which says what
// may follow on it.
type end int

const (
	// endBroken: the session is unusable (I/O error, timeout, 421, a
	// half-sent DATA): close it without a word.
	endBroken end = iota
	// endMailLost: like endBroken, at MAIL, before anything was accepted.
	// On a session taken from a Pool the server may have dropped it while
	// idle, so a fresh session may take the message (Pool.Deliver).
	endMailLost
	// endRefused: the server answered but the transaction did not end
	// (MAIL or DATA refused): QUIT.
	endRefused
	// endNoRcpt: every RCPT was refused; MAIL is still in force. RSET
	// makes the session clean again (RFC 5321 4.1.1.5), or QUIT ends it.
	endNoRcpt
	// endClean: the transaction ended with the reply to the final dot,
	// whatever it was, or never started: the session may take another.
	endClean
)

// answers reports whether the session still answers commands (QUIT).
func (e end) answers() bool { return e >= endRefused }

// transaction runs MAIL, RCPT and DATA on a greeted session, sets the
// results and says in what state it left the session. It never sends QUIT or
// RSET: that is the caller's choice. When the server offers PIPELINING (RFC
// 2920), MAIL, every RCPT and DATA go in one write (pipelined, unless group
// says otherwise); else one at a time through go-smtp (stepwise). The same
// replies give the same results and state either way.
func (a *attempt) transaction(s *session, body io.Reader) ([]Result, end, error) {
	if err := a.ctx.Err(); err != nil {
		// Ended already: the connection is being closed under us, but a quick
		// server could answer the whole transaction first.
		return a.mailFailed(fmt.Errorf("attempt ended: %w", err))
	}
	if a.env.UTF8 && !offers(s.c, "SMTPUTF8") {
		// RFC 6531 3.2: the message cannot go to a server without
		// SMTPUTF8; no downgrade is attempted.
		err := &localPermError{code: 553, reply: fmt.Sprintf("553 5.6.7 %s does not offer SMTPUTF8, which this message needs", a.host)}
		a.setAll(err)
		return a.results, endClean, nil
	}
	if offers(s.c, "PIPELINING") {
		if group, ok := a.group(s.c); ok {
			return a.pipelined(s, group, body)
		}
	}
	return a.stepwise(s, body)
}

// stepwise runs the transaction through go-smtp's client, one command and
// its reply at a time.
func (a *attempt) stepwise(s *session, body io.Reader) ([]Result, end, error) {
	c := s.c
	if err := c.Mail(a.env.From, a.mailOptions(c)); err != nil {
		return a.mailFailed(err)
	}
	accepted, ok := a.rcpts(func(i int) error {
		r := a.env.Rcpts[i]
		return c.Rcpt(r.Addr, a.rcptOptions(c, r))
	})
	if !ok {
		return a.results, endBroken, nil
	}
	if len(accepted) == 0 {
		return a.results, endNoRcpt, nil
	}
	w, err := c.Data()
	if err != nil {
		return a.results, a.dataRefused(accepted, err), nil
	}
	return a.results, a.data(s, accepted, body, w, func() (string, error) {
		resp, err := w.CloseWithResponse()
		if err != nil {
			return "", err
		}
		return resp.StatusText, nil
	}), nil
}

// mailFailed settles every recipient after MAIL failed with err. A 5xx
// refuses the transaction: that is an answer for every recipient, not a
// reason to try another host, so err is nil. Anything else is temporary and
// returned as err; the state is endRefused after a reply, endMailLost after
// an I/O error or 421.
func (a *attempt) mailFailed(err error) ([]Result, end, error) {
	var se *smtp.SMTPError
	if errors.As(err, &se) && se.Code/100 == 5 {
		a.setAll(err)
		return a.results, endRefused, nil
	}
	state := endMailLost
	if isReply(err) {
		state = endRefused
	}
	res, err := a.failAll(err)
	return res, state, err
}

// rcpts settles each recipient by the result of reply(i), the reply to its
// RCPT (nil = accepted), in order, and returns the accepted ones. ok is false
// when the session broke (I/O error, 421): every recipient not yet settled
// then fails temporarily and nothing else may be sent.
func (a *attempt) rcpts(reply func(i int) error) (accepted []int, ok bool) {
	accepted = make([]int, 0, len(a.results))
	for i := range a.env.Rcpts {
		err := reply(i)
		if err == nil {
			accepted = append(accepted, i)
			continue
		}
		a.setError(i, err, true)
		if !isReply(err) {
			a.abort(err)
			return accepted, false
		}
	}
	return accepted, true
}

// dataRefused settles the accepted recipients by the failure of DATA and
// says in what state it left the session.
func (a *attempt) dataRefused(accepted []int, err error) end {
	a.setAccepted(accepted, err)
	if isReply(err) {
		return endRefused
	}
	return endBroken
}

// data sends the body after a 354 through dot, the DATA command's writer,
// then calls finish to end the data with the final dot and read the reply
// to it (its text, or the error), and settles the accepted recipients by it.
func (a *attempt) data(s *session, accepted []int, body io.Reader, dot io.Writer, finish func() (string, error)) end {
	br := &bodyReader{r: body}
	if err := sendData(s.wire, dot, br); err != nil {
		switch {
		case a.ctx.Err() != nil:
			err = a.localErr(err)
		case br.err != nil:
			err = fmt.Errorf("reading message: %w", br.err)
		default:
			err = fmt.Errorf("sending message: %w", a.localErr(err))
		}
		// The DATA cannot be ended cleanly: a final dot would send a
		// truncated message. Drop the connection instead.
		a.setAccepted(accepted, err)
		return endBroken
	}
	text, err := finish()
	if err != nil {
		a.setAccepted(accepted, err)
		if isReply(err) {
			return endClean
		}
		return endBroken
	}
	reply := "250 " + oneLine(text)
	for _, i := range accepted {
		a.results[i] = Result{Rcpt: a.env.Rcpts[i].Addr, Code: 250, Reply: reply, Delivered: true}
	}
	return endClean
}

func (a *attempt) mailOptions(c *smtp.Client) *smtp.MailOptions {
	o := &smtp.MailOptions{Size: a.env.Size, UTF8: a.env.UTF8}
	if a.env.Body8Bit {
		o.Body = smtp.Body8BitMIME
	}
	if offers(c, "DSN") {
		switch ret := smtp.DSNReturn(strings.ToUpper(a.env.Ret)); ret {
		case smtp.DSNReturnFull, smtp.DSNReturnHeaders:
			o.Return = ret
		}
		if printableASCII(a.env.EnvID) {
			o.EnvelopeID = a.env.EnvID
		}
	}
	return o
}

func (a *attempt) rcptOptions(c *smtp.Client, r Rcpt) *smtp.RcptOptions {
	if !offers(c, "DSN") {
		return nil
	}
	o := &smtp.RcptOptions{Notify: parseNotify(r.Notify)}
	if r.ORcpt != "" {
		typ, addr := smtp.DSNAddressTypeRFC822, r.ORcpt
		if t, rest, ok := strings.Cut(r.ORcpt, ";"); ok {
			switch strings.ToUpper(t) {
			case string(smtp.DSNAddressTypeRFC822):
				addr = rest
			case string(smtp.DSNAddressTypeUTF8):
				typ, addr = smtp.DSNAddressTypeUTF8, rest
			}
		}
		if typ == smtp.DSNAddressTypeRFC822 && !printableASCII(addr) {
			typ = smtp.DSNAddressTypeUTF8
		}
		if addr != "" && !strings.ContainsAny(addr, "\r\n") {
			o.OriginalRecipientType, o.OriginalRecipient = typ, addr
		}
	}
	return o
}

// parseNotify returns the NOTIFY values of s (RFC 3461 4.1), or nil when s is
// empty or invalid.
func parseNotify(s string) []smtp.DSNNotify {
	if s == "" {
		return nil
	}
	var out []smtp.DSNNotify
	seen := map[smtp.DSNNotify]bool{}
	for _, v := range strings.Split(s, ",") {
		n := smtp.DSNNotify(strings.ToUpper(strings.TrimSpace(v)))
		switch n {
		case smtp.DSNNotifyNever, smtp.DSNNotifySuccess, smtp.DSNNotifyFailure, smtp.DSNNotifyDelayed:
		default:
			return nil
		}
		if seen[n] {
			continue
		}
		seen[n] = true
		out = append(out, n)
	}
	if seen[smtp.DSNNotifyNever] && len(out) > 1 {
		return nil
	}
	return out
}

// setAll gives every recipient the same outcome.
func (a *attempt) setAll(err error) {
	for i := range a.results {
		a.setError(i, err, false)
	}
}

// failAll gives every recipient the same temporary failure and returns it as
// err.
func (a *attempt) failAll(err error) ([]Result, error) {
	a.setAll(err)
	return a.results, fmt.Errorf("courier: %s (%s): %w", a.host, a.addr, a.localErr(err))
}

// abort fails every recipient not yet settled with err, temporarily: the
// session broke before their outcome was known.
func (a *attempt) abort(err error) {
	for i := range a.results {
		if a.results[i].Code == 0 && a.results[i].Reply == "" {
			a.results[i] = a.tempResult(i, err)
		}
	}
}

// setAccepted gives each accepted recipient the outcome of DATA.
func (a *attempt) setAccepted(accepted []int, err error) {
	for _, i := range accepted {
		a.setError(i, err, false)
	}
	a.abort(err)
}

func (a *attempt) setError(i int, err error, atRcpt bool) {
	var se *smtp.SMTPError
	var lp *localPermError
	var ge *greetError
	var te *startTLSError
	switch {
	case (errors.As(err, &ge) || errors.As(err, &te)) && errors.As(err, &se) && se.Code >= 200:
		a.results[i] = Result{Rcpt: a.env.Rcpts[i].Addr, Code: se.Code, Reply: replyText(se)}
	case errors.As(err, &lp):
		a.results[i] = Result{Rcpt: a.env.Rcpts[i].Addr, Code: lp.code, Reply: lp.reply, Permanent: true}
	case errors.As(err, &se) && se.Code >= 200:
		perm := se.Code/100 == 5
		if atRcpt && se.Code == 552 {
			perm = false // RFC 5321 4.5.3.1.10: treat as 452
		}
		a.results[i] = Result{Rcpt: a.env.Rcpts[i].Addr, Code: se.Code, Reply: replyText(se), Permanent: perm}
	default:
		a.results[i] = a.tempResult(i, err)
	}
}

func (a *attempt) tempResult(i int, err error) Result {
	return Result{Rcpt: a.env.Rcpts[i].Addr, Reply: a.localErr(err).Error()}
}

// localErr explains an error caused by the attempt's context ending, which
// otherwise shows as a closed connection.
func (a *attempt) localErr(err error) error {
	if cerr := a.ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		var se *smtp.SMTPError
		if !errors.As(err, &se) {
			return fmt.Errorf("attempt ended: %w", cerr)
		}
	}
	return err
}

// localPermError is a permanent failure decided here, not by the remote.
type localPermError struct {
	code  int
	reply string
}

func (e *localPermError) Error() string { return e.reply }

// isReply reports whether err is a reply from the remote, after which the
// session is still usable (for QUIT).
func isReply(err error) bool {
	var se *smtp.SMTPError
	return errors.As(err, &se) && se.Code != 421
}

// replyText rebuilds the remote's reply: "550 5.1.1 message".
func replyText(se *smtp.SMTPError) string {
	ec := se.EnhancedCode
	if ec == smtp.EnhancedCodeNotSet || ec == smtp.NoEnhancedCode {
		return fmt.Sprintf("%d %s", se.Code, oneLine(se.Message))
	}
	return fmt.Sprintf("%d %d.%d.%d %s", se.Code, ec[0], ec[1], ec[2], oneLine(se.Message))
}

// smtpError turns a reply read with net/textproto into the error go-smtp's
// client makes of it: an enhanced code that starts the reply is parsed, and
// taken off every line that repeats it (RFC 2034).
func smtpError(pe *textproto.Error) *smtp.SMTPError {
	se := &smtp.SMTPError{Code: pe.Code, Message: pe.Msg}
	first, rest, ok := strings.Cut(pe.Msg, " ")
	if !ok {
		return se
	}
	if ec, ok := enhancedCode(first); ok {
		se.EnhancedCode = ec
		se.Message = strings.ReplaceAll(rest, "\n"+first+" ", "\n")
	}
	return se
}

// enhancedCode parses "class.subject.detail" as go-smtp does.
func enhancedCode(s string) (smtp.EnhancedCode, bool) {
	var ec smtp.EnhancedCode
	parts := strings.Split(s, ".")
	if len(parts) != len(ec) {
		return ec, false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			return ec, false
		}
		ec[i] = n
	}
	return ec, true
}

func oneLine(s string) string {
	return strings.TrimSpace(strings.ReplaceAll(strings.ReplaceAll(s, "\r", ""), "\n", " "))
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 {
			return false
		}
	}
	return s != ""
}

// bodyReader remembers a read error, to tell it from a write error.
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// timeoutConn bounds every write, so a server that stops reading during DATA
// (where go-smtp sets no deadline) cannot hold the attempt past Timeout.
type timeoutConn struct {
	net.Conn
	timeout time.Duration
}

func (c *timeoutConn) Write(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(p)
}

// greetedConn supplies a stand-in 220 greeting before the real stream, for a
// go-smtp client created after STARTTLS.
type greetedConn struct {
	net.Conn
	greeting []byte
}

func (c *greetedConn) Read(p []byte) (int, error) {
	if len(c.greeting) > 0 {
		n := copy(p, c.greeting)
		c.greeting = c.greeting[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
