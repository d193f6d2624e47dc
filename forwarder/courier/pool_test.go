package courier_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxport/mxport/forwarder/courier"
	"github.com/mxport/mxport/forwarder/smtptest"
)

// newPool returns a Pool closed at cleanup, before the servers started
// earlier in the test check for open connections.
func newPool(t *testing.T, pc courier.PoolConfig) *courier.Pool {
	t.Helper()
	p := courier.NewPool(cfg, pc)
	t.Cleanup(func() { p.Close() })
	return p
}

func poolDeliver(t *testing.T, p *courier.Pool, host, addr string, e courier.Envelope, r io.Reader) ([]courier.Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := p.Deliver(ctx, host, addr, e, r)
	if len(res) != len(e.Rcpts) {
		t.Fatalf("got %d results for %d recipients (err %v)", len(res), len(e.Rcpts), err)
	}
	return res, err
}

// send delivers the test body to addr and fails the test unless every
// recipient got it.
func send(t *testing.T, p *courier.Pool, addr string, e courier.Envelope) {
	t.Helper()
	res, err := poolDeliver(t, p, "home.example", addr, e, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if !r.Delivered {
			t.Fatalf("not delivered: %+v", r)
		}
	}
}

// waitFor polls cond until it holds, or fails the test after 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func checkStats(t *testing.T, p *courier.Pool, dials, reuses int64) {
	t.Helper()
	if d, r := p.Stats(); d != dials || r != reuses {
		t.Errorf("stats: %d dials, %d reuses; want %d, %d", d, r, dials, reuses)
	}
}

func TestPoolSequentialOneConnection(t *testing.T) {
	eachMode(t, func(t *testing.T, pipelining bool) {
		srv := start(t, pipelining)
		p := newPool(t, courier.PoolConfig{})
		const n = 50
		for i := range n {
			e := env(fmt.Sprintf("u%d@home.example", i), "all@home.example")
			e.From = fmt.Sprintf("s%d@sender.example", i)
			b := fmt.Sprintf("%sMessage %d\r\n", body, i)
			e.Size = int64(len(b))
			res, err := poolDeliver(t, p, "home.example", srv.Addr, e, strings.NewReader(b))
			if err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
			check(t, res, want{code: 250, reply: "250 ", delivered: true}, want{code: 250, reply: "250 ", delivered: true})
		}
		msgs := srv.Wait(t, n, 5*time.Second)
		if len(msgs) != n {
			t.Fatalf("%d messages", len(msgs))
		}
		for i, m := range msgs {
			wantRcpts := []string{fmt.Sprintf("u%d@home.example", i), "all@home.example"}
			if m.From != fmt.Sprintf("s%d@sender.example", i) || !reflect.DeepEqual(m.Rcpts, wantRcpts) {
				t.Errorf("message %d: from %q to %q", i, m.From, m.Rcpts)
			}
			if want := fmt.Sprintf("%sMessage %d\r\n", body, i); string(m.Data) != want {
				t.Errorf("message %d: body differs:\n%q\nwant\n%q", i, m.Data, want)
			}
			if m.Helo != cfg.Hostname {
				t.Errorf("message %d: EHLO %q", i, m.Helo)
			}
		}
		if s := srv.Sessions(); s != 1 {
			t.Errorf("%d connections, want 1", s)
		}
		checkStats(t, p, 1, n-1)
	})
}

