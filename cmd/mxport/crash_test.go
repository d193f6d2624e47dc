package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"net/mail"
	"net/textproto"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// crashLog is what the crash test's clients learnt: every message they
// started (by name, with its body) and the queue id of each that got a 250.
type crashLog struct {
	mu      sync.Mutex
	tried   map[string]string // name -> body, for every message whose MAIL was sent
	acked   map[string]string // name -> queue id from the 250
	qids    map[string]string // queue id -> name
	dupQID  []string          // queue ids given twice (a bug)
	errs    int               // transactions that broke off (connection lost, refused)
	lastErr string
}

func (l *crashLog) try(name, body string) {
	l.mu.Lock()
	l.tried[name] = body
	l.mu.Unlock()
}

func (l *crashLog) ack(name, qid string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if other, dup := l.qids[qid]; dup {
		l.dupQID = append(l.dupQID, qid+" for "+other+" and "+name)
	}
	l.qids[qid] = name
	l.acked[name] = qid
}

func (l *crashLog) fail(err error) {
	l.mu.Lock()
	l.errs++
	l.lastErr = err.Error()
	l.mu.Unlock()
}

func (l *crashLog) ackedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// crashBody is the message called name: a small one, or about 200 KiB
// (big), so that some kills land in the middle of DATA. It has a line
// starting with a dot and ends with a line naming it, so a truncated copy
// is told from the whole.
func crashBody(name string, big bool) string {
	var b strings.Builder
	b.WriteString("From: alice@sender.test\r\nTo: bob@example.com\r\nSubject: " + name +
		"\r\nMessage-ID: <" + name + "@sender.test>\r\n\r\nHello,\r\n.a line with a leading dot\r\n")
	lines := 20
	if big {
		lines = 3000
	}
	for i := 0; i < lines; i++ {
		fmt.Fprintf(&b, "%s line %05d: the quick brown fox jumps over the lazy dog\r\n", name, i)
	}
	b.WriteString("end of " + name + "\r\n")
	return b.String()
}

// crashClient sends messages over and over until stop closes, reconnecting
// after any error (the node is killed under it), and records what it sent
// and what got a 250.
func crashClient(addr string, c int, log *crashLog, stop <-chan struct{}) {
	var conn net.Conn
	var tp *textproto.Conn
	drop := func(err error) {
		log.fail(err)
		if conn != nil {
			conn.Close()
		}
		conn, tp = nil, nil
	}
	defer func() {
		if tp != nil {
			tp.PrintfLine("QUIT")
			conn.Close()
		}
	}()
	expect := func(code int, format string, args ...any) (string, error) {
		if format != "" {
			if err := tp.PrintfLine(format, args...); err != nil {
				return "", err
			}
		}
		_, msg, err := tp.ReadResponse(code)
		return msg, err
	}
	for n := 0; ; {
		select {
		case <-stop:
			return
		default:
		}
		if tp == nil {
			var err error
			conn, err = net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				// The node is down or restarting: retry shortly. A
				// retry delay, not a synchronisation.
				log.fail(err)
				conn = nil
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				continue
			}
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			tp = textproto.NewConn(conn)
			if _, err := expect(220, ""); err != nil {
				drop(err)
				continue
			}
			if _, err := expect(250, "EHLO client%d.test", c); err != nil {
				drop(err)
				continue
			}
		}
		name := fmt.Sprintf("crash-c%d-%04d", c, n)
		n++
		body := crashBody(name, n%5 == 0)
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		log.try(name, body)
		err := func() error {
			if _, err := expect(250, "MAIL FROM:<alice@sender.test>"); err != nil {
				return err
			}
			if _, err := expect(250, "RCPT TO:<bob@example.com>"); err != nil {
				return err
			}
			if _, err := expect(354, "DATA"); err != nil {
				return err
			}
			w := tp.DotWriter()
			if _, err := w.Write([]byte(body)); err != nil {
				return err
			}
			if err := w.Close(); err != nil {
				return err
			}
			msg, err := expect(250, "")
			if err != nil {
				return err
			}
			m := queuedRE.FindStringSubmatch(msg)
			if m == nil {
				return fmt.Errorf("250 without a queue id: %q", msg)
			}
			log.ack(name, m[1])
			return nil
		}()
		if err != nil {
			drop(fmt.Errorf("%s: %w", name, err))
		}
	}
}

var receivedIDRE = regexp.MustCompile(`\bid ([0-9A-Za-z_-]+)`)

