package forwarder_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/mxport/mxport/forwarder"
	"github.com/mxport/mxport/forwarder/smtptest"
	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
	"github.com/mxport/mxport/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

var bg = context.Background()

// env is a running smtp role over a fresh store, with a home server for
// example.com and a sender's server for sender.test (both hosted and
// forwarded here, so bounces need no port 25).
type env struct {
	st     *store.Store
	f      *forwarder.Forwarder
	addr   string // our SMTP listener
	home   *smtptest.Server
	sender *smtptest.Server
	mxID   string // example.com's forwarded MX record
	reg    *prometheus.Registry
}

func port(t *testing.T, addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func start(t *testing.T, retry []time.Duration, maxAge time.Duration) *env {
	t.Helper()
	e := &env{st: storetest.New(t), home: smtptest.Start(t), sender: smtptest.Start(t)}
	if _, err := e.st.CreateAccount(bg, "c1", store.RoleCustomer, ""); err != nil {
		t.Fatal(err)
	}
	for _, z := range []struct{ zone, host, addr string }{
		{"example.com", "home.example.com", e.home.Addr},
		{"sender.test", "mx.sender.test", e.sender.Addr},
	} {
		if _, err := e.st.CreateZone(bg, z.zone, "c1"); err != nil {
			t.Fatal(err)
		}
		r, err := e.st.AddRecord(bg, z.zone, record.Record{Name: "@", Type: "MX", TTL: 300, Data: "10 " + z.host + ":" + port(t, z.addr)})
		if err != nil {
			t.Fatal(err)
		}
		if z.zone == "example.com" {
			e.mxID = r.ID
		}
		owner, _ := record.RelativeOwner(z.zone, z.host)
		if _, err := e.st.AddRecord(bg, z.zone, record.Record{Name: owner, Type: "A", TTL: 300, Data: "127.0.0.1"}); err != nil {
			t.Fatal(err)
		}
	}
	serveEnv(t, e, retry, maxAge)
	waitFor(t, 10*time.Second, "route index loaded", func() bool { return e.f.Index().Loaded() })
	return e
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond) // poll with a deadline
	}
}

// send submits one message over plain SMTP with net/smtp (SendMail would
// insist on verifying our self-signed STARTTLS certificate).
func send(t *testing.T, addr, from string, to []string, body string) {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	check := func(what string, err error) {
		if err != nil {
			t.Fatalf("send to %v: %s: %v", to, what, err)
		}
	}
	check("EHLO", c.Hello("client.test"))
	check("MAIL", c.Mail(from))
	for _, r := range to {
		check("RCPT", c.Rcpt(r))
	}
	w, err := c.Data()
	check("DATA", err)
	_, err = w.Write([]byte(body))
	check("write", err)
	check("end of data", w.Close())
	check("QUIT", c.Quit())
}

func message(subject string) string {
	return "From: Alice <alice@sender.test>\r\nTo: bob@example.com\r\nSubject: " + subject +
		"\r\nMessage-ID: <" + subject + "@sender.test>\r\n\r\nHello Bob,\r\n.leading dot line\r\nbye\r\n"
}

// stripReceived removes the one Received header mxport added at the top.
func stripReceived(t *testing.T, data []byte) []byte {
	t.Helper()
	s := string(data)
	if !strings.HasPrefix(s, "Received: from ") {
		t.Fatalf("message does not start with our Received header:\n%s", s)
	}
	i := strings.Index(s, "\r\n")
	for i >= 0 && i+2 < len(s) && (s[i+2] == ' ' || s[i+2] == '\t') { // folded lines
		j := strings.Index(s[i+2:], "\r\n")
		i = i + 2 + j
	}
	return []byte(s[i+2:])
}

func TestEndToEnd(t *testing.T) {
	e := start(t, []time.Duration{200 * time.Millisecond}, time.Hour)
	body := message("e2e")
	send(t, e.addr, "alice@sender.test", []string{"bob@example.com", "carol@example.com"}, body)
	msgs := e.home.Wait(t, 1, 10*time.Second)
	m := msgs[0]
	if m.From != "alice@sender.test" || strings.Join(m.Rcpts, ",") != "bob@example.com,carol@example.com" {
		t.Fatalf("envelope changed: from %q rcpts %v", m.From, m.Rcpts)
	}
	if got := stripReceived(t, m.Data); !bytes.Equal(got, []byte(body)) {
		t.Fatalf("body changed:\n got %q\nwant %q", got, body)
	}
	if !strings.Contains(string(m.Data), "by mx1.fwd.test") {
		t.Errorf("Received header does not name us: %q", m.Data[:200])
	}
	waitFor(t, 5*time.Second, "queue empty", func() bool { return e.f.Queue().Len() == 0 })
	waitFor(t, 5*time.Second, "delivery log", func() bool {
		ds, _ := e.st.Deliveries(bg, "example.com", 10)
		return len(ds) >= 4 && ds[0].Event == "delivered"
	})
	ds, _ := e.st.Deliveries(bg, "example.com", 10)
	events := map[string]int{}
	for _, d := range ds {
		events[d.Event]++
	}
	if events["accepted"] != 2 || events["delivered"] != 2 {
		t.Errorf("delivery log: %+v", ds)
	}
	if q, _ := e.st.Queued(bg, "example.com"); len(q) != 0 {
		t.Errorf("queue mirror still lists %d messages", len(q))
	}
}

