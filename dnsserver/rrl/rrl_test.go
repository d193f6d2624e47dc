package rrl

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// t0 is the test clock's start; tests add to it and never sleep.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

var (
	client = netip.MustParseAddr("192.0.2.1")
	qname  = "www.example.com."
)

// burst calls Check n times at now and returns the actions in order.
func burst(l *Limiter, ip netip.Addr, kind Kind, name string, now time.Time, n int) []Action {
	out := make([]Action, n)
	for i := range out {
		out[i] = l.Check(ip, kind, name, now)
	}
	return out
}

func count(as []Action, want Action) int {
	n := 0
	for _, a := range as {
		if a == want {
			n++
		}
	}
	return n
}

func TestRate(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		depth int // responses a fresh bucket allows at one instant
	}{
		{"default window", Config{ResponsesPerSecond: 5}, 25},
		{"window 1", Config{ResponsesPerSecond: 5, Window: 1}, 5},
		{"window 15", Config{ResponsesPerSecond: 10, Window: 15}, 150},
		{"rate 3", Config{ResponsesPerSecond: 3, Window: 5}, 15},
		{"rate 1", Config{ResponsesPerSecond: 1, Window: 1}, 1},
		{"negative window", Config{ResponsesPerSecond: 2, Window: -3}, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New(tt.cfg)
			got := burst(l, client, KindAnswer, qname, t0, tt.depth+10)
			for i, a := range got {
				want := Send
				if i >= tt.depth {
					want = Drop
				}
				if a != want {
					t.Fatalf("response %d: got %v, want %v", i+1, a, want)
				}
			}
			if d, s := l.Stats(); d != 10 || s != 0 {
				t.Errorf("Stats() = %d, %d; want 10, 0", d, s)
			}
		})
	}
}

func TestUnderRateAllSend(t *testing.T) {
	// 10 per second for 10 minutes against a limit of 10: never limited,
	// even with the burst spent at the start.
	l := New(Config{ResponsesPerSecond: 10, Window: 2})
	now := t0
	if got := count(burst(l, client, KindAnswer, qname, now, 20), Send); got != 20 {
		t.Fatalf("initial burst: %d sent, want 20", got)
	}
	for i := range 6000 {
		now = now.Add(100 * time.Millisecond)
		if a := l.Check(client, KindAnswer, qname, now); a != Send {
			t.Fatalf("response %d at %v: %v, want Send", i, now.Sub(t0), a)
		}
	}
}

func TestSlip(t *testing.T) {
	tests := []struct {
		slip int
		want []Action // the actions after the bucket is empty
	}{
		{0, []Action{Drop, Drop, Drop, Drop, Drop, Drop}},
		{-1, []Action{Drop, Drop, Drop, Drop, Drop, Drop}},
		{1, []Action{Slip, Slip, Slip, Slip, Slip, Slip}},
		{2, []Action{Drop, Slip, Drop, Slip, Drop, Slip}},
		{3, []Action{Drop, Drop, Slip, Drop, Drop, Slip}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint("slip ", tt.slip), func(t *testing.T) {
			l := New(Config{ResponsesPerSecond: 2, Window: 1, Slip: tt.slip})
			burst(l, client, KindAnswer, qname, t0, 2)
			got := burst(l, client, KindAnswer, qname, t0, len(tt.want))
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			d, s := l.Stats()
			if int(d) != count(tt.want, Drop) || int(s) != count(tt.want, Slip) {
				t.Errorf("Stats() = %d, %d; want %d, %d", d, s, count(tt.want, Drop), count(tt.want, Slip))
			}
		})
	}
}

