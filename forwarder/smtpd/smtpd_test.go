package smtpd

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/mxport/mxport/forwarder/route"
	"github.com/mxport/mxport/forwarder/spool"
)

func TestAccept(t *testing.T) {
	f := newFixture(t, nil)
	release := make(chan struct{})
	entered := make(chan struct{})
	f.q.hold = func(*spool.Meta) {
		close(entered)
		<-release
	}
	c := f.dial()
	c.must("EHLO client.test", 250)
	c.must("MAIL FROM:<a@b.example>", 250)
	c.must("RCPT TO:<user@example.com>", 250)
	c.must("DATA", 354)
	c.write(dotStuff(testMsg) + ".\r\n")

	<-entered
	// The queue has it, on disk; the client must not have its 250 yet.
	c.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if line, err := c.tp.ReadLine(); err == nil {
		t.Fatalf("reply %q before Enqueue returned", line)
	}
	close(release)
	msg := c.expect(250)
	ms := f.q.all()
	if len(ms) != 1 || !f.q.onDisk[0] {
		t.Fatalf("enqueued %d, on disk at Enqueue %v", len(ms), f.q.onDisk)
	}
	m := ms[0]
	if !strings.Contains(msg, m.ID) || !strings.HasPrefix(msg, "2.0.0 ") {
		t.Errorf("250 text %q lacks the id %s", msg, m.ID)
	}
	if m.Zone != "example.com" || m.From != "a@b.example" || len(m.Rcpts) != 1 ||
		m.Rcpts[0].Addr != "user@example.com" || m.Rcpts[0].State != spool.Pending {
		t.Errorf("meta %+v", m)
	}
	hdr, rest := f.body(m.ID)
	want := strings.ReplaceAll(testMsg, "\r\n..two", "\r\n..two") // unstuffed already
	if rest != want {
		t.Errorf("body differs:\n got %q\nwant %q", rest, want)
	}
	re := regexp.MustCompile(`^Received: from client\.test \((localhost|\[127\.0\.0\.1\]) \[127\.0\.0\.1\]\)\r\n` +
		`\tby mx\.test \(mxport\) with ESMTP id ` + m.ID + `\r\n` +
		`\tfor <user@example\.com>; [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r\n$`)
	if !re.MatchString(hdr) {
		t.Errorf("Received header %q", hdr)
	}
	if m.Size != int64(len(hdr)+len(rest)) {
		t.Errorf("size %d, want %d", m.Size, len(hdr)+len(rest))
	}
	select {
	case d := <-f.events:
		if d.Event != "accepted" || d.ID != m.ID || d.Rcpt != "user@example.com" || d.From != "a@b.example" {
			t.Errorf("log event %+v", d)
		}
	default:
		t.Error("no accepted event logged")
	}
	c.must("QUIT", 221)
}

func TestRelayTricks(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial()
	c.must("EHLO client.test", 250)
	c.must("MAIL FROM:<a@b.example>", 250)
	for _, rcpt := range []string{
		"<user%gmail.com@example.com>",
		"<\"user%gmail.com\"@example.com>",
		"<\"user@gmail.com\"@example.com>",
		"<\"user\\@gmail.com\"@example.com>",
		"<user@gmail.com@example.com>",
		"<user@example.com@gmail.com>",
		"<@example.com:user@gmail.com>", // go-smtp drops the route: user@gmail.com
		"<@example.com,@example.com:user@gmail.com>",
		"<gmail.com!user@example.com>",
		"<\"gmail.com!user\"@example.com>",
		"<user@[192.0.2.1]>",
		"<user@[IPv6:2001:db8::1]>",
		"<user@[127.0.0.1]>",
		"<user@plain.test>",          // hosted, not forwarded
		"<user@gmail.com>",           // not hosted
		"<user@sub.example.com>",     // below a forwarded zone
		"<user@mail.example.com>",    // a host in it
		"<postmaster@gmail.com>",     //
		"<user@xn--bcher-kva.test.>", // trailing dot: syntax, not ours
	} {
		code, msg := c.cmd("RCPT TO:" + rcpt)
		switch {
		case code == 550 && strings.HasPrefix(msg, "5.7.1 "):
		case code == 501 && strings.Contains(rcpt, "test."):
		default:
			t.Errorf("RCPT TO:%s: %d %s, want 550 5.7.1", rcpt, code, msg)
		}
	}
	c.must("DATA", 502) // go-smtp: no recipient accepted
	c.must("QUIT", 221)
	if n := len(f.q.all()); n != 0 {
		t.Errorf("%d messages enqueued", n)
	}
	if fs := f.spoolFiles(); len(fs) != 0 {
		t.Errorf("spool files %v", fs)
	}
}

