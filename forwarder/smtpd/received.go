package smtpd

import (
	"crypto/tls"
	"errors"
	"io"
	"strings"
	"time"
)

// MaxReceived is how many Received headers a message may already carry;
// one more is a mail loop (RFC 5321 6.3): 554 5.4.6.
const MaxReceived = 100

// errLoop is returned by the header-counting reader when a message
// carries more than MaxReceived Received headers. It aborts spool.Put,
// which then keeps nothing.
var errLoop = errors.New("smtpd: too many Received headers (mail loop)")

// traceInfo is what the Received header says about a transaction.
type traceInfo struct {
	helo     string // the client's HELO/EHLO argument, as given
	ip       string // remote address, "" when not IP (tests over pipes)
	rdns     string // forward-confirmed reverse name, "" when none
	hostname string // ours
	tls      *tls.ConnectionState
	utf8     bool
	id       string
	rcpts    []string
	now      time.Time
}

// receivedHeader formats a Received header field per RFC 5321 4.4 (and
// 6531 3.7.3 for the UTF8SMTP protocol names):
//
//	Received: from HELO (NAME [IP])
//		by HOSTNAME (mxport) with ESMTPS (TLS1.3 CIPHER) id ID
//		for <RCPT>; DATE
//
// NAME is the forward-confirmed reverse name or "[IP]"; the "for" clause
// only when there is one recipient (more would disclose Bcc recipients). A
// HELO argument that is not a domain or address literal is not written as
// the From-domain (it could break the header): "[IP]" stands there and the
// HELO, made safe, goes in the comment.
func receivedHeader(ti traceInfo) string {
	lit := "[" + ti.ip + "]"
	if ti.ip == "" {
		lit = "[unknown]"
	}
	from, helo := ti.helo, ""
	if !validHelo(from) {
		from, helo = lit, " helo="+commentSafe(ti.helo)
	}
	name := lit
	if ti.rdns != "" {
		name = ti.rdns
	}
	var b strings.Builder
	b.WriteString("Received: from ")
	b.WriteString(from)
	b.WriteString(" (")
	b.WriteString(name)
	b.WriteString(" ")
	b.WriteString(lit)
	b.WriteString(helo)
	b.WriteString(")\r\n\tby ")
	b.WriteString(ti.hostname)
	b.WriteString(" (mxport) with ")
	proto := "ESMTP"
	if ti.utf8 {
		proto = "UTF8SMTP"
	}
	b.WriteString(proto)
	if ti.tls != nil {
		b.WriteString("S (")
		b.WriteString(strings.ReplaceAll(tls.VersionName(ti.tls.Version), " ", ""))
		b.WriteString(" ")
		b.WriteString(tls.CipherSuiteName(ti.tls.CipherSuite))
		b.WriteString(")")
	}
	b.WriteString(" id ")
	b.WriteString(ti.id)
	if len(ti.rcpts) == 1 {
		b.WriteString("\r\n\tfor <")
		b.WriteString(ti.rcpts[0])
		b.WriteString(">")
	}
	b.WriteString("; ")
	b.WriteString(ti.now.Format(time.RFC1123Z))
	b.WriteString("\r\n")
	return b.String()
}

// validHelo reports whether a HELO argument can stand as the Received
// From-domain: a domain or an address literal.
func validHelo(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	if h[0] == '[' {
		return validLiteral(h)
	}
	_, err := checkDomain(h, false)
	return err == nil
}

// commentSafe keeps at most 64 printable ASCII characters of s, with
// those that would end or nest a comment replaced by '?'.
func commentSafe(s string) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < 64; i++ {
		c := s[i]
		if c <= 32 || c >= 127 || c == '(' || c == ')' || c == '\\' {
			c = '?'
		}
		b.WriteByte(c)
	}
	return b.String()
}

// loopGuard passes a message through unchanged while it counts the
// Received header fields of its header section (up to the first empty
// line); past MaxReceived it fails with errLoop. It also records the first
// error of the underlying reader (the client's connection), so the caller
// can tell a client failure from a spool failure.
type loopGuard struct {
	r        io.Reader
	inHeader bool
	line     []byte // the start of the current line, up to cap(line)
	count    int
	readErr  error // a non-EOF error of r
}

func newLoopGuard(r io.Reader) *loopGuard {
	return &loopGuard{r: r, inHeader: true, line: make([]byte, 0, 32)}
}

func (g *loopGuard) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	if err != nil && err != io.EOF && g.readErr == nil {
		g.readErr = err
	}
	if g.inHeader {
		for _, c := range p[:n] {
			if c == '\n' {
				if g.endLine() {
					return n, errLoop
				}
				if !g.inHeader {
					break
				}
				continue
			}
			if len(g.line) < cap(g.line) {
				g.line = append(g.line, c)
			}
		}
	}
	return n, err
}

// endLine looks at the line that just ended; it reports a loop.
func (g *loopGuard) endLine() bool {
	l := g.line
	g.line = g.line[:0]
	if len(l) > 0 && l[len(l)-1] == '\r' {
		l = l[:len(l)-1]
	}
	if len(l) == 0 {
		g.inHeader = false // the empty line ends the header section
		return false
	}
	const name = "received"
	if len(l) < len(name) || !strings.EqualFold(string(l[:len(name)]), name) {
		return false
	}
	rest := strings.TrimLeft(string(l[len(name):]), " \t") // obs-optional WSP before ':'
	if !strings.HasPrefix(rest, ":") {
		return false
	}
	g.count++
	return g.count > MaxReceived
}
