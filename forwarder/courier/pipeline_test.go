package courier

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// rawServer is a scripted SMTP server on a real socket (127.0.0.1) for the
// tests of pipelining. It greets, answers EHLO with its keywords, RSET with
// 250 and QUIT with 221, and any other command as its script says; after a
// 354 to DATA it takes the message up to the final dot and answers that as
// the script says for ".". Like Postfix, it writes its replies only when it
// has no more input to read, so the replies to a pipelined group go in one
// write. It records the command lines, the messages, and what each read of
// a socket returned.
type rawServer struct {
	Addr     string
	keywords []string
	script   script

	mu    sync.Mutex
	cmds  []string // command lines without CRLF, in order
	msgs  []string // messages as sent (dot-stuffed), without the final dot
	reads []string // what each read of a socket returned
	conns map[net.Conn]bool
}

// script says what a rawServer answers: keys "MAIL", "DATA", "." (the final
// dot), a recipient's address for its RCPT and "RCPT" for the other RCPTs.
// A reply may have several lines, separated by CRLF. A missing key gets a
// 250, but DATA gets 354 only when a RCPT was accepted since MAIL, and 554
// otherwise, as Postfix does. A reply of drop closes the connection, one of
// hang stops answering.
type script map[string]string

const (
	drop = "drop"
	hang = "hang"
)

// answer returns the reply to cmd; accepted counts the RCPTs accepted since
// MAIL.
func (sc script) answer(cmd string, accepted int) string {
	verb, arg, _ := strings.Cut(cmd, " ")
	switch verb {
	case "MAIL":
		return sc.or("MAIL", "250 2.1.0 Ok")
	case "RCPT":
		path, _, _ := strings.Cut(strings.TrimPrefix(arg, "TO:"), " ")
		addr := strings.TrimSuffix(strings.TrimPrefix(path, "<"), ">")
		if r, ok := sc[addr]; ok {
			return r
		}
		return sc.or("RCPT", "250 2.1.5 Ok")
	case "DATA":
		if accepted == 0 {
			return sc.or("DATA", "554 5.5.1 Error: no valid recipients")
		}
		return sc.or("DATA", "354 End data with <CR><LF>.<CR><LF>")
	case ".":
		return sc.or(".", "250 2.0.0 Ok: queued as 1")
	}
	return "502 5.5.2 Error: command not recognized"
}

func (sc script) or(key, def string) string {
	if r, ok := sc[key]; ok {
		return r
	}
	return def
}

// startRaw starts a rawServer. At cleanup it checks, waiting up to 5 s, that
// the client closed every connection, and then stops.
func startRaw(t *testing.T, keywords []string, sc script) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{Addr: ln.Addr().String(), keywords: keywords, script: sc, conns: make(map[net.Conn]bool)}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = true
			s.mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				s.serve(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
			return
		case <-time.After(5 * time.Second):
			t.Errorf("rawServer: a connection is still open at cleanup")
		}
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		<-done
	})
	return s
}

// serve runs one session.
func (s *rawServer) serve(c net.Conn) {
	br := bufio.NewReader(readRecorder{c, s})
	bw := bufio.NewWriter(c)
	// next reads a line, after writing the pending replies if nothing is
	// left to read.
	next := func() (string, error) {
		if br.Buffered() == 0 {
			if err := bw.Flush(); err != nil {
				return "", err
			}
		}
		return br.ReadString('\n')
	}
	bw.WriteString("220 raw.test ESMTP\r\n")
	accepted, inData := 0, false
	for {
		cmd, err := s.command(next, inData)
		if err != nil {
			return
		}
		var reply string
		switch upper := strings.ToUpper(cmd); {
		case upper == "QUIT":
			bw.WriteString("221 2.0.0 Bye\r\n")
			bw.Flush()
			return
		case upper == "RSET":
			reply = "250 2.0.0 Ok"
		case strings.HasPrefix(upper, "EHLO "):
			reply = s.ehlo()
		default:
			reply = s.answer(cmd, accepted)
		}
		switch reply {
		case drop:
			bw.Flush()
			return
		case hang:
			bw.Flush()
			io.Copy(io.Discard, br) // until the client goes away
			return
		}
		bw.WriteString(reply + "\r\n")
		switch {
		case strings.HasPrefix(cmd, "MAIL"), cmd == "RSET", cmd == ".":
			accepted = 0
		case strings.HasPrefix(cmd, "RCPT") && reply[0] == '2':
			accepted++
		}
		inData = strings.HasPrefix(cmd, "DATA") && strings.HasPrefix(reply, "354")
	}
}

