package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mxport/mxport/store"
)

func TestDeliveryLog(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	mustZone(t, s, "mail.test")
	for i := 0; i < store.MaxDeliveries+5; i++ {
		if err := s.LogDelivery(bg, "mail.test", store.Delivery{ID: fmt.Sprint(i), Event: "deferred", Code: 451, Reply: "451 4.3.0 try later"}); err != nil {
			t.Fatal(err)
		}
	}
	ds, err := s.Deliveries(bg, "Mail.Test.", 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 3 || ds[0].ID != fmt.Sprint(store.MaxDeliveries+4) || ds[2].ID != fmt.Sprint(store.MaxDeliveries+2) {
		t.Fatalf("newest three: %+v", ds)
	}
	if ds[0].Time.IsZero() || ds[0].Reply != "451 4.3.0 try later" {
		t.Fatalf("event fields lost: %+v", ds[0])
	}
	all, err := s.Deliveries(bg, "mail.test", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != store.MaxDeliveries || all[len(all)-1].ID != "5" {
		t.Fatalf("log holds %d events, oldest %q; want %d, oldest 5", len(all), all[len(all)-1].ID, store.MaxDeliveries)
	}
	if err := s.DeleteZone(bg, "mail.test"); err != nil {
		t.Fatal(err)
	}
	if ds, _ := s.Deliveries(bg, "mail.test", 0); len(ds) != 0 {
		t.Fatalf("deleting the zone kept %d log events", len(ds))
	}
}

func TestControl(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	ch, err := s.SubscribeControl(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.Control{{Kind: "flush", Zone: "example.com"}, {Kind: "remove", ID: "abc"}, {Kind: "flush"}}
	for _, c := range want {
		if err := s.PublishControl(bg, c); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range want {
		select {
		case got := <-ch:
			if got != w {
				t.Fatalf("got %+v, want %+v", got, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("control %+v not received", w)
		}
	}
	if err := s.PublishControl(bg, store.Control{Kind: "reboot"}); err == nil {
		t.Fatal("unknown control kind accepted")
	}
	cancel()
	for range ch { // closed when ctx ends
	}
}

func TestQueueMirror(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	mustZone(t, s, "q.test")
	now := time.Now().UTC().Truncate(time.Second)
	for i, id := range []string{"b", "a", "c"} {
		it := store.QueueItem{ID: id, Node: "mx1", Zone: "q.test", From: "s@example.org", Rcpts: []string{"u@q.test"},
			Arrived: now.Add(time.Duration(i) * time.Minute), Attempts: i}
		if err := s.MirrorQueued(bg, it); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.MirrorQueued(bg, store.QueueItem{ID: "b", Zone: "q.test", Arrived: now, Attempts: 7, LastReply: "451 busy"}); err != nil {
		t.Fatal(err)
	}
	if err := s.MirrorGone(bg, "q.test", "c"); err != nil {
		t.Fatal(err)
	}
	q, err := s.Queued(bg, "q.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 2 || q[0].ID != "b" || q[0].Attempts != 7 || q[1].ID != "a" {
		t.Fatalf("queue mirror: %+v", q)
	}
}

// TestBatchedWrites: one LogDeliveries call spanning zones keeps each
// zone's order; a bad zone name refuses the whole batch; one Mirror call
// applies its changes in order (queued, updated, gone, queued again).
func TestBatchedWrites(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	mustZone(t, s, "b1.test")
	mustZone(t, s, "b2.test")
	var evs []store.ZoneDelivery
	for i := range 6 {
		evs = append(evs, store.ZoneDelivery{Zone: []string{"b1.test", "b2.test"}[i%2], Delivery: store.Delivery{ID: fmt.Sprint(i), Event: "delivered"}})
	}
	if err := s.LogDeliveries(bg, evs); err != nil {
		t.Fatal(err)
	}
	for zone, want := range map[string][]string{"b1.test": {"4", "2", "0"}, "b2.test": {"5", "3", "1"}} {
		ds, err := s.Deliveries(bg, zone, 0)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range ds {
			got = append(got, d.ID)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s log newest first: %v, want %v", zone, got, want)
		}
	}
	bad := []store.ZoneDelivery{{Zone: "b1.test", Delivery: store.Delivery{ID: "x"}}, {Zone: "bad..zone", Delivery: store.Delivery{ID: "y"}}}
	if err := s.LogDeliveries(bg, bad); err == nil {
		t.Fatal("a batch with a bad zone name was accepted")
	}
	if ds, _ := s.Deliveries(bg, "b1.test", 0); len(ds) != 3 {
		t.Fatalf("a refused batch wrote: %d events", len(ds))
	}

	ops := []store.MirrorOp{
		{Item: store.QueueItem{ID: "m1", Zone: "b1.test", Attempts: 1}},
		{Item: store.QueueItem{ID: "m2", Zone: "b2.test"}},
		{Item: store.QueueItem{ID: "m1", Zone: "b1.test", Attempts: 2}},
		{Item: store.QueueItem{ID: "m2", Zone: "b2.test"}, Gone: true},
		{Item: store.QueueItem{ID: "m3", Zone: "b2.test"}, Gone: true},
		{Item: store.QueueItem{ID: "m3", Zone: "b2.test", Attempts: 3}},
	}
	if err := s.Mirror(bg, ops); err != nil {
		t.Fatal(err)
	}
	q1, err := s.Queued(bg, "b1.test")
	if err != nil {
		t.Fatal(err)
	}
	q2, err := s.Queued(bg, "b2.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(q1) != 1 || q1[0].Attempts != 2 || len(q2) != 1 || q2[0].ID != "m3" || q2[0].Attempts != 3 {
		t.Fatalf("mirror after the batch: %+v %+v", q1, q2)
	}
}
