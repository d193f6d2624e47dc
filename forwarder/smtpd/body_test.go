package smtpd

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxport/mxport/forwarder/spool"
)

// refDecode is go-smtp's DATA reader (data.go) and line limit
// (lengthlimit_reader.go) transcribed byte by byte, the reference for
// bodyDecoder: the decoded body, whether the end line was read, and whether
// a line passed maxLine first.
func refDecode(in []byte, maxLine int) (out []byte, ended, tooLong bool) {
	const (
		begin = iota
		dot
		dotCR
		cr
		data
	)
	state, lineLen := begin, 1 // the DATA line's LF is counted
	for _, c := range in {
		if c == '\n' {
			lineLen = 0
		}
		lineLen++
		if maxLine > 0 && lineLen > maxLine {
			return out, false, true
		}
		switch state {
		case begin:
			if c == '.' {
				state = dot
				continue
			}
			if c == '\r' {
				state = cr
				break
			}
			state = data
		case dot:
			if c == '\r' {
				state = dotCR
				continue
			}
			state = data
		case dotCR:
			if c == '\n' {
				return out, true, false
			}
			state = data
		case cr:
			if c == '\n' {
				state = begin
				break
			}
			state = data
		case data:
			if c == '\r' {
				state = cr
			}
		}
		out = append(out, c)
	}
	return out, false, false
}

// decodeChunked runs bodyDecoder over in, handed over in pieces and decoded
// into buffers whose sizes come from sizes (cycled; 1..64).
func decodeChunked(in, sizes []byte, maxLine int) (out []byte, ended bool, err error) {
	d := bodyDecoder{maxLine: maxLine, lineLen: 1}
	size := func(i int) int {
		if len(sizes) == 0 {
			return 7
		}
		return int(sizes[i%len(sizes)])%64 + 1
	}
	for i, pos := 0, 0; pos < len(in); i++ {
		src := in[pos:min(len(in), pos+size(i))]
		dst := make([]byte, size(i+1))
		n, used, end, err := d.decode(dst, src)
		out = append(out, dst[:n]...)
		pos += used
		if err != nil || end {
			return out, end, err
		}
		if used == 0 && n == 0 {
			return out, false, errors.New("decode made no progress")
		}
	}
	return out, false, nil
}

// FuzzBodyDecoder: bodyDecoder decodes any byte stream, in any pieces,
// exactly as go-smtp's byte-at-a-time reader does, ends where it ends and
// refuses an over-long line as its line limit does.
func FuzzBodyDecoder(f *testing.F) {
	for _, s := range []string{
		"Subject: x\r\n\r\nbody\r\n.\r\n",
		"..dot\r\n.x\r\n.\rX\r\n.\r.\r\n.\r\n",
		"a\n.\nb\r\n.\n.\r\nrest",
		"\r\r\n.\r\n\r\n.\r\n",
		strings.Repeat("x", 120) + "\r\n.\r\n",
		"line\r\n" + strings.Repeat("y", 99) + "\r\n.\r\n",
		".\r\n",
	} {
		f.Add([]byte(s), []byte{3, 200, 17}, uint8(100))
	}
	f.Fuzz(func(t *testing.T, in, sizes []byte, limit uint8) {
		maxLine := int(limit) // 0: no limit
		want, wantEnd, wantLong := refDecode(in, maxLine)
		got, end, err := decodeChunked(in, sizes, maxLine)
		if wantLong {
			if !errors.Is(err, smtp.ErrTooLongLine) {
				t.Fatalf("err %v, want ErrTooLongLine (line limit %d)", err, maxLine)
			}
			return
		}
		if err != nil {
			t.Fatalf("err %v", err)
		}
		if end != wantEnd || !bytes.Equal(got, want) {
			t.Fatalf("decoded %q (end %v), go-smtp's reader gives %q (end %v)", got, end, want, wantEnd)
		}
	})
}

