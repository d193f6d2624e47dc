// Command smtpload is the load tool of deploy/bench/smtp-latency.sh and
// smtp-memory.sh: an SMTP client that sends to mxport's smtp role and, in the
// same process, the customer's "home server" (a go-smtp sink on -sink) that
// mxport relays to. Both ends share one clock, so the tool can time each
// message from the 250 mxport gave its sender to its arrival at the sink.
//
// Modes:
//
//	peak     closed loop: -sessions senders as fast as they can, -n messages in
//	         all, one message per connection; prints accepted/s (until the last
//	         250) and delivered/s (until the sink saw the last message).
//	latency  open loop: one new connection every 1/-rate s for -duration, at
//	         most -sessions at once; prints count, lost and the p50/p90/p99/max
//	         of the 250 latency (from the scheduled start to the 250 after DATA)
//	         and of arrival - 250 (the sink's end of DATA minus the client's 250).
//	big      -sessions concurrent senders, one message of -size bytes each,
//	         streamed from a repeating pattern; the sink counts bytes and
//	         discards them.
//
// Every message carries an X-Smtpload-Id header (run id and sequence number);
// the sink reads the headers to find it and ignores mail of other runs. The
// last line of the output is "RESULT key=value ...", for the scripts.
// Loopback targets only.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"maps"
	"math"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

const idHeader = "X-Smtpload-Id"

type config struct {
	mode     string
	target   string
	sink     string
	zones    int
	size     int64
	sessions int
	n        int
	rate     float64
	duration time.Duration
	drain    time.Duration
	timeout  time.Duration
	csv      string
	starttls bool
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("smtpload: ")
	var c config
	var rate string
	flag.StringVar(&c.mode, "mode", "latency", "peak, latency or big")
	flag.StringVar(&c.target, "target", "127.0.0.1:2500", "mxport's SMTP address (loopback)")
	flag.StringVar(&c.sink, "sink", "127.0.0.1:2525", "address of the sink (the home server) this tool runs (loopback)")
	flag.IntVar(&c.zones, "zones", 10, "recipients rcpt@zone0001.test .. zoneNNNN.test, in turn")
	flag.Int64Var(&c.size, "size", 2048, "message body bytes")
	flag.IntVar(&c.sessions, "sessions", 0, "concurrent sessions (default: peak 20, latency 200 at most, big 200)")
	flag.IntVar(&c.n, "n", 5000, "peak: messages in all")
	flag.StringVar(&rate, "rate", "100/s", "latency: messages a second (open loop), e.g. 300 or 300/s")
	flag.DurationVar(&c.duration, "duration", 20*time.Second, "latency: how long to send")
	flag.DurationVar(&c.drain, "drain", 60*time.Second, "wait this long after the last 250 for the sink to see every message")
	flag.DurationVar(&c.timeout, "timeout", 10*time.Minute, "give up on the whole run after this")
	flag.BoolVar(&c.starttls, "starttls", false, "send every message after STARTTLS (certificate not checked)")
	flag.StringVar(&c.csv, "csv", "", "write one line per message here: seq, start, 250 and arrival in ms from the run's start")
	flag.Parse()
	r, err := strconv.ParseFloat(strings.TrimSuffix(rate, "/s"), 64)
	if err != nil || r <= 0 {
		log.Fatalf("bad -rate %q", rate)
	}
	c.rate = r
	for _, a := range []string{c.target, c.sink} {
		if !loopback(a) {
			log.Fatalf("refusing non-loopback address %s", a)
		}
	}
	if c.sessions <= 0 {
		switch c.mode {
		case "peak":
			c.sessions = 20
		default:
			c.sessions = 200
		}
	}
	if c.zones < 1 {
		c.zones = 1
	}

	sk, err := startSink(c.sink)
	if err != nil {
		log.Fatal(err)
	}
	defer sk.close()
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	switch c.mode {
	case "peak":
		err = runPeak(ctx, c, sk)
	case "latency":
		err = runLatency(ctx, c, sk)
	case "big":
		err = runBig(ctx, c, sk)
	default:
		err = fmt.Errorf("unknown -mode %q", c.mode)
	}
	if err != nil {
		sk.close()
		log.Fatal(err)
	}
}

func loopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// ---- the sink (the customer's home server) ----

type arrival struct {
	at    time.Time
	bytes int64
}

type sink struct {
	srv   *smtp.Server
	ln    net.Listener
	runID string

	mu       sync.Mutex
	arrived  map[int]arrival
	dups     int
	foreign  int // messages without this run's id
	bytes    int64
	sessions atomic.Int64
	once     sync.Once
}

