// Package batch hands values from a channel to a writer in batches, so that
// a stream of small store writes (delivery log, queue mirror) costs one round
// trip per batch rather than one per value.
package batch

import "context"

// Drain calls write with the values received from ch, in order, at most max
// at a time: whatever has arrived while the previous write ran goes into the
// next. It returns when ctx ends, after writing what ch still holds (write
// should then use its own short deadline, not ctx).
func Drain[T any](ctx context.Context, ch <-chan T, max int, write func([]T)) {
	buf := make([]T, 0, max)
	for {
		select {
		case v := <-ch:
			buf = append(buf[:0], v)
		case <-ctx.Done():
			for {
				buf = fill(ch, buf[:0], max)
				if len(buf) == 0 {
					return
				}
				write(buf)
			}
		}
		write(fill(ch, buf, max))
	}
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