func TestAddressForms(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial()
	c.must("EHLO client.test", 250)
	c.must("MAIL FROM:<\"odd sender\"@b.example>", 250)
	c.must("RCPT TO:<User.Name+tag@EXAMPLE.com>", 250)
	c.must("RCPT TO:<\"john smith\"@example.com>", 250)
	c.must("RCPT TO:<@relay.example:routed@example.com>", 250) // RFC 5321 4.1.1.3: route ignored
	c.must("RCPT TO:<user@bücher.test>", 553, "5.6.7")         // no SMTPUTF8
	c.must("RCPT TO:<ü@example.com>", 553, "5.6.7")
	c.must("RCPT TO:<user@exa_mple.com>", 501, "5.1.3")
	c.must("RCPT TO:<user@-example.com>", 501, "5.1.3")
	c.must("RCPT TO:<user@example..com>", 501, "5.1.3")
	if code, _ := c.send2(); code != 250 {
		t.Fatalf("DATA %d", code)
	}
	m := f.q.all()[0]
	var got []string
	for _, r := range m.Rcpts {
		got = append(got, r.Addr)
	}
	want := []string{"User.Name+tag@example.com", "\"john smith\"@example.com", "routed@example.com"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("rcpts %q, want %q", got, want)
	}
	if m.From != "\"odd sender\"@b.example" {
		t.Errorf("from %q", m.From)
	}

	// SMTPUTF8: an internationalised domain is looked up by its A-label.
	c.must("MAIL FROM:<a@b.example> SMTPUTF8", 250)
	c.must("RCPT TO:<ü@bücher.test>", 250)
	c.must("DATA", 354)
	c.write("Subject: ü\r\n\r\nü\r\n.\r\n")
	code, msg := c.reply()
	if code != 250 {
		t.Fatalf("DATA %d %s", code, msg)
	}
	m = f.q.all()[1]
	if m.Zone != "xn--bcher-kva.test" || m.Rcpts[0].Addr != "ü@bücher.test" || !m.UTF8 {
		t.Errorf("meta %+v", m)
	}
	hdr, _ := f.body(m.ID)
	if !strings.Contains(hdr, "with UTF8SMTP id") {
		t.Errorf("Received %q", hdr)
	}
}

// send2 sends a small message after the recipients were given.
func (c *client) send2() (int, string) {
	c.t.Helper()
	c.must("DATA", 354)
	c.write("Subject: x\r\n\r\nx\r\n.\r\n")
	return c.reply()
}

func TestUnloadedIndex(t *testing.T) {
	f := newFixture(t, func(cfg *Config) { cfg.Router = route.NewIndex() })
	c := f.dial()
	c.must("EHLO client.test", 250)
	c.must("MAIL FROM:<a@b.example>", 250)
	for _, r := range []string{"user@example.com", "user@gmail.com", "user@plain.test"} {
		c.must("RCPT TO:<"+r+">", 451, "4.3.0")
	}
	// A relay trick is refused for good even now: it needs no lookup.
	c.must("RCPT TO:<a%b@example.com>", 550, "5.7.1")
	c.must("DATA", 502)
	if len(f.q.all()) != 0 {
		t.Error("enqueued")
	}
}