// TestCrashRandomKill: four clients send continuously while the node is
// killed with SIGKILL at three random moments and restarted on the same
// spool and port. The home server is down throughout, so nothing can be
// delivered before the end: then every message that got a 250 arrives
// exactly once, whole, under the queue id the client was given; a message
// that never got its 250 (the kill came between the commit and the reply,
// or during DATA) arrives at most once and never in part.
func TestCrashRandomKill(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("MXPORT_CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	rng := rand.New(rand.NewPCG(seed, seed))
	t.Logf("seed %d (MXPORT_CRASH_SEED to repeat the kill moments)", seed)

	s := newFwdSetup(t)
	s.home.Close()
	p := s.serve(t, "200ms")

	log := &crashLog{tried: map[string]string{}, acked: map[string]string{}, qids: map[string]string{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := 0; c < 4; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			crashClient(s.addr, c, log, stop)
		}()
	}
	stopped := false
	stopClients := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer stopClients()

	const kills = 3
	for k := 0; k < kills; k++ {
		// The clients are sending to this process: some got their 250.
		base := log.ackedCount()
		poll(t, 20*time.Second, fmt.Sprintf("clients get 250s before kill %d", k+1), func() bool { return log.ackedCount() >= base+8 })
		// Then a random moment: the kill is the point, not a sync.
		d := time.Duration(rng.Int64N(int64(300 * time.Millisecond)))
		time.Sleep(d)
		before := log.ackedCount()
		p.kill()
		t.Logf("kill %d: %v after the 8th new 250, %d messages acknowledged so far", k+1, d, before)
		p = s.serve(t, "200ms")
	}
	base := log.ackedCount()
	poll(t, 20*time.Second, "clients get 250s after the last restart", func() bool { return log.ackedCount() >= base+8 })
	stopClients()

	log.mu.Lock()
	tried, acked, errs, lastErr := len(log.tried), len(log.acked), log.errs, log.lastErr
	dupQID := log.dupQID
	log.mu.Unlock()
	t.Logf("clients: %d messages started, %d acknowledged with 250, %d broken transactions or refused dials (last: %s)",
		tried, acked, errs, lastErr)
	if len(dupQID) > 0 {
		t.Errorf("queue ids given twice: %v", dupQID)
	}

	// The home server comes up: the queue drains.
	s.home.Restart(t)
	start := time.Now()
	// A delivered message's meta goes at once, its body once the meta's
	// removal is synced (within a fraction of a second).
	poll(t, 60*time.Second, "spool drained", func() bool {
		return len(spoolEntries(t, s.spool, "meta"))+len(spoolEntries(t, s.spool, "msg")) == 0
	})
	msgs := s.home.Messages()
	t.Logf("home server up: %d messages arrived, spool empty after %v", len(msgs), time.Since(start).Round(time.Millisecond))

	copies := map[string]int{}
	for _, m := range msgs {
		mm, err := mail.ReadMessage(bytes.NewReader(m.Data))
		if err != nil {
			t.Errorf("unparsable message delivered: %v\n%q", err, m.Data[:min(len(m.Data), 300)])
			continue
		}
		name := strings.TrimSuffix(strings.TrimPrefix(mm.Header.Get("Message-Id"), "<"), "@sender.test>")
		copies[name]++
		body, known := log.tried[name]
		if !known {
			t.Errorf("delivered %q, which no client sent", name)
			continue
		}
		if got := string(dropFirstHeader(m.Data)); got != body {
			t.Errorf("%s delivered altered or partial: %d bytes after our Received header, want %d", name, len(got), len(body))
		}
		qid := receivedIDRE.FindStringSubmatch(mm.Header.Get("Received"))
		if want, ok := log.acked[name]; ok && (qid == nil || qid[1] != want) {
			t.Errorf("%s delivered with Received %q, but its 250 named queue id %s", name, mm.Header.Get("Received"), want)
		}
		if m.From != "alice@sender.test" || strings.Join(m.Rcpts, ",") != "bob@example.com" {
			t.Errorf("%s: envelope changed: %q -> %v", name, m.From, m.Rcpts)
		}
	}
	var lost, dups, unackedDelivered []string
	for name := range log.acked {
		switch n := copies[name]; {
		case n == 0:
			lost = append(lost, name)
		case n > 1:
			dups = append(dups, fmt.Sprintf("%s×%d", name, n))
		}
	}
	for name, n := range copies {
		if _, ok := log.acked[name]; ok {
			continue
		}
		unackedDelivered = append(unackedDelivered, name)
		if n > 1 {
			dups = append(dups, fmt.Sprintf("%s×%d (never acknowledged)", name, n))
		}
	}
	sort.Strings(lost)
	sort.Strings(dups)
	sort.Strings(unackedDelivered)
	t.Logf("duplicates: %d %v", len(dups), dups)
	t.Logf("delivered without a 250 (committed, reply lost to the kill): %d %v", len(unackedDelivered), unackedDelivered)
	if len(lost) > 0 {
		t.Errorf("%d messages acknowledged with 250 never arrived: %v", len(lost), lost)
	}
	// The home server was down during every kill: no delivery was in
	// flight, so the window for a duplicate (remote 250, local commit
	// not yet done) never opened.
	if len(dups) > 0 {
		t.Errorf("%d messages delivered more than once: %v", len(dups), dups)
	}
	assertSpoolEmpty(t, s.spool)
}

// dropFirstHeader removes the first header field (ours, Received, with its
// folded lines) from a message.
func dropFirstHeader(data []byte) []byte {
	i := bytes.Index(data, []byte("\r\n"))
	for i >= 0 && i+2 < len(data) && (data[i+2] == ' ' || data[i+2] == '\t') {
		j := bytes.Index(data[i+2:], []byte("\r\n"))
		if j < 0 {
			return nil
		}
		i += 2 + j
	}
	if i < 0 {
		return nil
	}
	return data[i+2:]
}
