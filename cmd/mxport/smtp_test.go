package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mxport/mxport/forwarder/smtptest"
	spoolpkg "github.com/mxport/mxport/forwarder/spool"
	"github.com/mxport/mxport/store/storetest"
)

// serveProc is a running "mxport serve" whose stderr is collected line by
// line (never blocking the child) for waitLine.
type serveProc struct {
	t       *testing.T
	cmd     *exec.Cmd
	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced when lines grows or the reader ends
	eof     bool
	readerD chan struct{} // closed when stderr reaches EOF
	waited  bool
}

// startServe starts the binary with "serve" and args, on top of a clean
// environment plus env. The process is killed at cleanup if still running;
// a failed test shows its stderr.
func startServe(t *testing.T, env []string, args ...string) *serveProc {
	t.Helper()
	p := &serveProc{t: t, changed: make(chan struct{}), readerD: make(chan struct{})}
	p.cmd = exec.Command(bin, append([]string{"serve"}, args...)...)
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.readerD)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
		}
		p.mu.Lock()
		p.eof = true
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			p.mu.Lock()
			t.Logf("serve %s stderr:\n%s", strings.Join(args, " "), strings.Join(p.lines, "\n"))
			p.mu.Unlock()
		}
	})
	return p
}

// waitLine waits up to 20 s (the binary is built with -race) for a stderr
// line containing every one of want, and returns it.
func (p *serveProc) waitLine(want ...string) string {
	p.t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for i := 0; ; {
		p.mu.Lock()
		lines, eof, changed := p.lines, p.eof, p.changed
		p.mu.Unlock()
		for ; i < len(lines); i++ {
			if containsAll(lines[i], want) {
				return lines[i]
			}
		}
		if eof {
			p.t.Fatalf("serve exited before logging %q", want)
		}
		select {
		case <-changed:
		case <-deadline.C:
			p.t.Fatalf("serve did not log %q within 20s", want)
		}
	}
}

func containsAll(s string, want []string) bool {
	for _, w := range want {
		if !strings.Contains(s, w) {
			return false
		}
	}
	return true
}

// kill sends SIGKILL (kill -9) and reaps the process; idempotent.
func (p *serveProc) kill() {
	if p.waited {
		return
	}
	p.cmd.Process.Kill()
	<-p.readerD // Wait closes the pipe: read it all first
	p.cmd.Wait()
	p.waited = true
}

// stop sends SIGTERM and wants a clean exit.
func (p *serveProc) stop() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	<-p.readerD
	err := p.cmd.Wait()
	p.waited = true
	if err != nil {
		p.t.Fatalf("serve after SIGTERM: %v, want exit 0", err)
	}
}

// freeAddr returns 127.0.0.1:port for a port that was free a moment ago,
// for the child to bind.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// poll calls cond every 20 ms until it holds, failing the test after d.
func poll(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond) // poll with a deadline
	}
}

// fwdSetup is a fresh store with example.com forwarded to home (which the
// caller may take down), and the serve arguments for an smtp-only node.
type fwdSetup struct {
	env   []string
	home  *smtptest.Server
	addr  string // mxport's SMTP address
	spool string
}

func newFwdSetup(t *testing.T) *fwdSetup {
	t.Helper()
	s := &fwdSetup{
		env:   []string{"MXPORT_REDIS_URL=" + storetest.NewURL(t), "MXPORT_MX_HOSTS=mx1.fwd.test", "MXPORT_NS=ns1.fwd.test,ns2.fwd.test"},
		home:  smtptest.Start(t),
		addr:  freeAddr(t),
		spool: t.TempDir(),
	}
	ok(t, s.env, "", "zone", "create", "example.com", "--account", "c1")
	ok(t, s.env, "", "record", "add", "example.com", "@", "MX", "300", "10 home.example.com:"+portOf(t, s.home.Addr))
	ok(t, s.env, "", "record", "add", "example.com", "home", "A", "300", "127.0.0.1")
	return s
}

// serve starts an smtp-only node on s.addr and s.spool and waits until it
// listens and its route index has loaded.
func (s *fwdSetup) serve(t *testing.T, retry string) *serveProc {
	t.Helper()
	p := startServe(t, s.env, "--dns", "", "--http", "", "--smtp", s.addr, "--spool", s.spool,
		"--hostname", "mx1.fwd.test", "--mx-hosts", "mx1.fwd.test", "--retry-schedule", retry)
	p.waitLine("msg=\"smtp listening\"", "addr="+s.addr)
	p.waitLine("msg=\"store loaded\"")
	return p
}