func TestTooManyRecipients(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial()
	c.must("EHLO client.test", 250)
	c.must("MAIL FROM:<a@b.example>", 250)
	for i := 1; i <= 100; i++ {
		c.must(fmt.Sprintf("RCPT TO:<user%d@example.com>", i), 250)
	}
	c.must("RCPT TO:<user101@example.com>", 452, "4.5.3")
	if code, msg := c.send2(); code != 250 {
		t.Fatalf("DATA %d %s", code, msg)
	}
	m := f.q.all()[0]
	if len(m.Rcpts) != 100 {
		t.Errorf("%d recipients", len(m.Rcpts))
	}
	hdr, _ := f.body(m.ID)
	if strings.Contains(hdr, "for <") {
		t.Errorf("Received with 100 recipients has a for clause: %q", hdr)
	}
}

func TestOneZonePerMessage(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial()
	c.must("EHLO client.test", 250)
	c.must("MAIL FROM:<a@b.example>", 250)
	c.must("RCPT TO:<user@example.com>", 250)
	c.must("RCPT TO:<user@other.test>", 451, "4.5.3")
	c.must("RCPT TO:<user2@example.com>", 250)
	c.must("RCPT TO:<user@example.com>", 250) // duplicate: kept once
	if code, _ := c.send2(); code != 250 {
		t.Fatal(code)
	}
	// The sender retries the other zone in a transaction of its own.
	c.must("MAIL FROM:<a@b.example>", 250)
	c.must("RCPT TO:<user@other.test>", 250)
	if code, _ := c.send2(); code != 250 {
		t.Fatal(code)
	}
	ms := f.q.all()
	if len(ms) != 2 || ms[0].Zone != "example.com" || len(ms[0].Rcpts) != 2 || ms[1].Zone != "other.test" {
		t.Errorf("metas %+v %+v", ms[0], ms[1])
	}
}

func TestNullSenderAndRset(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial()
	c.must("HELO client.test", 250)
	c.must("MAIL FROM:<>", 250)
	c.must("MAIL FROM:<x@b.example>", 503, "5.5.1") // nested
	c.must("RCPT TO:<user@example.com>", 250)
	c.must("RSET", 250)
	c.must("DATA", 502)
	c.must("MAIL FROM:<>", 250)
	c.must("RCPT TO:<postmaster@example.com>", 250)
	if code, _ := c.send2(); code != 250 {
		t.Fatal(code)
	}
	if m := f.q.all()[0]; m.From != "" || m.Rcpts[0].Addr != "postmaster@example.com" {
		t.Errorf("meta %+v", m)
	}
	c.must("MAIL FROM:<bad address@b.example>", 501)
	c.must("MAIL FROM:<üser@b.example>", 553, "5.6.7")
}

func TestSize(t *testing.T) {
	f := newFixture(t, func(cfg *Config) { cfg.MaxSize = 10000 })
	c := f.dial()
	msg := c.must("EHLO client.test", 250)
	if !strings.Contains(msg, "SIZE 10000") {
		t.Errorf("EHLO %q", msg)
	}
	c.must("MAIL FROM:<a@b.example> SIZE=10001", 552, "5.3.4")
	c.must("MAIL FROM:<a@b.example> SIZE=9000", 250)
	c.must("RCPT TO:<user@example.com>", 250)
	c.must("DATA", 354)
	big := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 98)+"\r\n", 200)
	c.write(big + ".\r\n")
	c.expect(552)
	if len(f.q.all()) != 0 || len(f.spoolFiles()) != 0 {
		t.Errorf("kept: %v", f.spoolFiles())
	}
	// Just under the limit passes; the session goes on.
	c.must("MAIL FROM:<a@b.example>", 250)
	c.must("RCPT TO:<user@example.com>", 250)
	c.must("DATA", 354)
	ok := "Subject: ok\r\n\r\n" + strings.Repeat(strings.Repeat("y", 98)+"\r\n", 99)
	c.write(ok + ".\r\n")
	c.expect(250)
	_, rest := f.body(f.q.all()[0].ID)
	if rest != ok {
		t.Error("body differs")
	}
	// BDAT: the chunk sizes are checked too.
	c.must("MAIL FROM:<a@b.example>", 250)
	c.must("RCPT TO:<user@example.com>", 250)
	c.write("BDAT 20000 LAST\r\n" + strings.Repeat("z", 20000))
	c.expect(552)
	if len(f.q.all()) != 1 {
		t.Error("BDAT too big enqueued")
	}
}

