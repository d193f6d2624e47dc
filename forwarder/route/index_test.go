package route

import (
	"context"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
	"github.com/mxport/mxport/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// zd builds a zone's data from "OWNER TYPE DATA" lines.
func zd(name string, version uint64, lines ...string) store.ZoneData {
	z := store.ZoneData{Zone: store.Zone{Name: name, Version: version, Gen: "g1"}}
	for i, l := range lines {
		f := strings.SplitN(l, " ", 3)
		z.Records = append(z.Records, record.Record{ID: string(rune('a' + i)), Name: f[0], Type: f[1], TTL: 300, Data: f[2]})
	}
	return z
}

func testZones() []store.ZoneData {
	return []store.ZoneData{
		zd("example.com", 1,
			"@ MX 20 backup.example.net",
			"@ MX 10 mail.example.com:2525",
			"mail A 192.0.2.10",
			"mail AAAA 2001:db8::10"),
		zd("plain.test", 1, "@ MX 10 mx.plain.test", "mx A 192.0.2.20"),
		zd("sub.example.com", 1, "@ A 192.0.2.30"), // hosted, not forwarded, inside example.com
	}
}

func TestLookup(t *testing.T) {
	ix := NewIndex()
	if z, d := ix.Lookup("example.com"); d != Unknown || z != "" {
		t.Fatalf("before load: %q %v, want Unknown", z, d)
	}
	if ix.Loaded() {
		t.Fatal("Loaded before Load")
	}
	ix.Load(testZones())
	if !ix.Loaded() {
		t.Fatal("not Loaded after Load")
	}
	for _, c := range []struct {
		domain string
		zone   string
		d      Decision
	}{
		{"example.com", "example.com", Accept},
		{"EXAMPLE.Com.", "example.com", Accept},
		{" example.com ", "example.com", Accept},
		{"plain.test", "", Refuse},             // hosted, not forwarded
		{"sub.example.com", "", Refuse},        // a hosted zone of its own, not forwarded
		{"www.example.com", "", Refuse},        // below a forwarded zone
		{"mail.example.com", "", Refuse},       // below a forwarded zone
		{"other.test", "", Refuse},             // not hosted
		{"com", "", Refuse},                    // parent of a hosted zone
		{"", "", Refuse},                       // empty
		{".", "", Refuse},                      // root
		{"[192.0.2.1]", "", Refuse},            // address literal
		{"exämple.com", "", Refuse},            // not an A-label
		{"example.com.evil.test", "", Refuse},  // suffix trick
		{"user@example.com", "", Refuse},       // not a domain
		{"example.com:2525", "", Refuse},       // not a domain
		{"xn--exmple-cua.com", "", Refuse},     // unknown A-label
		{"example.com..", "", Refuse},          // malformed
		{"EXAMPLE.COM", "example.com", Accept}, // upper case
	} {
		z, d := ix.Lookup(c.domain)
		if z != c.zone || d != c.d {
			t.Errorf("Lookup(%q) = %q, %v; want %q, %v", c.domain, z, d, c.zone, c.d)
		}
	}
}

func TestRoute(t *testing.T) {
	ix := NewIndex()
	ix.Load(testZones())
	want := []record.Target{
		{Pref: 10, Host: "mail.example.com", Port: 2525},
		{Pref: 20, Host: "backup.example.net", Port: 25},
	}
	got := ix.Route("Example.COM.")
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Route = %v, want %v", got, want)
	}
	got[0].Host = "changed"
	if again := ix.Route("example.com"); !reflect.DeepEqual(again, want) {
		t.Fatalf("Route shares its slice: %v", again)
	}
	for _, z := range []string{"plain.test", "sub.example.com", "other.test", ""} {
		if r := ix.Route(z); r != nil {
			t.Errorf("Route(%q) = %v, want nil", z, r)
		}
	}
}

func TestUpdateDeleteChanged(t *testing.T) {
	ix := NewIndex()
	ix.Load(testZones())
	ch := ix.Changed("EXAMPLE.com")
	other := ix.Changed("plain.test")

	// An edit of example.com: the route moves to a new target.
	ix.Update(zd("example.com", 2, "@ MX 10 new.example.net:587"))
	select {
	case <-ch:
	default:
		t.Fatal("Changed not closed by an update")
	}
	select {
	case <-other:
		t.Fatal("another zone's channel closed")
	default:
	}
	if got := ix.Route("example.com"); !reflect.DeepEqual(got, []record.Target{{Pref: 10, Host: "new.example.net", Port: 587}}) {
		t.Fatalf("Route after update = %v", got)
	}

	// Unforwarded: the port goes away.
	ch = ix.Changed("example.com")
	ix.Update(zd("example.com", 3, "@ MX 10 new.example.net"))
	<-ch
	if _, d := ix.Lookup("example.com"); d != Refuse {
		t.Fatalf("unforwarded zone: %v, want Refuse", d)
	}
	if r := ix.Route("example.com"); r != nil {
		t.Fatalf("unforwarded zone's route %v", r)
	}

	// Deleted.
	ch = ix.Changed("plain.test")
	if ch != other {
		t.Fatal("Changed gave a new channel before any change")
	}
	ix.Delete("plain.test.")
	<-ch
	if _, d := ix.Lookup("plain.test"); d != Refuse {
		t.Fatal("deleted zone not refused")
	}
	ix.Delete("never.test") // no-op

	// A reload wakes only what differs.
	same := ix.Changed("sub.example.com")
	gone := ix.Changed("example.com")
	ix.Load([]store.ZoneData{zd("sub.example.com", 1, "@ A 192.0.2.30")})
	<-gone
	select {
	case <-same:
		t.Fatal("an unchanged zone's channel closed at reload")
	default:
	}
}