func TestRefill(t *testing.T) {
	l := New(Config{ResponsesPerSecond: 10, Window: 3})
	steps := []struct {
		after time.Duration // since the previous step
		tries int
		sent  int
	}{
		{0, 40, 30},                       // full bucket: rate × window
		{100 * time.Millisecond, 5, 1},    // one response of credit back
		{time.Second, 20, 10},             // one second: rate
		{500 * time.Millisecond, 20, 5},   // half a second
		{3 * time.Second, 40, 30},         // a window: full again
		{10 * time.Second, 40, 30},        // no more than full
		{50 * time.Millisecond, 5, 0},     // less than one response's worth
		{50 * time.Millisecond, 5, 1},     // now one
		{-time.Hour, 5, 0},                // clock went back: empty, not stuck
		{time.Hour + 3*time.Second, 5, 5}, // refilled a window after the step back
	}
	now := t0
	for i, st := range steps {
		now = now.Add(st.after)
		if got := count(burst(l, client, KindAnswer, qname, now, st.tries), Send); got != st.sent {
			t.Errorf("step %d (+%v): %d sent, want %d", i, st.after, got, st.sent)
		}
	}
}

func TestClockBackwardsRecovers(t *testing.T) {
	// A wall clock stepped back an hour must not silence a client for an
	// hour: the bucket is at most a window behind.
	l := New(Config{ResponsesPerSecond: 1, Window: 2})
	burst(l, client, KindAnswer, qname, t0, 5)
	back := t0.Add(-time.Hour)
	if a := l.Check(client, KindAnswer, qname, back); a != Drop {
		t.Fatalf("right after the step: %v, want Drop", a)
	}
	if a := l.Check(client, KindAnswer, qname, back.Add(2*time.Second)); a != Send {
		t.Fatalf("a window after the step: %v, want Send", a)
	}
}

func TestNetworks(t *testing.T) {
	tests := []struct {
		name   string
		cfg    Config
		a, b   string
		shared bool
	}{
		{"same /24", Config{}, "192.0.2.1", "192.0.2.200", true},
		{"next /24", Config{}, "192.0.2.1", "192.0.3.1", false},
		{"same /56", Config{}, "2001:db8:0:ab00::1", "2001:db8:0:abff:ffff::1", true},
		{"next /56", Config{}, "2001:db8:0:ab00::1", "2001:db8:0:ac00::1", false},
		{"IPv6 zone ignored", Config{}, "fe80::1%eth0", "fe80::2%eth1", true},
		{"mapped is IPv4", Config{}, "::ffff:192.0.2.1", "192.0.2.77", true},
		{"mapped other /24", Config{}, "::ffff:192.0.3.1", "192.0.2.77", false},
		{"IPv4 is not its IPv6 form", Config{}, "192.0.2.1", "::c000:201", false},
		{"IPv4 zero not IPv6 zero", Config{}, "0.0.0.1", "::1", false},
		{"/32", Config{IPv4Prefix: 32}, "192.0.2.1", "192.0.2.2", false},
		{"/33 is /32", Config{IPv4Prefix: 33}, "192.0.2.1", "192.0.2.1", true},
		{"/16", Config{IPv4Prefix: 16}, "192.0.2.1", "192.0.200.1", true},
		{"/8", Config{IPv4Prefix: 8}, "10.1.2.3", "10.200.2.3", true},
		{"/64", Config{IPv6Prefix: 64}, "2001:db8::1", "2001:db8::ffff:1", true},
		{"/64 next", Config{IPv6Prefix: 64}, "2001:db8::1", "2001:db8:0:1::1", false},
		{"/72", Config{IPv6Prefix: 72}, "2001:db8::1", "2001:db8::ff:0:0:1", true},
		{"/72 next", Config{IPv6Prefix: 72}, "2001:db8::1", "2001:db8::100:0:0:1", false},
		{"/128", Config{IPv6Prefix: 128}, "2001:db8::1", "2001:db8::2", false},
		{"/48", Config{IPv6Prefix: 48}, "2001:db8:1::", "2001:db8:1:ffff::1", true},
		{"invalid addresses share", Config{}, "", "", true},
		{"invalid is not 0.0.0.0", Config{}, "", "0.0.0.0", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.ResponsesPerSecond, cfg.Window = 3, 1
			l := New(cfg)
			a, b := parse(t, tt.a), parse(t, tt.b)
			// Spend a's bucket, then see whether b still has credit.
			burst(l, a, KindAnswer, qname, t0, 3)
			got := l.Check(b, KindAnswer, qname, t0)
			if want := map[bool]Action{true: Drop, false: Send}[tt.shared]; got != want {
				t.Errorf("%s after %s spent its bucket: %v, want %v", tt.b, tt.a, got, want)
			}
		})
	}
}