// TestConnectionReuse: messages one after another to the home server
// travel on one pooled connection, and the metrics say so.
func TestConnectionReuse(t *testing.T) {
	e := start(t, []time.Duration{200 * time.Millisecond}, time.Hour)
	for i := range 5 {
		send(t, e.addr, "alice@sender.test", []string{"bob@example.com"}, message(fmt.Sprint("reuse", i)))
		e.home.Wait(t, i+1, 10*time.Second)
	}
	if n := e.home.Sessions(); n != 1 {
		t.Errorf("home server saw %d connections for 5 messages, want 1", n)
	}
	got := map[string]float64{}
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "mxport_delivery_connections_total" {
			for _, m := range mf.GetMetric() {
				got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	if got["dialled"] != 1 || got["reused"] != 4 {
		t.Errorf("mxport_delivery_connections_total: %v, want dialled 1, reused 4", got)
	}
}

// TestSwaks sends with swaks, as users test their setup.
func TestSwaks(t *testing.T) {
	if _, err := exec.LookPath("swaks"); err != nil {
		t.Fatal("swaks not found (make test installs it)")
	}
	e := start(t, []time.Duration{200 * time.Millisecond}, time.Hour)
	out, err := exec.Command("swaks", "--server", e.addr, "--from", "alice@sender.test", "--to", "bob@example.com",
		"--header", "Subject: swaks test", "--body", "via swaks").CombinedOutput()
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`<[-~]  250 `).Match(out) {
		t.Fatalf("swaks saw no 250:\n%s", out)
	}
	m := e.home.Wait(t, 1, 10*time.Second)[0]
	if !strings.Contains(string(m.Data), "via swaks") || m.From != "alice@sender.test" {
		t.Fatalf("home server got %+v", m)
	}
	waitFor(t, 5*time.Second, "delivered mail leaves the queue", func() bool { return e.f.Queue().Len() == 0 })
	// A domain not forwarded here is refused, and nothing is queued.
	out, err = exec.Command("swaks", "--server", e.addr, "--from", "alice@sender.test", "--to", "bob@elsewhere.example").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "550 5.7.1") {
		t.Fatalf("relay to another domain was not refused with 550 5.7.1:\n%s", out)
	}
	if n := e.f.Queue().Len(); n != 0 {
		t.Fatalf("refused mail left %d queued", n)
	}
}

func TestHomeDownThenUp(t *testing.T) {
	e := start(t, []time.Duration{200 * time.Millisecond}, time.Hour)
	e.home.Close()
	for i := 0; i < 3; i++ {
		send(t, e.addr, "alice@sender.test", []string{"bob@example.com"}, message(fmt.Sprint("down", i)))
	}
	waitFor(t, 10*time.Second, "retries while down", func() bool {
		for _, m := range e.f.Queue().List() {
			if m.Attempts < 2 {
				return false
			}
		}
		return e.f.Queue().Len() == 3
	})
	e.home.Restart(t)
	waitFor(t, 15*time.Second, "queue drained", func() bool { return e.f.Queue().Len() == 0 })
	msgs := e.home.Messages()
	if len(msgs) != 3 {
		t.Fatalf("home server got %d messages, want each of 3 once", len(msgs))
	}
	seen := map[string]bool{}
	for _, m := range msgs {
		id := mustHeader(t, m.Data, "Message-Id")
		if seen[id] {
			t.Fatalf("message %s delivered twice", id)
		}
		seen[id] = true
	}
	ds, _ := e.st.Deliveries(bg, "example.com", 100)
	deferred := 0
	for _, d := range ds {
		if d.Event == "deferred" && d.Reply != "" {
			deferred++
		}
	}
	if deferred == 0 {
		t.Errorf("no deferred event with a reason in the delivery log: %+v", ds)
	}
}

func mustHeader(t *testing.T, data []byte, name string) string {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return m.Header.Get(name)
}

