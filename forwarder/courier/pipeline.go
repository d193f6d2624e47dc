package courier

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-smtp"
)

// SMTP PIPELINING (RFC 2920): MAIL, every RCPT and DATA go to the server in
// one write, a group, and their replies are read afterwards, in order. This
// saves a round trip per command, and the server a read and a write.
//
// go-smtp's client cannot pipeline, so the group is written to the
// session's connection directly, each line as go-smtp would send it, and
// the replies are read by the session's own reader. go-smtp's reader and
// this one never hold each other's bytes: a transaction starts and ends
// where the server has nothing more to say (after the reply to EHLO, RSET or
// the final dot), every reply to the group is read before the transaction
// ends, and go-smtp only reads the replies to its own commands (EHLO, RSET,
// QUIT).

// maxGroup bounds a pipelined group in bytes. Replies are read only once
// the whole group is written, so the write must not wait for the server to
// read: 4 KiB, the usual TCP window in RFC 2920 3.1, fits any socket send
// buffer. A bigger envelope (about 100 recipients) goes stepwise.
const maxGroup = 4 << 10

// maxReplyLine is go-smtp's limit on the length of a reply line.
const maxReplyLine = 2000

// group returns MAIL, every RCPT and DATA as one pipelined group of command
// lines, each as go-smtp's client sends it, or false when they are not to
// be pipelined: a group bigger than maxGroup, or a reverse-path or
// recipient with CR or LF, which go-smtp refuses without sending it, ending
// the transaction there (the stepwise path keeps that outcome).
func (a *attempt) group(c *smtp.Client) ([]byte, bool) {
	if strings.ContainsAny(a.env.From, "\r\n") {
		return nil, false
	}
	b := appendMail(make([]byte, 0, 256), c, a.env.From, a.mailOptions(c))
	for _, r := range a.env.Rcpts {
		if strings.ContainsAny(r.Addr, "\r\n") {
			return nil, false
		}
		b = appendRcpt(b, c, r.Addr, a.rcptOptions(c, r))
	}
	b = append(b, "DATA\r\n"...)
	return b, len(b) <= maxGroup
}

// pipelined runs the transaction: it writes group (made by group) at once,
// then reads the replies to MAIL, each RCPT and DATA; after a 354 it sends
// the body and the final dot and reads the reply to that. The results and the
// state are those of stepwise for the same replies. Whatever MAIL or the
// RCPTs got, every reply to the group is read (RFC 2920 3.1), unless the
// session broke.
func (a *attempt) pipelined(s *session, group []byte, body io.Reader) ([]Result, end, error) {
	if _, err := s.wire.Write(group); err != nil {
		return a.mailFailed(err)
	}
	if _, err := a.reply(s, 250); err != nil {
		res, state, err := a.mailFailed(err)
		if state == endRefused {
			state = a.skip(s)
		}
		return res, state, err
	}
	accepted, ok := a.rcpts(func(int) error {
		_, err := a.reply(s, 25)
		return err
	})
	if !ok {
		return a.results, endBroken, nil
	}
	_, err := a.reply(s, 354)
	if len(accepted) == 0 {
		return a.results, a.noMessage(s, err), nil
	}
	if err != nil {
		return a.results, a.dataRefused(accepted, err), nil
	}
	// sendData ends the data: the body's end and the final dot go in one write.
	return a.results, a.data(s, accepted, body, nil, func() (string, error) {
		return a.reply(s, 250)
	}), nil
}

// skip reads and drops the replies to the RCPTs and DATA of a group whose
// MAIL was refused (503s, most likely), and returns endRefused, or endBroken
// when the session broke.
func (a *attempt) skip(s *session) end {
	for range a.env.Rcpts {
		if _, err := a.reply(s, 25); err != nil && !isReply(err) {
			return endBroken
		}
	}
	_, err := a.reply(s, 354)
	if a.noMessage(s, err) == endBroken {
		return endBroken
	}
	return endRefused
}

// noMessage settles a pipelined DATA, whose reply was err, when there is no
// message to send: MAIL or every RCPT was refused. A 354 is answered with
// the final dot alone (an empty message to nobody), and the reply to it
// ends the transaction: endClean. A refused DATA leaves MAIL in force:
// endNoRcpt. An I/O error or 421 breaks the session: endBroken.
func (a *attempt) noMessage(s *session, err error) end {
	switch {
	case err == nil:
		if _, err := io.WriteString(s.wire, ".\r\n"); err != nil {
			return endBroken
		}
		if _, err := a.reply(s, 250); err != nil && !isReply(err) {
			return endBroken
		}
		return endClean
	case isReply(err):
		return endNoRcpt
	default:
		return endBroken
	}
}

// reply reads the next reply on s within the command timeout, as go-smtp's
// client reads it: its text is the lines without their codes, joined by
// "\n", and a code other than expect (a prefix when under 100: 25 takes 250
// and 251) is an *smtp.SMTPError. go-smtp sets its own deadline before each
// command, so the one left here does not matter.
func (a *attempt) reply(s *session, expect int) (string, error) {
	s.raw.SetReadDeadline(time.Now().Add(a.cfg.Timeout))
	_, text, err := s.replies.ReadResponse(expect)
	var pe *textproto.Error
	if errors.As(err, &pe) {
		return text, smtpError(pe)
	}
	return text, err
}