// TestFastBodyHandoff: after go-smtp's 354, the session reads the body from
// the wrapper, decoded; go-smtp then reads an empty body and the commands
// that followed it, ETRN still answered by the wrapper.
func TestFastBodyHandoff(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	c := &etrnConn{Conn: server, in: bufio.NewReaderSize(server, readBuffer), flush: func(string) bool { return true }}
	defer c.Close()
	go client.Write([]byte("DATA\r\nSubject: s\r\n\r\n..one\r\nx\n.\ny\r\n.\r\nETRN zone.test\r\nQUIT\r\n"))
	replies := bufio.NewReader(client)

	r := bufio.NewReader(c) // go-smtp's reader
	if line, err := r.ReadString('\n'); err != nil || line != "DATA\r\n" {
		t.Fatalf("go-smtp read %q, %v; want the DATA line", line, err)
	}
	go c.Write([]byte("354 go ahead\r\n"))
	if line, _ := replies.ReadString('\n'); line != "354 go ahead\r\n" {
		t.Fatalf("client read %q", line)
	}
	fb := fastBody(c, 1000)
	if fb == nil {
		t.Fatal("fastBody: nil after a 354 through the wrapper")
	}
	body, err := io.ReadAll(fb)
	if err != nil {
		t.Fatal(err)
	}
	if want := "Subject: s\r\n\r\n.one\r\nx\n.\ny\r\n"; string(body) != want {
		t.Fatalf("body %q, want %q", body, want)
	}
	if err := fb.Drain(fb); err != nil {
		t.Fatalf("Drain after the end: %v", err)
	}
	// go-smtp's DATA reader sees an empty body, then the commands.
	go func() {
		line, _ := replies.ReadString('\n')
		if line != "250 2.0.0 Queuing for node zone.test started\r\n" {
			t.Errorf("ETRN reply %q", line)
		}
	}()
	for _, want := range []string{".\r\n", "QUIT\r\n"} {
		if line, err := r.ReadString('\n'); err != nil || line != want {
			t.Fatalf("go-smtp read %q, %v; want %q", line, err, want)
		}
	}
}

// TestFastBodyFallback: fastBody leaves the body to go-smtp on a connection
// that is not the wrapper's, and before a 354.
func TestFastBodyFallback(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	if fastBody(server, 0) != nil {
		t.Fatal("fastBody on a bare connection")
	}
	c := &etrnConn{Conn: server, in: bufio.NewReader(server)}
	if fastBody(c, 0) != nil {
		t.Fatal("fastBody before any DATA")
	}
}

// plainConn hides the wrapper from the session: go-smtp reads the body.
type plainConn struct{ net.Conn }

type plainListener struct{ net.Listener }

func (l plainListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return plainConn{c}, nil
}

