package store_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
)

// sentinelProc is one redis-server process of TestSentinel: a data node or
// a Sentinel.
type sentinelProc struct {
	name   string
	addr   string // 127.0.0.1:port
	port   int
	log    string // its log file
	cmd    *exec.Cmd
	exited chan struct{}
}

// kill kills the process (SIGKILL: a crash) and waits for it to exit.
func (p *sentinelProc) kill() {
	p.cmd.Process.Kill()
	<-p.exited
}

// startSentinelProc starts redis-server on a free loopback port in a new
// temporary directory, with the arguments args returns for that port and
// directory, and waits until it answers PING. It is killed at t's cleanup.
func startSentinelProc(t *testing.T, bin, name string, args func(port int, dir string) []string) *sentinelProc {
	t.Helper()
	dir := t.TempDir()
	for attempt := 0; attempt < 5; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		p := &sentinelProc{
			name: name, addr: "127.0.0.1:" + strconv.Itoa(port), port: port,
			log: filepath.Join(dir, "redis.log"), exited: make(chan struct{}),
		}
		p.cmd = exec.Command(bin, args(port, dir)...)
		p.cmd.Dir = dir
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { p.cmd.Wait(); close(p.exited) }()
		t.Cleanup(p.kill)
		c := redis.NewClient(&redis.Options{Addr: p.addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) && !isClosed(p.exited) {
			if c.Ping(bg).Err() == nil {
				c.Close()
				return p
			}
			time.Sleep(20 * time.Millisecond) // poll with a deadline: no readiness hook
		}
		c.Close()
		log, _ := os.ReadFile(p.log)
		t.Logf("%s on %s did not start (attempt %d): %s", name, p.addr, attempt+1, log)
		p.kill()
	}
	t.Fatalf("could not start %s", name)
	return nil
}

// sentinelWait polls cond every 20ms until it returns nil, and fails the
// test with cond's last error after d.
func sentinelWait(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v: %v", what, d, err)
		}
		time.Sleep(20 * time.Millisecond) // poll with a deadline: Redis has no hook for these
	}
}