// ehlo returns the reply to EHLO.
func (s *rawServer) ehlo() string {
	lines := append([]string{"raw.test"}, s.keywords...)
	for i := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		lines[i] = "250" + sep + lines[i]
	}
	return strings.Join(lines, "\r\n")
}

// answer returns the script's reply to cmd.
func (s *rawServer) answer(cmd string, accepted int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.script.answer(cmd, accepted)
}

// setReply changes the script: key's reply is reply from now on, or the
// default when reply is "".
func (s *rawServer) setReply(key, reply string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.script == nil {
		s.script = script{}
	}
	if reply == "" {
		delete(s.script, key)
		return
	}
	s.script[key] = reply
}

// command reads the next command line and records it; inData, it reads a
// message up to the final dot instead, records it and returns ".".
func (s *rawServer) command(next func() (string, error), inData bool) (string, error) {
	var msg strings.Builder
	for {
		line, err := next()
		if err != nil {
			return "", err
		}
		if !inData {
			cmd := strings.TrimSuffix(line, "\r\n")
			s.mu.Lock()
			s.cmds = append(s.cmds, cmd)
			s.mu.Unlock()
			return cmd, nil
		}
		if line == ".\r\n" {
			s.mu.Lock()
			s.msgs = append(s.msgs, msg.String())
			s.mu.Unlock()
			return ".", nil
		}
		msg.WriteString(line)
	}
}

// readRecorder records what each read of a connection returns.
type readRecorder struct {
	c net.Conn
	s *rawServer
}

func (r readRecorder) Read(p []byte) (int, error) {
	n, err := r.c.Read(p)
	if n > 0 {
		r.s.mu.Lock()
		r.s.reads = append(r.s.reads, string(p[:n]))
		r.s.mu.Unlock()
	}
	return n, err
}

// commands, messages and readsSoFar return copies of what s recorded so
// far.
func (s *rawServer) commands() []string   { return s.copyOf(&s.cmds) }
func (s *rawServer) messages() []string   { return s.copyOf(&s.msgs) }
func (s *rawServer) readsSoFar() []string { return s.copyOf(&s.reads) }

func (s *rawServer) copyOf(p *[]string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), *p...)
}

// checkGroups checks that every read that brought a MAIL brought it with its
// RCPTs and DATA, in one group, when pipelined, and alone otherwise.
func checkGroups(t testing.TB, reads []string, pipelined bool) {
	t.Helper()
	for _, r := range reads {
		if !strings.Contains(r, "MAIL FROM:") {
			continue
		}
		lines := strings.SplitAfter(r, "\r\n")
		lines = lines[:len(lines)-1] // "" after the last CRLF, or a partial line
		ok := len(lines) == 1 && strings.HasPrefix(r, "MAIL FROM:") && strings.HasSuffix(r, "\r\n")
		if pipelined {
			n := len(lines)
			ok = n >= 3 && strings.HasPrefix(lines[0], "MAIL FROM:") && lines[n-1] == "DATA\r\n"
			for i := 1; ok && i < n-1; i++ {
				ok = strings.HasPrefix(lines[i], "RCPT TO:")
			}
		}
		if !ok {
			t.Errorf("a read brought %q; pipelined %v", r, pipelined)
		}
	}
}

var (
	testCfg = Config{Hostname: "mx1.fwd.example.net", Timeout: 5 * time.Second}
	// withPipelining and withoutPipelining are the EHLO keywords of the two
	// kinds of rawServer.
	withPipelining    = []string{"PIPELINING", "8BITMIME", "SIZE 10240000", "ENHANCEDSTATUSCODES"}
	withoutPipelining = withPipelining[1:]
)