func parse(t *testing.T, s string) netip.Addr {
	t.Helper()
	if s == "" {
		return netip.Addr{}
	}
	return netip.MustParseAddr(s)
}

func TestBuckets(t *testing.T) {
	type resp struct {
		kind Kind
		name string
	}
	tests := []struct {
		name   string
		a, b   resp
		shared bool
	}{
		{"same answer", resp{KindAnswer, "a.example."}, resp{KindAnswer, "a.example."}, true},
		{"answer names differ", resp{KindAnswer, "a.example."}, resp{KindAnswer, "b.example."}, false},
		{"case does not matter", resp{KindAnswer, "A.Example."}, resp{KindAnswer, "a.EXAMPLE."}, true},
		{"trailing dot does not matter", resp{KindAnswer, "a.example."}, resp{KindAnswer, "a.example"}, true},
		{"root", resp{KindNXDomain, "."}, resp{KindNXDomain, ""}, true},
		{"answer is not NODATA", resp{KindAnswer, "a.example."}, resp{KindNoData, "a.example."}, false},
		{"answer is not NXDOMAIN", resp{KindAnswer, "example."}, resp{KindNXDomain, "example."}, false},
		{"NXDOMAIN is not referral", resp{KindNXDomain, "example."}, resp{KindReferral, "example."}, false},
		{"referral is not error", resp{KindReferral, "example."}, resp{KindError, "example."}, false},
		{"NXDOMAIN zones differ", resp{KindNXDomain, "example."}, resp{KindNXDomain, "example.net."}, false},
		{"NODATA names differ", resp{KindNoData, "a.example."}, resp{KindNoData, "b.example."}, false},
		{"errors ignore the name", resp{KindError, "a.example."}, resp{KindError, "b.example."}, true},
		{"unknown kind is error", resp{Kind(200), "a.example."}, resp{KindError, ""}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New(Config{ResponsesPerSecond: 2, Window: 1})
			burst(l, client, tt.a.kind, tt.a.name, t0, 2)
			got := l.Check(client, tt.b.kind, tt.b.name, t0)
			if want := map[bool]Action{true: Drop, false: Send}[tt.shared]; got != want {
				t.Errorf("%v %q after %v %q spent its bucket: %v, want %v",
					tt.b.kind, tt.b.name, tt.a.kind, tt.a.name, got, want)
			}
		})
	}
}

func TestDisabled(t *testing.T) {
	for _, rate := range []int{0, -1} {
		l := New(Config{ResponsesPerSecond: rate, Window: 1, Slip: 1, MaxTableSize: 1})
		for i := range 1000 {
			ip := netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
			if a := l.Check(ip, KindError, "", t0); a != Send {
				t.Fatalf("rate %d: response %d: %v, want Send", rate, i, a)
			}
		}
		if d, s := l.Stats(); d != 0 || s != 0 {
			t.Errorf("rate %d: Stats() = %d, %d; want 0, 0", rate, d, s)
		}
		if n := l.size(); n != 0 {
			t.Errorf("rate %d: %d buckets kept, want 0", rate, n)
		}
	}
}

func TestTableBound(t *testing.T) {
	for _, max := range []int{1, 10, 64, 1000, 5000} {
		t.Run(fmt.Sprint(max), func(t *testing.T) {
			l := New(Config{ResponsesPerSecond: 1, MaxTableSize: max})
			now := t0
			for i := range 50000 {
				ip := netip.AddrFrom4([4]byte{10 + byte(i>>16), byte(i >> 8), byte(i), 1})
				l.Check(ip, KindAnswer, qname, now)
				if i%1000 == 0 {
					now = now.Add(time.Second)
				}
			}
			if n := l.size(); n > max || n < max/2 {
				t.Errorf("%d buckets kept, want at most %d (and not far fewer)", n, max)
			}
		})
	}
}