// FuzzFastBody sends one transaction with any body bytes, and anything
// after them, to two live servers behind the ETRN wrapper: one takes the
// wrapper's fast path, the other has go-smtp read the body. They must give
// the same replies and keep byte-identical messages.
func FuzzFastBody(f *testing.F) {
	for _, s := range []string{
		"Subject: x\r\n\r\nhello\r\n",
		"..a\r\n.\rb\r\nc\n.\nd\r\n",
		"a\r\n.\r\nETRN example.com\r\nMAIL FROM:<x@y.test>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n.b\r\n",
		strings.Repeat("long ", 50) + "\r\n",
		strings.Repeat("0123456789abcdef\r\n", 300),
		"Received: x\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	dial := func(t testing.TB, wrap func(net.Listener) net.Listener) (func() net.Conn, *recQueue) {
		sp, err := spool.Open(filepath.Join(t.TempDir(), "spool"))
		if err != nil {
			t.Fatal(err)
		}
		q := &recQueue{sp: sp, ch: make(chan *spool.Meta, 1)}
		srv := NewServer(Config{
			Hostname: "mx.test", Spool: sp, Router: testIndex(t), Queue: q,
			MaxSize: 4000, MaxLineLength: 200, ReadTimeout: 2 * time.Second,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		pl := newPipeListener()
		go srv.Serve(wrap(pl))
		t.Cleanup(func() { srv.Close() })
		return pl.dial, q
	}
	etrn := func(l net.Listener) net.Listener {
		return ETRNListener(l, func(d string) bool { return d == "example.com" })
	}
	fastDial, fastQ := dial(f, etrn)
	slowDial, slowQ := dial(f, func(l net.Listener) net.Listener { return plainListener{etrn(l)} })

	f.Fuzz(func(t *testing.T, body []byte) {
		in := append([]byte("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n"), body...)
		in = append(in, "\r\n.\r\nQUIT\r\n"...)
		fastCodes, fastMsgs := runSession(t, fastDial(), in, fastQ)
		slowCodes, slowMsgs := runSession(t, slowDial(), in, slowQ)
		if fastCodes != slowCodes {
			t.Fatalf("replies %s with the fast path, %s through go-smtp", fastCodes, slowCodes)
		}
		if len(fastMsgs) != len(slowMsgs) {
			t.Fatalf("%d messages kept with the fast path, %d through go-smtp", len(fastMsgs), len(slowMsgs))
		}
		for i := range fastMsgs {
			if fastMsgs[i] != slowMsgs[i] {
				t.Fatalf("message %d differs:\nfast path:\n%q\ngo-smtp:\n%q", i, fastMsgs[i], slowMsgs[i])
			}
		}
	})
}

// runSession sends in on c and returns the reply codes, and the bodies (less
// their Received header) of the messages q got meanwhile.
func runSession(t *testing.T, c net.Conn, in []byte, q *recQueue) (codes string, msgs []string) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	before := len(q.all())
	go c.Write(in)
	br := bufio.NewReader(c)
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			break
		}
		if len(line) >= 4 && line[3] == ' ' {
			b.WriteString(line[:3] + " ")
		}
	}
	for _, m := range q.all()[before:] {
		data, err := os.ReadFile(filepath.Join(q.sp.Dir(), "msg", m.ID))
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, withoutReceived(string(data)))
	}
	return b.String(), msgs
}

// withoutReceived drops a message's first header field (ours, folded).
func withoutReceived(s string) string {
	for i := strings.Index(s, "\r\n"); i >= 0; {
		if i+2 >= len(s) || s[i+2] != ' ' && s[i+2] != '\t' {
			return s[i+2:]
		}
		j := strings.Index(s[i+2:], "\r\n")
		if j < 0 {
			break
		}
		i += 2 + j
	}
	return s
}

// TestReadBufferRecycle: a connection closed under a read (a server
// shutdown closes connections their goroutines are reading) gives its read
// buffer back only once that read is done; a read after the close fails
// without touching it, and a blocked read is ended by the close.
func TestReadBufferRecycle(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	el := ETRNListener(ln, func(string) bool { return false })
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	nc, err := el.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := nc.(*etrnConn)
	inBuffer := func() bool {
		c.inMu.Lock()
		defer c.inMu.Unlock()
		return c.in != nil
	}

	readErr := make(chan error)
	go func() {
		_, err := c.Read(make([]byte, 10))
		readErr <- err
	}()
	if !c.useIn() { // a read in progress, as the one above may be
		t.Fatal("useIn on an open connection")
	}
	c.Close()
	if !inBuffer() {
		t.Fatal("buffer recycled while a read still uses it")
	}
	if err := <-readErr; err == nil {
		t.Fatal("a read blocked when the connection closed returned no error")
	}
	if !inBuffer() {
		t.Fatal("buffer recycled while a read still uses it")
	}
	c.doneIn()
	if inBuffer() {
		t.Fatal("buffer not recycled after the last read")
	}
	if _, err := c.Read(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after close: %v, want net.ErrClosed", err)
	}
}
