package queue

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestSlots: at most MaxPerTarget deliveries to a destination at once, a
// waiter whose context ends gives up, and a destination nobody holds or
// waits for is forgotten (the map does not grow with every target ever
// delivered to).
func TestSlots(t *testing.T) {
	q := New(Config{MaxPerTarget: 2})
	ctx := context.Background()
	a := q.acquire(ctx, "192.0.2.1:25")
	b := q.acquire(ctx, "192.0.2.1:25")
	if a == nil || b == nil {
		t.Fatal("two slots of two not given")
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if q.acquire(short, "192.0.2.1:25") != nil {
		t.Fatal("a third slot given with MaxPerTarget 2")
	}

	got := make(chan *slots)
	go func() { got <- q.acquire(ctx, "192.0.2.1:25") }()
	q.release("192.0.2.1:25", a)
	c := <-got
	if c == nil {
		t.Fatal("a released slot was not given to the waiter")
	}
	q.release("192.0.2.1:25", b)
	q.release("192.0.2.1:25", c)

	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dest := "192.0.2." + string(rune('0'+i%10)) + ":25"
			sl := q.acquire(ctx, dest)
			q.release(dest, sl)
		}()
	}
	wg.Wait()
	q.mu.Lock()
	defer q.mu.Unlock()
	if n := len(q.perDest); n != 0 {
		t.Fatalf("%d destinations still held with no delivery under way", n)
	}
}