func startSink(addr string) (*sink, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	s := &sink{
		ln:      ln,
		runID:   strconv.FormatInt(time.Now().UnixNano(), 36),
		arrived: make(map[int]arrival),
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		s.sessions.Add(1)
		return &sinkSession{s: s}, nil
	}))
	srv.Domain = "sink.test"
	srv.MaxMessageBytes = 1 << 30
	srv.MaxRecipients = 1000
	srv.MaxLineLength = 1 << 16
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = true
	srv.ErrorLog = log.New(os.Stderr, "smtpload: sink: ", 0)
	s.srv = srv
	go func() { _ = srv.Serve(ln) }()
	return s, nil
}

func (s *sink) close() { s.once.Do(func() { _ = s.srv.Close() }) }

// record notes the arrival of message seq (-1: not ours).
func (s *sink) record(seq int, n int64, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bytes += n
	switch {
	case seq < 0:
		s.foreign++
	default:
		if _, ok := s.arrived[seq]; ok {
			s.dups++
		} else {
			s.arrived[seq] = arrival{at: at, bytes: n}
		}
	}
}

// wait blocks until every seq in want has arrived or ctx is done. It polls
// (every 10 ms) so as not to slow the sink down while mail still comes in.
func (s *sink) wait(ctx context.Context, want map[int]bool) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		s.mu.Lock()
		done := len(s.arrived) >= len(want)
		if done {
			for seq := range want {
				if _, ok := s.arrived[seq]; !ok {
					done = false
					break
				}
			}
		}
		s.mu.Unlock()
		if done {
			return
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

func (s *sink) snapshot() (map[int]arrival, int, int, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.arrived), s.dups, s.foreign, s.bytes
}

type sinkSession struct{ s *sink }

func (ss *sinkSession) Reset()                                    {}
func (ss *sinkSession) Logout() error                             { return nil }
func (ss *sinkSession) Mail(string, *smtp.MailOptions) error      { return nil }
func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error { return nil }

// Data reads the header section for the id, discards the rest, and notes the
// time the end of the message came in.
func (ss *sinkSession) Data(r io.Reader) error {
	br := bufio.NewReaderSize(r, 32<<10)
	var n int64
	seq := -1
	prefix := []byte(strings.ToLower(idHeader) + ":")
	for {
		line, err := br.ReadSlice('\n')
		n += int64(len(line))
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF {
				break
			}
			return err
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break // end of the header section
		}
		if len(line) > len(prefix) && bytes.Equal(bytes.ToLower(line[:len(prefix)]), prefix) {
			v := strings.TrimSpace(string(line[len(prefix):]))
			if run, num, ok := strings.Cut(v, "-"); ok && run == ss.s.runID {
				if k, err := strconv.Atoi(num); err == nil {
					seq = k
				}
			}
		}
	}
	m, err := io.Copy(io.Discard, br)
	n += m
	if err != nil {
		return err
	}
	ss.s.record(seq, n, time.Now())
	return nil
}

// ---- the sender ----

// pattern is an endless stream of 80-byte lines (78 characters and CRLF),
// none starting with a dot.
type pattern struct{ off int }

var patternBlock = func() []byte {
	var b bytes.Buffer
	const chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	for i := 0; i < 64; i++ {
		for j := 0; j < 78; j++ {
			b.WriteByte(chars[(i+j)%len(chars)])
		}
		b.WriteString("\r\n")
	}
	return b.Bytes()
}()

func (p *pattern) Read(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k := copy(b[n:], patternBlock[p.off:])
		n += k
		p.off = (p.off + k) % len(patternBlock)
	}
	return n, nil
}

type result struct {
	seq   int
	sched time.Time // when the message was due to start (open loop) or started
	t250  time.Time // the 250 after DATA
	err   error
	code  int    // SMTP reply code of a failure, 0 for a network error
	phase string // where it failed: connect, ehlo, mail, rcpt, data, body, dot
}

func rcptFor(c config, seq int) string {
	return fmt.Sprintf("rcpt%d@zone%04d.test", seq%100, seq%c.zones+1)
}

