package smtptest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

const msg = "Subject: hi\r\n\r\nbody\r\n.dot\r\n"

// send runs one transaction with go-smtp's client and returns the first error.
func send(t *testing.T, addr string, startTLS bool, from string, to ...string) error {
	t.Helper()
	var c *smtp.Client
	var err error
	if startTLS {
		c, err = smtp.DialStartTLS(addr, &tls.Config{InsecureSkipVerify: true})
	} else {
		c, err = smtp.Dial(addr)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.example"); err != nil && !startTLS {
		return err
	}
	if err := c.SendMail(from, to, strings.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}

func TestAcceptsAndRecords(t *testing.T) {
	s := Start(t)
	if err := send(t, s.Addr, false, "a@x.example", "b@y.example", "c@y.example"); err != nil {
		t.Fatal(err)
	}
	m := s.Wait(t, 1, 5*time.Second)[0]
	if m.From != "a@x.example" || len(m.Rcpts) != 2 || len(m.RcptOpts) != 2 || string(m.Data) != msg ||
		m.TLS || m.Helo != "client.example" || m.MailOpts == nil {
		t.Errorf("message %+v", m)
	}
	if s.Sessions() != 1 {
		t.Errorf("Sessions = %d", s.Sessions())
	}
}

func TestTLS(t *testing.T) {
	s := Start(t, WithTLS())
	if err := send(t, s.Addr, true, "a@x.example", "b@y.example"); err != nil {
		t.Fatal(err)
	}
	if m := s.Wait(t, 1, 5*time.Second)[0]; !m.TLS {
		t.Error("TLS not recorded")
	}

	b := Start(t, WithBrokenTLS())
	if err := send(t, b.Addr, true, "a@x.example", "b@y.example"); err == nil {
		t.Error("broken TLS handshake succeeded")
	}
}

func TestFailHooks(t *testing.T) {
	s := Start(t)
	e := &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "no"}
	check := func(name string, wantCode int) {
		t.Helper()
		err := send(t, s.Addr, false, "a@x.example", "B@y.example")
		var se *smtp.SMTPError
		if wantCode == 0 {
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			return
		}
		if !errors.As(err, &se) || se.Code != wantCode {
			t.Errorf("%s: got %v, want %d", name, err, wantCode)
		}
	}
	s.FailMail(e)
	check("mail", 550)
	s.FailMail(nil)
	s.FailRcpt("b@Y.example", &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "later"})
	check("rcpt", 451)
	s.FailRcpt("b@y.example", nil)
	s.FailData(&smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "content"})
	check("data", 554)
	s.FailData(nil)
	check("ok", 0)
	if n := len(s.Messages()); n != 1 {
		t.Errorf("%d messages, want 1", n)
	}
}

func TestCloseRestart(t *testing.T) {
	s := Start(t)
	addr := s.Addr
	s.Close()
	s.Close() // idempotent
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatal("connected to a closed server")
	}
	s.Restart(t)
	if s.Addr != addr {
		t.Fatalf("address changed: %s -> %s", addr, s.Addr)
	}
	if err := send(t, s.Addr, false, "", "b@y.example"); err != nil {
		t.Fatal(err)
	}
	if m := s.Wait(t, 1, 5*time.Second)[0]; m.From != "" {
		t.Errorf("null sender recorded as %q", m.From)
	}
}

func TestCloseDropsSessions(t *testing.T) {
	s := Start(t)
	c, err := smtp.Dial(s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.example"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := c.Noop(); err == nil {
		t.Error("session survived Close")
	}
}

func TestHang(t *testing.T) {
	s := Start(t)
	s.Hang(time.Minute)
	c, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	var buf [64]byte
	if _, err := c.Read(buf[:]); err == nil {
		t.Error("greeting arrived while hanging")
	}
	c.Close() // the hung server side must notice, or cleanup reports a leak
	s.Hang(0)
	if err := send(t, s.Addr, false, "a@x.example", "b@y.example"); err != nil {
		t.Fatal(err)
	}
}

func TestWaitConcurrent(t *testing.T) {
	s := Start(t)
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Go(func() {
			if err := send(t, s.Addr, false, "a@x.example", fmt.Sprintf("r%d@y.example", i)); err != nil {
				t.Error(err)
			}
		})
	}
	if n := len(s.Wait(t, 5, 5*time.Second)); n != 5 {
		t.Errorf("Wait returned %d", n)
	}
	wg.Wait()
	if s.Sessions() != 5 {
		t.Errorf("Sessions = %d", s.Sessions())
	}
}

// fakeTB records what cleanup reports.
type fakeTB struct {
	testing.TB
	mu       sync.Mutex
	cleanups []func()
	errs     []string
}

func (f *fakeTB) Helper()           {}
func (f *fakeTB) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }
func (f *fakeTB) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, fmt.Sprintf(format, args...))
}
func (f *fakeTB) Fatalf(format string, args ...any) { f.Errorf(format, args...) }

func TestLeakDetected(t *testing.T) {
	defer func(d time.Duration) { leakWait = d }(leakWait)
	leakWait = 200 * time.Millisecond
	f := &fakeTB{TB: t}
	s := Start(f)
	c, err := smtp.Dial(s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("leaky.example"); err != nil {
		t.Fatal(err)
	}
	for _, fn := range f.cleanups {
		fn()
	}
	if len(f.errs) != 1 || !strings.Contains(f.errs[0], "leak") {
		t.Errorf("cleanup reported %q, want one leak", f.errs)
	}
}