// newReplyReader returns the reader of a session's pipelined replies on
// conn, the connection its go-smtp client reads.
func newReplyReader(conn net.Conn) *textproto.Reader {
	return textproto.NewReader(bufio.NewReader(&lineLimiter{r: conn}))
}

// lineLimiter fails with smtp.ErrTooLongLine, as go-smtp's client does, at
// a line of more than maxReplyLine bytes, so that a server cannot make the
// reader buffer without end. The lines before it are still read.
type lineLimiter struct {
	r    io.Reader
	line int   // bytes read since the last LF
	err  error // sticky
}

func (l *lineLimiter) Read(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	n, err := l.r.Read(p)
	for i := 0; i < n; {
		j := bytes.IndexByte(p[i:n], '\n')
		if j < 0 {
			j = n - i
		}
		if l.line+j > maxReplyLine {
			l.err = smtp.ErrTooLongLine
			return i, l.err
		}
		l.line += j
		if i += j; i < n { // at an LF
			l.line, i = 0, i+1
		}
	}
	return n, err
}

// appendMail appends the MAIL command line, CRLF included, that go-smtp's
// Client.Mail sends for from and o on c: BODY=8BITMIME whenever the server
// offers 8BITMIME (whatever o.Body says), SIZE when offered and not 0,
// SMTPUTF8, and RET and ENVID (xtext) when DSN is offered. o is made by
// mailOptions, which sets neither RequireTLS nor Auth, and asks for
// SMTPUTF8 only where transaction has checked that it is offered.
func appendMail(b []byte, c *smtp.Client, from string, o *smtp.MailOptions) []byte {
	b = append(b, "MAIL FROM:<"...)
	b = append(b, from...)
	b = append(b, '>')
	if offers(c, "8BITMIME") {
		b = append(b, " BODY=8BITMIME"...)
	}
	if o.Size != 0 && offers(c, "SIZE") {
		b = append(b, " SIZE="...)
		b = strconv.AppendInt(b, o.Size, 10)
	}
	if o.UTF8 {
		b = append(b, " SMTPUTF8"...)
	}
	if offers(c, "DSN") {
		if o.Return != "" {
			b = append(b, " RET="...)
			b = append(b, o.Return...)
		}
		if o.EnvelopeID != "" {
			b = append(b, " ENVID="...)
			b = appendXtext(b, o.EnvelopeID)
		}
	}
	return append(b, "\r\n"...)
}

// appendRcpt appends the RCPT command line, CRLF included, that go-smtp's
// Client.Rcpt sends for to and o on c: when DSN is offered, NOTIFY and ORCPT
// (RFC 3461 4.2), an rfc822 address as xtext, a utf-8 one as
// utf-8-addr-unitext when the server offers SMTPUTF8 and as
// utf-8-addr-xtext otherwise (RFC 6533 3). o is made by rcptOptions, whose
// NOTIFY lists are valid and whose rfc822 addresses are printable ASCII.
func appendRcpt(b []byte, c *smtp.Client, to string, o *smtp.RcptOptions) []byte {
	b = append(b, "RCPT TO:<"...)
	b = append(b, to...)
	b = append(b, '>')
	if o != nil && offers(c, "DSN") {
		for i, n := range o.Notify {
			if i == 0 {
				b = append(b, " NOTIFY="...)
			} else {
				b = append(b, ',')
			}
			b = append(b, n...)
		}
		if o.OriginalRecipient != "" {
			b = append(b, " ORCPT="...)
			b = append(b, o.OriginalRecipientType...)
			b = append(b, ';')
			if o.OriginalRecipientType == smtp.DSNAddressTypeRFC822 {
				b = appendXtext(b, o.OriginalRecipient)
			} else {
				b = appendUTF8Addr(b, o.OriginalRecipient, offers(c, "SMTPUTF8"))
			}
		}
	}
	return append(b, "\r\n"...)
}

// appendXtext appends s as xtext (RFC 3461 4) the way go-smtp encodes it:
// '+' and the upper-case hex of the code point for '+', '=' and whatever is
// not printable ASCII (two hex digits for the ASCII that reaches here).
func appendXtext(b []byte, s string) []byte {
	return appendEscaped(b, s, false, "+%X")
}

// appendUTF8Addr appends s as utf-8-addr-xtext or, with unitext, as
// utf-8-addr-unitext (RFC 6533 3), the way go-smtp encodes them: "\x{HEX}"
// for '+', '=' and whatever is not printable ASCII, except non-ASCII
// characters in unitext, which are kept.
func appendUTF8Addr(b []byte, s string, unitext bool) []byte {
	return appendEscaped(b, s, unitext, `\x{%X}`)
}

// appendEscaped appends s, rune by rune, printable ASCII other than '+' and
// '=' as it is, non-ASCII too with keepUTF8, and any other rune as its code
// point formatted with esc.
func appendEscaped(b []byte, s string, keepUTF8 bool, esc string) []byte {
	for _, r := range s {
		switch {
		case r >= '!' && r <= '~' && r != '+' && r != '=', keepUTF8 && r >= utf8.RuneSelf:
			b = utf8.AppendRune(b, r)
		default:
			b = fmt.Appendf(b, esc, r)
		}
	}
	return b
}