func TestConcurrent(t *testing.T) {
	ix := NewIndex()
	ix.Load(testZones())
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				ix.Lookup("example.com")
				ix.Route("example.com")
				ix.hostAddrs("mail.example.com")
				select {
				case <-ix.Changed("example.com"):
				default:
				}
			}
		}()
	}
	for v := uint64(2); v < 200; v++ {
		if v%2 == 0 {
			ix.Update(zd("example.com", v, "@ MX 10 mail.example.com:2525", "mail A 192.0.2.10"))
		} else {
			ix.Update(zd("example.com", v, "@ MX 10 mail.example.com"))
		}
		if v%50 == 0 {
			ix.Load(testZones())
		}
	}
	cancel()
	wg.Wait()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFollow drives the index from a real Redis through store.Follow.
func TestFollow(t *testing.T) {
	st := storetest.New(t)
	ctx := context.Background()
	if _, err := st.EnsureAccount(ctx, "acme", store.RoleCustomer); err != nil {
		t.Fatal(err)
	}
	for _, z := range []string{"example.com", "plain.test"} {
		if _, err := st.CreateZone(ctx, z, "acme"); err != nil {
			t.Fatal(err)
		}
	}
	mx, err := st.AddRecord(ctx, "example.com", record.Record{Name: "@", Type: "MX", TTL: 300, Data: "10 home.example.com:2525"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddRecord(ctx, "plain.test", record.Record{Name: "@", Type: "MX", TTL: 300, Data: "10 mx.plain.test"}); err != nil {
		t.Fatal(err)
	}

	ix := NewIndex()
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); st.Follow(fctx, ix, store.FollowOptions{}) }()
	t.Cleanup(func() { cancel(); <-done })

	waitFor(t, "first load", ix.Loaded)
	if z, d := ix.Lookup("example.com"); d != Accept || z != "example.com" {
		t.Fatalf("forwarded zone: %q %v", z, d)
	}
	if _, d := ix.Lookup("plain.test"); d != Refuse {
		t.Fatalf("plain zone: %v", d)
	}

	// The customer moves the target: the next route read sees it.
	ch := ix.Changed("example.com")
	if _, err := st.UpdateRecord(ctx, "example.com", mx.ID, record.Record{Name: "@", Type: "MX", TTL: 300, Data: "10 new.example.org:587"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("Changed not closed after a store edit")
	}
	if got := ix.Route("example.com"); !reflect.DeepEqual(got, []record.Target{{Pref: 10, Host: "new.example.org", Port: 587}}) {
		t.Fatalf("route after edit: %v", got)
	}

	// Forwarding switched on for plain.test, off for example.com.
	if _, err := st.AddRecord(ctx, "plain.test", record.Record{Name: "@", Type: "MX", TTL: 300, Data: "5 home.plain.test:2525"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "plain.test forwarded", func() bool { _, d := ix.Lookup("plain.test"); return d == Accept })
	want := []record.Target{{Pref: 5, Host: "home.plain.test", Port: 2525}, {Pref: 10, Host: "mx.plain.test", Port: 25}}
	if got := ix.Route("plain.test"); !reflect.DeepEqual(got, want) {
		t.Fatalf("plain.test route %v, want %v", got, want)
	}
	if _, err := st.UpdateRecord(ctx, "example.com", mx.ID, record.Record{Name: "@", Type: "MX", TTL: 300, Data: "10 new.example.org"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "example.com unforwarded", func() bool { _, d := ix.Lookup("example.com"); return d == Refuse })
	if r := ix.Route("example.com"); r != nil {
		t.Fatalf("unforwarded route %v", r)
	}

	// Deleted zone.
	if err := st.DeleteZone(ctx, "plain.test"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "plain.test deleted", func() bool { _, d := ix.Lookup("plain.test"); return d == Refuse })
	if r := ix.Route("plain.test"); r != nil {
		t.Fatalf("deleted zone's route %v", r)
	}
}
