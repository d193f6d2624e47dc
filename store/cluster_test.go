package store_test

import (
	"context"
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
	"github.com/mxport/mxport/store/storetest"
)

// startCluster starts n redis-server processes in cluster mode, joins them
// into one cluster of masters with redis-cli --cluster create, waits for
// cluster_state:ok and returns the nodes' addresses.
func startCluster(t *testing.T, n int) []string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server not installed (make test installs it)")
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatal("redis-cli not installed (make test installs it)")
	}
	var addrs []string
	for i := 0; i < n; i++ {
		addrs = append(addrs, startClusterNode(t, bin))
	}
	args := append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		deadline := time.Now().Add(30 * time.Second)
		for {
			info, err := c.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				c.Close()
				t.Fatalf("cluster node %s not ok after 30s: %v %s", a, err, info)
			}
			time.Sleep(50 * time.Millisecond) // poll with a deadline: no readiness hook
		}
		c.Close()
	}
	return addrs
}

// startClusterNode starts one cluster-enabled redis-server on a port whose
// cluster bus port (+10000) is free too.
func startClusterNode(t *testing.T, bin string) string {
	t.Helper()
	dir := t.TempDir()
	for attempt := 0; attempt < 20; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if port+10000 > 65535 {
			continue
		}
		if bl, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+10000)); err != nil {
			continue
		} else {
			bl.Close()
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir,
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000",
			"--appendonly", "no", "--save", "", "--protected-mode", "no", "--loglevel", "warning",
			"--logfile", filepath.Join(dir, "redis.log"))
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-exited
		})
		c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
		deadline := time.Now().Add(10 * time.Second)
		for {
			if c.Ping(context.Background()).Err() == nil {
				c.Close()
				return addr
			}
			select {
			case <-exited:
				log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
				t.Logf("cluster node on %s exited: %s", addr, log)
			default:
			}
			if time.Now().After(deadline) || isClosed(exited) {
				break
			}
			time.Sleep(20 * time.Millisecond) // poll with a deadline: no readiness hook
		}
		c.Close()
		cmd.Process.Kill()
	}
	t.Fatal("could not start a cluster node")
	return ""
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// TestCluster runs the store on a three-node Redis Cluster: every zone
// script touches keys of one slot only (the {zone} hash tag), and events
// reach followers connected to any node.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	t.Parallel()
	addrs := startCluster(t, 3)
	url := "redis-cluster://" + strings.Join(addrs, ",")
	s, err := store.Open(bg, url, storetest.Options)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	withAccount(t, s)

	r := newRecorder()
	follow(t, s, r)
	r.waitFor(t, 10*time.Second, "the first snapshot", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.loads == 1
	})

	// Enough zones to land on every node.
	const zones = 20
	nodes := map[string]bool{}
	probe := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer probe.Close()
	for i := 0; i < zones; i++ {
		name := fmt.Sprintf("z%d.cluster.test", i)
		mustZone(t, s, name)
		mustAdd(t, s, name, "@", "MX", 300, "10 home.example.net:2525")
		mustAdd(t, s, name, "www", "A", 300, "192.0.2.1")
		slot := probe.ClusterKeySlot(bg, "{"+name+"}").Val()
		nodes[nodeOf(t, probe, slot)] = true
	}
	if len(nodes) < 2 {
		t.Fatalf("all %d zones landed on one node", zones)
	}

	zd := mustData(t, s, "z0.cluster.test")
	if got, want := brief(zd.Records), []string{"@ MX 10 home.example.net.:2525", "@ NS ns1.fwd.test.", "@ NS ns2.fwd.test.", "www A 192.0.2.1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("records %q, want %q", got, want)
	}
	if zd.Version != 3 || len(zd.Route()) != 1 {
		t.Fatalf("zone %+v route %+v", zd.Zone, zd.Route())
	}
	// A multi-op change with a refused op writes nothing, on a cluster too.
	if _, err := s.Change(bg, "z0.cluster.test", store.Change{Ops: []store.Op{
		{Kind: store.OpAdd, Record: record.Record{Name: "new", Type: "A", TTL: 300, Data: "192.0.2.2"}},
		{Kind: store.OpAdd, Record: record.Record{Name: "www", Type: "CNAME", TTL: 300, Data: "x.example.net."}},
	}}); record.Field(err) != "type" {
		t.Fatalf("CNAME conflict on a cluster: %v", err)
	}
	if after := mustData(t, s, "z0.cluster.test"); !reflect.DeepEqual(after, zd) {
		t.Fatalf("refused change wrote")
	}

	all, err := s.LoadAll(bg)
	if err != nil || len(all) != zones {
		t.Fatalf("LoadAll: %d zones, %v", len(all), err)
	}
	names, err := s.Zones(bg, "acme")
	if err != nil || len(names) != zones {
		t.Fatalf("Zones(acme) = %q, %v", names, err)
	}

	// The follower sees every change, wherever the zone lives.
	r.waitFor(t, 20*time.Second, "the follower in sync", func() bool { return inSync(t, s, r) && len(r.state()) == zones })
	if err := s.DeleteZone(bg, "z1.cluster.test"); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, 10*time.Second, "the deletion", func() bool { _, ok := r.state()["z1.cluster.test"]; return !ok })
	if _, err := s.ZoneData(bg, "z1.cluster.test"); err == nil {
		t.Fatal("deleted zone still there")
	}
	if _, err := s.CreateTSIGKey(bg, "cluster-key", "", []string{"z2.cluster.test"}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, 10*time.Second, "the TSIG key", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.keys) == 1
	})
	r.waitFor(t, 10*time.Second, "the follower in sync", func() bool { return inSync(t, s, r) && len(r.state()) == zones-1 })
}

// nodeOf returns the address of the master serving slot.
func nodeOf(t *testing.T, c *redis.ClusterClient, slot int64) string {
	t.Helper()
	slots, err := c.ClusterSlots(bg).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		if int64(s.Start) <= slot && slot <= int64(s.End) {
			return s.Nodes[0].Addr
		}
	}
	t.Fatalf("no node serves slot %d", slot)
	return ""
}
