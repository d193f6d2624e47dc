package smtpd

// Bad input (issue 5) not covered by smtpd_test.go: what follows an
// overlong line, bare LF in commands and in DATA, unknown commands and the
// error limit, DATA out of sequence, a streamed message over the size
// limit, 1,000 recipients, and clients that stall or dribble. Each case
// runs on the bare go-smtp server and behind the ETRN wrapper, as the
// forwarder serves it.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// etrnFlushes records the domains the ETRN wrapper was asked to flush.
type etrnFlushes struct {
	mu      sync.Mutex
	domains []string
}

func (e *etrnFlushes) flush(d string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.domains = append(e.domains, d)
	return d == "example.com"
}

func (e *etrnFlushes) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.domains...)
}

// newETRNFixture is newFixture behind smtpd.ETRNListener, as the forwarder
// runs the server.
func newETRNFixture(t *testing.T, mod func(*Config)) (*fixture, *etrnFlushes) {
	t.Helper()
	fl := &etrnFlushes{}
	f := startFixture(t, mod, func(ln net.Listener) net.Listener { return ETRNListener(ln, fl.flush) })
	return f, fl
}

// bothServers runs fn on the bare server (go-smtp reads bodies) and behind
// the ETRN wrapper (bodies take its fast path).
func bothServers(t *testing.T, mod func(*Config), fn func(t *testing.T, f *fixture)) {
	t.Run("bare", func(t *testing.T) { fn(t, startFixture(t, mod, nil)) })
	t.Run("etrn", func(t *testing.T) {
		f, _ := newETRNFixture(t, mod)
		fn(t, f)
	})
}

// closed waits up to d for the server to close the connection, reading
// (and returning) whatever replies come first; it fails if the connection
// is still open after d or breaks with anything but EOF.
func (c *client) closed(d time.Duration) []string {
	c.t.Helper()
	return c.closedOrReset(d, false)
}

// closedOrReset is closed, also accepting a reset: a server that closes
// while bytes of ours are still unread sends RST instead of FIN.
func (c *client) closedOrReset(d time.Duration, reset bool) []string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(d))
	var lines []string
	for {
		line, err := c.tp.ReadLine()
		if err == nil {
			lines = append(lines, line)
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.t.Fatalf("connection still open after %v (read %q)", d, lines)
		}
		if !errors.Is(err, io.EOF) && !(reset && errors.Is(err, syscall.ECONNRESET)) {
			c.t.Fatalf("connection ended with %v, not a clean close (read %q)", err, lines)
		}
		return lines
	}
}

// nothingKept fails unless the queue got nothing and the spool holds no
// file (tmp/ included), waiting briefly for the server to clean up after a
// connection it dropped.
func (f *fixture) nothingKept(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(f.spoolFiles()) != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // poll with a deadline
	}
	if n := len(f.q.all()); n != 0 {
		t.Errorf("%d messages enqueued", n)
	}
	if fs := f.spoolFiles(); len(fs) != 0 {
		t.Errorf("spool files left: %v", fs)
	}
}

// TestOverlongCommandLine: a command line over MaxLineLength, in the middle
// of a transaction, gets 500 5.4.0 and the session closes cleanly (FIN, no
// hang); the transaction is not kept. A client that sends no line end at
// all is cut off the same way once it passes the limit, without the server
// waiting for a line end.
func TestOverlongCommandLine(t *testing.T) {
	mod := func(cfg *Config) { cfg.MaxLineLength = 1200 }
	bothServers(t, mod, func(t *testing.T, f *fixture) {
		c := f.dial()
		c.must("EHLO client.test", 250)
		c.must("MAIL FROM:<a@b.example>", 250)
		c.must("RCPT TO:<user@example.com>", 250)
		c.must("RCPT TO:<"+strings.Repeat("x", 1300)+"@example.com>", 500, "5.4.0")
		if rest := c.closed(5 * time.Second); len(rest) != 0 {
			t.Errorf("replies after the 500: %q", rest)
		}
		f.nothingKept(t)

		// No line end at all, then the client waits: 4096 bytes, the
		// ETRN wrapper's line buffer (below that it waits for the line
		// end or ReadTimeout before go-smtp counts the bytes).
		c = f.dial()
		c.must("EHLO client.test", 250)
		c.write("NOOP " + strings.Repeat("y", 4096-5))
		c.expect(500)
		c.closed(5 * time.Second)
	})
}

