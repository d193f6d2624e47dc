package forwarder_test

import (
	"context"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/mxport/mxport/forwarder"
	"github.com/mxport/mxport/forwarder/smtptest"
	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
	"github.com/mxport/mxport/store/storetest"
)

// populate is start's store set-up on st: example.com forwarded to a home
// server, sender.test to a sender's server, and plain.test hosted but not
// forwarded (its MX has no port).
func populate(t *testing.T, st *store.Store) *env {
	t.Helper()
	e := &env{st: st, home: smtptest.Start(t), sender: smtptest.Start(t)}
	if _, err := st.CreateAccount(bg, "c1", store.RoleCustomer, ""); err != nil {
		t.Fatal(err)
	}
	for _, z := range []struct{ zone, host, addr string }{
		{"example.com", "home.example.com", e.home.Addr},
		{"sender.test", "mx.sender.test", e.sender.Addr},
	} {
		if _, err := st.CreateZone(bg, z.zone, "c1"); err != nil {
			t.Fatal(err)
		}
		r, err := st.AddRecord(bg, z.zone, record.Record{Name: "@", Type: "MX", TTL: 300, Data: "10 " + z.host + ":" + port(t, z.addr)})
		if err != nil {
			t.Fatal(err)
		}
		if z.zone == "example.com" {
			e.mxID = r.ID
		}
		owner, _ := record.RelativeOwner(z.zone, z.host)
		if _, err := st.AddRecord(bg, z.zone, record.Record{Name: owner, Type: "A", TTL: 300, Data: "127.0.0.1"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.CreateZone(bg, "plain.test", "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddRecord(bg, "plain.test", record.Record{Name: "@", Type: "MX", TTL: 300, Data: "10 mail.plain.test"}); err != nil {
		t.Fatal(err)
	}
	return e
}

// serveEnv runs the smtp role of e on a new listener, as start does, but
// does not wait for the route index.
func serveEnv(t *testing.T, e *env, retry []time.Duration, maxAge time.Duration) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = l.Addr().String()
	e.reg = prometheus.NewRegistry()
	e.f = forwarder.New(e.st, forwarder.Config{Hostname: "mx1.fwd.test", SpoolDir: t.TempDir(),
		MXHosts: []string{"mx1.fwd.test"}, Retry: retry, MaxAge: maxAge, Registry: e.reg})
	ctx, cancel := context.WithCancel(bg)
	if err := e.f.Serve(ctx, l); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, c := context.WithTimeout(bg, 10*time.Second)
		defer c()
		e.f.Shutdown(sctx)
		cancel()
	})
}

// rcptCode opens a session, gives MAIL and RCPT TO:<rcpt>, and returns
// RCPT's reply.
func rcptCode(t *testing.T, addr, rcpt string) (int, string) {
	t.Helper()
	c, err := textproto.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	step := func(want int, cmd string) (int, string) {
		t.Helper()
		if cmd != "" {
			if err := c.PrintfLine("%s", cmd); err != nil {
				t.Fatal(err)
			}
		}
		code, msg, err := c.ReadResponse(0)
		if err != nil && want != 0 {
			t.Fatalf("%q: %d %s (%v), want %d", cmd, code, msg, err, want)
		}
		if want != 0 && code != want {
			t.Fatalf("%q: %d %s, want %d", cmd, code, msg, want)
		}
		return code, msg
	}
	step(220, "")
	step(250, "EHLO client.test")
	step(250, "MAIL FROM:<alice@sender.test>")
	code, msg := step(0, "RCPT TO:<"+rcpt+">")
	c.PrintfLine("QUIT")
	return code, msg
}

// timedSend is send, returning how long the transaction took.
func timedSend(t *testing.T, addr, subject string) time.Duration {
	t.Helper()
	start := time.Now()
	send(t, addr, "alice@sender.test", []string{"bob@example.com"}, message(subject))
	return time.Since(start)
}