func TestDefaultTableSize(t *testing.T) {
	l := New(Config{ResponsesPerSecond: 1})
	for i := range 150000 {
		ip := netip.AddrFrom4([4]byte{10 + byte(i>>16), byte(i >> 8), byte(i), 1})
		l.Check(ip, KindAnswer, qname, t0)
	}
	if n := l.size(); n > DefaultMaxTableSize {
		t.Errorf("%d buckets kept, want at most %d", n, DefaultMaxTableSize)
	}
}

func TestEvictionKeepsBusyBucket(t *testing.T) {
	// A flood from one network keeps its bucket while a stream of other
	// clients, each seen once, churns a full table: the flood stays limited.
	l := New(Config{ResponsesPerSecond: 5, Window: 1, MaxTableSize: 512})
	attacker := netip.MustParseAddr("198.51.100.7")
	burst(l, attacker, KindAnswer, qname, t0, 5)
	for i := range 20000 {
		ip := netip.AddrFrom4([4]byte{10 + byte(i>>16), byte(i >> 8), byte(i), 1})
		l.Check(ip, KindAnswer, qname, t0)
		if a := l.Check(attacker, KindAnswer, qname, t0); a != Drop {
			t.Fatalf("after %d other clients the flood got %v, want Drop", i+1, a)
		}
	}
}

func TestVictim(t *testing.T) {
	// The clock hand takes the first bucket that is full again (idle for a
	// window) or unused since it last passed, clearing use bits on its way.
	const now = 100
	const (
		limited = now + 5 // still in debt
		idle    = now     // full again
	)
	tests := []struct {
		name  string
		tat   []int64
		ref   []bool
		hand  int
		want  int
		after []bool // use bits after the sweep
	}{
		{"idle first", []int64{limited, idle, limited}, []bool{true, true, true}, 0, 1, []bool{false, true, true}},
		{"unused first", []int64{limited, limited, idle}, []bool{true, false, true}, 0, 1, []bool{false, false, true}},
		{"from the hand", []int64{idle, limited, limited}, []bool{true, true, false}, 1, 2, []bool{true, false, false}},
		{"all busy: one turn", []int64{limited, limited, limited}, []bool{true, true, true}, 1, 1, []bool{false, false, false}},
		{"wraps", []int64{idle, limited, limited}, []bool{true, true, true}, 1, 0, []bool{true, false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &shard{hand: tt.hand}
			for i := range tt.tat {
				s.ents = append(s.ents, entry{tat: tt.tat[i], ref: tt.ref[i]})
			}
			if got := s.victim(now); got != tt.want {
				t.Errorf("victim = %d, want %d", got, tt.want)
			}
			for i, e := range s.ents {
				if e.ref != tt.after[i] {
					t.Errorf("bucket %d: ref %v, want %v", i, e.ref, tt.after[i])
				}
			}
			if wantHand := (tt.want + 1) % len(tt.tat); s.hand != wantHand {
				t.Errorf("hand %d, want %d", s.hand, wantHand)
			}
		})
	}
}

func TestSmallTable(t *testing.T) {
	// MaxTableSize 1: one shard of one bucket; a new network takes it.
	l := New(Config{ResponsesPerSecond: 1, Window: 1, MaxTableSize: 1})
	if len(l.shards) != 1 || l.shardCap != 1 {
		t.Fatalf("MaxTableSize 1: %d shards of %d", len(l.shards), l.shardCap)
	}
	a := netip.MustParseAddr("192.0.2.1")
	b := netip.MustParseAddr("198.51.100.1")
	if got := burst(l, a, KindAnswer, qname, t0, 2); fmt.Sprint(got) != fmt.Sprint([]Action{Send, Drop}) {
		t.Fatalf("a: %v", got)
	}
	if got := l.Check(b, KindAnswer, qname, t0); got != Send {
		t.Fatalf("b: %v, want Send", got)
	}
	if n := l.size(); n != 1 {
		t.Fatalf("%d buckets, want 1", n)
	}
}