func TestPoolConcurrent(t *testing.T) {
	srv := smtptest.Start(t)
	p := newPool(t, courier.PoolConfig{})
	const workers, each = 10, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				rcpt := fmt.Sprintf("w%d-%d@home.example", w, i)
				res, err := p.Deliver(context.Background(), "home.example", srv.Addr, env(rcpt), strings.NewReader(body))
				if err != nil || !res[0].Delivered {
					errs <- fmt.Errorf("%s: %v %+v", rcpt, err, res)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	msgs := srv.Wait(t, workers*each, 5*time.Second)
	seen := map[string]bool{}
	for _, m := range msgs {
		seen[m.Rcpts[0]] = true
	}
	if len(seen) != workers*each {
		t.Errorf("%d distinct messages, want %d", len(seen), workers*each)
	}
	if s := srv.Sessions(); s > workers {
		t.Errorf("%d connections, want at most %d", s, workers)
	}
	dials, reuses := p.Stats()
	if dials > workers || dials+reuses != workers*each {
		t.Errorf("stats: %d dials, %d reuses", dials, reuses)
	}
}

func TestPoolTLS(t *testing.T) {
	srv := smtptest.Start(t, smtptest.WithTLS())
	p := newPool(t, courier.PoolConfig{})
	for range 5 {
		send(t, p, srv.Addr, env("a@home.example"))
	}
	for i, m := range srv.Wait(t, 5, 5*time.Second) {
		if !m.TLS {
			t.Errorf("message %d not under TLS", i)
		}
	}
	if s := srv.Sessions(); s != 1 {
		t.Errorf("%d connections, want 1", s)
	}
	checkStats(t, p, 1, 4)
}

func TestPoolKeyedByHost(t *testing.T) {
	srv := smtptest.Start(t)
	p := newPool(t, courier.PoolConfig{})
	for _, host := range []string{"home.example", "other.example", "home.example", "other.example"} {
		res, err := poolDeliver(t, p, host, srv.Addr, env("a@home.example"), strings.NewReader(body))
		if err != nil || !res[0].Delivered {
			t.Fatalf("%s: %v %+v", host, err, res)
		}
	}
	if s := srv.Sessions(); s != 2 {
		t.Errorf("%d connections, want 2", s)
	}
	checkStats(t, p, 2, 2)
}

func TestPoolAllRcptsRefusedResets(t *testing.T) {
	eachMode(t, func(t *testing.T, pipelining bool) {
		srv := start(t, pipelining)
		p := newPool(t, courier.PoolConfig{})
		srv.FailRcpt("x@home.example", smtpErr(550, [3]int{5, 1, 1}, "no such user"))
		srv.FailRcpt("y@home.example", smtpErr(450, [3]int{4, 2, 1}, "try later"))
		res, err := poolDeliver(t, p, "home.example", srv.Addr, env("x@home.example", "y@home.example"), strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		check(t, res,
			want{code: 550, reply: "550 5.1.1 no such user", permanent: true},
			want{code: 450, reply: "450 4.2.1 try later"})
		send(t, p, srv.Addr, env("a@home.example"))
		msgs := srv.Wait(t, 1, 5*time.Second)
		if !reflect.DeepEqual(msgs[0].Rcpts, []string{"a@home.example"}) || msgs[0].Helo != cfg.Hostname {
			t.Errorf("message %+v", msgs[0])
		}
		if s := srv.Sessions(); s != 1 {
			t.Errorf("%d connections, want 1 (RSET, then reuse)", s)
		}
		checkStats(t, p, 1, 1)
	})
}

// A refusal after the final dot ends the transaction cleanly: the session is
// reused.
func TestPoolDataRefusedReuses(t *testing.T) {
	eachMode(t, func(t *testing.T, pipelining bool) {
		srv := start(t, pipelining)
		p := newPool(t, courier.PoolConfig{})
		srv.FailData(smtpErr(554, [3]int{5, 7, 1}, "spam"))
		res, err := poolDeliver(t, p, "home.example", srv.Addr, env("a@home.example", "b@home.example"), strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		check(t, res,
			want{code: 554, reply: "554 5.7.1 spam", permanent: true},
			want{code: 554, reply: "554 5.7.1 spam", permanent: true})
		srv.FailData(nil)
		send(t, p, srv.Addr, env("a@home.example"))
		srv.Wait(t, 1, 5*time.Second)
		if s := srv.Sessions(); s != 1 {
			t.Errorf("%d connections, want 1", s)
		}
		checkStats(t, p, 1, 1)
	})
}

// A refused MAIL ends the session with QUIT: the next message dials anew.
func TestPoolMailRefusedCloses(t *testing.T) {
	eachMode(t, func(t *testing.T, pipelining bool) {
		srv := start(t, pipelining)
		p := newPool(t, courier.PoolConfig{})
		for _, fail := range []int{550, 451} {
			srv.FailMail(smtpErr(fail, [3]int{fail / 100, 0, 0}, "not now"))
			res, err := poolDeliver(t, p, "home.example", srv.Addr, env("a@home.example"), strings.NewReader(body))
			if (err != nil) != (fail == 451) {
				t.Errorf("MAIL %d: err %v", fail, err)
			}
			check(t, res, want{code: fail, reply: fmt.Sprint(fail), permanent: fail == 550})
			waitFor(t, "the refused session to close", func() bool { return srv.Open() == 0 })
		}
		srv.FailMail(nil)
		send(t, p, srv.Addr, env("a@home.example"))
		if s := srv.Sessions(); s != 3 {
			t.Errorf("%d connections, want 3", s)
		}
		checkStats(t, p, 3, 0)
	})
}

func TestPoolServerRestartRedials(t *testing.T) {
	srv := smtptest.Start(t)
	p := newPool(t, courier.PoolConfig{})
	send(t, p, srv.Addr, env("a@home.example"))
	srv.Close()
	srv.Restart(t)
	send(t, p, srv.Addr, env("b@home.example"))
	msgs := srv.Wait(t, 2, 5*time.Second)
	if msgs[1].Rcpts[0] != "b@home.example" {
		t.Errorf("second message to %q", msgs[1].Rcpts)
	}
	checkStats(t, p, 2, 1)
	if s := srv.Sessions(); s != 2 {
		t.Errorf("%d connections, want 2", s)
	}
}

// A server that drops the idle session with 421 (its own idle timeout) is
// as good as gone: the message goes on a new session.
func TestPoolStale421Redials(t *testing.T) {
	eachMode(t, func(t *testing.T, pipelining bool) {
		srv := start(t, pipelining)
		p := newPool(t, courier.PoolConfig{})
		send(t, p, srv.Addr, env("a@home.example"))
		srv.FailMail(smtpErr(421, [3]int{4, 4, 2}, "idle too long"))
		// The first MAIL, on the idle session, gets 421; so does the one on the
		// new session, which is reported.
		res, err := poolDeliver(t, p, "home.example", srv.Addr, env("b@home.example"), strings.NewReader(body))
		if err == nil {
			t.Error("no error")
		}
		check(t, res, want{code: 421, reply: "421 4.4.2 idle too long"})
		checkStats(t, p, 2, 1)
		srv.FailMail(nil)
		send(t, p, srv.Addr, env("c@home.example"))
		checkStats(t, p, 3, 1) // the 421 session was not kept
	})
}

func TestPoolIdleTimeout(t *testing.T) {
	srv := smtptest.Start(t)
	p := newPool(t, courier.PoolConfig{IdleTimeout: 50 * time.Millisecond})
	send(t, p, srv.Addr, env("a@home.example"))
	waitFor(t, "the idle session to close", func() bool { return srv.Open() == 0 })
	send(t, p, srv.Addr, env("b@home.example"))
	if s := srv.Sessions(); s != 2 {
		t.Errorf("%d connections, want 2", s)
	}
	checkStats(t, p, 2, 0)
}

func TestPoolMaxAge(t *testing.T) {
	srv := smtptest.Start(t)
	p := newPool(t, courier.PoolConfig{MaxAge: 50 * time.Millisecond, IdleTimeout: time.Minute})
	send(t, p, srv.Addr, env("a@home.example"))
	waitFor(t, "the old session to close", func() bool { return srv.Open() == 0 })
	send(t, p, srv.Addr, env("b@home.example"))
	checkStats(t, p, 2, 0)
}

func TestPoolMaxUses(t *testing.T) {
	eachMode(t, func(t *testing.T, pipelining bool) {
		srv := start(t, pipelining)
		p := newPool(t, courier.PoolConfig{MaxUses: 3})
		for range 7 {
			send(t, p, srv.Addr, env("a@home.example"))
		}
		srv.Wait(t, 7, 5*time.Second)
		if s := srv.Sessions(); s != 3 {
			t.Errorf("%d connections, want 3", s)
		}
		checkStats(t, p, 3, 4)
		waitFor(t, "retired sessions to close", func() bool { return srv.Open() == 1 })
	})
}

// hangReader makes the server hang once the body starts, so the reply to the
// final dot never comes.
type hangReader struct {
	r    io.Reader
	srv  *smtptest.Server
	once sync.Once
}

func (h *hangReader) Read(p []byte) (int, error) {
	h.once.Do(func() { h.srv.Hang(time.Minute) })
	return h.r.Read(p)
}

func TestPoolContextEndsMidData(t *testing.T) {
	eachMode(t, func(t *testing.T, pipelining bool) {
		srv := start(t, pipelining)
		p := newPool(t, courier.PoolConfig{})
		send(t, p, srv.Addr, env("a@home.example"))

		deadline := 300 * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		start := time.Now()
		e := env("b@home.example", "c@home.example")
		res, err := p.Deliver(ctx, "home.example", srv.Addr, e, &hangReader{r: strings.NewReader(body), srv: srv.Server})
		if took := time.Since(start); took > deadline+time.Second {
			t.Errorf("returned after %v, deadline %v", took, deadline)
		}
		if err != nil {
			t.Errorf("err %v after MAIL was accepted", err)
		}
		for _, r := range res {
			if r.Permanent || r.Delivered || r.Code != 0 || !strings.Contains(r.Reply, "attempt ended") {
				t.Errorf("result %+v, want temporary with no code", r)
			}
		}
		srv.Hang(0)
		waitFor(t, "the cut session to close", func() bool { return srv.Open() == 0 })
		send(t, p, srv.Addr, env("d@home.example"))
		checkStats(t, p, 2, 1)
	})
}

// A context that has ended is not a stale session: no redial.
func TestPoolContextEndedNoRedial(t *testing.T) {
	srv := smtptest.Start(t)
	p := newPool(t, courier.PoolConfig{})
	send(t, p, srv.Addr, env("a@home.example"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := p.Deliver(ctx, "home.example", srv.Addr, env("b@home.example"), strings.NewReader(body))
	if err == nil {
		t.Error("no error")
	}
	check(t, res, want{reply: "attempt ended"})
	checkStats(t, p, 1, 1)
	waitFor(t, "the session to close", func() bool { return srv.Open() == 0 })
}

func TestPoolClose(t *testing.T) {
	srv := smtptest.Start(t, smtptest.WithTLS())
	p := newPool(t, courier.PoolConfig{})
	for _, host := range []string{"home.example", "other.example", "third.example"} {
		res, err := poolDeliver(t, p, host, srv.Addr, env("a@home.example"), strings.NewReader(body))
		if err != nil || !res[0].Delivered {
			t.Fatalf("%s: %v %+v", host, err, res)
		}
	}
	if n := srv.Open(); n != 3 {
		t.Fatalf("%d idle connections, want 3", n)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "idle sessions to close", func() bool { return srv.Open() == 0 })
	waitFor(t, "pool goroutines to end", func() bool { return !poolGoroutines() })

	// Still usable, but keeps nothing.
	send(t, p, srv.Addr, env("b@home.example"))
	waitFor(t, "the session to close", func() bool { return srv.Open() == 0 })
	if s := srv.Sessions(); s != 4 {
		t.Errorf("%d connections, want 4", s)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}

// poolGoroutines reports whether a goroutine runs Pool or session code.
func poolGoroutines() bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return bytes.Contains(buf, []byte("courier.(*Pool)")) || bytes.Contains(buf, []byte("courier.(*session)"))
}

func TestPoolNoRecipients(t *testing.T) {
	p := courier.NewPool(cfg, courier.PoolConfig{})
	defer p.Close()
	if _, err := p.Deliver(context.Background(), "home.example", "127.0.0.1:1", courier.Envelope{From: "a@b"}, strings.NewReader(body)); err == nil {
		t.Error("no error")
	}
}

func BenchmarkDeliver(b *testing.B) {
	srv := smtptest.Start(b)
	for b.Loop() {
		res, err := courier.Deliver(context.Background(), cfg, "home.example", srv.Addr, env("a@home.example"), strings.NewReader(body))
		if err != nil || !res[0].Delivered {
			b.Fatal(err, res)
		}
	}
}

func BenchmarkPoolDeliver(b *testing.B) {
	srv := smtptest.Start(b)
	p := courier.NewPool(cfg, courier.PoolConfig{})
	b.Cleanup(func() { p.Close() })
	for b.Loop() {
		res, err := p.Deliver(context.Background(), "home.example", srv.Addr, env("a@home.example"), strings.NewReader(body))
		if err != nil || !res[0].Delivered {
			b.Fatal(err, res)
		}
	}
}