const testBody = "Subject: test\r\n\r\nHello.\r\n.a line with a dot\r\n"

// testEnv is an envelope from alice to rcpts.
func testEnv(rcpts ...string) Envelope {
	e := Envelope{From: "alice@sender.example", Size: int64(len(testBody)), Body8Bit: true}
	for _, r := range rcpts {
		e.Rcpts = append(e.Rcpts, Rcpt{Addr: r})
	}
	return e
}

// eachMode runs f with a server that offers PIPELINING and with one that
// does not.
func eachMode(t *testing.T, f func(t *testing.T, pipelined bool)) {
	for _, pipelined := range []bool{true, false} {
		name := "pipelined"
		if !pipelined {
			name = "stepwise"
		}
		t.Run(name, func(t *testing.T) { f(t, pipelined) })
	}
}

func keywords(pipelined bool) []string {
	if pipelined {
		return withPipelining
	}
	return withoutPipelining
}

// TestPipelinedLikeStepwise runs transactions against servers with and
// without PIPELINING and checks that the same replies give the same results,
// error and end state (whether Deliver says QUIT), and that the pipelined
// commands went in one write.
func TestPipelinedLikeStepwise(t *testing.T) {
	type outcome struct {
		code      int
		reply     string // exactly, or a part of it when code is 0
		permanent bool
		delivered bool
	}
	ok := outcome{250, "250 2.0.0 Ok: queued as 1", false, true}
	for _, tc := range []struct {
		name    string
		rcpts   []string
		script  script
		timeout time.Duration // Config.Timeout, when not the default
		ctx     time.Duration // the context's timeout, when not the default
		want    []outcome
		err     bool // Deliver returns an error
		quit    bool // Deliver says QUIT
		lone    bool // pipelined, DATA gets 354 and the final dot alone follows
	}{
		{name: "accepted", rcpts: []string{"a@home.example", "b@home.example"}, want: []outcome{ok, ok}, quit: true},
		{
			name:  "some recipients refused",
			rcpts: []string{"a@home.example", "b@home.example", "c@home.example", "d@home.example"},
			script: script{
				"b@home.example": "550 5.1.1 <b@home.example>: Recipient address rejected",
				"c@home.example": "452 4.5.3 Too many recipients",
				"d@home.example": "552 5.5.3 Too many recipients",
			},
			want: []outcome{ok,
				{550, "550 5.1.1 <b@home.example>: Recipient address rejected", true, false},
				{452, "452 4.5.3 Too many recipients", false, false},
				{552, "552 5.5.3 Too many recipients", false, false}},
			quit: true,
		},
		{
			name:   "every recipient refused",
			rcpts:  []string{"a@home.example", "b@home.example"},
			script: script{"a@home.example": "550 5.1.1 No", "b@home.example": "450 4.2.1 Later"},
			want:   []outcome{{550, "550 5.1.1 No", true, false}, {450, "450 4.2.1 Later", false, false}},
			quit:   true,
		},
		{
			name:   "every recipient refused, DATA 354",
			rcpts:  []string{"a@home.example"},
			script: script{"a@home.example": "550 5.1.1 No", "DATA": "354 Go ahead", ".": "554 5.5.1 No valid recipients"},
			want:   []outcome{{550, "550 5.1.1 No", true, false}},
			quit:   true,
			lone:   true,
		},
		{
			name:   "DATA refused",
			rcpts:  []string{"a@home.example", "b@home.example", "c@home.example"},
			script: script{"b@home.example": "550 5.1.1 No", "DATA": "554 5.7.1 Not now"},
			want: []outcome{{554, "554 5.7.1 Not now", true, false}, {550, "550 5.1.1 No", true, false},
				{554, "554 5.7.1 Not now", true, false}},
			quit: true,
		},
		{
			name:   "DATA 451",
			rcpts:  []string{"a@home.example"},
			script: script{"DATA": "451 4.3.0 Try again"},
			want:   []outcome{{451, "451 4.3.0 Try again", false, false}},
			quit:   true,
		},
		{
			name:   "final dot refused",
			rcpts:  []string{"a@home.example", "b@home.example"},
			script: script{".": "554 5.7.1 Spam"},
			want:   []outcome{{554, "554 5.7.1 Spam", true, false}, {554, "554 5.7.1 Spam", true, false}},
			quit:   true,
		},
		{
			name:   "MAIL 550",
			rcpts:  []string{"a@home.example", "b@home.example"},
			script: script{"MAIL": "550 5.7.1 Sender blocked", "RCPT": "503 5.5.1 Error: need MAIL command", "DATA": "503 5.5.1 Error: need RCPT command"},
			want:   []outcome{{550, "550 5.7.1 Sender blocked", true, false}, {550, "550 5.7.1 Sender blocked", true, false}},
			quit:   true,
		},
		{
			name:   "MAIL 550, DATA 354",
			rcpts:  []string{"a@home.example"},
			script: script{"MAIL": "550 5.7.1 Sender blocked", "RCPT": "503 5.5.1 Need MAIL", "DATA": "354 Go ahead", ".": "503 5.5.1 Nothing"},
			want:   []outcome{{550, "550 5.7.1 Sender blocked", true, false}},
			quit:   true,
			lone:   true,
		},
		{
			name:   "MAIL 451",
			rcpts:  []string{"a@home.example", "b@home.example"},
			script: script{"MAIL": "451 4.3.0 Later", "RCPT": "503 5.5.1 Need MAIL"},
			want:   []outcome{{451, "451 4.3.0 Later", false, false}, {451, "451 4.3.0 Later", false, false}},
			err:    true,
			quit:   true,
		},
		{
			name:   "MAIL 421",
			rcpts:  []string{"a@home.example"},
			script: script{"MAIL": "421 4.4.2 Idle too long"},
			want:   []outcome{{421, "421 4.4.2 Idle too long", false, false}},
			err:    true,
		},
		{
			name:   "no reply to MAIL",
			rcpts:  []string{"a@home.example", "b@home.example"},
			script: script{"MAIL": drop},
			want:   []outcome{{0, "EOF", false, false}, {0, "EOF", false, false}},
			err:    true,
		},
		{
			name:   "RCPT 421",
			rcpts:  []string{"a@home.example", "b@home.example", "c@home.example"},
			script: script{"b@home.example": "421 4.3.2 Shutting down"},
			want: []outcome{{0, "SMTP error 421: Shutting down", false, false}, {421, "421 4.3.2 Shutting down", false, false},
				{0, "SMTP error 421: Shutting down", false, false}},
		},
		{
			name:   "no reply to RCPT",
			rcpts:  []string{"a@home.example", "b@home.example"},
			script: script{"b@home.example": drop},
			want:   []outcome{{0, "EOF", false, false}, {0, "EOF", false, false}},
		},
		{
			name:   "no reply to DATA",
			rcpts:  []string{"a@home.example"},
			script: script{"DATA": drop},
			want:   []outcome{{0, "EOF", false, false}},
		},
		{
			name:   "no reply to the final dot",
			rcpts:  []string{"a@home.example", "b@home.example"},
			script: script{".": drop, "b@home.example": "550 5.1.1 No"},
			want:   []outcome{{0, "EOF", false, false}, {550, "550 5.1.1 No", true, false}},
		},
		{
			name:    "DATA times out",
			rcpts:   []string{"a@home.example"},
			script:  script{"DATA": hang},
			timeout: 300 * time.Millisecond,
			want:    []outcome{{0, "i/o timeout", false, false}},
		},
		{
			name:   "context ends waiting for RCPT",
			rcpts:  []string{"a@home.example", "b@home.example"},
			script: script{"b@home.example": hang},
			ctx:    300 * time.Millisecond,
			want:   []outcome{{0, "attempt ended", false, false}, {0, "attempt ended", false, false}},
		},
		{
			name:  "multi-line replies",
			rcpts: []string{"a@home.example", "b@home.example", "c@home.example"},
			script: script{
				"MAIL":           "250-2.1.0 Sender\r\n250 2.1.0 Ok",
				"b@home.example": "550-5.1.1 <b@home.example>: no such user\r\n550-5.1.1 see the postmaster\r\n550 5.1.1 goodbye",
				"c@home.example": "550-first line\r\n550 5.1.1 second line",
				"DATA":           "354-Go\r\n354 ahead",
				".":              "250-2.0.0 Ok\r\n250 2.0.0 queued as X",
			},
			want: []outcome{{250, "250 2.0.0 Ok 2.0.0 queued as X", false, true},
				{550, "550 5.1.1 <b@home.example>: no such user see the postmaster goodbye", true, false},
				{550, "550 first line 5.1.1 second line", true, false}},
			quit: true,
		},
		{
			name:  "odd replies",
			rcpts: []string{"a@home.example", "b@home.example", "c@home.example", "d@home.example", "e@home.example"},
			script: script{
				"a@home.example": "450 Try later",
				"b@home.example": "550 5.1.1x odd code",
				"c@home.example": "550 5.1 short code",
				"d@home.example": "550-5.7.1 one\r\n550 5.7.2 other",
				"e@home.example": "251 2.1.5 Will forward",
			},
			want: []outcome{{450, "450 Try later", false, false}, {550, "550 5.1.1x odd code", true, false},
				{550, "550 5.1 short code", true, false}, {550, "550 5.7.1 one 5.7.2 other", true, false},
				{250, "250 2.0.0 Ok: queued as 1", false, true}},
			quit: true,
		},
		{
			name:   "reply line too long",
			rcpts:  []string{"a@home.example", "b@home.example"},
			script: script{"b@home.example": "550 5.1.1 " + strings.Repeat("x", 2500)},
			want:   []outcome{{0, smtp.ErrTooLongLine.Error(), false, false}, {0, smtp.ErrTooLongLine.Error(), false, false}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got [2][]Result
			eachMode(t, func(t *testing.T, pipelined bool) {
				srv := startRaw(t, keywords(pipelined), tc.script)
				cfg := testCfg
				if tc.timeout != 0 {
					cfg.Timeout = tc.timeout
				}
				d := 10 * time.Second
				if tc.ctx != 0 {
					d = tc.ctx
				}
				ctx, cancel := context.WithTimeout(context.Background(), d)
				defer cancel()
				res, err := Deliver(ctx, cfg, "home.example", srv.Addr, testEnv(tc.rcpts...), strings.NewReader(testBody))
				if (err != nil) != tc.err {
					t.Errorf("err %v, want an error: %v", err, tc.err)
				}
				if len(res) != len(tc.want) {
					t.Fatalf("%d results, want %d", len(res), len(tc.want))
				}
				for i, r := range res {
					w := tc.want[i]
					text := r.Reply == w.reply || r.Code == 0 && strings.Contains(r.Reply, w.reply)
					if r.Rcpt != tc.rcpts[i] || r.Code != w.code || !text || r.Permanent != w.permanent || r.Delivered != w.delivered {
						t.Errorf("result %d = %+v, want %+v", i, r, w)
					}
				}
				cmds := srv.commands()
				if quit := len(cmds) > 0 && cmds[len(cmds)-1] == "QUIT"; quit != tc.quit {
					t.Errorf("QUIT sent: %v, want %v (%q)", quit, tc.quit, cmds)
				}
				checkGroups(t, srv.readsSoFar(), pipelined)
				msgs := srv.messages()
				for _, m := range msgs {
					if m != "" && m != strings.ReplaceAll(testBody, "\n.", "\n..") {
						t.Errorf("message %q", m)
					}
				}
				if tc.lone && pipelined && !reflect.DeepEqual(msgs, []string{""}) {
					t.Errorf("messages %q, want the final dot alone", msgs)
				}
				if pipelined {
					got[0] = res
				} else {
					got[1] = res
				}
			})
			if len(got[0]) != len(got[1]) {
				return // reported above
			}
			for i := range got[0] {
				p, s := got[0][i], got[1][i]
				if p.Code == 0 && s.Code == 0 {
					continue // local error texts hold the connections' addresses
				}
				if p != s {
					t.Errorf("result %d: pipelined %+v, stepwise %+v", i, p, s)
				}
			}
		})
	}
}