func TestConcurrent(t *testing.T) {
	// Many goroutines at one instant: the shared bucket sends exactly its
	// depth, whatever the interleaving; each private one too.
	const (
		workers = 16
		each    = 2000
		rate    = 50
		window  = 2
	)
	l := New(Config{ResponsesPerSecond: rate, Window: window, Slip: 2, MaxTableSize: 1 << 16})
	var shared, private atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			own := netip.AddrFrom4([4]byte{10, 0, byte(w), 1})
			for i := range each {
				if l.Check(client, KindAnswer, qname, t0) == Send {
					shared.Add(1)
				}
				if l.Check(own, KindNoData, fmt.Sprint("n", i%4, ".example."), t0) == Send {
					private.Add(1)
				}
			}
			_, _ = l.Stats()
		})
	}
	wg.Wait()
	if got := shared.Load(); got != rate*window {
		t.Errorf("shared bucket sent %d, want %d", got, rate*window)
	}
	if got := private.Load(); got != workers*4*rate*window {
		t.Errorf("private buckets sent %d, want %d", got, workers*4*rate*window)
	}
	d, s := l.Stats()
	limited := uint64(2*workers*each) - uint64(shared.Load()+private.Load())
	if d+s != limited || s != limited/2 {
		t.Errorf("Stats() = %d, %d; want %d in all, half slipped", d, s, limited)
	}
}

func TestStrings(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{KindAnswer.String(), "answer"},
		{KindNXDomain.String(), "nxdomain"},
		{KindNoData.String(), "nodata"},
		{KindReferral.String(), "referral"},
		{KindError.String(), "error"},
		{Send.String(), "send"},
		{Drop.String(), "drop"},
		{Slip.String(), "slip"},
		{Action(9).String(), "unknown"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestCheckAllocs(t *testing.T) {
	l := New(Config{ResponsesPerSecond: 100, Slip: 2})
	ip6 := netip.MustParseAddr("2001:db8::1")
	l.Check(ip6, KindAnswer, qname, t0)
	now := t0
	allocs := testing.AllocsPerRun(1000, func() {
		now = now.Add(time.Millisecond)
		l.Check(ip6, KindAnswer, qname, now)
		l.Check(ip6, KindAnswer, qname, now) // over the rate: Drop or Slip
	})
	if allocs != 0 {
		t.Errorf("Check on an existing bucket: %v allocations, want 0", allocs)
	}
}

// BenchmarkCheck is the hot path: an existing bucket, under the rate.
func BenchmarkCheck(b *testing.B) {
	l := New(Config{ResponsesPerSecond: 1000000, Slip: 2})
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Microsecond)
		l.Check(client, KindAnswer, qname, now)
	}
}

// BenchmarkCheckLimited is a flood: an existing bucket, always over the rate.
func BenchmarkCheckLimited(b *testing.B) {
	l := New(Config{ResponsesPerSecond: 1, Slip: 2})
	b.ReportAllocs()
	for b.Loop() {
		l.Check(client, KindAnswer, qname, t0)
	}
}

// BenchmarkCheckParallel is several UDP readers, each with its own clients
// (256 networks × 4 names each), buckets all existing after the first pass.
func BenchmarkCheckParallel(b *testing.B) {
	l := New(Config{ResponsesPerSecond: 1000, Slip: 2})
	names := []string{"a.example.", "b.example.", "c.example.", "d.example."}
	var worker atomic.Uint32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := byte(worker.Add(1))
		i := 0
		for pb.Next() {
			ip := netip.AddrFrom4([4]byte{10, w, byte(i >> 2), 1})
			l.Check(ip, KindAnswer, names[i&3], t0.Add(time.Duration(i)*time.Microsecond))
			i++
		}
	})
}

// BenchmarkCheckParallelShared is several readers answering one network:
// all on one shard lock.
func BenchmarkCheckParallelShared(b *testing.B) {
	l := New(Config{ResponsesPerSecond: 1000, Slip: 2})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Check(client, KindAnswer, qname, t0)
		}
	})
}

// BenchmarkCheckChurn is a spoofed-source flood: every response from a new
// network, in a full table, so each Check evicts a bucket.
func BenchmarkCheckChurn(b *testing.B) {
	l := New(Config{ResponsesPerSecond: 10, MaxTableSize: 10000})
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		ip := netip.AddrFrom4([4]byte{byte(i >> 24), byte(i >> 16), byte(i >> 8), 1})
		l.Check(ip, KindAnswer, qname, t0)
		i += 256
	}
}