// TestBareLFCommands: commands ended by a bare LF are taken one by one,
// like CRLF ones (Postfix does the same); a bare CR does not end a command,
// so "NOOP<CR>RSET" is one (bad) line and never two commands.
func TestBareLFCommands(t *testing.T) {
	bothServers(t, nil, func(t *testing.T, f *fixture) {
		c := f.dial()
		c.write("EHLO client.test\n")
		c.expect(250)
		c.write("MAIL FROM:<a@b.example>\nRCPT TO:<user@example.com>\nRCPT TO:<user2@example.com>\n")
		c.expect(250)
		c.expect(250)
		c.expect(250)
		c.write("NOOP\rRSET\r\n")
		if code, msg := c.reply(); code < 500 {
			t.Fatalf("NOOP<CR>RSET: %d %s, want one 5xx for one bad line", code, msg)
		}
		c.must("NOOP", 250, "2.0.0 I have successfully done nothing") // nothing else pending
		c.write("DATA\n")
		c.expect(354)
		c.write("Subject: lf\r\n\r\nbody\r\n.\r\n")
		c.expect(250)
		ms := f.q.all()
		if len(ms) != 1 || ms[0].From != "a@b.example" || len(ms[0].Rcpts) != 2 {
			t.Fatalf("metas %+v", ms)
		}
	})
}

// TestBareLFDot: a client speaking bare LF in DATA never ends the message
// with <LF>.<LF>: the server waits for CRLF.CRLF, gives up after the read
// timeout and keeps nothing. A bare LF before ".<CRLF>" does not end it
// either, and what follows stays in the body: behind the ETRN wrapper an
// "ETRN" line there is body, not a command (no flush, no extra reply).
func TestBareLFDot(t *testing.T) {
	mod := func(cfg *Config) { cfg.ReadTimeout = 400 * time.Millisecond }
	t.Run("lf-only", func(t *testing.T) { bothServers(t, mod, bareLFOnly) })
	t.Run("lf-dot-crlf", func(t *testing.T) { bothServers(t, nil, bareLFDotCRLF) })
	f, fl := newETRNFixture(t, nil)
	c := f.dial()
	c.must("EHLO client.test", 250)
	c.must("MAIL FROM:<a@b.example>", 250)
	c.must("RCPT TO:<user@example.com>", 250)
	c.must("DATA", 354)
	c.write("Subject: s\r\n\r\nA\n.\r\nETRN example.com\r\nB\r\n.\r\n")
	c.expect(250)
	if d := fl.all(); len(d) != 0 {
		t.Errorf("an ETRN line in a body flushed %v", d)
	}
}

// bareLFOnly: <LF>.<LF> does not end DATA; the read timeout does.
func bareLFOnly(t *testing.T, f *fixture) {
	c := f.dial()
	c.must("EHLO client.test", 250)
	c.must("MAIL FROM:<a@b.example>", 250)
	c.must("RCPT TO:<user@example.com>", 250)
	c.must("DATA", 354)
	c.write("Subject: lf only\n\nhello\n.\n")
	start := time.Now()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := c.tp.ReadLine()
	if err == nil && strings.HasPrefix(line, "2") {
		t.Fatalf("<LF>.<LF> ended DATA: %q", line)
	}
	t.Logf("after <LF>.<LF>: %q %v, %v later", line, err, time.Since(start).Round(time.Millisecond))
	f.nothingKept(t)
}

// bareLFDotCRLF: the body goes on past "<LF>.<CRLF>" to the real end.
func bareLFDotCRLF(t *testing.T, f *fixture) {
	c := f.dial()
	c.must("EHLO client.test", 250)
	c.must("MAIL FROM:<a@b.example>", 250)
	c.must("RCPT TO:<user@example.com>", 250)
	c.must("DATA", 354)
	body := "Subject: s\r\n\r\nA\n.\r\nETRN example.com\r\nMAIL FROM:<evil@b.example>\r\nRCPT TO:<victim@example.com>\r\nB\r\n"
	c.write(body + ".\r\n")
	if code, msg := c.reply(); code != 250 || !strings.Contains(msg, "queued as") {
		t.Fatalf("end of data: %d %s", code, msg)
	}
	c.must("NOOP", 250, "2.0.0 I have successfully done nothing") // no reply of its own was pending
	ms := f.q.all()
	if len(ms) != 1 || ms[0].From != "a@b.example" || len(ms[0].Rcpts) != 1 {
		t.Fatalf("metas %+v", ms)
	}
	if _, rest := f.body(ms[0].ID); rest != body {
		t.Errorf("body changed:\n got %q\nwant %q", rest, body)
	}
}