func TestLoop(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial()
	c.must("EHLO client.test", 250)
	hops := func(n int) string {
		var b strings.Builder
		for i := 0; i < n; i++ {
			if i%2 == 0 {
				fmt.Fprintf(&b, "Received: from h%d.example by h%d.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n", i, i+1)
			} else {
				fmt.Fprintf(&b, "received :\r\n\tfrom h%d.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n", i)
			}
		}
		return b.String()
	}
	code, msg := c.send("a@b.example", []string{"user@example.com"}, hops(101)+"Subject: loop\r\n\r\nx\r\n")
	if code != 554 || !strings.HasPrefix(msg, "5.4.6") {
		t.Fatalf("101 Received: %d %s", code, msg)
	}
	if len(f.q.all()) != 0 || len(f.spoolFiles()) != 0 {
		t.Fatalf("kept %v", f.spoolFiles())
	}
	// 100 pass, and Received in the body does not count.
	body := hops(100) + "Subject: ok\r\n\r\n" + hops(200)
	if code, msg := c.send("a@b.example", []string{"user@example.com"}, body); code != 250 {
		t.Fatalf("100 Received: %d %s", code, msg)
	}
	if _, rest := f.body(f.q.all()[0].ID); rest != body {
		t.Error("body differs")
	}
}

func TestSpoolFailure(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(dir string) error
	}{
		{"spool removed", os.RemoveAll},
		{"meta not a directory", func(dir string) error {
			if err := os.RemoveAll(filepath.Join(dir, "meta")); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, "meta"), nil, 0o600)
		}},
		{"msg not a directory", func(dir string) error {
			if err := os.RemoveAll(filepath.Join(dir, "msg")); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, "msg"), nil, 0o600)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			c := f.dial()
			c.must("EHLO client.test", 250)
			if err := tc.break_(f.sp.Dir()); err != nil {
				t.Fatal(err)
			}
			code, msg := c.send("a@b.example", []string{"user@example.com"}, testMsg)
			if code != 451 || !strings.HasPrefix(msg, "4.3.0") || !regexp.MustCompile(`id [0-9a-v]{26}`).MatchString(msg) {
				t.Fatalf("DATA: %d %s, want 451 4.3.0 with the id", code, msg)
			}
			if len(f.q.all()) != 0 {
				t.Error("enqueued")
			}
			var left []string
			filepath.Walk(f.sp.Dir(), func(p string, fi os.FileInfo, err error) error {
				if err == nil && fi.Mode().IsRegular() && fi.Size() > 0 {
					left = append(left, p)
				}
				return nil
			})
			if len(left) != 0 {
				t.Errorf("left behind: %v", left)
			}
			c.must("NOOP", 250)
		})
	}
}