// smtpConn is a plain SMTP client over net/textproto: unlike net/smtp it
// shows reply texts (the 250 after DATA carries the queue id) and can stop
// in the middle of DATA.
type smtpConn struct {
	t *testing.T
	*textproto.Conn
}

func dialSMTP(t *testing.T, addr string) *smtpConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	c := &smtpConn{t, textproto.NewConn(nc)}
	t.Cleanup(func() { c.Close() })
	if _, _, err := c.ReadResponse(220); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	c.cmd(250, "EHLO client.test")
	return c
}

// cmd sends one command and wants code; it returns the reply text.
func (c *smtpConn) cmd(code int, format string, args ...any) string {
	c.t.Helper()
	id, err := c.Cmd(format, args...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.StartResponse(id)
	defer c.EndResponse(id)
	_, msg, err := c.ReadResponse(code)
	if err != nil {
		c.t.Fatalf("%s: %v", fmt.Sprintf(format, args...), err)
	}
	return msg
}

var queuedRE = regexp.MustCompile(`queued as ([0-9A-Za-z_-]+)`)

// submit sends one message for bob@example.com and returns its queue id
// from the 250.
func submit(t *testing.T, addr, body string) string {
	t.Helper()
	c := dialSMTP(t, addr)
	c.cmd(250, "MAIL FROM:<alice@sender.test>")
	c.cmd(250, "RCPT TO:<bob@example.com>")
	c.cmd(354, "DATA")
	w := c.DotWriter()
	if _, err := w.Write([]byte(body)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_, msg, err := c.ReadResponse(250)
	if err != nil {
		t.Fatalf("end of data: %v", err)
	}
	m := queuedRE.FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("250 without a queue id: %q", msg)
	}
	c.cmd(221, "QUIT")
	return m[1]
}

func testMessage(name string) string {
	return "From: alice@sender.test\r\nTo: bob@example.com\r\nSubject: " + name +
		"\r\nMessage-ID: <" + name + "@sender.test>\r\n\r\nHello,\r\n.dot line\r\n" + name + "\r\n"
}

// queueList runs "mxport queue list" and returns its lines.
func queueList(t *testing.T, env []string) []string {
	t.Helper()
	out := strings.TrimSuffix(ok(t, env, "", "queue", "list"), "\n")
	if out == "" {
		return nil
	}
	return strings.Split(out, "\n")
}

// TestKill9KeepsMail: every message that got a 250 survives kill -9 and is
// delivered once after restart. The home server is down from before the
// first message to after the restart, so there is no window for duplicates.
func TestKill9KeepsMail(t *testing.T) {
	s := newFwdSetup(t)
	s.home.Close()
	p := s.serve(t, "200ms")

	const n = 20
	ids := map[string]string{} // queue id -> Message-ID
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("kill9-%02d", i)
		id := submit(t, s.addr, testMessage(name))
		if _, dup := ids[id]; dup {
			t.Fatalf("queue id %s given twice", id)
		}
		ids[id] = "<" + name + "@sender.test>"
	}
	p.kill()

	p = s.serve(t, "200ms")
	p.waitLine("msg=\"smtp listening\"", fmt.Sprintf("queued=%d", n))
	// While the home server is still down, "queue list" (the Redis mirror)
	// shows every message waiting.
	poll(t, 20*time.Second, "queue list shows the 20 messages", func() bool {
		lines := queueList(t, s.env)
		if len(lines) != n {
			return false
		}
		for _, l := range lines {
			f := strings.Fields(l)
			if _, known := ids[f[0]]; !known || f[1] != "example.com" || f[2] != "alice@sender.test" || f[3] != "bob@example.com" {
				t.Fatalf("queue list line %q", l)
			}
		}
		return true
	})

	s.home.Restart(t)
	s.home.Wait(t, n, 30*time.Second)
	poll(t, 20*time.Second, "queue drained", func() bool { return len(queueList(t, s.env)) == 0 })
	msgs := s.home.Messages()
	seen := map[string]int{}
	for _, m := range msgs {
		mm, err := mail.ReadMessage(bytes.NewReader(m.Data))
		if err != nil {
			t.Fatal(err)
		}
		seen[mm.Header.Get("Message-Id")]++
		// Our Received header names the queue id the client was given.
		rcv := mm.Header.Get("Received")
		qid := regexp.MustCompile(`\bid ([0-9A-Za-z_-]+)`).FindStringSubmatch(rcv)
		if qid == nil || ids[qid[1]] != mm.Header.Get("Message-Id") {
			t.Errorf("delivered %s with Received %q: not a queue id we were given for it", mm.Header.Get("Message-Id"), rcv)
		}
		if m.From != "alice@sender.test" || strings.Join(m.Rcpts, ",") != "bob@example.com" {
			t.Errorf("envelope changed: %q -> %v", m.From, m.Rcpts)
		}
	}
	for id, msgID := range ids {
		if seen[msgID] != 1 {
			t.Errorf("message %s (queue id %s) delivered %d times, want once", msgID, id, seen[msgID])
		}
	}
	if len(msgs) != n {
		t.Errorf("home server got %d messages, want %d", len(msgs), n)
	}
	assertSpoolEmpty(t, s.spool)
}

