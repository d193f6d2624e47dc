package courier

import (
	"bufio"
	"bytes"
	"io"
	"net/textproto"
	"strings"
	"testing"
	"testing/iotest"
)

// wireForm is what sendData then closing the DATA writer put on the wire,
// or with own, what sendData puts there ending the data itself. The reader
// hands the body over in small, uneven pieces, so lines, CRLFs and leading
// dots fall across reads.
func wireForm(t testing.TB, body []byte, own bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	if own {
		if err := sendData(&buf, nil, iotest.HalfReader(bytes.NewReader(body))); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	bw := bufio.NewWriter(&buf)
	dot := textproto.NewWriter(bw).DotWriter()
	if err := sendData(&buf, dot, iotest.HalfReader(bytes.NewReader(body))); err != nil {
		t.Fatal(err)
	}
	if err := dot.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// textprotoForm is the same body through net/textproto's DotWriter alone,
// which go-smtp's DATA command uses.
func textprotoForm(t testing.TB, body []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	dot := textproto.NewWriter(bw).DotWriter()
	if _, err := dot.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := dot.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// oddCR reports whether body has a CR that is not part of a CRLF: there
// net/textproto's byte-at-a-time state machine adds CRs of its own (it sends
// "a\r\r\n" as "a\r\r\r\n"), where sendData leaves the line as it is.
func oddCR(body []byte) bool {
	for i, c := range body {
		if c == '\r' && (i+1 == len(body) || body[i+1] != '\n') {
			return true
		}
	}
	return false
}

func TestSendData(t *testing.T) {
	long := strings.Repeat("x", 3*dataChunk) + "\r\n"
	for _, tc := range []struct{ body, want string }{
		{"", "\r\n.\r\n"},
		{"a\r\n", "a\r\n.\r\n"},
		{".\r\n", "..\r\n.\r\n"},
		{".a\r\n.b\r\n..\r\n", "..a\r\n..b\r\n...\r\n.\r\n"},
		{"a\nb\n", "a\r\nb\r\n.\r\n"},
		{"no line end", "no line end\r\n.\r\n"},
		{"ends in CR\r", "ends in CR\r\n.\r\n"},
		{"\n.\n", "\r\n..\r\n.\r\n"},
		{"a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n"}, // the end-of-data line inside a body is stuffed
		{long, long + ".\r\n"},
		{strings.Repeat(".\n", dataChunk), strings.Repeat("..\r\n", dataChunk) + ".\r\n"},
	} {
		got := wireForm(t, []byte(tc.body), false)
		if string(got) != tc.want {
			t.Errorf("body %.40q: sent %.60q, want %.60q", tc.body, got, tc.want)
		}
		if own := wireForm(t, []byte(tc.body), true); string(own) != tc.want {
			t.Errorf("body %.40q, data ended by sendData: sent %.60q, want %.60q", tc.body, own, tc.want)
		}
		if !oddCR([]byte(tc.body)) {
			if tp := textprotoForm(t, []byte(tc.body)); !bytes.Equal(got, tp) {
				t.Errorf("body %.40q: sent %.60q, net/textproto sends %.60q", tc.body, got, tp)
			}
		}
	}
}

// FuzzSendData: sendData sends the same whether it or the DATA writer ends
// the data; it sends what net/textproto's DotWriter sends, for
// every body without a stray CR, and for any body something a DATA reader
// takes back as the body with its lines ended by CRLF.
func FuzzSendData(f *testing.F) {
	for _, s := range []string{"", "a\r\n", ".\r\n", "a\nb", "\r\n.\r\n", "x\r\r\n", ".", "\n\n.\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got := wireForm(t, body, false)
		if own := wireForm(t, body, true); !bytes.Equal(own, got) {
			t.Fatalf("body %q: sent %q ending the data itself, %q through the DATA writer", body, own, got)
		}
		if !oddCR(body) {
			if want := textprotoForm(t, body); !bytes.Equal(got, want) {
				t.Fatalf("body %q: sent %q, net/textproto sends %q", body, got, want)
			}
		}
		// Read it back as a server does.
		back, err := io.ReadAll(textproto.NewReader(bufio.NewReader(bytes.NewReader(got))).DotReader())
		if err != nil {
			t.Fatalf("body %q: sent %q, not read back: %v", body, got, err)
		}
		norm := string(body)
		if strings.HasSuffix(norm, "\r") {
			norm += "\n" // a final CR ends the last line
		}
		norm = strings.ReplaceAll(strings.ReplaceAll(norm, "\r\n", "\n"), "\r", "")
		if !strings.HasSuffix(norm, "\n") {
			norm += "\n" // an empty body goes as one empty line, as with net/textproto
		}
		// DotReader turns CRLF into LF; compare without the stray CRs.
		if b := strings.ReplaceAll(string(back), "\r", ""); b != norm {
			t.Fatalf("body %q: read back %q, want %q", body, b, norm)
		}
	})
}