// send sends one message on a new connection and returns the time of the 250.
func send(ctx context.Context, c config, runID string, seq int) (t250 time.Time, phase string, err error) {
	d := net.Dialer{Timeout: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", c.target)
	if err != nil {
		return t250, "connect", err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	var cl *smtp.Client
	if c.starttls {
		// EHLO, STARTTLS; the EHLO below is the one after it.
		if cl, err = smtp.NewClientStartTLS(conn, &tls.Config{InsecureSkipVerify: true}); err != nil {
			conn.Close()
			return t250, "starttls", err
		}
	} else {
		cl = smtp.NewClient(conn)
	}
	defer cl.Close()
	cl.CommandTimeout = 2 * time.Minute
	cl.SubmissionTimeout = 5 * time.Minute
	if err := cl.Hello("load.smtpload.test"); err != nil {
		return t250, "ehlo", err
	}
	if err := cl.Mail("load@sender.test", &smtp.MailOptions{Size: c.size + 512}); err != nil {
		return t250, "mail", err
	}
	rcpt := rcptFor(c, seq)
	if err := cl.Rcpt(rcpt, nil); err != nil {
		return t250, "rcpt", err
	}
	w, err := cl.Data()
	if err != nil {
		return t250, "data", err
	}
	hdr := fmt.Sprintf("From: <load@sender.test>\r\nTo: <%s>\r\nSubject: smtpload %d\r\n"+
		"Message-ID: <%s.%d@sender.test>\r\nDate: %s\r\n%s: %s-%d\r\n\r\n",
		rcpt, seq, runID, seq, time.Now().Format(time.RFC1123Z), idHeader, runID, seq)
	if _, err := io.WriteString(w, hdr); err != nil {
		return t250, "body", err
	}
	if _, err := io.CopyN(w, &pattern{off: (seq * 80) % len(patternBlock)}, c.size); err != nil {
		return t250, "body", err
	}
	if err := w.Close(); err != nil {
		return t250, "dot", err
	}
	t250 = time.Now()
	_ = cl.Quit()
	return t250, "", nil
}

func replyCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// ---- statistics ----

type dist []time.Duration

func (d dist) pct(p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(d)))) - 1
	return d[max(0, min(i, len(d)-1))]
}

func ms(t time.Duration) string { return strconv.FormatFloat(t.Seconds()*1000, 'f', 2, 64) }

func (d dist) summary(name string) string {
	slices.Sort(d)
	if len(d) == 0 {
		return fmt.Sprintf("%s_n=0", name)
	}
	return fmt.Sprintf("%s_min_ms=%s %s_p50_ms=%s %s_p90_ms=%s %s_p99_ms=%s %s_max_ms=%s",
		name, ms(d[0]), name, ms(d.pct(50)), name, ms(d.pct(90)), name, ms(d.pct(99)), name, ms(d[len(d)-1]))
}

// failures summarises the failed sends: "code:phase=count,...".
func failures(rs []result) (int, string) {
	m := map[string]int{}
	n := 0
	for _, r := range rs {
		if r.err == nil {
			continue
		}
		n++
		m[fmt.Sprintf("%d:%s", r.code, r.phase)]++
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%d", k, m[k])
	}
	if b.Len() == 0 {
		b.WriteString("none")
	}
	return n, b.String()
}

func firstErrors(rs []result, k int) {
	for _, r := range rs {
		if r.err != nil && k > 0 {
			log.Printf("message %d failed at %s: %v", r.seq, r.phase, r.err)
			k--
		}
	}
}

// ---- modes ----

func runPeak(ctx context.Context, c config, sk *sink) error {
	rs := make([]result, c.n)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < c.sessions; w++ {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= c.n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				t, phase, err := send(ctx, c, sk.runID, i)
				rs[i] = result{seq: i, sched: t0, t250: t, err: err, code: replyCode(err), phase: phase}
			}
		})
	}
	wg.Wait()
	return report(ctx, c, sk, rs, start, "peak")
}

func runLatency(ctx context.Context, c config, sk *sink) error {
	total := int(c.rate * c.duration.Seconds())
	rs := make([]result, total)
	slots := make(chan struct{}, c.sessions)
	var wg sync.WaitGroup
	waited := 0
	interval := time.Duration(float64(time.Second) / c.rate)
	start := time.Now()
	for i := 0; i < total && ctx.Err() == nil; i++ {
		sched := start.Add(time.Duration(i) * interval)
		if d := time.Until(sched); d > 0 {
			time.Sleep(d)
		}
		select {
		case slots <- struct{}{}:
		default:
			waited++ // every session busy: this one starts late (its latency counts from sched)
			slots <- struct{}{}
		}
		wg.Go(func() {
			defer func() { <-slots }()
			t, phase, err := send(ctx, c, sk.runID, i)
			rs[i] = result{seq: i, sched: sched, t250: t, err: err, code: replyCode(err), phase: phase}
		})
	}
	wg.Wait()
	if waited > 0 {
		log.Printf("%d messages started late: all %d sessions were busy", waited, c.sessions)
	}
	return report(ctx, c, sk, rs, start, "latency")
}

func runBig(ctx context.Context, c config, sk *sink) error {
	rs := make([]result, c.sessions)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < c.sessions; i++ {
		wg.Go(func() {
			t0 := time.Now()
			t, phase, err := send(ctx, c, sk.runID, i)
			rs[i] = result{seq: i, sched: t0, t250: t, err: err, code: replyCode(err), phase: phase}
		})
	}
	wg.Wait()
	return report(ctx, c, sk, rs, start, "big")
}