// spoolEntries lists a spool subdirectory.
func spoolEntries(t *testing.T, spool, sub string) []os.DirEntry {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(spool, sub))
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// assertSpoolEmpty checks that the spool holds no message, no quarantined
// file and nothing half written: tmp/ may only hold the files of removed
// messages, kept for reuse. A removed message's body leaves msg/ once the
// removal of its meta is synced, within a second: it waits that long.
func assertSpoolEmpty(t *testing.T, spool string) {
	t.Helper()
	left := func() (out []string) {
		for _, sub := range []string{"tmp", "msg", "meta", "quarantine"} {
			for _, e := range spoolEntries(t, spool, sub) {
				if sub != "tmp" || !spoolpkg.Kept(e.Name()) {
					out = append(out, sub+"/"+e.Name())
				}
			}
		}
		return out
	}
	for deadline := time.Now().Add(5 * time.Second); len(left()) > 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond) // poll with a deadline
	}
	if names := left(); len(names) != 0 {
		t.Errorf("spool not empty: %v", names)
	}
}

// TestKill9MidData: a kill -9 while a client is in the middle of DATA
// leaves a partial file in tmp/; the restarted node removes it, never
// delivers any of that message, and still delivers the next one.
func TestKill9MidData(t *testing.T) {
	s := newFwdSetup(t)
	p := s.serve(t, "200ms")

	c := dialSMTP(t, s.addr)
	c.cmd(250, "MAIL FROM:<alice@sender.test>")
	c.cmd(250, "RCPT TO:<bob@example.com>")
	c.cmd(354, "DATA")
	half := "From: alice@sender.test\r\nTo: bob@example.com\r\nSubject: middata\r\nMessage-ID: <middata@sender.test>\r\n\r\n" +
		strings.Repeat("half a message, the rest never comes\r\n", 200_000/38)
	if _, err := c.W.WriteString(half); err != nil {
		t.Fatal(err)
	}
	if err := c.W.Flush(); err != nil {
		t.Fatal(err)
	}
	// The node is streaming the body into tmp/.
	poll(t, 20*time.Second, "partial body in the spool's tmp/", func() bool {
		for _, e := range spoolEntries(t, s.spool, "tmp") {
			if fi, err := e.Info(); err == nil && fi.Size() >= int64(len(half))/2 {
				return true
			}
		}
		return false
	})
	p.kill()
	if es := spoolEntries(t, s.spool, "tmp"); len(es) == 0 {
		t.Fatal("kill -9 mid-DATA left nothing in tmp/: the test did not catch the node mid-write")
	}
	// The client sees the connection go, never a 250.
	if code, msg, err := c.ReadResponse(250); err == nil {
		t.Fatalf("got %d %s after kill -9 mid-DATA", code, msg)
	}
	c.Close()

	p = s.serve(t, "200ms")
	p.waitLine("msg=\"smtp listening\"", "queued=0")
	assertSpoolEmpty(t, s.spool)

	submit(t, s.addr, testMessage("after-restart"))
	s.home.Wait(t, 1, 20*time.Second)
	poll(t, 20*time.Second, "queue drained", func() bool { return len(queueList(t, s.env)) == 0 })
	msgs := s.home.Messages()
	if len(msgs) != 1 || !bytes.Contains(msgs[0].Data, []byte("Message-ID: <after-restart@sender.test>")) {
		t.Fatalf("home server got %d messages, want only the one sent after restart", len(msgs))
	}
	poll(t, 10*time.Second, "spool empty after delivery", func() bool {
		return len(spoolEntries(t, s.spool, "meta"))+len(spoolEntries(t, s.spool, "msg")) == 0
	})
	assertSpoolEmpty(t, s.spool)
}