func TestSmuggling(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial()
	c.must("EHLO client.test", 250)
	for i, seq := range []string{"\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n", "\r.\r\n", "\n.\r", "\r\n.\r"} {
		c.must("MAIL FROM:<a@b.example>", 250)
		c.must("RCPT TO:<user@example.com>", 250)
		c.must("DATA", 354)
		smuggled := "MAIL FROM:<evil@b.example>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nsmuggled\r\n"
		c.write("Subject: s\r\n\r\nA" + seq + smuggled + ".\r\n")
		code, msg := c.reply()
		if code != 250 {
			t.Fatalf("%q: %d %s", seq, code, msg)
		}
		// Nothing else is pending: the next reply is NOOP's.
		c.must("NOOP", 250, "2.0.0 I have successfully done nothing")
		ms := f.q.all()
		if len(ms) != i+1 {
			t.Fatalf("%q: %d messages", seq, len(ms))
		}
		_, rest := f.body(ms[i].ID)
		if !strings.Contains(rest, "RCPT TO:<victim@example.com>") || !strings.Contains(rest, "smuggled") {
			t.Errorf("%q: body %q", seq, rest)
		}
		if ms[i].From != "a@b.example" {
			t.Errorf("%q: from %q", seq, ms[i].From)
		}
	}
}

func TestSTARTTLS(t *testing.T) {
	dir := t.TempDir()
	conf, err := SelfSignedTLS(dir, "mx.test")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"tls-cert.pem", "tls-key.pem"} {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", n, fi.Mode(), err)
		}
	}
	again, err := SelfSignedTLS(dir, "mx.test")
	if err != nil || string(again.Certificates[0].Certificate[0]) != string(conf.Certificates[0].Certificate[0]) {
		t.Fatalf("second load: a different certificate (%v)", err)
	}
	leaf, err := x509.ParseCertificate(conf.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Subject.CommonName != "mx.test" || len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "mx.test" ||
		leaf.NotAfter.Before(time.Now().AddDate(9, 11, 0)) {
		t.Errorf("certificate %v %v %v", leaf.Subject, leaf.DNSNames, leaf.NotAfter)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)

	f := newFixture(t, func(cfg *Config) { cfg.TLS = conf })
	c := f.dial()
	if msg := c.must("EHLO client.test", 250); !strings.Contains(msg, "STARTTLS") {
		t.Fatalf("EHLO %q", msg)
	}
	c.startTLS(&tls.Config{RootCAs: pool, ServerName: "mx.test"})
	if msg := c.must("EHLO client.test", 250); strings.Contains(msg, "STARTTLS") {
		t.Errorf("STARTTLS offered again: %q", msg)
	}
	if code, msg := c.send("a@b.example", []string{"user@example.com"}, testMsg); code != 250 {
		t.Fatalf("%d %s", code, msg)
	}
	hdr, _ := f.body(f.q.all()[0].ID)
	if !regexp.MustCompile(`with ESMTPS \(TLS1\.[23] TLS_[A-Z0-9_]+\) id `).MatchString(hdr) {
		t.Errorf("Received %q", hdr)
	}

	// Commands pipelined after STARTTLS in plain text are not run inside
	// TLS (command injection, CVE-2011-0411).
	c2 := f.dial()
	c2.must("EHLO client.test", 250)
	c2.write("STARTTLS\r\nMAIL FROM:<evil@b.example>\r\n")
	c2.expect(220)
	tc := tls.Client(c2.conn, &tls.Config{RootCAs: pool, ServerName: "mx.test"})
	if err := tc.Handshake(); err != nil {
		t.Logf("handshake after injection: %v (refused is fine)", err)
		return
	}
	c2.conn = tc
	c2.tp = newTP(tc)
	c2.must("EHLO client.test", 250)
	c2.must("RCPT TO:<user@example.com>", 502) // no MAIL in this session
}

