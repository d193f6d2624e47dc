// Package batch hands values from a channel to a writer in batches, so that
// a stream of small store writes (delivery log, queue mirror) costs one round
// trip per batch rather than one per value.
package batch

import (
	"context"
	"time"
)

// Drain calls write with the values received from ch, in order, at most max
// at a time. A batch starts with the first value to arrive and takes what
// arrives in the next linger too, or until it holds max: a busy stream then
// costs one write per linger, a quiet one a write per value, each at most
// linger late. Drain returns when ctx ends, after writing what ch still holds
// (write should then use its own short deadline, not ctx).
func Drain[T any](ctx context.Context, ch <-chan T, max int, linger time.Duration, write func([]T)) {
	buf := make([]T, 0, max)
	t := time.NewTimer(linger)
	t.Stop()
	for {
		select {
		case v := <-ch:
			buf = append(buf[:0], v)
			write(collect(ctx, ch, buf, max, t, linger))
		case <-ctx.Done():
			for {
				buf = fill(ch, buf[:0], max)
				if len(buf) == 0 {
					return
				}
				write(buf)
			}
		}
	}
}

// collect appends to buf what ch brings within linger (timed by t), until
// buf holds max values or ctx ends (then only what ch holds at once).
func collect[T any](ctx context.Context, ch <-chan T, buf []T, max int, t *time.Timer, linger time.Duration) []T {
	t.Reset(linger)
	defer t.Stop()
	for len(buf) < max {
		select {
		case v := <-ch:
			buf = append(buf, v)
		case <-t.C:
			return fill(ch, buf, max)
		case <-ctx.Done():
			return fill(ch, buf, max)
		}
	}
	return buf
}

// fill appends to buf what ch holds now, up to max values in buf.
func fill[T any](ch <-chan T, buf []T, max int) []T {
	for len(buf) < max {
		select {
		case v := <-ch:
			buf = append(buf, v)
		default:
			return buf
		}
	}
	return buf
}