// report waits up to -drain for the sink, then prints the figures.
func report(ctx context.Context, c config, sk *sink, rs []result, start time.Time, mode string) error {
	var last250 time.Time
	ok := map[int]bool{}
	for _, r := range rs {
		if r.err == nil && !r.t250.IsZero() {
			ok[r.seq] = true
			if r.t250.After(last250) {
				last250 = r.t250
			}
		}
	}
	dctx, cancel := context.WithTimeout(ctx, c.drain)
	defer cancel()
	sk.wait(dctx, ok)
	arrived, dups, foreign, sinkBytes := sk.snapshot()

	var lat250, transit dist
	var lastArr time.Time
	var minBytes, maxBytes int64 = math.MaxInt64, 0
	lost := 0
	for _, r := range rs {
		if r.err != nil || r.t250.IsZero() {
			continue
		}
		lat250 = append(lat250, r.t250.Sub(r.sched))
		a, got := arrived[r.seq]
		if !got {
			lost++
			continue
		}
		transit = append(transit, a.at.Sub(r.t250))
		if a.at.After(lastArr) {
			lastArr = a.at
		}
		minBytes, maxBytes = min(minBytes, a.bytes), max(maxBytes, a.bytes)
	}
	if len(transit) == 0 {
		minBytes = 0
	}
	if c.csv != "" {
		if err := writeCSV(c.csv, rs, arrived, start); err != nil {
			return err
		}
	}
	failed, fails := failures(rs)
	firstErrors(rs, 5)
	sent := len(rs)
	accepted := len(ok)
	acceptSecs := last250.Sub(start).Seconds()
	deliverSecs := lastArr.Sub(start).Seconds()
	rateOf := func(n int, secs float64) string {
		if secs <= 0 {
			return "0"
		}
		return strconv.FormatFloat(float64(n)/secs, 'f', 1, 64)
	}
	fmt.Printf("mode=%s target=%s sink=%s sessions=%d size=%d sent=%d accepted=%d failed=%d (%s)\n",
		mode, c.target, c.sink, c.sessions, c.size, sent, accepted, failed, fails)
	fmt.Printf("delivered=%d lost=%d duplicates=%d foreign=%d sink_sessions=%d sink_bytes=%d msg_bytes_min=%d msg_bytes_max=%d\n",
		len(transit), lost, dups, foreign, sk.sessions.Load(), sinkBytes, minBytes, maxBytes)
	fmt.Printf("accept_s=%.3f deliver_s=%.3f accepted_per_s=%s delivered_per_s=%s\n",
		acceptSecs, deliverSecs, rateOf(accepted, acceptSecs), rateOf(len(transit), deliverSecs))
	fmt.Printf("250 latency:      %s\n", lat250.summary("lat250"))
	fmt.Printf("arrival - 250:    %s\n", transit.summary("transit"))
	hwm := selfHWM()
	fmt.Printf("smtpload's own peak RSS (VmHWM): %d KiB\n", hwm)
	fmt.Printf("RESULT mode=%s start_unix=%.3f load_hwm_kib=%d sent=%d accepted=%d failed=%d failures=%s delivered=%d lost=%d duplicates=%d "+
		"sink_bytes=%d msg_bytes_min=%d msg_bytes_max=%d accept_s=%.3f deliver_s=%.3f accepted_per_s=%s delivered_per_s=%s %s %s\n",
		mode, float64(start.UnixNano())/1e9, hwm, sent, accepted, failed, fails, len(transit), lost, dups, sinkBytes, minBytes, maxBytes,
		acceptSecs, deliverSecs, rateOf(accepted, acceptSecs), rateOf(len(transit), deliverSecs),
		lat250.summary("lat250"), transit.summary("transit"))
	return nil
}

// selfHWM is this process's peak resident set in KiB (Linux), or 0.
func selfHWM() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			k, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return k
		}
	}
	return 0
}

// writeCSV writes seq,start_ms,t250_ms,arrival_ms,error per message (times from
// the run's start; empty when there was none).
func writeCSV(name string, rs []result, arrived map[int]arrival, start time.Time) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "seq,start_ms,t250_ms,arrival_ms,error")
	rel := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return ms(t.Sub(start))
	}
	for _, r := range rs {
		var at time.Time
		if a, ok := arrived[r.seq]; ok && r.err == nil {
			at = a.at
		}
		e := ""
		if r.err != nil {
			e = strconv.Quote(r.phase + ": " + r.err.Error())
		}
		fmt.Fprintf(w, "%d,%s,%s,%s,%s\n", r.seq, rel(r.sched), rel(r.t250), rel(at), e)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