func TestPipelining(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial()
	if msg := c.must("EHLO client.test", 250); !strings.Contains(msg, "PIPELINING") ||
		!strings.Contains(msg, "8BITMIME") || !strings.Contains(msg, "SMTPUTF8") ||
		!strings.Contains(msg, "DSN") || !strings.Contains(msg, "CHUNKING") ||
		!strings.Contains(msg, "ENHANCEDSTATUSCODES") || !strings.Contains(msg, "SIZE 52428800") {
		t.Errorf("EHLO %q", msg)
	}
	c.write("MAIL FROM:<a@b.example> BODY=8BITMIME\r\nRCPT TO:<u1@example.com>\r\nRCPT TO:<a%b@example.com>\r\nRCPT TO:<u2@example.com>\r\nDATA\r\n")
	c.expect(250)
	c.expect(250)
	c.expect(550)
	c.expect(250)
	c.expect(354)
	c.write(dotStuff(testMsg) + ".\r\nMAIL FROM:<>\r\nRCPT TO:<u3@example.com>\r\nBDAT 10\r\n0123456789BDAT 5 LAST\r\nabcde")
	c.expect(250)
	c.expect(250)
	c.expect(250)
	c.expect(250) // BDAT 10: Continue
	c.expect(250)
	ms := f.q.all()
	if len(ms) != 2 || len(ms[0].Rcpts) != 2 || !ms[0].Body8Bit {
		t.Fatalf("metas %d %+v", len(ms), ms)
	}
	if _, rest := f.body(ms[0].ID); rest != testMsg {
		t.Errorf("body %q", rest)
	}
	if _, rest := f.body(ms[1].ID); rest != "0123456789abcde" {
		t.Errorf("BDAT body %q", rest)
	}
}

func TestDSNParams(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial()
	c.must("EHLO client.test", 250)
	c.must("MAIL FROM:<a@b.example> RET=HDRS ENVID=QQ+2B314", 250)
	c.must("RCPT TO:<u1@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u1+40example.com", 250)
	c.must("RCPT TO:<u2@example.com> NOTIFY=NEVER", 250)
	c.must("RCPT TO:<u3@example.com>", 250)
	if code, _ := c.send2(); code != 250 {
		t.Fatal(code)
	}
	m := f.q.all()[0]
	if m.Ret != "HDRS" || m.EnvID != "QQ+314" {
		t.Errorf("ret %q envid %q", m.Ret, m.EnvID)
	}
	want := []struct{ n, o string }{{"SUCCESS,FAILURE", "RFC822;u1@example.com"}, {"NEVER", ""}, {"", ""}}
	for i, w := range want {
		r := m.Rcpts[i]
		if r.Notify != w.n || r.ORcpt != w.o {
			t.Errorf("rcpt %d: notify %q orcpt %q, want %q %q", i, r.Notify, r.ORcpt, w.n, w.o)
		}
	}
	// The meta on disk says the same.
	metas, err := f.sp.Scan()
	if err != nil || len(metas) != 1 || metas[0].Ret != "HDRS" || metas[0].Rcpts[0].Notify != "SUCCESS,FAILURE" {
		t.Errorf("scan %v %+v", err, metas)
	}
}

func TestStallAndLongLine(t *testing.T) {
	f := newFixture(t, func(cfg *Config) {
		cfg.ReadTimeout = 300 * time.Millisecond
		cfg.MaxLineLength = 1200
	})
	c := f.dial()
	c.must("EHLO client.test", 250)
	c.must("MAIL FROM:<a@b.example>", 250)
	c.must("RCPT TO:<user@example.com>", 250)
	c.must("DATA", 354)
	c.write("Subject: stall\r\n\r\nhalf a messa")
	// The server gives up on the stalled body and closes.
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, err := c.tp.ReadLine(); err != nil {
			break
		}
	}
	if len(f.q.all()) != 0 || len(f.spoolFiles()) != 0 {
		t.Errorf("stalled message kept: %v", f.spoolFiles())
	}

	c = f.dial()
	c.must("EHLO client.test", 250)
	c.must("NOOP "+strings.Repeat("x", 1300), 500, "5.4.0")

	c = f.dial()
	c.must("EHLO client.test", 250)
	c.must("MAIL FROM:<a@b.example>", 250)
	c.must("RCPT TO:<user@example.com>", 250)
	c.must("DATA", 354)
	c.write("Subject: long\r\n\r\n" + strings.Repeat("x", 1300) + "\r\n.\r\n")
	if code, msg := c.reply(); code != 500 || !strings.HasPrefix(msg, "5.6.0") { // ours; go-smtp then closes
		t.Errorf("long line in DATA: %d %s", code, msg)
	}
	if len(f.q.all()) != 0 || len(f.spoolFiles()) != 0 {
		t.Errorf("message with an overlong line kept: %v", f.spoolFiles())
	}
}

