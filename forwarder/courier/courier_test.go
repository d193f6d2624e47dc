package courier_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxport/mxport/forwarder/courier"
	"github.com/mxport/mxport/forwarder/smtptest"
)

const body = "Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n" +
	"From: Alice <alice@sender.example>\r\n" +
	"To: bob@home.example\r\n" +
	"Subject: caf\xc3\xa9\r\n" +
	"\r\n" +
	"Hello.\r\n" +
	".a line that starts with a dot\r\n" +
	"..two dots\r\n" +
	".\r\n" +
	"\r\n" +
	"8-bit: \xc3\xa9\xff\r\n" +
	"last line\r\n"

var cfg = courier.Config{Hostname: "mx1.fwd.example.net", Timeout: 5 * time.Second}

func env(rcpts ...string) courier.Envelope {
	e := courier.Envelope{From: "alice@sender.example", Size: int64(len(body)), Body8Bit: true}
	for _, r := range rcpts {
		e.Rcpts = append(e.Rcpts, courier.Rcpt{Addr: r})
	}
	return e
}

// deliver delivers the test body to addr and checks that there is a result
// per recipient.
func deliver(t *testing.T, addr string, e courier.Envelope) ([]courier.Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := courier.Deliver(ctx, cfg, "home.example", addr, e, strings.NewReader(body))
	if len(res) != len(e.Rcpts) {
		t.Fatalf("got %d results for %d recipients (err %v)", len(res), len(e.Rcpts), err)
	}
	for i, r := range res {
		if r.Rcpt != e.Rcpts[i].Addr {
			t.Errorf("result %d is for %q, want %q", i, r.Rcpt, e.Rcpts[i].Addr)
		}
	}
	return res, err
}

func smtpErr(code int, ec smtp.EnhancedCode, msg string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: msg}
}

type want struct {
	code      int
	reply     string // prefix
	permanent bool
	delivered bool
}

func check(t *testing.T, res []courier.Result, wants ...want) {
	t.Helper()
	for i, w := range wants {
		r := res[i]
		if r.Code != w.code || !strings.HasPrefix(r.Reply, w.reply) || r.Permanent != w.permanent || r.Delivered != w.delivered {
			t.Errorf("result %d = %+v, want %+v", i, r, w)
		}
	}
}

func TestDeliverThreeRecipientsByteIdentical(t *testing.T) {
	eachMode(t, func(t *testing.T, pipelining bool) {
		srv := start(t, pipelining)
		e := env("a@home.example", "b@home.example", "c@home.example")
		res, err := deliver(t, srv.Addr, e)
		if err != nil {
			t.Fatal(err)
		}
		ok := want{code: 250, reply: "250 2.0.0 ", delivered: true}
		check(t, res, ok, ok, ok)

		msgs := srv.Wait(t, 1, 5*time.Second)
		if len(msgs) != 1 {
			t.Fatalf("%d messages, want 1 transaction", len(msgs))
		}
		m := msgs[0]
		if !bytes.Equal(m.Data, []byte(body)) {
			t.Errorf("data differs:\n got %q\nwant %q", m.Data, body)
		}
		if m.From != e.From || !reflect.DeepEqual(m.Rcpts, []string{"a@home.example", "b@home.example", "c@home.example"}) {
			t.Errorf("envelope %q %q", m.From, m.Rcpts)
		}
		if m.TLS {
			t.Error("TLS on a server that does not offer it")
		}
		if m.Helo != cfg.Hostname {
			t.Errorf("EHLO %q, want %q", m.Helo, cfg.Hostname)
		}
		if m.MailOpts.Body != smtp.Body8BitMIME {
			t.Errorf("BODY=%q, want 8BITMIME", m.MailOpts.Body)
		}
		if m.MailOpts.Size != int64(len(body)) {
			t.Errorf("SIZE=%d, want %d", m.MailOpts.Size, len(body))
		}
		if srv.Sessions() != 1 {
			t.Errorf("%d sessions, want 1", srv.Sessions())
		}
	})
}

