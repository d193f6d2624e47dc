package batch_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/mxport/mxport/forwarder/batch"
)

// TestDrain: values arrive in order, in batches of at most max, and what is
// queued when ctx ends is still written.
func TestDrain(t *testing.T) {
	ch := make(chan int, 100)
	for i := range 25 {
		ch <- i
	}
	ctx, cancel := context.WithCancel(context.Background())
	var got []int
	var sizes []int
	done := make(chan struct{})
	go func() {
		defer close(done)
		batch.Drain(ctx, ch, 10, time.Millisecond, func(b []int) {
			sizes = append(sizes, len(b))
			got = append(got, b...)
			if len(got) == 25 {
				for i := 25; i < 40; i++ {
					ch <- i // queued when ctx ends
				}
				cancel()
			}
		})
	}()
	<-done
	want := make([]int, 40)
	for i := range want {
		want[i] = i
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want 0..39 in order", got)
	}
	for _, n := range sizes {
		if n < 1 || n > 10 {
			t.Fatalf("batch sizes %v: want 1..10 each", sizes)
		}
	}
	if len(sizes) > 6 {
		t.Fatalf("batch sizes %v: 40 queued values should take few batches", sizes)
	}
}

// TestDrainLinger: values that arrive one by one while a batch lingers go
// into that batch, which is written as soon as it holds max.
func TestDrainLinger(t *testing.T) {
	ch := make(chan int) // unbuffered: each send waits for Drain
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	batches := make(chan []int, 10)
	go batch.Drain(ctx, ch, 3, time.Hour, func(b []int) { batches <- slices.Clone(b) })
	for i := range 6 {
		ch <- i
	}
	for _, want := range [][]int{{0, 1, 2}, {3, 4, 5}} {
		if got := <-batches; !slices.Equal(got, want) {
			t.Fatalf("batch %v, want %v: a lingering batch takes the values that follow", got, want)
		}
	}
}

// TestDrainLingerCancel: a batch still lingering when ctx ends is written
// at once, not after the linger.
func TestDrainLingerCancel(t *testing.T) {
	ch := make(chan int)
	ctx, cancel := context.WithCancel(context.Background())
	var got []int
	done := make(chan struct{})
	go func() {
		defer close(done)
		batch.Drain(ctx, ch, 10, time.Hour, func(b []int) { got = append(got, b...) })
	}()
	ch <- 7
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Drain still lingering 10s after its context ended")
	}
	if !slices.Equal(got, []int{7}) {
		t.Fatalf("wrote %v, want [7]", got)
	}
}