// TestRedisStoppedMidRun: once the route index has loaded, Redis going
// away changes nothing for mail: forwarded zones are accepted from memory
// and delivered (the delivery log and queue mirror writes fail and are
// only logged), other domains are still refused for good; when Redis is
// back the index follows it again.
func TestRedisStoppedMidRun(t *testing.T) {
	srv := storetest.Start(t)
	st := srv.Open(t, storetest.Options)
	e := populate(t, st)
	serveEnv(t, e, []time.Duration{200 * time.Millisecond}, time.Hour)
	waitFor(t, 10*time.Second, "route index loaded", func() bool { return e.f.Index().Loaded() })

	d := timedSend(t, e.addr, "before")
	e.home.Wait(t, 1, 10*time.Second)
	t.Logf("with Redis up: 250 after %v", d.Round(time.Millisecond))

	srv.Stop()
	for i := 0; i < 3; i++ {
		d := timedSend(t, e.addr, fmt.Sprint("outage", i))
		t.Logf("with Redis stopped: 250 after %v", d.Round(time.Millisecond))
	}
	msgs := e.home.Wait(t, 4, 10*time.Second)
	for i, m := range msgs[1:] {
		if got, want := mustHeader(t, m.Data, "Subject"), fmt.Sprint("outage", i); got != want {
			t.Errorf("delivered %q, want %q", got, want)
		}
	}
	waitFor(t, 10*time.Second, "queue drained without Redis", func() bool { return e.f.Queue().Len() == 0 })
	if !e.f.Index().Loaded() {
		t.Fatal("route index forgot it had loaded when Redis went away")
	}
	// The index has loaded: anything not forwarded is known not to be.
	for _, rcpt := range []string{"user@elsewhere.example", "user@plain.test", "user@sub.example.com"} {
		if code, msg := rcptCode(t, e.addr, rcpt); code != 550 || !strings.HasPrefix(msg, "5.7.1") {
			t.Errorf("RCPT %s with Redis stopped: %d %s, want 550 5.7.1", rcpt, code, msg)
		}
	}
	if code, msg := rcptCode(t, e.addr, "carol@example.com"); code != 250 {
		t.Errorf("RCPT carol@example.com with Redis stopped: %d %s, want 250", code, msg)
	}

	// Redis comes back: the index follows the store again (it reloads,
	// then sees a change made now), and mail goes on.
	srv.Restart(t)
	newHome := smtptest.Start(t)
	if _, err := st.UpdateRecord(bg, "example.com", e.mxID, record.Record{Name: "@", Type: "MX", TTL: 300,
		Data: "10 home.example.com:" + port(t, newHome.Addr)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "index sees the MX edited after Redis came back", func() bool {
		ts := e.f.Index().Route("example.com")
		return len(ts) == 1 && fmt.Sprint(ts[0].Port) == port(t, newHome.Addr)
	})
	timedSend(t, e.addr, "after")
	if m := newHome.Wait(t, 1, 10*time.Second)[0]; mustHeader(t, m.Data, "Subject") != "after" {
		t.Errorf("new home got %q", m.Data)
	}
	// The delivery log works again.
	waitFor(t, 10*time.Second, "delivery log written after Redis came back", func() bool {
		ds, err := st.Deliveries(bg, "example.com", 10)
		return err == nil && len(ds) > 0 && ds[0].Event == "delivered" && ds[0].Target == "home.example.com:"+port(t, newHome.Addr)
	})
	e.stopBefore(newHome)
}

// TestIndexNeverLoaded: Redis is down before the smtp role starts, so the
// route index never loads: every recipient gets 451 4.3.0 (cannot decide),
// never 250 and never 5xx, and nothing is queued. When Redis comes back
// the index loads and mail is accepted.
func TestIndexNeverLoaded(t *testing.T) {
	srv := storetest.Start(t)
	st := srv.Open(t, storetest.Options)
	e := populate(t, st)
	srv.Shutdown() // the zones must be there when it comes back
	serveEnv(t, e, []time.Duration{200 * time.Millisecond}, time.Hour)
	if e.f.Index().Loaded() {
		t.Fatal("index loaded without Redis")
	}
	for _, rcpt := range []string{"bob@example.com", "user@elsewhere.example", "user@plain.test", "postmaster@sender.test"} {
		code, msg := rcptCode(t, e.addr, rcpt)
		if code != 451 || !strings.HasPrefix(msg, "4.3.0") {
			t.Errorf("RCPT %s before the index loaded: %d %s, want 451 4.3.0", rcpt, code, msg)
		}
	}
	if n := e.f.Queue().Len(); n != 0 {
		t.Errorf("%d messages queued", n)
	}

	srv.Restart(t)
	waitFor(t, 15*time.Second, "route index loaded after Redis came back", func() bool { return e.f.Index().Loaded() })
	timedSend(t, e.addr, "late")
	if m := e.home.Wait(t, 1, 10*time.Second)[0]; mustHeader(t, m.Data, "Subject") != "late" {
		t.Errorf("home got %q", m.Data)
	}
	if code, msg := rcptCode(t, e.addr, "user@elsewhere.example"); code != 550 {
		t.Errorf("RCPT user@elsewhere.example once loaded: %d %s, want 550", code, msg)
	}
}
