package smtpd

import (
	"bytes"
	"io"
	"net"

	"github.com/emersion/go-smtp"
)

// A message body is read here rather than through go-smtp's DATA reader,
// which takes it a byte at a time (a quarter of the server's CPU at 64 KiB a
// message). The ETRN wrapper (etrnConn) sees every byte the client sends
// outside TLS and already follows the body to its CRLF.CRLF; after go-smtp's
// 354 it lets the session take the body from its own buffer instead, decoded
// in bulk exactly as go-smtp would decode it, and then hands go-smtp an
// empty body (".<CRLF>") so that go-smtp answers with the session's reply
// and goes on reading commands where the body ended.

// bodyReader reads the body of the message that go-smtp just answered 354
// for, from the client's stream, without the dot-stuffing and the end line;
// it returns io.EOF after the end line. Its errors stay: the wrapper then
// fails every later read with the same error, so go-smtp ends the session
// (an over-long line gets its "500 Too long line", a timeout its 421).
type bodyReader struct {
	c   *etrnConn
	dec bodyDecoder
	err error // io.EOF once the end line is read
}

// fastBody returns a reader of the body that follows the 354 go-smtp just
// sent on nc, or nil when go-smtp's own reader must read it: nc is not the
// wrapper's (a TLS session is read by crypto/tls, which the wrapper only
// passes bytes to), or bytes of the body were already handed to go-smtp.
// maxLine is go-smtp's MaxLineLength, which the reader enforces as go-smtp
// would. The caller reads it to io.EOF or an error (Drain).
func fastBody(nc net.Conn, maxLine int) *bodyReader {
	c, ok := nc.(*etrnConn)
	if !ok {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mode != modeData || len(c.pending) > 0 || c.data != dataBeginLine {
		return nil
	}
	c.mode = modeBody
	// go-smtp's line counter has just seen the LF of the DATA line.
	return &bodyReader{c: c, dec: bodyDecoder{maxLine: maxLine, lineLen: 1}}
}

// Read decodes the client's body bytes into p.
func (b *bodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !b.c.useIn() {
		return 0, b.fail(net.ErrClosed)
	}
	defer b.c.doneIn()
	in := b.c.in
	for {
		if in.Buffered() == 0 {
			if _, err := in.Peek(1); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return 0, b.fail(err)
			}
		}
		buf, _ := in.Peek(in.Buffered())
		n, used, ended, err := b.dec.decode(p, buf)
		in.Discard(used)
		switch {
		case err != nil:
			return n, b.fail(err)
		case ended:
			b.end()
			return n, io.EOF
		case n > 0:
			return n, nil
		}
		// Only bytes that decode to nothing (a leading dot): read on.
	}
}

// Drain reads and drops what is left of the body, as go-smtp does after a
// refused message; it returns nil once the end line is read.
func (b *bodyReader) Drain(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	if b.err == io.EOF {
		return nil
	}
	return err
}

// end hands go-smtp an empty body, whose end line it reads next, and goes
// back to commands.
func (b *bodyReader) end() {
	b.err = io.EOF
	c := b.c
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = append(c.pending, ".\r\n"...)
	c.mode, c.partial, c.data = modeCommand, false, dataBeginLine
}

// fail keeps err for this reader and for every later read of the wrapper.
func (b *bodyReader) fail(err error) error {
	b.err = err
	c := b.c
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err = err
	return err
}

// bodyDecoder decodes a DATA body as go-smtp's DATA reader does (its data.go,
// after net/textproto, keeping CRLF): a dot that starts a line is dropped,
// and so is the CR after it; ".<CRLF>" at a line start ends the body. A line
// starts only after CRLF, never after a bare LF (no SMTP smuggling). It
// counts line lengths as go-smtp's lineLimitReader does: from one LF to the
// next, that LF included.
type bodyDecoder struct {
	state   dataState
	lineLen int
	maxLine int // 0: no limit
}

// decode decodes src into dst until one of them is used up or the body
// ends: it returns the bytes written and read, and whether the end line was
// read (its LF is the last byte read). The error is smtp.ErrTooLongLine.
func (d *bodyDecoder) decode(dst, src []byte) (n, used int, ended bool, err error) {
	for used < len(src) && n < len(dst) {
		if d.state == dataMiddle {
			// Inside a line, only a CR (a possible line end) or an LF (a
			// new line to count) matters: copy up to the first.
			chunk := src[used:min(len(src), used+len(dst)-n)]
			j := bytes.IndexByte(chunk, '\r')
			if j < 0 {
				j = len(chunk)
			}
			if k := bytes.IndexByte(chunk[:j], '\n'); k >= 0 {
				j = k
			}
			if d.maxLine > 0 && d.lineLen+j > d.maxLine {
				return n, used, false, smtp.ErrTooLongLine
			}
			d.lineLen += j
			n += copy(dst[n:], chunk[:j])
			used += j
			if used == len(src) || n == len(dst) {
				break
			}
		}
		ch := src[used]
		used++
		if ch == '\n' {
			d.lineLen = 0
		}
		d.lineLen++
		if d.maxLine > 0 && d.lineLen > d.maxLine {
			return n, used, false, smtp.ErrTooLongLine
		}
		prev := d.state
		if d.state.step(ch) {
			return n, used, true, nil
		}
		if prev == dataBeginLine && ch == '.' || prev == dataDot && ch == '\r' {
			continue // dot-stuffing, or the CR of a possible end line
		}
		dst[n] = ch
		n++
	}
	return n, used, false, nil
}
