//go:build unix

package queue

// Benchmarks for issue 5's "100,000 messages queued for a down target:
// restart rebuilds the queue in < 10 s; scheduling cost per message stays
// flat". MXPORT_BENCH_QUEUE sets the number of messages of BenchmarkReload
// (default 2,000), e.g.
//
//	MXPORT_BENCH_QUEUE=100000 go test -run '^$' -bench BenchmarkReload -benchtime 1x ./forwarder/queue/

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mxport/mxport/forwarder/courier"
	"github.com/mxport/mxport/forwarder/spool"
	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
)

// downRouter routes zone "down.test" to a closed port on 127.0.0.1: a home
// server that is down (connection refused).
type downRouter struct{ port uint16 }

func (r downRouter) Route(zone string) []record.Target {
	if zone != "down.test" {
		return nil
	}
	return []record.Target{{Pref: 10, Host: "home.down.test", Port: r.port}}
}

func (r downRouter) Addrs(ctx context.Context, t record.Target) ([]netip.AddrPort, error) {
	return []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), t.Port)}, nil
}

func (r downRouter) MX(ctx context.Context, domain string) ([]record.Target, error) {
	return nil, fmt.Errorf("no MX for %s in this benchmark", domain)
}

// closedPort returns a loopback port nothing listens on (it was free a
// moment ago): dialling it is refused at once.
func closedPort(b *testing.B) uint16 {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	p := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return uint16(p)
}

func benchN(b *testing.B) int {
	n := 2000
	if s := os.Getenv("MXPORT_BENCH_QUEUE"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			b.Fatalf("MXPORT_BENCH_QUEUE=%q: want a positive number", s)
		}
		n = v
	}
	return n
}

// fillSpool writes n messages of about 2 KiB for down.test into a new spool
// with spool.Put (fsync'd, from 32 writers to share the directory fsyncs),
// each already tried once and due in an hour, as a down target leaves
// them, and returns the spool and the metas.
func fillSpool(b *testing.B, n int) (*spool.Spool, []*spool.Meta) {
	b.Helper()
	sp, err := spool.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	body := "From: a@sender.test\r\nTo: u@down.test\r\nSubject: bench\r\n\r\n" + strings.Repeat(strings.Repeat("x", 70)+"\r\n", 28)
	metas := make([]*spool.Meta, n)
	now := time.Now().UTC()
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	var errOnce sync.Once
	var putErr error
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				m := &spool.Meta{ID: sp.NewID(), Zone: "down.test", From: "a@sender.test",
					Rcpts:   []spool.Rcpt{{Addr: fmt.Sprintf("u%d@down.test", i), State: spool.Pending, Code: 0, Reply: "connection refused"}},
					Arrived: now, Attempts: 1, NextAttempt: now.Add(time.Hour), LastReply: "connection refused"}
				if err := sp.Put(m, strings.NewReader(body), 0); err != nil {
					errOnce.Do(func() { putErr = err })
					return
				}
				metas[i] = m
			}
		}()
	}
	wg.Wait()
	if putErr != nil {
		b.Fatal(putErr)
	}
	b.Logf("spool: %d messages written with spool.Put in %v", n, time.Since(start).Round(time.Millisecond))
	return sp, metas
}

// quiet sends slog's default logger to io.Discard (still formatting, as in
// production) for the benchmark.
func quiet(b *testing.B) {
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	b.Cleanup(func() { slog.SetDefault(old) })
}

// BenchmarkReload times a restart's rebuild of the queue: queue.New and
// Load, which scans the spool (every meta read and checked against its
// body) and builds the heap.
func BenchmarkReload(b *testing.B) {
	quiet(b)
	n := benchN(b)
	sp, _ := fillSpool(b, n)
	port := closedPort(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		q := New(Config{Spool: sp, Router: downRouter{port}, Hostname: "mx1.bench.test"})
		if err := q.Load(); err != nil {
			b.Fatal(err)
		}
		if q.Len() != n {
			b.Fatalf("loaded %d of %d", q.Len(), n)
		}
	}
	b.StopTimer()
	per := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(per/float64(n), "ns/msg")
	b.ReportMetric(per/1e9, "s/reload")
	b.ReportMetric(float64(n), "msgs")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkScheduleFlat: n messages of one zone are due at once and its
// target is down (a closed port, dialled for real by the courier). One
// iteration makes one attempt of every message, driving dispatch as Run
// does. It reports the time spent in dispatch per message (the
// scheduling: heap, parking behind the zone's limit, starting) and the
// process CPU per message for the whole attempt (scheduling, the spool
// updates, the refused dial, logging). Flat from 1k to 10k messages is
// the claim; a quadratic dispatch shows as growth of dispatch-ns/msg.
func BenchmarkScheduleFlat(b *testing.B) {
	quiet(b)
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			sp, metas := fillSpool(b, n)
			port := closedPort(b)
			cc := courier.Config{Hostname: "mx1.bench.test", Timeout: 5 * time.Second}
			var inDispatch, cpu time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				var deferred atomic.Int64
				q := New(Config{Spool: sp, Router: downRouter{port}, Hostname: "mx1.bench.test",
					Courier: func(ctx context.Context, host, addr string, env courier.Envelope, body io.Reader) ([]courier.Result, error) {
						return courier.Deliver(ctx, cc, host, addr, env, body)
					},
					Retry: []time.Duration{time.Hour}, MaxAge: 24 * time.Hour,
					Log: func(zone string, d store.Delivery) {
						if d.Event == "deferred" {
							deferred.Add(1)
						}
					}})
				for _, m := range metas {
					c := *m
					c.Rcpts = append([]spool.Rcpt(nil), m.Rcpts...)
					c.NextAttempt = time.Time{} // due now
					q.Enqueue(&c)
				}
				for len(q.kick) > 0 {
					<-q.kick
				}
				ctx, cancel := context.WithCancel(context.Background())
				cpu0 := cpuTime(b)
				b.StartTimer()
				for deferred.Load() < int64(n) {
					t0 := time.Now()
					q.dispatch(ctx)
					inDispatch += time.Since(t0)
					select { // as Run: a delivery ended, or a safety net
					case <-q.kick:
					case <-time.After(time.Second):
					}
				}
				b.StopTimer()
				cpu += cpuTime(b) - cpu0
				cancel()
				q.wg.Wait()
			}
			total := float64(b.N * n)
			b.ReportMetric(float64(inDispatch.Nanoseconds())/total, "dispatch-ns/msg")
			b.ReportMetric(float64(cpu.Nanoseconds())/total, "cpu-ns/msg")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/total, "wall-ns/msg")
		})
	}
}
