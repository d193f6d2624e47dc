package smtpd

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
)

// ETRNListener wraps l so that its connections answer ETRN (RFC 1985)
// themselves, a command go-smtp does not know, and advertise it in the EHLO
// reply. flush is called with the requested domain and reports whether it
// is a zone forwarded here (its queue is then flushed). ETRN only triggers
// delivery to the zone's registered target, so anyone may send it.
//
// The wrapper reads the client's command lines and passes everything else
// through untouched: message bodies (DATA until CRLF.CRLF, BDAT chunks by
// size) and, after STARTTLS, every byte (ETRN inside TLS is not seen and
// gets go-smtp's 500).
func ETRNListener(l net.Listener, flush func(domain string) bool) net.Listener {
	return &etrnListener{Listener: l, flush: flush}
}

type etrnListener struct {
	net.Listener
	flush func(domain string) bool
}

func (l *etrnListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	in := readers.Get().(*bufio.Reader)
	in.Reset(c)
	return &etrnConn{Conn: c, in: in, flush: l.flush}, nil
}

// readBuffer is how much of a client's stream one read takes from the
// socket: go-smtp reads 4 KiB at a time, and a message body served from
// here costs a copy rather than a system call.
const readBuffer = 32 << 10

// readers recycles the connections' read buffers: a new 32 KiB buffer for
// every connection was most of what a busy server allocated.
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBuffer) }}

type etrnMode int

const (
	modeCommand     etrnMode = iota
	modeDataPending          // DATA sent, waiting for the server's 354
	modeData                 // message body until CRLF.CRLF
	modeBDAT                 // chunk bytes
	modeBody                 // body being read by the session (fastBody)
	modeRaw                  // after STARTTLS: pass everything
)

type etrnConn struct {
	net.Conn
	in    *bufio.Reader
	flush func(string) bool

	mu      sync.Mutex // guards the fields below and writes to Conn
	mode    etrnMode
	chunk   int64 // BDAT bytes still to pass
	ehlo    bool  // an EHLO reply is due: advertise ETRN in it
	pending []byte
	partial bool      // the last line handed on had no LF yet
	data    dataState // modeData: where go-smtp's DATA reader is
	err     error     // a body read's failure: every later read fails with it

	// in goes back to readers once the connection is closed and no read
	// uses it (a server shutdown closes connections under their readers).
	inMu    sync.Mutex
	inUsers int
	closed  bool
}

// useIn marks a use of c.in, which stays valid until doneIn; false once
// the connection is closed.
func (c *etrnConn) useIn() bool {
	c.inMu.Lock()
	defer c.inMu.Unlock()
	if c.closed {
		return false
	}
	c.inUsers++
	return true
}

// doneIn ends a use of c.in.
func (c *etrnConn) doneIn() {
	c.inMu.Lock()
	defer c.inMu.Unlock()
	c.inUsers--
	c.recycleIn()
}

// recycleIn hands c.in back to readers if the connection is closed and
// nothing uses it. c.inMu is held.
func (c *etrnConn) recycleIn() {
	if c.closed && c.inUsers == 0 && c.in != nil {
		c.in.Reset(nil)
		readers.Put(c.in)
		c.in = nil
	}
}

// Close closes the connection; its read buffer is recycled once no read
// uses it.
func (c *etrnConn) Close() error {
	c.inMu.Lock()
	c.closed = true
	c.recycleIn()
	c.inMu.Unlock()
	return c.Conn.Close()
}

// errBodyTaken is what go-smtp would read while the session reads a body
// itself (it never does: it reads on once the session's Data returns).
var errBodyTaken = errors.New("smtpd: message body is being read by the session")

// Read hands go-smtp the client's bytes, minus ETRN commands.
func (c *etrnConn) Read(p []byte) (int, error) {
	if !c.useIn() {
		return 0, net.ErrClosed
	}
	defer c.doneIn()
	for {
		c.mu.Lock()
		if len(c.pending) > 0 {
			n := copy(p, c.pending)
			c.pending = c.pending[n:]
			c.mu.Unlock()
			return n, nil
		}
		mode, chunk, err := c.mode, c.chunk, c.err
		c.mu.Unlock()
		if err != nil {
			return 0, err
		}
		switch mode {
		case modeBody:
			return 0, errBodyTaken
		case modeRaw:
			return c.in.Read(p)
		case modeData:
			return c.readData(p)
		case modeBDAT:
			if int64(len(p)) > chunk {
				p = p[:chunk]
			}
			n, err := c.in.Read(p)
			c.mu.Lock()
			if c.chunk -= int64(n); c.chunk <= 0 {
				c.mode = modeCommand
			}
			c.mu.Unlock()
			return n, err
		}
		line, err := c.nextLine()
		if len(line) > 0 {
			c.line(line)
			c.in.Discard(len(line))
		}
		if err != nil {
			c.mu.Lock()
			empty := len(c.pending) == 0
			c.mu.Unlock()
			if empty {
				return 0, err
			}
		}
	}
}

// maxCommandLine is the most of a command line the wrapper holds: a longer
// one is handed on in pieces, for go-smtp to refuse.
const maxCommandLine = 4096

// nextLine returns the client's next line through its LF, or the first
// maxCommandLine bytes of a longer one, or what is left with the read
// error. It stays in c.in (valid until the next read): the caller discards it.
func (c *etrnConn) nextLine() ([]byte, error) {
	seen := 0 // bytes known to hold no LF
	for {
		buf, _ := c.in.Peek(min(c.in.Buffered(), maxCommandLine))
		if i := bytes.IndexByte(buf[seen:], '\n'); i >= 0 {
			return buf[:seen+i+1], nil
		}
		if seen = len(buf); seen == maxCommandLine {
			return buf, nil
		}
		if _, err := c.in.Peek(seen + 1); err != nil {
			buf, _ = c.in.Peek(c.in.Buffered())
			return buf, err
		}
	}
}