// TestPipelinedGroupOneWrite checks the exact group a PIPELINING server
// gets, in one read before it answers anything, and that the message
// follows the replies as it does without PIPELINING.
func TestPipelinedGroupOneWrite(t *testing.T) {
	eachMode(t, func(t *testing.T, pipelined bool) {
		srv := startRaw(t, keywords(pipelined), nil)
		e := testEnv("a@home.example", "b@home.example")
		res, err := Deliver(context.Background(), testCfg, "home.example", srv.Addr, e, strings.NewReader(testBody))
		if err != nil || !res[0].Delivered || !res[1].Delivered {
			t.Fatalf("%v %+v", err, res)
		}
		mail := fmt.Sprintf("MAIL FROM:<alice@sender.example> BODY=8BITMIME SIZE=%d\r\n", len(testBody))
		group := []string{mail, "RCPT TO:<a@home.example>\r\n", "RCPT TO:<b@home.example>\r\n", "DATA\r\n"}
		if !pipelined {
			group = group[:1]
		}
		reads := srv.readsSoFar()
		// The reads: EHLO, the group (or MAIL alone), ...
		if len(reads) < 2 || reads[1] != strings.Join(group, "") {
			t.Errorf("reads %q, want the second to be %q", reads, strings.Join(group, ""))
		}
		wantCmds := []string{"EHLO mx1.fwd.example.net", strings.TrimSuffix(mail, "\r\n"), "RCPT TO:<a@home.example>", "RCPT TO:<b@home.example>", "DATA", "QUIT"}
		if cmds := srv.commands(); !reflect.DeepEqual(cmds, wantCmds) {
			t.Errorf("commands %q, want %q", cmds, wantCmds)
		}
		if msgs := srv.messages(); len(msgs) != 1 || msgs[0] != strings.ReplaceAll(testBody, "\n.", "\n..") {
			t.Errorf("messages %q", msgs)
		}
	})
}