// TestQueueListAndFlush: with the home server down, "queue list" shows the
// waiting mail; once it is back, "queue flush DOMAIN" delivers at once
// although the next retry is an hour away.
func TestQueueListAndFlush(t *testing.T) {
	s := newFwdSetup(t)
	s.home.Close()
	p := s.serve(t, "1h")
	want := map[string]bool{}
	for i := 0; i < 3; i++ {
		want[submit(t, s.addr, testMessage(fmt.Sprintf("flush-%d", i)))] = true
	}
	// Each message's first attempt has failed; the next is an hour away.
	var lines []string
	poll(t, 20*time.Second, "queue list shows 3 messages after their first attempt", func() bool {
		lines = queueList(t, s.env)
		if len(lines) != 3 {
			return false
		}
		for _, l := range lines {
			if !strings.Contains(l, " attempts=1 ") {
				return false
			}
		}
		return true
	})
	for _, l := range lines {
		f := strings.Fields(l)
		if !want[f[0]] || f[1] != "example.com" || f[2] != "alice@sender.test" || f[3] != "bob@example.com" {
			t.Errorf("queue list line %q", l)
		}
		next := strings.TrimPrefix(f[5], "next=")
		if at, err := time.Parse(time.RFC3339, next); err != nil || time.Until(at) < 30*time.Minute {
			t.Errorf("queue list line %q: next attempt %q is not about an hour away", l, next)
		}
	}

	s.home.Restart(t)
	ok(t, s.env, "", "queue", "flush", "example.com")
	p.waitLine("msg=\"queue flush\"", "zone=example.com")
	s.home.Wait(t, 3, 10*time.Second)
	poll(t, 20*time.Second, "queue drained", func() bool { return len(queueList(t, s.env)) == 0 })
	if got := len(s.home.Messages()); got != 3 {
		t.Errorf("home server got %d messages, want 3", got)
	}
}

// TestSMTPFlagsAndEnv: the spool directory comes from MXPORT_SPOOL_DIR; with
// no --tls-cert a self-signed certificate is made there at first start,
// kept across restarts, and STARTTLS works with it.
func TestSMTPFlagsAndEnv(t *testing.T) {
	spool := t.TempDir()
	addr := freeAddr(t)
	env := []string{"MXPORT_REDIS_URL=" + storetest.NewURL(t), "MXPORT_SPOOL_DIR=" + spool}
	args := []string{"--dns", "", "--http", "", "--smtp", addr, "--hostname", "mx1.fwd.test", "--mx-hosts", "mx1.fwd.test"}

	p := startServe(t, env, args...)
	p.waitLine("msg=\"smtp listening\"", "addr="+addr, "spool="+spool)
	certFile := filepath.Join(spool, "tls-cert.pem")
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatalf("no self-signed certificate in the spool: %v", err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("%s is not a PEM certificate", certFile)
	}
	if _, err := os.Stat(filepath.Join(spool, "tls-key.pem")); err != nil {
		t.Fatalf("no key next to the certificate: %v", err)
	}

	startTLS := func() {
		t.Helper()
		c, err := smtp.Dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Hello("client.test"); err != nil {
			t.Fatal(err)
		}
		if ok, _ := c.Extension("STARTTLS"); !ok {
			t.Fatal("STARTTLS not offered")
		}
		if err := c.StartTLS(&tls.Config{InsecureSkipVerify: true}); err != nil {
			t.Fatalf("STARTTLS: %v", err)
		}
		st, ok := c.TLSConnectionState()
		if !ok || !st.HandshakeComplete || len(st.PeerCertificates) == 0 {
			t.Fatalf("no TLS after STARTTLS: %+v", st)
		}
		if !bytes.Equal(st.PeerCertificates[0].Raw, block.Bytes) {
			t.Error("the certificate served is not the one in the spool")
		}
		if err := st.PeerCertificates[0].VerifyHostname("mx1.fwd.test"); err != nil {
			t.Errorf("self-signed certificate not for --hostname: %v", err)
		}
		if err := c.Mail("alice@sender.test"); err != nil { // the session goes on under TLS
			t.Fatalf("MAIL after STARTTLS: %v", err)
		}
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
	}
	startTLS()
	p.stop()

	// A restart keeps the certificate.
	p = startServe(t, env, args...)
	p.waitLine("msg=\"smtp listening\"", "addr="+addr)
	if again, err := os.ReadFile(certFile); err != nil || !bytes.Equal(again, certPEM) {
		t.Fatalf("certificate changed across a restart (%v)", err)
	}
	startTLS()
	p.stop()
}