// readData hands go-smtp message body bytes, up to and including the
// end-of-data line, and then goes back to reading commands.
func (c *etrnConn) readData(p []byte) (int, error) {
	if c.in.Buffered() == 0 {
		if _, err := c.in.Peek(1); err != nil {
			return 0, err
		}
	}
	buf, _ := c.in.Peek(min(c.in.Buffered(), len(p)))
	c.mu.Lock()
	n, ended := c.data.scan(buf)
	if ended {
		c.mode, c.partial = modeCommand, false
	}
	c.mu.Unlock()
	copy(p, buf[:n])
	c.in.Discard(n)
	return n, nil
}

// line classifies one client line (or the start of an over-long one) and
// queues what go-smtp should see.
func (c *etrnConn) line(b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	complete := b[len(b)-1] == '\n'
	startOfLine := !c.partial
	c.partial = !complete
	if !startOfLine {
		c.pending = append(c.pending, b...)
		return
	}
	switch c.mode {
	case modeDataPending:
		// Pipelined bytes after DATA before the 354: go-smtp will read
		// them as body if it answers 354, as commands otherwise.
		c.pending = append(c.pending, b...)
		return
	}
	verb, arg, _ := strings.Cut(strings.TrimRight(string(b), "\r\n"), " ")
	switch strings.ToUpper(verb) {
	case "ETRN":
		if complete {
			c.reply(c.etrn(strings.TrimSpace(arg)))
			return
		}
	case "EHLO":
		c.ehlo = true
	case "DATA":
		c.mode = modeDataPending
	case "BDAT":
		f := strings.Fields(arg)
		if len(f) > 0 {
			if n, err := strconv.ParseInt(f[0], 10, 64); err == nil && n > 0 {
				c.mode, c.chunk = modeBDAT, n
			}
		}
	case "STARTTLS":
		c.mode = modeRaw
	}
	c.pending = append(c.pending, b...)
}

// etrn answers one ETRN command (RFC 1985 5).
func (c *etrnConn) etrn(arg string) string {
	d := strings.TrimPrefix(strings.TrimPrefix(arg, "@"), "#")
	switch {
	case d == "" || strings.ContainsAny(d, " \t"):
		return "501 5.5.4 Syntax: ETRN domain"
	case c.flush(d):
		return "250 2.0.0 Queuing for node " + d + " started"
	}
	return "458 4.7.0 Unable to queue messages for node " + d
}

// reply writes a reply of ours to the client.
func (c *etrnConn) reply(s string) {
	c.Conn.Write([]byte(s + "\r\n"))
}

// Write passes go-smtp's replies on; it notices the 354 that starts a body
// and adds ETRN to the EHLO keywords.
func (c *etrnConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mode == modeDataPending && len(p) >= 3 {
		if string(p[:3]) == "354" {
			c.mode, c.data = modeData, dataBeginLine
		} else {
			c.mode = modeCommand
		}
	}
	if c.ehlo && bytes.HasPrefix(p, []byte("250-")) {
		c.ehlo = false
		if i := bytes.Index(p, []byte("\r\n")); i >= 0 {
			out := make([]byte, 0, len(p)+10)
			out = append(out, p[:i+2]...)
			out = append(out, "250-ETRN\r\n"...)
			out = append(out, p[i+2:]...)
			if _, err := c.Conn.Write(out); err != nil {
				return 0, err
			}
			return len(p), nil
		}
	}
	return c.Conn.Write(p)
}

// dataState follows a message body byte by byte as go-smtp's DATA reader
// does (its data.go, after net/textproto), so the wrapper leaves modeData
// exactly where go-smtp sees CRLF.CRLF. A line starts only after CRLF:
// after a bare LF, ".<CRLF>" is body to go-smtp, and taking it as the end
// here would make the wrapper read the next body lines as commands (an
// "ETRN" line there answered and cut out of the message).
type dataState uint8

const (
	dataBeginLine dataState = iota // must be zero: a body starts at a line start
	dataDot                        // "." at a line start
	dataDotCR                      // ".<CR>" at a line start
	dataCR                         // <CR>
	dataMiddle                     // inside a line
)

// scan feeds b and returns how much of it is body: all of it, or up to and
// including the LF of the end-of-data line (ended).
func (s *dataState) scan(b []byte) (n int, ended bool) {
	for i := 0; i < len(b); i++ {
		if *s == dataMiddle {
			// Inside a line only a CR changes anything: skip to it.
			j := bytes.IndexByte(b[i:], '\r')
			if j < 0 {
				return len(b), false
			}
			i += j
		}
		if s.step(b[i]) {
			return i + 1, true
		}
	}
	return len(b), false
}

// step feeds one byte and reports whether it ended the end-of-data line.
func (s *dataState) step(ch byte) bool {
	switch *s {
	case dataBeginLine:
		switch ch {
		case '.':
			*s = dataDot
		case '\r':
			*s = dataCR
		default:
			*s = dataMiddle
		}
	case dataDot:
		if ch == '\r' {
			*s = dataDotCR
		} else {
			*s = dataMiddle
		}
	case dataDotCR:
		if ch == '\n' {
			*s = dataBeginLine
			return true
		}
		*s = dataMiddle
	case dataCR:
		if ch == '\n' {
			*s = dataBeginLine
		} else {
			*s = dataMiddle
		}
	case dataMiddle:
		if ch == '\r' {
			*s = dataCR
		}
	}
	return false
}