func TestStartTLSWhenOffered(t *testing.T) {
	srv := smtptest.Start(t, smtptest.WithTLS())
	res, err := deliver(t, srv.Addr, env("a@home.example"))
	if err != nil {
		t.Fatal(err)
	}
	check(t, res, want{code: 250, reply: "250 ", delivered: true})
	m := srv.Wait(t, 1, 5*time.Second)[0]
	if !m.TLS {
		t.Error("STARTTLS offered but not used")
	}
	if m.Helo != cfg.Hostname {
		t.Errorf("EHLO after STARTTLS %q, want %q", m.Helo, cfg.Hostname)
	}
	if !bytes.Equal(m.Data, []byte(body)) {
		t.Errorf("data differs over TLS")
	}
	if srv.Sessions() != 1 {
		t.Errorf("%d sessions, want 1", srv.Sessions())
	}
}

func TestStartTLSFailureRedialsPlain(t *testing.T) {
	t.Run("broken server handshake", func(t *testing.T) {
		srv := smtptest.Start(t, smtptest.WithBrokenTLS())
		res, err := deliver(t, srv.Addr, env("a@home.example"))
		if err != nil {
			t.Fatal(err)
		}
		check(t, res, want{code: 250, reply: "250 ", delivered: true})
		if m := srv.Wait(t, 1, 5*time.Second)[0]; m.TLS {
			t.Error("delivered over TLS?")
		}
		if srv.Sessions() != 2 {
			t.Errorf("%d sessions, want 2 (TLS then plain)", srv.Sessions())
		}
	})
	t.Run("certificate not trusted", func(t *testing.T) {
		srv := smtptest.Start(t, smtptest.WithTLS())
		c := cfg
		c.TLS = &tls.Config{} // verify against the system roots: the self-signed cert fails
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := courier.Deliver(ctx, c, "home.example", srv.Addr, env("a@home.example"), strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		check(t, res, want{code: 250, reply: "250 ", delivered: true})
		if m := srv.Wait(t, 1, 5*time.Second)[0]; m.TLS {
			t.Error("delivered over TLS?")
		}
	})
}

func TestPerRecipientOutcomes(t *testing.T) {
	eachMode(t, func(t *testing.T, pipelining bool) {
		srv := start(t, pipelining)
		srv.FailRcpt("gone@home.example", smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "No such user"))
		srv.FailRcpt("busy@home.example", smtpErr(451, smtp.EnhancedCode{4, 3, 0}, "Try later"))
		srv.FailRcpt("full@home.example", smtpErr(552, smtp.EnhancedCode{5, 5, 3}, "Too many recipients"))
		res, err := deliver(t, srv.Addr, env("gone@home.example", "busy@home.example", "ok@home.example", "full@home.example"))
		if err != nil {
			t.Fatal(err)
		}
		check(t, res,
			want{code: 550, reply: "550 5.1.1 No such user", permanent: true},
			want{code: 451, reply: "451 4.3.0 Try later"},
			want{code: 250, reply: "250 2.0.0 ", delivered: true},
			want{code: 552, reply: "552 5.5.3 Too many recipients"}, // RFC 5321 4.5.3.1.10: temporary
		)
		if res[0].Reply != "550 5.1.1 No such user" {
			t.Errorf("reply %q not kept exactly", res[0].Reply)
		}
		msgs := srv.Wait(t, 1, 5*time.Second)
		if !reflect.DeepEqual(msgs[0].Rcpts, []string{"ok@home.example"}) {
			t.Errorf("delivered to %q, want only ok@", msgs[0].Rcpts)
		}
	})
}

func TestAllRecipientsRefused(t *testing.T) {
	eachMode(t, func(t *testing.T, pipelining bool) {
		srv := start(t, pipelining)
		srv.FailRcpt("a@home.example", smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "No"))
		srv.FailRcpt("b@home.example", smtpErr(450, smtp.EnhancedCode{4, 2, 1}, "Later"))
		res, err := deliver(t, srv.Addr, env("a@home.example", "b@home.example"))
		if err != nil {
			t.Fatal(err)
		}
		check(t, res, want{code: 550, reply: "550 5.1.1 No", permanent: true}, want{code: 450, reply: "450 4.2.1 Later"})
		if n := len(srv.Messages()); n != 0 {
			t.Errorf("%d messages accepted", n)
		}
	})
}

func TestDataRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  *smtp.SMTPError
		want want
	}{
		{"554 permanent", smtpErr(554, smtp.EnhancedCode{5, 6, 0}, "Content rejected"), want{code: 554, reply: "554 5.6.0 Content rejected", permanent: true}},
		{"451 temporary", smtpErr(451, smtp.EnhancedCode{4, 3, 0}, "Disk full"), want{code: 451, reply: "451 4.3.0 Disk full"}},
		{"552 permanent at DATA", smtpErr(552, smtp.EnhancedCode{5, 3, 4}, "Too big"), want{code: 552, reply: "552 5.3.4 Too big", permanent: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eachMode(t, func(t *testing.T, pipelining bool) {
				srv := start(t, pipelining)
				srv.FailData(tc.err)
				srv.FailRcpt("gone@home.example", smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "No such user"))
				res, err := deliver(t, srv.Addr, env("a@home.example", "gone@home.example", "b@home.example"))
				if err != nil {
					t.Fatal(err)
				}
				check(t, res, tc.want, want{code: 550, reply: "550 5.1.1 No such user", permanent: true}, tc.want)
			})
		})
	}
}

func TestMailRefused(t *testing.T) {
	eachMode(t, func(t *testing.T, pipelining bool) {
		srv := start(t, pipelining)
		srv.FailMail(smtpErr(550, smtp.EnhancedCode{5, 7, 1}, "Sender blocked"))
		res, err := deliver(t, srv.Addr, env("a@home.example", "b@home.example"))
		if err != nil {
			t.Fatalf("a permanent refusal is an answer, not an error: %v", err)
		}
		w := want{code: 550, reply: "550 5.7.1 Sender blocked", permanent: true}
		check(t, res, w, w)

		srv.FailMail(smtpErr(421, smtp.EnhancedCode{4, 3, 2}, "Shutting down"))
		res, err = deliver(t, srv.Addr, env("a@home.example"))
		if err == nil {
			t.Fatal("no error for a refused MAIL")
		}
		check(t, res, want{code: 421, reply: "421 4.3.2 Shutting down"})
	})
}

func TestConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := courier.Deliver(ctx, cfg, "home.example", addr, env("a@home.example", "b@home.example"), strings.NewReader(body))
	if err == nil {
		t.Fatal("no error")
	}
	w := want{code: 0, reply: ""}
	check(t, res, w, w)
	for _, r := range res {
		if !strings.Contains(r.Reply, "refused") {
			t.Errorf("reply %q does not say refused", r.Reply)
		}
	}
}

func TestServerDown(t *testing.T) {
	srv := smtptest.Start(t)
	srv.Close()
	if _, err := deliver(t, srv.Addr, env("a@home.example")); err == nil {
		t.Fatal("delivered to a closed server")
	}
	srv.Restart(t)
	res, err := deliver(t, srv.Addr, env("a@home.example"))
	if err != nil {
		t.Fatal(err)
	}
	check(t, res, want{code: 250, reply: "250 ", delivered: true})
}

func TestHangEndsWithContext(t *testing.T) {
	for _, stage := range []string{"greeting", "data"} {
		t.Run(stage, func(t *testing.T) {
			srv := smtptest.Start(t, smtptest.WithTLS())
			if stage == "greeting" {
				srv.Hang(time.Minute)
			}
			c := cfg
			c.Timeout = time.Minute
			deadline := 500 * time.Millisecond
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			var r io.Reader = strings.NewReader(body)
			if stage == "data" {
				r = &stallReader{r: r, stall: ctx.Done()} // the body source blocks until the attempt ends
			}
			start := time.Now()
			res, err := courier.Deliver(ctx, c, "home.example", srv.Addr, env("a@home.example", "b@home.example"), r)
			took := time.Since(start)
			if took > deadline+time.Second {
				t.Errorf("returned after %v, deadline %v", took, deadline)
			}
			if stage == "greeting" && err == nil {
				t.Error("no error")
			}
			for _, r := range res {
				if r.Permanent || r.Delivered || r.Code != 0 {
					t.Errorf("result %+v, want temporary with no code", r)
				}
			}
			if n := len(srv.Messages()); n != 0 {
				t.Errorf("%d messages accepted", n)
			}
		})
	}
}

