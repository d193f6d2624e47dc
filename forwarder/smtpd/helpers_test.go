package smtpd

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxport/mxport/forwarder/route"
	"github.com/mxport/mxport/forwarder/spool"
	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
)

// recQueue records Enqueue calls and checks, at the moment of the call,
// that the message is committed on disk (meta and body exist).
type recQueue struct {
	sp *spool.Spool

	mu     sync.Mutex
	metas  []*spool.Meta
	onDisk []bool

	// hold, when set, is called inside Enqueue (before the 250 goes out).
	hold func(m *spool.Meta)
	ch   chan *spool.Meta
}

func (q *recQueue) Enqueue(m *spool.Meta) {
	_, e1 := os.Stat(filepath.Join(q.sp.Dir(), "meta", m.ID))
	_, e2 := os.Stat(filepath.Join(q.sp.Dir(), "msg", m.ID))
	q.mu.Lock()
	q.metas = append(q.metas, m)
	q.onDisk = append(q.onDisk, e1 == nil && e2 == nil)
	hold := q.hold
	q.mu.Unlock()
	if hold != nil {
		hold(m)
	}
	select {
	case q.ch <- m:
	default:
	}
}

func (q *recQueue) all() []*spool.Meta {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]*spool.Meta(nil), q.metas...)
}

type fixture struct {
	t      *testing.T
	addr   string
	sp     *spool.Spool
	q      *recQueue
	srv    *smtp.Server
	events chan store.Delivery
}

// mxZone builds a zone whose apex MX is data, through record.Normalize.
func mxZone(t testing.TB, name, data string) store.ZoneData {
	t.Helper()
	r, err := record.Normalize(name, record.Record{Name: "@", Type: "MX", TTL: 3600, Data: data}, record.Policy{})
	if err != nil {
		t.Fatalf("normalize %s MX %q: %v", name, data, err)
	}
	a, err := record.Normalize(name, record.Record{Name: "mail", Type: "A", TTL: 3600, Data: "192.0.2.7"}, record.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	zd := store.ZoneData{Records: []record.Record{r, a}}
	zd.Name = name
	zd.Version = 1
	zd.Gen = "g1"
	return zd
}

// testIndex is a loaded route index: example.com and other.test are
// forwarded, plain.test is hosted with MX on port 25.
func testIndex(t testing.TB) *route.Index {
	ix := route.NewIndex()
	ix.Load([]store.ZoneData{
		mxZone(t, "example.com", "10 mail.example.com:2525"),
		mxZone(t, "other.test", "10 mail.other.test:2526"),
		mxZone(t, "plain.test", "10 mail.plain.test"),
		mxZone(t, "xn--bcher-kva.test", "10 mail.xn--bcher-kva.test:2525"),
	})
	if _, d := ix.Lookup("example.com"); d != route.Accept {
		t.Fatalf("index: example.com is %v, want accept", d)
	}
	return ix
}

// newFixture starts a server on 127.0.0.1:0 with a real spool and index,
// behind the ETRN wrapper as the forwarder runs it (so message bodies take
// the wrapper's fast path, fastBody); ETRN finds no zone.
func newFixture(t *testing.T, mod func(*Config)) *fixture {
	t.Helper()
	return startFixture(t, mod, func(ln net.Listener) net.Listener {
		return ETRNListener(ln, func(string) bool { return false })
	})
}

// startFixture is newFixture with the listener passed through wrap (nil:
// none), as the forwarder wraps it for ETRN.
func startFixture(t *testing.T, mod func(*Config), wrap func(net.Listener) net.Listener) *fixture {
	t.Helper()
	sp, err := spool.Open(filepath.Join(t.TempDir(), "spool"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, sp: sp, events: make(chan store.Delivery, 1000)}
	f.q = &recQueue{sp: sp, ch: make(chan *spool.Meta, 1000)}
	cfg := Config{
		Hostname:    "mx.test",
		Spool:       sp,
		Router:      testIndex(t),
		Queue:       f.q,
		ReadTimeout: 10 * time.Second,
		Log:         func(zone string, d store.Delivery) { f.events <- d },
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if mod != nil {
		mod(&cfg)
	}
	f.srv = NewServer(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	if wrap != nil {
		ln = wrap(ln)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		f.srv.Close()
		<-done
	})
	return f
}

// client is a raw SMTP client over net/textproto.
type client struct {
	t    *testing.T
	conn net.Conn
	tp   *textproto.Conn
}

func (f *fixture) dial() *client {
	f.t.Helper()
	return f.dialFrom("")
}

// dialFrom connects to the fixture from the loopback address ip ("": any).
func (f *fixture) dialFrom(ip string) *client {
	f.t.Helper()
	var nd net.Dialer
	if ip != "" {
		nd.LocalAddr = &net.TCPAddr{IP: net.ParseIP(ip)}
	}
	conn, err := nd.Dial("tcp", f.addr)
	if err != nil {
		f.t.Fatal(err)
	}
	c := &client{t: f.t, conn: conn, tp: textproto.NewConn(conn)}
	f.t.Cleanup(func() { conn.Close() })
	c.expect(220)
	return c
}

// reply reads one (possibly multi-line) reply.
func (c *client) reply() (int, string) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	code, msg, err := c.tp.ReadResponse(0)
	if err != nil {
		var te *textproto.Error
		if !errors.As(err, &te) {
			c.t.Fatalf("read reply: %v", err)
		}
	}
	return code, msg
}

func (c *client) expect(code int) string {
	c.t.Helper()
	got, msg := c.reply()
	if got != code {
		c.t.Fatalf("reply %d %q, want %d", got, msg, code)
	}
	return msg
}

// cmd sends a line and returns the reply.
func (c *client) cmd(line string) (int, string) {
	c.t.Helper()
	if err := c.tp.PrintfLine("%s", line); err != nil {
		c.t.Fatal(err)
	}
	return c.reply()
}

// must sends a line and checks the reply code and, when given, the start
// of its text (the enhanced code).
func (c *client) must(line string, code int, prefix ...string) string {
	c.t.Helper()
	got, msg := c.cmd(line)
	if got != code {
		c.t.Fatalf("%s: reply %d %q, want %d", line, got, msg, code)
	}
	for _, p := range prefix {
		if !strings.HasPrefix(msg, p) {
			c.t.Fatalf("%s: reply %d %q, want text starting %q", line, got, msg, p)
		}
	}
	return msg
}

// write sends raw bytes.
func (c *client) write(s string) {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

// send runs a whole transaction and returns the DATA reply.
func (c *client) send(from string, rcpts []string, msg string) (int, string) {
	c.t.Helper()
	c.must("MAIL FROM:<"+from+">", 250)
	for _, r := range rcpts {
		c.must("RCPT TO:<"+r+">", 250)
	}
	c.must("DATA", 354)
	c.write(dotStuff(msg) + ".\r\n")
	return c.reply()
}

func (c *client) startTLS(conf *tls.Config) {
	c.t.Helper()
	c.must("STARTTLS", 220)
	tc := tls.Client(c.conn, conf)
	if err := tc.Handshake(); err != nil {
		c.t.Fatal(err)
	}
	c.conn = tc
	c.tp = textproto.NewConn(tc)
}

// dotStuff prepares a CRLF message for DATA (RFC 5321 4.5.2); msg must end
// in CRLF.
func dotStuff(msg string) string {
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(msg))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		if i := strings.Index(string(data), "\r\n"); i >= 0 {
			return i + 2, data[:i+2], nil
		}
		if atEOF && len(data) > 0 {
			return len(data), data, nil
		}
		return 0, nil, nil
	})
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, ".") {
			b.WriteByte('.')
		}
		b.WriteString(l)
	}
	return b.String()
}