// TestPipelinedGroupLimits: an envelope too big for one group, or with a
// line go-smtp refuses to send, goes stepwise even when PIPELINING is
// offered.
func TestPipelinedGroupLimits(t *testing.T) {
	t.Run("too many recipients", func(t *testing.T) {
		srv := startRaw(t, withPipelining, nil)
		var rcpts []string
		for i := range 150 {
			rcpts = append(rcpts, fmt.Sprintf("user%d@home.example", i))
		}
		res, err := Deliver(context.Background(), testCfg, "home.example", srv.Addr, testEnv(rcpts...), strings.NewReader(testBody))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if !r.Delivered {
				t.Fatalf("not delivered: %+v", r)
			}
		}
		checkGroups(t, srv.readsSoFar(), false)
	})
	t.Run("CR in a recipient", func(t *testing.T) {
		srv := startRaw(t, withPipelining, nil)
		res, err := Deliver(context.Background(), testCfg, "home.example", srv.Addr, testEnv("a@home.example", "b\r@home.example"), strings.NewReader(testBody))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if r.Code != 0 || r.Permanent || !strings.Contains(r.Reply, "CR or LF") {
				t.Errorf("result %+v", r)
			}
		}
		checkGroups(t, srv.readsSoFar(), false)
		if cmds := srv.commands(); len(cmds) != 3 { // EHLO, MAIL, RCPT a; then the session is dropped
			t.Errorf("commands %q", cmds)
		}
	})
}