// TestTargetEdited: mail waiting for a dead target goes to the new target
// the customer enters (late binding).
func TestTargetEdited(t *testing.T) {
	e := start(t, []time.Duration{200 * time.Millisecond}, time.Hour)
	e.home.Close()
	send(t, e.addr, "alice@sender.test", []string{"bob@example.com"}, message("moved"))
	waitFor(t, 10*time.Second, "first attempt", func() bool {
		l := e.f.Queue().List()
		return len(l) == 1 && l[0].Attempts >= 1
	})
	newHome := smtptest.Start(t)
	if _, err := e.st.UpdateRecord(bg, "example.com", e.mxID, record.Record{Name: "@", Type: "MX", TTL: 300,
		Data: "10 home.example.com:" + port(t, newHome.Addr)}); err != nil {
		t.Fatal(err)
	}
	m := newHome.Wait(t, 1, 10*time.Second)[0]
	if mustHeader(t, m.Data, "Subject") != "moved" {
		t.Fatalf("new target got %q", m.Data)
	}
	e.stopBefore(newHome)
}

// stopBefore stops the forwarder, which closes its pooled connections, for
// a test whose home server started after the forwarder: that server's
// cleanup, which fails on connections left open, runs before the
// forwarder's.
func (e *env) stopBefore(*smtptest.Server) {
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	e.f.Shutdown(ctx)
}

// checkDSN parses a delivery status notification (RFC 3464) and returns
// the per-recipient fields of its first recipient.
func checkDSN(t *testing.T, m smtptest.Message) textproto.MIMEHeader {
	t.Helper()
	if m.From != "" {
		t.Fatalf("DSN sent from <%s>, want <>", m.From)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("DSN content type %q %v", mt, params)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var parts []string
	var status textproto.MIMEHeader
	for {
		p, err := mr.NextPart()
		if err != nil {
			break
		}
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		parts = append(parts, ct)
		if ct == "message/delivery-status" {
			tp := textproto.NewReader(bufioReader(p))
			perMsg, err := tp.ReadMIMEHeader()
			if err != nil || perMsg.Get("Reporting-Mta") == "" {
				t.Fatalf("per-message fields: %v %v", perMsg, err)
			}
			if status, err = tp.ReadMIMEHeader(); err != nil && status == nil {
				t.Fatalf("per-recipient fields: %v", err)
			}
		}
	}
	if len(parts) != 3 || parts[1] != "message/delivery-status" {
		t.Fatalf("DSN parts %v", parts)
	}
	for _, f := range []string{"Final-Recipient", "Action", "Status"} {
		if status.Get(f) == "" {
			t.Fatalf("DSN lacks %s: %v", f, status)
		}
	}
	return status
}

func TestBounceOn550(t *testing.T) {
	e := start(t, []time.Duration{200 * time.Millisecond}, time.Hour)
	e.home.FailRcpt("bob@example.com", &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "no such user here"})
	send(t, e.addr, "alice@sender.test", []string{"bob@example.com"}, message("bounce"))
	dsnMsg := e.sender.Wait(t, 1, 10*time.Second)[0]
	st := checkDSN(t, dsnMsg)
	if st.Get("Action") != "failed" || st.Get("Status") != "5.1.1" || !strings.Contains(st.Get("Final-Recipient"), "bob@example.com") ||
		!strings.Contains(st.Get("Diagnostic-Code"), "550") || st.Get("Remote-Mta") == "" {
		t.Fatalf("DSN recipient fields: %v", st)
	}
	if strings.Join(dsnMsg.Rcpts, ",") != "alice@sender.test" {
		t.Fatalf("DSN sent to %v", dsnMsg.Rcpts)
	}
	waitFor(t, 5*time.Second, "queue empty", func() bool { return e.f.Queue().Len() == 0 })
}

func TestBounceOnExpiry(t *testing.T) {
	e := start(t, []time.Duration{100 * time.Millisecond}, 700*time.Millisecond)
	e.home.Close()
	send(t, e.addr, "alice@sender.test", []string{"bob@example.com"}, message("expire"))
	st := checkDSN(t, e.sender.Wait(t, 1, 15*time.Second)[0])
	if st.Get("Action") != "failed" || !strings.HasPrefix(st.Get("Status"), "5.4.") {
		t.Fatalf("expiry DSN fields: %v", st)
	}
}

// TestNoBounceToNullSender: a bounce of a bounce is never sent.
func TestNoBounceToNullSender(t *testing.T) {
	e := start(t, []time.Duration{200 * time.Millisecond}, time.Hour)
	e.home.FailRcpt("bob@example.com", &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "no such user"})
	send(t, e.addr, "", []string{"bob@example.com"}, message("null"))
	// And one normal bounce after it, as a marker: when it arrives, the
	// first would have arrived before it.
	send(t, e.addr, "alice@sender.test", []string{"bob@example.com"}, message("marker"))
	msgs := e.sender.Wait(t, 1, 10*time.Second)
	waitFor(t, 5*time.Second, "queue empty", func() bool { return e.f.Queue().Len() == 0 })
	msgs = e.sender.Messages()
	if len(msgs) != 1 || !strings.Contains(string(msgs[0].Data), "marker") {
		t.Fatalf("sender's server got %d messages; want only the marker's bounce", len(msgs))
	}
}