// TestUnknownCommands: an unknown command gets 500 5.5.2 and the session
// goes on; go-smtp closes it after the fourth syntax error in a session
// (errThreshold 3), with a last 500 5.5.1, so a client cannot loop on
// garbage.
func TestUnknownCommands(t *testing.T) {
	bothServers(t, nil, func(t *testing.T, f *fixture) {
		c := f.dial()
		c.must("EHLO client.test", 250)
		for _, cmd := range []string{"XYZZ", "FOOB bar", "WHAT is this"} {
			c.must(cmd, 500, "5.5.2")
			c.must("NOOP", 250)
		}
		c.must("MAIL FROM:<a@b.example>", 250) // still working
		c.must("XQZT", 500, "5.5.2")
		lines := c.closed(5 * time.Second)
		if len(lines) != 1 || !strings.HasPrefix(lines[0], "500 5.5.1 ") {
			t.Errorf("after the fourth error: %q, want one 500 5.5.1 then close", lines)
		}
		f.nothingKept(t)
	})
}

// TestDataBeforeRcpt: DATA after MAIL but before any RCPT is refused with
// a 5xx and no 354; the session goes on and a proper transaction works.
// RFC 5321 3.3 suggests 503 or 554; go-smtp answers 502 5.5.1, accepted
// here (any 5xx stops the client; smtpd_test.go expects 502 too).
func TestDataBeforeRcpt(t *testing.T) {
	bothServers(t, nil, func(t *testing.T, f *fixture) {
		c := f.dial()
		c.must("EHLO client.test", 250)
		c.must("MAIL FROM:<a@b.example>", 250)
		switch code, msg := c.cmd("DATA"); code {
		case 502, 503, 554:
		default:
			t.Fatalf("DATA before RCPT: %d %s, want 503 or 554 (502 from go-smtp)", code, msg)
		}
		// A refused BDAT's chunk still follows it (RFC 3030) and is
		// skipped, not read as commands.
		c.write("BDAT 5 LAST\r\nRSET\n")
		c.expect(502)
		c.must("RCPT TO:<user@example.com>", 250)
		if code, msg := c.send2(); code != 250 {
			t.Fatalf("DATA after RCPT: %d %s", code, msg)
		}
		if n := len(f.q.all()); n != 1 {
			t.Errorf("%d messages queued, want 1", n)
		}
	})
}

// TestOversizeStreamed: a message streamed past the size limit without a
// SIZE= declaration gets 552 5.3.4 at its end, nothing of it is kept, and
// the session goes on. This is issue 5's 60 MB against the 50 MiB limit,
// scaled down: 1.2 MiB against 1 MiB.
func TestOversizeStreamed(t *testing.T) {
	mod := func(cfg *Config) { cfg.MaxSize = 1 << 20 }
	bothServers(t, mod, func(t *testing.T, f *fixture) {
		c := f.dial()
		if msg := c.must("EHLO client.test", 250); !strings.Contains(msg, "SIZE 1048576") {
			t.Errorf("EHLO %q", msg)
		}
		c.must("MAIL FROM:<a@b.example>", 250)
		c.must("RCPT TO:<user@example.com>", 250)
		c.must("DATA", 354)
		line := strings.Repeat("z", 1022) + "\r\n"
		big := "Subject: big\r\n\r\n" + strings.Repeat(line, 1200) // 1.2 MiB
		werr := make(chan error, 1)
		go func() { // the server may answer before it has read it all
			_, err := c.conn.Write([]byte(big + ".\r\n"))
			werr <- err
		}()
		if msg := c.expect(552); !strings.HasPrefix(msg, "5.3.4") {
			t.Errorf("552 %s, want 5.3.4", msg)
		}
		if err := <-werr; err != nil {
			t.Fatalf("writing the body: %v", err)
		}
		f.nothingKept(t)
		c.must("NOOP", 250, "2.0.0 I have successfully done nothing")
		// Under the limit, on the same session.
		ok := "Subject: ok\r\n\r\n" + strings.Repeat(line, 1000)
		c.must("MAIL FROM:<a@b.example>", 250)
		c.must("RCPT TO:<user@example.com>", 250)
		c.must("DATA", 354)
		c.write(ok + ".\r\n")
		c.expect(250)
		if _, rest := f.body(f.q.all()[0].ID); rest != ok {
			t.Error("body under the limit differs")
		}
	})
}

