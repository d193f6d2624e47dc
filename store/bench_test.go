package store_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
	"github.com/mxport/mxport/store/storetest"
)

// benchRecords are the 20 records of every zone BenchmarkLoadAll seeds: a
// typical small domain with forwarded mail.
func benchRecords(i int) []record.Record {
	ip := fmt.Sprintf("10.%d.%d.", i>>16&255, i>>8&255)
	host := strconv.Itoa(i & 255)
	return []record.Record{
		{Name: "@", Type: "NS", TTL: 3600, Data: "ns1.fwd.test."},
		{Name: "@", Type: "NS", TTL: 3600, Data: "ns2.fwd.test."},
		{Name: "@", Type: "MX", TTL: 3600, Data: "10 home.example.net:2525"},
		{Name: "@", Type: "MX", TTL: 3600, Data: "20 backup.example.net:2526"},
		{Name: "@", Type: "A", TTL: 300, Data: ip + host},
		{Name: "@", Type: "AAAA", TTL: 300, Data: "2001:db8::" + strconv.FormatInt(int64(i&0xffff), 16)},
		{Name: "@", Type: "TXT", TTL: 300, Data: `"v=spf1 mx -all"`},
		{Name: "@", Type: "CAA", TTL: 3600, Data: `0 issue "letsencrypt.org"`},
		{Name: "www", Type: "A", TTL: 300, Data: ip + host},
		{Name: "www", Type: "AAAA", TTL: 300, Data: "2001:db8::1:" + strconv.FormatInt(int64(i&0xffff), 16)},
		{Name: "mail", Type: "A", TTL: 300, Data: ip + "1"},
		{Name: "home", Type: "A", TTL: 60, Data: ip + "2"},
		{Name: "ftp", Type: "CNAME", TTL: 300, Data: "www.example.net."},
		{Name: "blog", Type: "CNAME", TTL: 300, Data: "hosting.example.org."},
		{Name: "_dmarc", Type: "TXT", TTL: 300, Data: `"v=DMARC1; p=quarantine; rua=mailto:dmarc@example.net"`},
		{Name: "default._domainkey", Type: "TXT", TTL: 300, Data: `"v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC7"`},
		{Name: "_imaps._tcp", Type: "SRV", TTL: 300, Data: "0 1 993 mail.example.net."},
		{Name: "_submission._tcp", Type: "SRV", TTL: 300, Data: "0 1 587 mail.example.net."},
		{Name: "vpn", Type: "A", TTL: 300, Data: ip + "3"},
		{Name: "*.dev", Type: "A", TTL: 300, Data: ip + "4"},
	}
}

var (
	seededMu sync.Mutex
	seeded   = map[int]string{} // zones -> URL of a database holding them
)

// seed returns the URL of a database of the shared server holding n zones
// of 20 records, seeding it at first use with ImportZone from 8 goroutines.
func seed(b *testing.B, n int) string {
	seededMu.Lock()
	defer seededMu.Unlock()
	if url, ok := seeded[n]; ok {
		return url
	}
	url := storetest.NewURL(b)
	s, err := store.Open(bg, url, storetest.Options)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	withAccount(b, s)
	start := time.Now()
	soa := s.DefaultSOA("example.com")
	next := make(chan int, 64)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if _, err := s.ImportZone(bg, fmt.Sprintf("zone%07d.example", i), "acme", soa, 0, benchRecords(i), false); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		select {
		case next <- i:
		case err := <-errs:
			b.Fatal(err)
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	b.Logf("seeded %d zones × 20 records in %v", n, time.Since(start).Round(time.Millisecond))
	seeded[n] = url
	return url
}

// rssMiB returns the process's resident set size (VmRSS) in MiB.
func rssMiB(b *testing.B) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb / 1024
		}
	}
	b.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// BenchmarkLoadAll times the snapshot every reader starts from:
// MXPORT_BENCH_ZONES zones (default 1000) of 20 records.
func BenchmarkLoadAll(b *testing.B) {
	n := 1000
	if v := os.Getenv("MXPORT_BENCH_ZONES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("MXPORT_BENCH_ZONES=%q: want a positive number", v)
		}
	}
	url := seed(b, n)
	s, err := store.Open(bg, url, storetest.Options)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	runtime.GC()
	debug.FreeOSMemory() // leave the seeding's garbage out of the RSS figure

	var zones []store.ZoneData
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		zones = nil
		if zones, err = s.LoadAll(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	secs := b.Elapsed().Seconds()
	recs := 0
	for _, z := range zones {
		recs += len(z.Records)
	}
	if len(zones) != n || recs != 20*n {
		b.Fatalf("LoadAll: %d zones, %d records; want %d, %d", len(zones), recs, n, 20*n)
	}
	rss := rssMiB(b)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	runtime.KeepAlive(zones)
	b.ReportMetric(float64(n*b.N)/secs, "zones/s")
	b.ReportMetric(float64(recs*b.N)/secs, "records/s")
	b.ReportMetric(rss, "rss-MiB")
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
}

// BenchmarkEventLatency measures from just before each AddRecord until a
// subscriber holds its event.
func BenchmarkEventLatency(b *testing.B) {
	s := newStore(b)
	z := mustZone(b, s, "latency.test")
	sub, err := s.Subscribe(bg)
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	type arrival struct {
		version uint64
		at      time.Time
	}
	arrivals := make(chan arrival, 1024)
	go func() {
		for ev := range sub.C {
			if ev.Kind == store.EventZone && ev.Zone == "latency.test" && ev.Gen == z.Gen {
				arrivals <- arrival{ev.Version, time.Now()}
			}
		}
		close(arrivals)
	}()

	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		want := z.Version + uint64(i) + 1
		start := time.Now()
		if _, err := s.AddRecord(bg, "latency.test", record.Record{Name: "r" + strconv.Itoa(i), Type: "A", TTL: 300, Data: "192.0.2.1"}); err != nil {
			b.Fatal(err)
		}
		for a := range arrivals {
			if a.version == want {
				lat[i] = a.at.Sub(start)
				break
			}
			if a.version > want {
				b.Fatalf("event for version %d missing (got %d)", want, a.version)
			}
		}
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[min(len(lat)-1, len(lat)*99/100)]), "p99-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
}

// BenchmarkAddRecord measures AddRecord (validation, the zone script, the
// read-back): one writer, parallel writers, and one writer adding every
// record at the same owner (whose cost grows with the owner's records).
func BenchmarkAddRecord(b *testing.B) {
	b.Run("sequential", func(b *testing.B) {
		s := newStore(b)
		mustZone(b, s, "add.test")
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := s.AddRecord(bg, "add.test", record.Record{Name: "r" + strconv.Itoa(i), Type: "A", TTL: 300, Data: "192.0.2.1"}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		s := newStore(b)
		mustZone(b, s, "add.test")
		var seq sync.Mutex
		n := 0
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				seq.Lock()
				n++
				i := n
				seq.Unlock()
				if _, err := s.AddRecord(bg, "add.test", record.Record{Name: "r" + strconv.Itoa(i), Type: "A", TTL: 300, Data: "192.0.2.1"}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	// The worst case the limits allow: a write at an owner name holding
	// MaxOwnerRecords records.
	b.Run("full-owner", func(b *testing.B) {
		s := newStore(b)
		mustZone(b, s, "add.test")
		var ops []store.Op
		for i := 0; i < store.MaxOwnerRecords-2; i++ { // 2 apex NS exist
			ops = append(ops, store.Op{Kind: store.OpAdd, Record: record.Record{Name: "@", Type: "TXT", TTL: 300, Data: `"t` + strconv.Itoa(i) + `"`}})
		}
		res, err := s.Change(bg, "add.test", store.Change{Ops: ops})
		if err != nil {
			b.Fatal(err)
		}
		id := res.IDs[0]
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := s.UpdateRecord(bg, "add.test", id, record.Record{Name: "@", Type: "TXT", TTL: 300, Data: `"u` + strconv.Itoa(i) + `"`}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
