package batch_test

import (
	"context"
	"slices"
	"testing"

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
		batch.Drain(ctx, ch, 10, func(b []int) {
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