// TestFlushByControl: a flush through the store (API, CLI, dyndns) makes
// waiting mail go at once, whatever the retry schedule says.
func TestFlushByControl(t *testing.T) {
	e := start(t, []time.Duration{time.Hour}, 48*time.Hour)
	e.home.Close()
	send(t, e.addr, "alice@sender.test", []string{"bob@example.com"}, message("flush"))
	waitFor(t, 10*time.Second, "first attempt", func() bool {
		l := e.f.Queue().List()
		return len(l) == 1 && l[0].Attempts >= 1
	})
	e.home.Restart(t)
	if err := e.st.PublishControl(bg, store.Control{Kind: "flush", Zone: "example.com"}); err != nil {
		t.Fatal(err)
	}
	e.home.Wait(t, 1, 10*time.Second)
}

func bufioReader(r interface{ Read([]byte) (int, error) }) *bufio.Reader { return bufio.NewReader(r) }

// TestETRN: anyone may ask, with ETRN (RFC 1985), for a forwarded zone's
// waiting mail to be delivered now; the body of a message is not mistaken
// for commands.
func TestETRN(t *testing.T) {
	e := start(t, []time.Duration{time.Hour}, 48*time.Hour)
	e.home.Close()
	body := message("etrn") + "ETRN example.com\r\n"
	send(t, e.addr, "alice@sender.test", []string{"bob@example.com"}, body)
	waitFor(t, 10*time.Second, "first attempt", func() bool {
		l := e.f.Queue().List()
		return len(l) == 1 && l[0].Attempts >= 1
	})
	e.home.Restart(t)

	c, err := textproto.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := c.ReadResponse(220); err != nil {
		t.Fatal(err)
	}
	id, _ := c.Cmd("EHLO home.example.com")
	c.StartResponse(id)
	_, msg, err := c.ReadResponse(250)
	c.EndResponse(id)
	if err != nil || !strings.Contains(msg, "\nETRN") {
		t.Fatalf("EHLO does not advertise ETRN: %q %v", msg, err)
	}
	for _, tc := range []struct {
		cmd  string
		code int
	}{
		{"ETRN elsewhere.example", 458},
		{"ETRN", 501},
		{"ETRN example.com", 250},
	} {
		id, _ := c.Cmd("%s", tc.cmd)
		c.StartResponse(id)
		code, msg, _ := c.ReadResponse(0)
		c.EndResponse(id)
		if code != tc.code {
			t.Fatalf("%s: %d %s, want %d", tc.cmd, code, msg, tc.code)
		}
	}
	m := e.home.Wait(t, 1, 10*time.Second)[0]
	if got := stripReceived(t, m.Data); !bytes.Equal(got, []byte(body)) {
		t.Fatalf("body changed (an ETRN line in it must pass through):\n got %q\nwant %q", got, body)
	}
	// The session goes on normally after ETRN.
	id, _ = c.Cmd("NOOP")
	c.StartResponse(id)
	if _, _, err := c.ReadResponse(250); err != nil {
		t.Fatalf("NOOP after ETRN: %v", err)
	}
	c.EndResponse(id)
}

// TestBDATThroughETRN: BDAT chunks (CHUNKING) pass the ETRN wrapper by size,
// even when they hold command-like lines.
func TestBDATThroughETRN(t *testing.T) {
	e := start(t, []time.Duration{200 * time.Millisecond}, time.Hour)
	c, err := textproto.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expect := func(code int) {
		t.Helper()
		if _, msg, err := c.ReadResponse(code); err != nil {
			t.Fatalf("want %d: %v %s", code, err, msg)
		}
	}
	expect(220)
	body := "Subject: bdat\r\n\r\nETRN example.com\r\nQUIT\r\n"
	c.PrintfLine("EHLO client.test")
	expect(250)
	c.PrintfLine("MAIL FROM:<alice@sender.test>")
	expect(250)
	c.PrintfLine("RCPT TO:<bob@example.com>")
	expect(250)
	fmt.Fprintf(c.W, "BDAT %d LAST\r\n%s", len(body), body)
	c.W.Flush()
	expect(250)
	m := e.home.Wait(t, 1, 10*time.Second)[0]
	if got := stripReceived(t, m.Data); string(got) != body {
		t.Fatalf("BDAT body changed:\n got %q\nwant %q", got, body)
	}
}