// TestPoolPipelinedSession runs several transactions on one pooled session,
// one of them with every recipient refused, then RSET, and one answered 354
// with every recipient refused, which the final dot alone ends.
func TestPoolPipelinedSession(t *testing.T) {
	eachMode(t, func(t *testing.T, pipelined bool) {
		srv := startRaw(t, keywords(pipelined), script{
			"x@home.example": "550 5.1.1 No such user",
			"y@home.example": "450 4.2.1 Try later",
			// A server that says 354 to DATA with no recipient.
			"z@home.example": "550 5.1.1 No such user",
		})
		p := NewPool(testCfg, PoolConfig{})
		defer p.Close()
		deliver := func(rcpts ...string) []Result {
			t.Helper()
			res, err := p.Deliver(context.Background(), "home.example", srv.Addr, testEnv(rcpts...), strings.NewReader(testBody))
			if err != nil {
				t.Fatal(err)
			}
			return res
		}
		for _, rcpts := range [][]string{{"a@home.example"}, {"b@home.example", "c@home.example"}, {"d@home.example"}} {
			for _, r := range deliver(rcpts...) {
				if !r.Delivered {
					t.Fatalf("not delivered: %+v", r)
				}
			}
		}
		res := deliver("x@home.example", "y@home.example")
		if res[0].Reply != "550 5.1.1 No such user" || !res[0].Permanent || res[1].Reply != "450 4.2.1 Try later" || res[1].Permanent {
			t.Errorf("results %+v", res)
		}
		if r := deliver("e@home.example")[0]; !r.Delivered {
			t.Errorf("not delivered after RSET: %+v", r)
		}
		srv.setReply("DATA", "354 Go ahead")
		if r := deliver("z@home.example")[0]; r.Reply != "550 5.1.1 No such user" || !r.Permanent {
			t.Errorf("result %+v", r)
		}
		srv.setReply("DATA", "")
		if r := deliver("f@home.example")[0]; !r.Delivered {
			t.Errorf("not delivered after the lone dot: %+v", r)
		}
		if dials, reuses := p.Stats(); dials != 1 || reuses != 6 {
			t.Errorf("stats: %d dials, %d reuses; want 1, 6", dials, reuses)
		}
		tx := func(rcpts ...string) []string {
			c := []string{fmt.Sprintf("MAIL FROM:<alice@sender.example> BODY=8BITMIME SIZE=%d", len(testBody))}
			for _, r := range rcpts {
				c = append(c, "RCPT TO:<"+r+">")
			}
			return append(c, "DATA")
		}
		var want []string
		want = append(want, "EHLO mx1.fwd.example.net")
		want = append(want, tx("a@home.example")...)
		want = append(want, tx("b@home.example", "c@home.example")...)
		want = append(want, tx("d@home.example")...)
		refused := tx("x@home.example", "y@home.example")
		lone := tx("z@home.example")
		if !pipelined { // no DATA without a recipient
			refused, lone = refused[:len(refused)-1], lone[:len(lone)-1]
		}
		want = append(want, refused...)
		want = append(want, "RSET", "EHLO mx1.fwd.example.net")
		want = append(want, tx("e@home.example")...)
		want = append(want, lone...)
		if !pipelined {
			want = append(want, "RSET", "EHLO mx1.fwd.example.net")
		}
		want = append(want, tx("f@home.example")...)
		if cmds := srv.commands(); !reflect.DeepEqual(cmds, want) {
			t.Errorf("commands\n%q\nwant\n%q", cmds, want)
		}
		wantMsgs := 5
		if pipelined {
			wantMsgs++ // the lone dot's
		}
		msgs := srv.messages()
		if len(msgs) != wantMsgs || pipelined && msgs[4] != "" {
			t.Errorf("messages %q", msgs)
		}
		checkGroups(t, srv.readsSoFar(), pipelined)
	})
}