// TestThousandRecipients: 1,000 pipelined recipients: the first 100 get
// 250, every one after gets 452 4.5.3 (the sender sends them again in
// another transaction), and the message goes to the first 100.
func TestThousandRecipients(t *testing.T) {
	bothServers(t, nil, func(t *testing.T, f *fixture) {
		c := f.dial()
		c.must("EHLO client.test", 250)
		c.must("MAIL FROM:<a@b.example>", 250)
		var b strings.Builder
		for i := 1; i <= 1000; i++ {
			fmt.Fprintf(&b, "RCPT TO:<user%d@example.com>\r\n", i)
		}
		werr := make(chan error, 1)
		go func() {
			_, err := c.conn.Write([]byte(b.String()))
			werr <- err
		}()
		for i := 1; i <= 1000; i++ {
			code, msg := c.reply()
			switch {
			case i <= 100 && code != 250:
				t.Fatalf("RCPT %d: %d %s, want 250", i, code, msg)
			case i > 100 && (code != 452 || !strings.HasPrefix(msg, "4.5.3")):
				t.Fatalf("RCPT %d: %d %s, want 452 4.5.3", i, code, msg)
			}
		}
		if err := <-werr; err != nil {
			t.Fatal(err)
		}
		if code, msg := c.send2(); code != 250 {
			t.Fatalf("DATA: %d %s", code, msg)
		}
		ms := f.q.all()
		if len(ms) != 1 || len(ms[0].Rcpts) != 100 || ms[0].Rcpts[99].Addr != "user100@example.com" {
			t.Fatalf("queued %d messages, first with %d recipients", len(ms), len(ms[0].Rcpts))
		}
	})
}

// TestStalledClients: smtpd_test.go covers a stall in the middle of a body
// line; here a stall after a complete body line, in a BDAT chunk and
// between commands of a transaction, and a client that dribbles a byte at
// a time (each read within ReadTimeout) and is cut off at DataTimeout.
// Each is cut off within its bound, and nothing is kept.
func TestStalledClients(t *testing.T) {
	const readTimeout, dataTimeout = 300 * time.Millisecond, time.Second
	mod := func(cfg *Config) {
		cfg.ReadTimeout = readTimeout
		cfg.DataTimeout = dataTimeout
	}
	bound := func(t *testing.T, what string, start time.Time, limit time.Duration) {
		t.Helper()
		took := time.Since(start)
		t.Logf("%s: cut off after %v", what, took.Round(time.Millisecond))
		if took > limit {
			t.Errorf("%s: cut off after %v, want within %v", what, took, limit)
		}
	}
	open := func(t *testing.T, f *fixture) *client {
		c := f.dial()
		c.must("EHLO client.test", 250)
		c.must("MAIL FROM:<a@b.example>", 250)
		c.must("RCPT TO:<user@example.com>", 250)
		return c
	}
	bothServers(t, mod, func(t *testing.T, f *fixture) {
		c := open(t, f)
		c.must("DATA", 354)
		c.write("Subject: stall\r\n\r\na whole line\r\n")
		start := time.Now()
		for _, l := range c.closed(10 * time.Second) {
			if strings.HasPrefix(l, "2") {
				t.Errorf("stalled DATA got %q", l)
			}
		}
		bound(t, "stall at a line end in DATA", start, readTimeout+3*time.Second)
		f.nothingKept(t)

		c = open(t, f)
		c.write("BDAT 1000 LAST\r\n" + strings.Repeat("b", 100))
		start = time.Now()
		for _, l := range c.closed(10 * time.Second) {
			if strings.HasPrefix(l, "2") {
				t.Errorf("stalled BDAT got %q", l)
			}
		}
		bound(t, "stall in a BDAT chunk", start, readTimeout+3*time.Second)
		f.nothingKept(t)

		c = open(t, f)
		start = time.Now()
		lines := c.closed(10 * time.Second)
		if len(lines) != 1 || !strings.HasPrefix(lines[0], "421 4.4.2") {
			t.Errorf("idle between commands: %q, want 421 4.4.2 then close", lines)
		}
		bound(t, "idle after RCPT", start, readTimeout+3*time.Second)
		f.nothingKept(t)

		// A byte every 100 ms: each read comes in time, the whole does not.
		c = open(t, f)
		c.must("DATA", 354)
		stop := make(chan struct{})
		dribbled := make(chan int, 1)
		go func() {
			n := 0
			defer func() { dribbled <- n }()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if _, err := c.conn.Write([]byte("x")); err != nil {
					return
				}
				n++
			}
		}()
		start = time.Now()
		for _, l := range c.closedOrReset(10*time.Second, true) {
			if strings.HasPrefix(l, "2") {
				t.Errorf("dribbling client got %q", l)
			}
		}
		close(stop)
		bound(t, "dribbling DATA", start, dataTimeout+3*time.Second)
		t.Logf("dribbled %d bytes", <-dribbled)
		f.nothingKept(t)
	})
}
