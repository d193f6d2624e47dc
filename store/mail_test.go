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
