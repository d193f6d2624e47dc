package courier

import (
	"bytes"
	"io"
	"sync"
)

// sendData sends a message body in DATA's wire form (RFC 5321 4.5.2: a
// line's leading dot doubled; a bare LF sent as CRLF and a body that does
// not end a line given a CRLF, as net/textproto's DotWriter does) a line at
// a time, where the DotWriter of go-smtp's DATA command goes a byte at a
// time. wire is the connection under the SMTP client, whose buffer is empty
// right after the 354. If dot, the DATA command's writer, is nil, sendData
// ends the data itself, the final ".<CRLF>" in the same write as the body's
// end. Else the body's final CRLF goes through dot, so that closing it ends
// the data with ".<CRLF>" alone; an empty body is left to dot entirely. A
// read error of body is returned as it is.
func sendData(wire, dot io.Writer, body io.Reader) error {
	bp := dataBufs.Get().(*[]byte)
	defer dataBufs.Put(bp)
	in, out := (*bp)[:dataChunk], (*bp)[dataChunk:dataChunk]
	bol := true     // the next byte starts a line
	lastCR := false // the last byte sent (of an unfinished line) is a CR
	for {
		n, rerr := body.Read(in)
		for chunk := in[:n]; len(chunk) > 0; {
			if bol && chunk[0] == '.' {
				out = append(out, '.')
			}
			i := bytes.IndexByte(chunk, '\n')
			if i < 0 {
				out = append(out, chunk...)
				bol, lastCR = false, chunk[len(chunk)-1] == '\r'
				break
			}
			out = append(out, chunk[:i]...)
			if cr := lastCR && i == 0 || i > 0 && chunk[i-1] == '\r'; !cr {
				out = append(out, '\r')
			}
			out = append(out, '\n')
			bol, lastCR = true, false
			chunk = chunk[i+1:]
		}
		// Send all but the last two bytes, which may be the final CRLF.
		if len(out) >= dataChunk {
			if _, err := wire.Write(out[:len(out)-2]); err != nil {
				return err
			}
			out = append(out[:0], out[len(out)-2:]...)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	switch {
	case len(out) == 0 && dot != nil:
		return nil
	case len(out) == 0:
		out = append(out, '\r', '\n') // an empty body goes as one empty line, as with DotWriter
	case lastCR:
		out = append(out, '\n')
	case !bol:
		out = append(out, '\r', '\n')
	}
	if dot == nil {
		_, err := wire.Write(append(out, ".\r\n"...))
		return err
	}
	if _, err := wire.Write(out[:len(out)-2]); err != nil {
		return err
	}
	_, err := dot.Write(out[len(out)-2:])
	return err
}

// dataChunk is how much sendData reads at a time. Its output buffer, the
// rest of a pooled buffer, holds three times that: up to a chunk not yet
// sent, a chunk of bare LFs or leading dots (each doubled), and the final
// ".<CRLF>".
const dataChunk = 32 << 10

var dataBufs = sync.Pool{New: func() any { b := make([]byte, 4*dataChunk+len(".\r\n")); return &b }}