// spoolFiles lists every file under the spool's tmp, msg and meta.
func (f *fixture) spoolFiles() []string {
	var out []string
	for _, d := range []string{"tmp", "msg", "meta"} {
		es, _ := os.ReadDir(filepath.Join(f.sp.Dir(), d))
		for _, e := range es {
			out = append(out, d+"/"+e.Name())
		}
	}
	return out
}

// body returns a spooled body, split into our Received header and the rest.
func (f *fixture) body(id string) (hdr, rest string) {
	f.t.Helper()
	fh, err := f.sp.Body(id)
	if err != nil {
		f.t.Fatal(err)
	}
	defer fh.Close()
	b, err := io.ReadAll(fh)
	if err != nil {
		f.t.Fatal(err)
	}
	s := string(b)
	if !strings.HasPrefix(s, "Received: ") {
		f.t.Fatalf("body does not start with Received: %q", s[:min(len(s), 80)])
	}
	i := 0
	for {
		j := strings.Index(s[i:], "\r\n")
		if j < 0 {
			f.t.Fatalf("unterminated Received header")
		}
		i += j + 2
		if i >= len(s) || (s[i] != '\t' && s[i] != ' ') {
			return s[:i], s[i:]
		}
	}
}

const testMsg = "From: a@b.example\r\nTo: user@example.com\r\nSubject: test\r\n\r\nHello.\r\n.leading dot\r\n..two dots\r\n\r\nbye\r\n"

func newTP(c net.Conn) *textproto.Conn { return textproto.NewConn(c) }
