package smtpd

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func TestParseRecipient(t *testing.T) {
	for _, tc := range []struct {
		in    string
		utf8  bool
		want  string // String(), or "" when err
		ascii string
		err   error
	}{
		{in: "user@example.com", want: "user@example.com", ascii: "example.com"},
		{in: "User@EXAMPLE.COM", want: "User@example.com", ascii: "example.com"},
		{in: "a.b+c@example.com", want: "a.b+c@example.com", ascii: "example.com"},
		{in: "john smith@example.com", want: `"john smith"@example.com`, ascii: "example.com"},
		{in: `a"b@example.com`, want: `"a\"b"@example.com`, ascii: "example.com"},
		{in: ".a@example.com", want: `".a"@example.com`, ascii: "example.com"},
		{in: "a..b@example.com", want: `"a..b"@example.com`, ascii: "example.com"},
		{in: "user%other@example.com", err: errRelay},
		{in: "other!user@example.com", err: errRelay},
		{in: "user@other@example.com", err: errRelay},
		{in: "user@[192.0.2.1]", err: errRelay},
		{in: "user@[IPv6:::1]", err: errRelay},
		{in: "user@", err: errSyntax},
		{in: "@example.com", err: errSyntax},
		{in: "user", err: errSyntax},
		{in: "user@example.com.", err: errSyntax},
		{in: "user@exa mple.com", err: errSyntax},
		{in: "user@-a.com", err: errSyntax},
		{in: "user@a-.com", err: errSyntax},
		{in: "user@" + strings.Repeat("a", 64) + ".com", err: errSyntax},
		{in: "us\ter@example.com", err: errSyntax},
		{in: "us\x7fer@example.com", err: errSyntax},
		{in: "ü@example.com", err: errNonASCII},
		{in: "u@bücher.test", err: errNonASCII},
		{in: "ü@bücher.test", utf8: true, want: "ü@bücher.test", ascii: "xn--bcher-kva.test"},
		{in: "u@BÜCHER.test", utf8: true, want: "u@BÜCHER.test", ascii: "xn--bcher-kva.test"},
		{in: "u@münchen.de", utf8: true, want: "u@münchen.de", ascii: "xn--mnchen-3ya.de"},
		{in: "u@日本語.jp", utf8: true, want: "u@日本語.jp", ascii: "xn--wgv71a119e.jp"},
		{in: "u@\xff.jp", utf8: true, err: errSyntax},
	} {
		mb, err := parseRecipient(tc.in, tc.utf8)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%q: err %v, want %v", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || mb.String() != tc.want || mb.ascii != tc.ascii {
			t.Errorf("%q: %q %q %v, want %q %q", tc.in, mb.String(), mb.ascii, err, tc.want, tc.ascii)
		}
	}
}

func TestReceivedHeader(t *testing.T) {
	ti := traceInfo{helo: "evil\r\n(x)", ip: "192.0.2.1", hostname: "mx.test", id: "ID", rcpts: []string{"a@example.com"}}
	h := receivedHeader(ti)
	want := "Received: from [192.0.2.1] ([192.0.2.1] [192.0.2.1] helo=evil???x?)\r\n\tby mx.test (mxport) with ESMTP id ID\r\n\tfor <a@example.com>; "
	if !strings.HasPrefix(h, want) {
		t.Errorf("got  %q\nwant %q", h, want)
	}
	ti = traceInfo{helo: "[192.0.2.1]", ip: "192.0.2.1", rdns: "client.example", hostname: "mx.test", id: "ID",
		rcpts: []string{"a@example.com", "b@example.com"}, utf8: true}
	h = receivedHeader(ti)
	want = "Received: from [192.0.2.1] (client.example [192.0.2.1])\r\n\tby mx.test (mxport) with UTF8SMTP id ID; "
	if !strings.HasPrefix(h, want) {
		t.Errorf("got  %q\nwant %q", h, want)
	}
}

func TestLoopGuard(t *testing.T) {
	read := func(msg string, chunk int) error {
		g := newLoopGuard(&chunkReader{s: msg, n: chunk})
		buf := make([]byte, 7)
		for {
			_, err := g.Read(buf)
			if err != nil {
				if err == io.EOF {
					return nil
				}
				return err
			}
		}
	}
	hdrs := strings.Repeat("Received: x\r\n", 100)
	for _, chunk := range []int{1, 3, 1000} {
		if err := read(hdrs+"\r\n"+hdrs, chunk); err != nil {
			t.Errorf("100 + body: %v", err)
		}
		if err := read(hdrs+"RECEIVED\t:y\n\n", chunk); !errors.Is(err, errLoop) {
			t.Errorf("101 (bare LF, odd case): %v", err)
		}
		if err := read(hdrs+"Received-SPF: pass\r\nX-Received: y\r\n Received: z\r\n\r\n", chunk); err != nil {
			t.Errorf("look-alikes: %v", err)
		}
	}
}

type chunkReader struct {
	s string
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.s == "" {
		return 0, io.EOF
	}
	n := min(len(p), c.n, len(c.s))
	copy(p, c.s[:n])
	c.s = c.s[n:]
	return n, nil
}