// TestGroupLinesMatchGoSMTP is the drift test of the pipelined command
// lines: for a table of envelopes and of servers' EHLO keywords, go-smtp's
// Client.Mail and Client.Rcpt, given the options of mailOptions and
// rcptOptions, send to a rawServer exactly the lines of group.
func TestGroupLinesMatchGoSMTP(t *testing.T) {
	servers := []struct {
		name     string
		keywords []string
	}{
		{"bare", nil},
		{"8bitmime size", []string{"8BITMIME", "SIZE 10240000"}},
		{"dsn", []string{"PIPELINING", "8BITMIME", "SIZE", "DSN"}},
		{"dsn smtputf8", []string{"8BITMIME", "DSN", "SMTPUTF8"}},
	}
	envs := []struct {
		name string
		env  Envelope
	}{
		{"plain", Envelope{From: "alice@sender.example", Body8Bit: true, Size: 1234, Rcpts: []Rcpt{{Addr: "bob@home.example"}}}},
		{"null sender, size unknown", Envelope{Rcpts: []Rcpt{{Addr: "bob@home.example"}, {Addr: "carol@home.example"}}}},
		{"RET and ENVID", Envelope{From: "a@sender.example", Ret: "full", EnvID: "QQ+31=4/1~59!", Size: 7, Rcpts: []Rcpt{{Addr: "b@home.example"}}}},
		{"RET HDRS, ENVID not printable", Envelope{From: "a@sender.example", Ret: "hdrs", EnvID: "a b", Rcpts: []Rcpt{{Addr: "b@home.example"}}}},
		{"bad RET", Envelope{From: "a@sender.example", Ret: "ALL", EnvID: "x", Rcpts: []Rcpt{{Addr: "b@home.example"}}}},
		{"NOTIFY", Envelope{From: "a@sender.example", Rcpts: []Rcpt{
			{Addr: "b@home.example", Notify: "success,delay"},
			{Addr: "c@home.example", Notify: "NEVER"},
			{Addr: "d@home.example", Notify: "NEVER,SUCCESS"}, // invalid: dropped
			{Addr: "e@home.example", Notify: "FAILURE, failure"},
		}}},
		{"ORCPT", Envelope{From: "a@sender.example", Rcpts: []Rcpt{
			{Addr: "b@home.example", Notify: "FAILURE", ORcpt: "rfc822;Alias+x=y@home.example"},
			{Addr: "c@home.example", ORcpt: "c+tag@home.example"},
			{Addr: "d@home.example", ORcpt: "utf-8;j\u00f6rg+1=2@home.example"},
			{Addr: "e@home.example", ORcpt: "RFC822;ren\u00e9@home.example"}, // not ASCII: sent as utf-8
			{Addr: "f@home.example", ORcpt: "UTF-8;a b\\c@home.example"},
			{Addr: "g@home.example", ORcpt: "rfc822;"},  // empty: dropped
			{Addr: "h@home.example", ORcpt: "x400;x@y"}, // unknown type: taken as an address
		}}},
		{"SMTPUTF8", Envelope{From: "ren\u00e9@sender.example", UTF8: true, Body8Bit: true, Size: 99, Rcpts: []Rcpt{
			{Addr: "j\u00f6rg@home.example", ORcpt: "utf-8;j\u00f6rg@home.example", Notify: "DELAY"},
		}}},
	}
	for _, sv := range servers {
		t.Run(sv.name, func(t *testing.T) {
			srv := startRaw(t, sv.keywords, nil)
			for _, e := range envs {
				if e.env.UTF8 && !slices.Contains(sv.keywords, "SMTPUTF8") {
					continue // transaction refuses it before MAIL
				}
				conn, err := net.Dial("tcp", srv.Addr)
				if err != nil {
					t.Fatal(err)
				}
				c := smtp.NewClient(conn)
				if err := c.Hello("mx1.fwd.example.net"); err != nil {
					t.Fatal(err)
				}
				a := newAttempt(context.Background(), testCfg, "home.example", srv.Addr, e.env, nil)
				group, ok := a.group(c)
				if !ok {
					t.Fatalf("%s: no group", e.name)
				}
				n := len(srv.commands())
				if err := c.Mail(e.env.From, a.mailOptions(c)); err != nil {
					t.Fatalf("%s: MAIL: %v", e.name, err)
				}
				for _, r := range e.env.Rcpts {
					if err := c.Rcpt(r.Addr, a.rcptOptions(c, r)); err != nil {
						t.Fatalf("%s: RCPT: %v", e.name, err)
					}
				}
				if err := c.Quit(); err != nil {
					t.Fatal(err)
				}
				sent := srv.commands()[n:]
				sent = sent[:len(sent)-1] // QUIT
				if want := strings.Join(append(sent, "DATA", ""), "\r\n"); string(group) != want {
					t.Errorf("%s: group\n%q\ngo-smtp sends\n%q", e.name, group, want)
				}
			}
		})
	}
}