func TestCommandTimeout(t *testing.T) {
	srv := smtptest.Start(t)
	srv.Hang(time.Minute)
	c := cfg
	c.Timeout = 300 * time.Millisecond
	start := time.Now()
	res, err := courier.Deliver(context.Background(), c, "home.example", srv.Addr, env("a@home.example"), strings.NewReader(body))
	if took := time.Since(start); took > c.Timeout+time.Second {
		t.Errorf("returned after %v, timeout %v", took, c.Timeout)
	}
	if err == nil {
		t.Fatal("no error")
	}
	check(t, res, want{})
}

// stallReader returns one read of r and then blocks until stall is closed.
type stallReader struct {
	r     io.Reader
	stall <-chan struct{}
	once  bool
}

func (s *stallReader) Read(p []byte) (int, error) {
	if !s.once {
		s.once = true
		return s.r.Read(p[:10])
	}
	<-s.stall
	return 0, errors.New("stalled")
}

func TestBodyReadError(t *testing.T) {
	eachMode(t, func(t *testing.T, pipelining bool) {
		srv := start(t, pipelining)
		r := io.MultiReader(strings.NewReader("Subject: x\r\n\r\npart"), errReader{})
		res, err := courier.Deliver(context.Background(), cfg, "home.example", srv.Addr, env("a@home.example"), r)
		if err != nil {
			t.Fatal(err)
		}
		check(t, res, want{reply: "reading message: disk on fire"})
		if n := len(srv.Messages()); n != 0 {
			t.Errorf("a truncated message was accepted")
		}
	})
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestSMTPUTF8(t *testing.T) {
	e := env("j\u00f6rg@home.example", "b@home.example")
	e.UTF8 = true
	e.From = "ren\u00e9@sender.example"

	eachMode(t, func(t *testing.T, pipelining bool) {
		t.Run("not offered", func(t *testing.T) {
			srv := start(t, pipelining)
			res, err := deliver(t, srv.Addr, e)
			if err != nil {
				t.Fatal(err)
			}
			w := want{code: 553, reply: "553 5.6.7 ", permanent: true}
			check(t, res, w, w)
			if n := len(srv.Messages()); n != 0 {
				t.Errorf("%d messages accepted", n)
			}
		})
		t.Run("offered", func(t *testing.T) {
			srv := start(t, pipelining, smtptest.WithSMTPUTF8())
			res, err := deliver(t, srv.Addr, e)
			if err != nil {
				t.Fatal(err)
			}
			w := want{code: 250, reply: "250 ", delivered: true}
			check(t, res, w, w)
			m := srv.Wait(t, 1, 5*time.Second)[0]
			if !m.MailOpts.UTF8 || m.From != e.From || m.Rcpts[0] != e.Rcpts[0].Addr {
				t.Errorf("got UTF8=%v from %q rcpts %q", m.MailOpts.UTF8, m.From, m.Rcpts)
			}
		})
	})
}

func TestDSNParameters(t *testing.T) {
	e := env("a@home.example", "b@home.example", "c@home.example")
	e.Ret = "hdrs"
	e.EnvID = "QQ314159+x"
	e.Rcpts[0].Notify = "SUCCESS,FAILURE"
	e.Rcpts[0].ORcpt = "rfc822;Alias@home.example"
	e.Rcpts[1].Notify = "NEVER"
	e.Rcpts[1].ORcpt = "b@home.example"
	e.Rcpts[2].Notify = "NEVER,SUCCESS" // invalid: dropped

	eachMode(t, func(t *testing.T, pipelining bool) {
		t.Run("offered", func(t *testing.T) {
			srv := start(t, pipelining, smtptest.WithDSN())
			if _, err := deliver(t, srv.Addr, e); err != nil {
				t.Fatal(err)
			}
			m := srv.Wait(t, 1, 5*time.Second)[0]
			if m.MailOpts.Return != smtp.DSNReturnHeaders || m.MailOpts.EnvelopeID != e.EnvID {
				t.Errorf("RET=%q ENVID=%q", m.MailOpts.Return, m.MailOpts.EnvelopeID)
			}
			o := m.RcptOpts
			if !reflect.DeepEqual(o[0].Notify, []smtp.DSNNotify{smtp.DSNNotifySuccess, smtp.DSNNotifyFailure}) ||
				o[0].OriginalRecipientType != smtp.DSNAddressTypeRFC822 || o[0].OriginalRecipient != "Alias@home.example" {
				t.Errorf("rcpt 0 options %+v", o[0])
			}
			if !reflect.DeepEqual(o[1].Notify, []smtp.DSNNotify{smtp.DSNNotifyNever}) || o[1].OriginalRecipient != "b@home.example" {
				t.Errorf("rcpt 1 options %+v", o[1])
			}
			if len(o[2].Notify) != 0 || o[2].OriginalRecipient != "" {
				t.Errorf("rcpt 2 options %+v", o[2])
			}
		})
		t.Run("not offered", func(t *testing.T) {
			srv := start(t, pipelining)
			if _, err := deliver(t, srv.Addr, e); err != nil {
				t.Fatal(err)
			}
			m := srv.Wait(t, 1, 5*time.Second)[0]
			if m.MailOpts.Return != "" || m.MailOpts.EnvelopeID != "" || len(m.RcptOpts[0].Notify) != 0 || m.RcptOpts[0].OriginalRecipient != "" {
				t.Errorf("DSN parameters sent to a server without DSN: %+v %+v", m.MailOpts, m.RcptOpts[0])
			}
		})
	})
}

func TestNullSender(t *testing.T) {
	eachMode(t, func(t *testing.T, pipelining bool) {
		srv := start(t, pipelining)
		e := env("a@home.example")
		e.From = ""
		res, err := deliver(t, srv.Addr, e)
		if err != nil {
			t.Fatal(err)
		}
		check(t, res, want{code: 250, reply: "250 ", delivered: true})
		if m := srv.Wait(t, 1, 5*time.Second)[0]; m.From != "" {
			t.Errorf("from %q, want <>", m.From)
		}
	})
}

func TestSizeRefusedAtMail(t *testing.T) {
	eachMode(t, func(t *testing.T, pipelining bool) {
		srv := start(t, pipelining, smtptest.WithMaxSize(100))
		res, err := deliver(t, srv.Addr, env("a@home.example"))
		if err != nil {
			t.Fatal(err)
		}
		check(t, res, want{code: 552, reply: "552 5.3.4 ", permanent: true})
	})
}

func TestNoRecipients(t *testing.T) {
	if _, err := courier.Deliver(context.Background(), cfg, "h", "127.0.0.1:1", courier.Envelope{}, strings.NewReader("")); err == nil {
		t.Fatal("no error")
	}
}

func TestMultiLineReplyKeptOnOneLine(t *testing.T) {
	eachMode(t, func(t *testing.T, pipelining bool) {
		srv := start(t, pipelining)
		srv.FailRcpt("a@home.example", smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "first line\nsecond line"))
		res, err := deliver(t, srv.Addr, env("a@home.example"))
		if err != nil {
			t.Fatal(err)
		}
		// go-smtp's server puts the enhanced code on the last line only; the
		// reply is kept as sent, lines joined.
		if res[0].Reply != "550 first line 5.1.1 second line" || !res[0].Permanent {
			t.Errorf("result %+v", res[0])
		}
	})
}