func TestBadInput(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial()
	c.must("MAIL FROM:<a@b.example>", 502) // before EHLO
	c.must("EHLO client.test", 250)
	c.must("DATA", 502)
	c.must("RCPT TO:<user@example.com>", 502)
	c.must("XYZZY", 501)
	c.must("XYZZ", 500)
	c.must("MAIL FROM:a@b.example", 250) // go-smtp allows the path without <>
	c.must("RCPT TO:user@example.com", 250)
	c.must("RSET", 250)
	c.must("MAIL FROM:<a@b.example", 501)
	c.must("MAIL FROM:<a@b.example>", 250)
	c.must("RCPT TO:<user@example.com", 501)
	c.must("VRFY user", 252)
	c.must("RCPT TO:<user@example.com> FOO=BAR", 500)
	c.must("RCPT TO:<user@example.com>", 250)
	if code, _ := c.send2(); code != 250 {
		t.Fatal(code)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	f := newFixture(t, func(cfg *Config) { cfg.Metrics = m })
	c := f.dial()
	c.must("EHLO client.test", 250)
	c.must("MAIL FROM:<a@b.example>", 250)
	c.must("RCPT TO:<a%b@example.com>", 550)
	c.must("RCPT TO:<user@gmail.com>", 550)
	c.must("RCPT TO:<user@example.com>", 250)
	c.send2()
	c.must("QUIT", 221)
	if v := counterValue(t, m.Accepted); v != 1 {
		t.Errorf("accepted %v", v)
	}
	if v := counterValue(t, m.Sessions); v != 1 {
		t.Errorf("sessions %v", v)
	}
	if v := counterValue(t, m.Refused.WithLabelValues(reasonRelay)); v != 1 {
		t.Errorf("relay %v", v)
	}
	if v := counterValue(t, m.Refused.WithLabelValues(reasonNotForwarded)); v != 1 {
		t.Errorf("not forwarded %v", v)
	}
}

func TestSwaks(t *testing.T) {
	path, err := exec.LookPath("swaks")
	if err != nil {
		t.Fatal("swaks not installed (make test installs it)")
	}
	conf, err := SelfSignedTLS(t.TempDir(), "mx.test")
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(cfg *Config) { cfg.TLS = conf })
	for i, extra := range [][]string{nil, {"--tls"}, {"--pipeline"}} {
		args := append([]string{"--server", f.addr, "--to", "user@example.com", "--from", "a@b.example",
			"--helo", "client.test", "--header", "Subject: swaks"}, extra...)
		out, err := exec.Command(path, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("swaks %v: %v\n%s", extra, err, out)
		}
		if !strings.Contains(string(out), "250 2.0.0 OK: queued as") {
			t.Errorf("swaks %v output:\n%s", extra, out)
		}
		ms := f.q.all()
		if len(ms) != i+1 {
			t.Fatalf("swaks %v: %d enqueued", extra, len(ms))
		}
		hdr, rest := f.body(ms[i].ID)
		if !strings.Contains(rest, "Subject: swaks") {
			t.Errorf("body %q", rest)
		}
		if (extra != nil && extra[0] == "--tls") != strings.Contains(hdr, "ESMTPS") {
			t.Errorf("swaks %v: Received %q", extra, hdr)
		}
	}
	out, err := exec.Command(path, "--server", f.addr, "--to", "user@gmail.com", "--from", "a@b.example").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "550 5.7.1") {
		t.Errorf("relay through swaks: %v\n%s", err, out)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