// TestSentinel runs the store on a Sentinel-managed primary with one
// replica and three Sentinels, kills the primary, and checks that the same
// Store follows the failover: it writes to the promoted replica and finds
// the data written before the crash there.
func TestSentinel(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Redis Sentinels")
	}
	t.Parallel()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server not installed (make test installs it)")
	}
	const master = "mymaster"
	ctx, cancel := context.WithTimeout(bg, 60*time.Second)
	defer cancel()

	data := func(extra ...string) func(int, string) []string {
		return func(port int, dir string) []string {
			return append([]string{
				"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir,
				"--appendonly", "no", "--save", "", "--protected-mode", "no",
				"--repl-diskless-sync-delay", "0", // the default 5s delays the first sync
				"--loglevel", "notice", "--logfile", filepath.Join(dir, "redis.log"),
			}, extra...)
		}
	}
	primary := startSentinelProc(t, bin, "primary", data())
	replica := startSentinelProc(t, bin, "replica", data("--replicaof", "127.0.0.1", strconv.Itoa(primary.port)))
	procs := []*sentinelProc{primary, replica}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, p := range procs {
			log, _ := os.ReadFile(p.log)
			t.Logf("--- %s (%s) log:\n%s", p.name, p.addr, log)
		}
	})

	pc := redis.NewClient(&redis.Options{Addr: primary.addr, MaxRetries: -1})
	t.Cleanup(func() { pc.Close() })
	sentinelWait(t, 10*time.Second, "replica in sync", func() error {
		info, err := pc.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "connected_slaves:1\r\n") || !strings.Contains(info, "state=online") {
			return fmt.Errorf("primary replication info: %q", info)
		}
		return nil
	})

	// Started after the replica is in sync, so each Sentinel's first INFO
	// of the primary lists the replica.
	var sentinels []*redis.SentinelClient
	var addrs []string
	for i := 0; i < 3; i++ {
		s := startSentinelProc(t, bin, fmt.Sprintf("sentinel%d", i+1), func(port int, dir string) []string {
			conf := filepath.Join(dir, "sentinel.conf") // Sentinel rewrites it: must be writable
			text := fmt.Sprintf(`port %d
bind 127.0.0.1
dir %s
logfile %s
sentinel monitor %s 127.0.0.1 %d 2
sentinel down-after-milliseconds %s 1000
sentinel failover-timeout %s 5000
`, port, dir, filepath.Join(dir, "redis.log"), master, primary.port, master, master)
			if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			return []string{conf, "--sentinel"}
		})
		procs = append(procs, s)
		addrs = append(addrs, s.addr)
		sc := redis.NewSentinelClient(&redis.Options{Addr: s.addr, MaxRetries: -1})
		t.Cleanup(func() { sc.Close() })
		sentinels = append(sentinels, sc)
	}
	// Each Sentinel knows the primary, the replica and the two other
	// Sentinels (through hello messages, every 2s): only then can they agree
	// on a failover.
	for i, sc := range sentinels {
		sentinelWait(t, 15*time.Second, fmt.Sprintf("sentinel%d ready", i+1), func() error {
			addr, err := sc.GetMasterAddrByName(ctx, master).Result()
			if err != nil {
				return err
			}
			if got := net.JoinHostPort(addr[0], addr[1]); got != primary.addr {
				return fmt.Errorf("master at %s, want %s", got, primary.addr)
			}
			m, err := sc.Master(ctx, master).Result()
			if err != nil {
				return err
			}
			if m["num-slaves"] != "1" || m["num-other-sentinels"] != "2" {
				return fmt.Errorf("SENTINEL MASTER: %s replicas, %s other sentinels", m["num-slaves"], m["num-other-sentinels"])
			}
			return nil
		})
	}

	url := "redis-sentinel://" + strings.Join(addrs, ",") + "/0?master=" + master
	s, err := store.Open(ctx, url, store.Options{NS: []string{"ns1.fwd.test"}})
	if err != nil {
		t.Fatalf("Open(%s): %v", url, err)
	}
	t.Cleanup(func() { s.Close() })
	const zone = "sentinel.test"
	if _, err := s.CreateAccount(ctx, "acme", store.RoleCustomer, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateZone(ctx, zone, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddRecord(ctx, zone, record.Record{Name: "www", Type: "A", TTL: 300, Data: "192.0.2.1"}); err != nil {
		t.Fatal(err)
	}
	before := mustData(t, s, zone)
	if got, want := brief(before.Records), []string{"@ NS ns1.fwd.test.", "www A 192.0.2.1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("records %q, want %q", got, want)
	}
	// The writes went to the primary, and the replica has them.
	if n, err := pc.HLen(ctx, "mx:r:{"+zone+"}").Result(); err != nil || n != 2 {
		t.Fatalf("primary holds %d records of %s (%v), want 2", n, zone, err)
	}
	if n, err := pc.Wait(ctx, 1, time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT 1 1000 on the primary: %d replicas, %v", n, err)
	}

	primary.kill()
	killed := time.Now()

	// Until the Sentinels promote the replica, writes fail as unavailable
	// (go-redis gives up after its dial and command retries, well within
	// the second before a Sentinel even sees the primary down).
	want := []string{"@ NS ns1.fwd.test.", "after A 192.0.2.2", "www A 192.0.2.1"}
	actx, acancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = s.AddRecord(actx, zone, record.Record{Name: "during", Type: "A", TTL: 300, Data: "192.0.2.3"})
	acancel()
	switch {
	case err == nil: // only the replica is left: it must have been promoted already
		t.Logf("write %v after the kill succeeded", time.Since(killed).Round(time.Millisecond))
		want = []string{"@ NS ns1.fwd.test.", "after A 192.0.2.2", "during A 192.0.2.3", "www A 192.0.2.1"}
	case errors.Is(err, store.ErrUnavailable):
		t.Logf("write %v after the kill: %v", time.Since(killed).Round(time.Millisecond), err)
	default:
		t.Fatalf("write with the primary down: %v", err)
	}

	// Sentinels notice the crash after down-after-milliseconds and promote
	// the replica. Should they fail to elect a leader (a split vote retries
	// only after 2*failover-timeout), force the failover.
	forced := false
	sentinelWait(t, 20*time.Second, "failover to the replica", func() error {
		var last error
		for _, sc := range sentinels {
			addr, err := sc.GetMasterAddrByName(ctx, master).Result()
			if err != nil {
				last = err
				continue
			}
			got := net.JoinHostPort(addr[0], addr[1])
			if got == replica.addr {
				return nil
			}
			last = fmt.Errorf("master still at %s", got)
		}
		if !forced && time.Since(killed) > 8*time.Second {
			for _, sc := range sentinels {
				if err := sc.Failover(ctx, master).Err(); err == nil {
					forced = true
					t.Logf("no automatic failover after %v: forced one", time.Since(killed).Round(time.Millisecond))
					break
				}
			}
		}
		return last
	})
	t.Logf("failover after %v", time.Since(killed).Round(time.Millisecond))

	// The same Store writes again within a deadline; until it finds the new
	// primary it reports the store unavailable.
	var unavailable int
	deadline := time.Now().Add(15 * time.Second)
	for {
		actx, acancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := s.Change(actx, zone, store.Change{Ops: []store.Op{
			{Kind: store.OpAdd, Record: record.Record{Name: "after", Type: "A", TTL: 300, Data: "192.0.2.2"}},
		}})
		acancel()
		if err == nil {
			break
		}
		if errors.Is(err, store.ErrExists) && unavailable > 0 {
			// An earlier attempt wrote but its reply was lost.
			t.Logf("write landed on an attempt reported as failed: %v", err)
			break
		}
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("write after failover: %v", err)
		}
		unavailable++
		if time.Now().After(deadline) {
			t.Fatalf("no write after failover within 15s (%d attempts): %v", unavailable, err)
		}
		time.Sleep(50 * time.Millisecond) // retry with a deadline, as a caller would
	}
	t.Logf("writes again %v after the kill, after %d ErrUnavailable", time.Since(killed).Round(time.Millisecond), unavailable)

	after := mustData(t, s, zone)
	if got := brief(after.Records); !reflect.DeepEqual(got, want) {
		t.Fatalf("records after failover %q, want %q", got, want)
	}
	if after.Version != before.Version+uint64(len(want)-len(before.Records)) {
		t.Fatalf("version %d after failover, %d before", after.Version, before.Version)
	}
	// It was the promoted replica that took the write.
	rc := redis.NewClient(&redis.Options{Addr: replica.addr})
	t.Cleanup(func() { rc.Close() })
	if role, err := rc.Do(ctx, "ROLE").Slice(); err != nil || len(role) == 0 || role[0] != "master" {
		t.Fatalf("replica's ROLE: %v, %v", role, err)
	}
	if n, err := rc.HLen(ctx, "mx:r:{"+zone+"}").Result(); err != nil || n != int64(len(want)) {
		t.Fatalf("promoted replica holds %d records of %s (%v), want %d", n, zone, err, len(want))
	}
}
