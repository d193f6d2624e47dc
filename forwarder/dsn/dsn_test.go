package dsn

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

var (
	arrival = time.Date(2025, 3, 1, 9, 30, 0, 0, time.UTC)
	attempt = time.Date(2025, 3, 1, 9, 31, 5, 0, time.UTC)
	now     = time.Date(2025, 3, 1, 9, 31, 6, 0, time.UTC)
)

const original = "Received: from client.example.org (client.example.org [198.51.100.4])\r\n" +
	"\tby mx1.fwd.example.net with ESMTPS id 01JNQ5S0AB; Sat, 1 Mar 2025 09:30:00 +0000\r\n" +
	"From: Alice <alice@example.org>\r\n" +
	"To: Bob <bob@example.com>\r\n" +
	"Subject: Lunch\r\n" +
	"Message-ID: <lunch.1@example.org>\r\n" +
	"\r\n" +
	"Shall we?\r\n"

func base() Report {
	return Report{
		ReportingMTA: "mx1.fwd.example.net",
		From:         "alice@example.org",
		Arrival:      arrival,
		QueueID:      "01JNQ5S0AB",
		Now:          now,
	}
}

func failedBob() Recipient {
	return Recipient{
		Addr:        "bob@example.com",
		Action:      Failed,
		RemoteMTA:   "mail.example.com",
		Diagnostic:  "550 5.1.1 <bob@example.com>: no such user",
		LastAttempt: attempt,
	}
}

func TestGolden(t *testing.T) {
	longFolded := "References:"
	for i := range 60 {
		longFolded += fmt.Sprintf("\r\n <ref.%d.aaaaaaaaaaaaaaaaaaaaaaaaaaaa@lists.example.org>", i)
	}
	eightBit := "From: =?utf-8?q?J=C3=B6rg?= <joerg@example.org>\r\n" +
		"To: bob@example.com\r\n" +
		"Subject: Grüße aus Köln\r\n" + // raw UTF-8 (RFC 6532)
		longFolded + "\r\n" +
		"\r\n" +
		"Hallo\r\n"
	tooLongLine := "From: alice@example.org\r\n" +
		"X-Long: " + strings.Repeat("x", 1500) + "\r\n" +
		"\r\nbody\r\n"
	bodyLongLine := "From: alice@example.org\r\nSubject: wide\r\n\r\n" + strings.Repeat("y", 1200) + "\r\n"

	tests := []struct {
		name     string
		edit     func(*Report)
		original string
		want     func(t *testing.T, p *parsed)
	}{
		{"failed_remote", func(r *Report) {
			r.Recipients = []Recipient{failedBob()}
		}, original, func(t *testing.T, p *parsed) {
			p.rcpt(t, 0, "Final-Recipient", "rfc822; bob@example.com")
			p.rcpt(t, 0, "Status", "5.1.1")
			p.rcpt(t, 0, "Remote-MTA", "dns; mail.example.com")
			p.rcpt(t, 0, "Diagnostic-Code", "smtp; 550 5.1.1 <bob@example.com>: no such user")
			p.partType(t, "text/rfc822-headers")
			if strings.Contains(p.returned, "Shall we?") {
				t.Error("headers-only return carries the body")
			}
			if !strings.Contains(p.human, "550 5.1.1 <bob@example.com>: no such user") {
				t.Error("human part lacks the remote reply")
			}
			if p.subject != "Undelivered Mail Returned to Sender" {
				t.Errorf("subject %q", p.subject)
			}
		}},
		{"failed_and_delayed", func(r *Report) {
			r.Recipients = []Recipient{failedBob(), {
				Addr:           "carol@example.com",
				Action:         Delayed,
				RemoteMTA:      "[192.0.2.7]",
				Diagnostic:     "451-4.3.0 Mailbox temporarily locked\r\n451 4.3.0 Try again later",
				LastAttempt:    attempt,
				WillRetryUntil: arrival.Add(336 * time.Hour),
			}}
		}, original, func(t *testing.T, p *parsed) {
			if len(p.rcpts) != 2 {
				t.Fatalf("%d recipient blocks", len(p.rcpts))
			}
			p.rcpt(t, 1, "Action", "delayed")
			p.rcpt(t, 1, "Status", "4.3.0")
			p.rcpt(t, 1, "Diagnostic-Code", "smtp; 451-4.3.0 Mailbox temporarily locked 451 4.3.0 Try again later")
			p.rcpt(t, 1, "Will-Retry-Until", "Sat, 15 Mar 2025 09:30:00 +0000")
			p.rcpt(t, 0, "Will-Retry-Until", "")
		}},
		{"delayed", func(r *Report) {
			r.Recipients = []Recipient{{
				Addr:           "bob@example.com",
				Action:         Delayed,
				Status:         "4.4.1",
				LastAttempt:    attempt,
				WillRetryUntil: arrival.Add(336 * time.Hour),
			}}
			r.Now = arrival.Add(4 * time.Hour)
		}, original, func(t *testing.T, p *parsed) {
			if p.subject != "Delayed Mail (still being retried)" {
				t.Errorf("subject %q", p.subject)
			}
			p.rcpt(t, 0, "Status", "4.4.1")
			p.rcpt(t, 0, "Remote-MTA", "")
			if !strings.Contains(p.human, "will retry until: Sat, 15 Mar 2025 09:30:00 +0000") {
				t.Error("human part does not say until when it retries")
			}
		}},
		{"expired", func(r *Report) {
			r.Recipients = []Recipient{{
				Addr:        "bob@example.com",
				Action:      Failed,
				Status:      "4.4.7", // class made to agree with the action
				LastAttempt: arrival.Add(335 * time.Hour),
			}}
			r.Now = arrival.Add(336 * time.Hour)
		}, original, func(t *testing.T, p *parsed) {
			p.rcpt(t, 0, "Status", "5.4.7")
			p.rcpt(t, 0, "Diagnostic-Code", "")
			p.rcpt(t, 0, "Remote-MTA", "")
			if !strings.Contains(p.human, "delivery time expired: no server accepted the message in 14 days (status 5.4.7)") {
				t.Errorf("no local explanation in:\n%s", p.human)
			}
		}},
		{"ret_full", func(r *Report) {
			r.Recipients = []Recipient{failedBob()}
			r.ReturnFull = true
		}, original, func(t *testing.T, p *parsed) {
			p.partType(t, "message/rfc822")
			if p.returned != original {
				t.Errorf("returned %q, want the original", p.returned)
			}
		}},
		{"envid_orcpt", func(r *Report) {
			r.EnvID = "QQ314159+2Bx"
			rc := failedBob()
			rc.ORcpt = "rfc822;bob+2Blist@example.com"
			r.Recipients = []Recipient{rc}
		}, original, func(t *testing.T, p *parsed) {
			if got := p.msgFields.Get("Original-Envelope-Id"); got != "QQ314159+x" {
				t.Errorf("Original-Envelope-Id %q", got)
			}
			p.rcpt(t, 0, "Original-Recipient", "rfc822; bob+list@example.com")
		}},
		{"eightbit_long_header", func(r *Report) {
			r.Recipients = []Recipient{failedBob()}
		}, eightBit, func(t *testing.T, p *parsed) {
			p.partType(t, "text/rfc822-headers")
			if p.returnedCTE != "8bit" || p.topCTE != "8bit" {
				t.Errorf("CTE part %q top %q, want 8bit", p.returnedCTE, p.topCTE)
			}
			want := eightBit[:strings.Index(eightBit, "\r\n\r\n")+2]
			if p.returned != want {
				t.Errorf("header block changed:\n%q\nwant\n%q", p.returned, want)
			}
		}},
		{"overlong_header_line", func(r *Report) {
			r.Recipients = []Recipient{failedBob()}
		}, tooLongLine, func(t *testing.T, p *parsed) {
			if p.returnedCTE != "quoted-printable" {
				t.Errorf("CTE %q, want quoted-printable", p.returnedCTE)
			}
			if !strings.Contains(p.returned, strings.Repeat("x", 1500)) {
				t.Error("long header not returned whole")
			}
		}},
		{"full_not_intact", func(r *Report) {
			r.Recipients = []Recipient{failedBob()}
			r.ReturnFull = true
		}, bodyLongLine, func(t *testing.T, p *parsed) {
			p.partType(t, "text/rfc822-headers")
			if !strings.Contains(p.human, "cannot be attached intact") {
				t.Error("human part does not say why only headers")
			}
		}},
		{"full_too_big", func(r *Report) {
			r.Recipients = []Recipient{failedBob()}
			r.ReturnFull = true
		}, "From: alice@example.org\r\nSubject: big\r\n\r\n" + strings.Repeat(strings.Repeat("z", 78)+"\r\n", MaxReturn/80+1), func(t *testing.T, p *parsed) {
			p.partType(t, "text/rfc822-headers")
			if p.returned != "From: alice@example.org\r\nSubject: big\r\n" {
				t.Errorf("returned %q", p.returned)
			}
			if !strings.Contains(p.human, "larger than 10 MiB") {
				t.Error("human part does not say the message was too big")
			}
		}},
		{"bare_lf_original", func(r *Report) {
			r.Recipients = []Recipient{failedBob()}
			r.ReturnFull = true
		}, "From: a@example.org\nSubject: lf\n\nline\n.\nend", func(t *testing.T, p *parsed) {
			if p.returned != "From: a@example.org\r\nSubject: lf\r\n\r\nline\r\n.\r\nend\r\n" {
				t.Errorf("returned %q", p.returned)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := base()
			tc.edit(&r)
			var out bytes.Buffer
			if err := Build(&out, r, strings.NewReader(tc.original)); err != nil {
				t.Fatal(err)
			}
			p, err := checkReport(out.Bytes())
			if err != nil {
				t.Fatalf("not an RFC 3464 report: %v\n%s", err, out.Bytes())
			}
			tc.want(t, p)

			var again bytes.Buffer
			Build(&again, r, strings.NewReader(tc.original))
			if !bytes.Equal(out.Bytes(), again.Bytes()) {
				t.Error("Build is not deterministic")
			}

			golden := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("output differs from %s (go test -update rewrites it):\n%s", golden, out.Bytes())
			}
		})
	}
}

func TestBuildRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Report)
		want error
	}{
		{"null sender", func(r *Report) { r.From = "" }, ErrNullSender},
		{"null sender brackets", func(r *Report) { r.From = "<>" }, ErrNullSender},
		{"no recipients", func(r *Report) { r.Recipients = nil }, ErrInvalid},
		{"bad host", func(r *Report) { r.ReportingMTA = "mx1 evil\r\nBcc: x" }, ErrInvalid},
		{"empty host", func(r *Report) { r.ReportingMTA = "" }, ErrInvalid},
		{"CRLF in sender", func(r *Report) { r.From = "a@b\r\nBcc: c@d" }, ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := base()
			r.Recipients = []Recipient{failedBob()}
			tc.edit(&r)
			var out bytes.Buffer
			err := Build(&out, r, strings.NewReader(original))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if out.Len() != 0 {
				t.Error("wrote output on error")
			}
		})
	}
}

// TestHeaderInjection: recipient strings never add a field or a line.
func TestHeaderInjection(t *testing.T) {
	r := base()
	r.EnvID = "x\r\nAction: delivered"
	r.Recipients = []Recipient{{
		Addr:       "bob@example.com\r\nAction: delivered",
		ORcpt:      "rfc822;x\r\nStatus: 2.0.0",
		Action:     Failed,
		RemoteMTA:  "evil\r\n\r\nFinal-Recipient: rfc822; x",
		Diagnostic: "550 no\r\n\r\nAction: delivered",
	}}
	var out bytes.Buffer
	if err := Build(&out, r, strings.NewReader(original)); err != nil {
		t.Fatal(err)
	}
	p, err := checkReport(out.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(p.rcpts) != 1 || len(p.rcpts[0]["Action"]) != 1 || p.rcpts[0].Get("Action") != "failed" {
		t.Fatalf("injected fields: %v", p.rcpts)
	}
	p.rcpt(t, 0, "Final-Recipient", "rfc822; bob@example.com+0D+0AAction:+20delivered")
}

func TestStatusOf(t *testing.T) {
	for _, tc := range []struct {
		code int
		text string
		want string
	}{
		{550, "550 5.1.1 <bob@example.com>: no such user", "5.1.1"},
		{550, "5.1.1 <bob@example.com>: no such user", "5.1.1"},
		{550, "no such user", "5.0.0"},
		{554, "", "5.0.0"},
		{451, "4.7.1 greylisted", "4.7.1"},
		{452, "452 4.5.3 too many recipients", "4.5.3"},
		{421, "service not available", "4.0.0"},
		{250, "2.0.0 ok", "2.0.0"},
		{250, "ok", "2.0.0"},
		{550, "4.2.2 mailbox full", "5.2.2"}, // class follows the reply code
		{550, "5.01.001 padded", "5.1.1"},
		{550, "5.1.1000 not a code", "5.0.0"},
		{550, "5.1 not a code", "5.0.0"},
		{550, "6.1.1 not a class", "5.0.0"},
		{550, "5.1.1-dash is not a separator", "5.0.0"},
		{0, "550 5.7.1 relaying denied", "5.7.1"},
		{0, "", "4.0.0"},
		{0, "connection refused", "4.0.0"},
		{999, "x", "4.0.0"},
	} {
		if got := StatusOf(tc.code, tc.text); got != tc.want {
			t.Errorf("StatusOf(%d, %q) = %q, want %q", tc.code, tc.text, got, tc.want)
		}
	}
}

func TestWanted(t *testing.T) {
	type row struct{ failed, delayed, delivered, relayed bool }
	for _, tc := range []struct {
		notify string
		want   row
	}{
		{"", row{true, true, false, false}},
		{"NEVER", row{false, false, false, false}},
		{"never", row{false, false, false, false}},
		{"SUCCESS", row{false, false, true, true}},
		{"FAILURE", row{true, false, false, false}},
		{"DELAY", row{false, true, false, false}},
		{"FAILURE,DELAY", row{true, true, false, false}},
		{"SUCCESS,FAILURE,DELAY", row{true, true, true, true}},
		{"success, failure", row{true, false, true, true}},
	} {
		got := row{Wanted(tc.notify, Failed), Wanted(tc.notify, Delayed), Wanted(tc.notify, Delivered), Wanted(tc.notify, Relayed)}
		if got != tc.want {
			t.Errorf("Wanted(%q) failed/delayed/delivered/relayed = %v, want %v", tc.notify, got, tc.want)
		}
	}
	if Wanted("", Action("expanded")) {
		t.Error("unknown action wanted")
	}
}

func FuzzBuild(f *testing.F) {
	f.Add([]byte(original), "bob@example.com", "rfc822;bob@example.com", "550 5.1.1 no", "mail.example.com", "", "ENV", false, uint8(0))
	f.Add([]byte("no headers at all"), "", "", "", "", "9.9.9", "", true, uint8(1))
	f.Add([]byte("A: b\n\n--=_dsn_\r\n"), "b\xffö@x", "x;+ZZ", "4", "[::1]", "4.4.7", "+00", true, uint8(2))
	f.Add([]byte("\r\r\n\x00\n"), "<a b>", ";", "250-a\r\n250 b", "h", "2.0.0", "a=b", false, uint8(3))
	f.Fuzz(func(t *testing.T, orig []byte, addr, orcpt, diag, remote, status, envid string, full bool, act uint8) {
		actions := []Action{Failed, Delayed, Delivered, Relayed, Action("x")}
		r := base()
		r.EnvID = envid
		r.ReturnFull = full
		r.QueueID = addr
		r.Recipients = []Recipient{{
			Addr: addr, ORcpt: orcpt, Action: actions[int(act)%len(actions)], Status: status,
			RemoteMTA: remote, Diagnostic: diag, LastAttempt: attempt, WillRetryUntil: now,
		}, failedBob()}
		var out bytes.Buffer
		if err := Build(&out, r, bytes.NewReader(orig)); err != nil {
			t.Fatal(err)
		}
		if _, err := checkReport(out.Bytes()); err != nil {
			t.Fatalf("%v\n%q", err, out.Bytes())
		}
		r.From = addr // arbitrary sender: refused or a valid report
		out.Reset()
		if err := Build(&out, r, bytes.NewReader(orig)); err == nil {
			if _, err := checkReport(out.Bytes()); err != nil {
				t.Fatalf("%v\n%q", err, out.Bytes())
			}
		}
	})
}

// parsed is a report that passed checkReport.
type parsed struct {
	subject     string
	topCTE      string
	human       string
	msgFields   textproto.MIMEHeader
	rcpts       []textproto.MIMEHeader
	returnType  string
	returnedCTE string
	returned    string // decoded
}

func (p *parsed) rcpt(t *testing.T, i int, field, want string) {
	t.Helper()
	if got := p.rcpts[i].Get(field); got != want {
		t.Errorf("recipient %d %s = %q, want %q", i, field, got, want)
	}
}

func (p *parsed) partType(t *testing.T, want string) {
	t.Helper()
	if p.returnType != want {
		t.Errorf("third part %q, want %q", p.returnType, want)
	}
}

var statusSyntax = regexp.MustCompile(`^[245]\.\d{1,3}\.\d{1,3}$`)

// checkReport checks msg against RFC 3464 / RFC 3462 and RFC 5322 line rules.
func checkReport(msg []byte) (*parsed, error) {
	for i, l := range bytes.Split(msg, []byte("\r\n")) {
		if len(l) > 998 {
			return nil, fmt.Errorf("line %d is %d octets", i+1, len(l))
		}
		if bytes.ContainsAny(l, "\r\n\x00") {
			return nil, fmt.Errorf("line %d has a bare CR, bare LF or NUL", i+1)
		}
	}
	if !bytes.HasSuffix(msg, []byte("\r\n")) {
		return nil, errors.New("does not end in CRLF")
	}
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		return nil, fmt.Errorf("net/mail: %w", err)
	}
	for _, h := range []string{"From", "To", "Subject", "Date", "Message-Id", "Mime-Version", "Auto-Submitted"} {
		if len(m.Header[h]) != 1 {
			return nil, fmt.Errorf("%d %s headers", len(m.Header[h]), h)
		}
	}
	if _, err := m.Header.Date(); err != nil {
		return nil, fmt.Errorf("Date: %w", err)
	}
	if a, err := mail.ParseAddress(m.Header.Get("From")); err != nil || !strings.HasPrefix(a.Address, "MAILER-DAEMON@") {
		return nil, fmt.Errorf("From %q: %v", m.Header.Get("From"), err)
	}
	if m.Header.Get("Auto-Submitted") != "auto-replied" {
		return nil, errors.New("not Auto-Submitted: auto-replied")
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil {
		return nil, fmt.Errorf("Content-Type: %w", err)
	}
	if mt != "multipart/report" || params["report-type"] != "delivery-status" || params["boundary"] == "" {
		return nil, fmt.Errorf("Content-Type %q", m.Header.Get("Content-Type"))
	}
	p := &parsed{subject: m.Header.Get("Subject"), topCTE: m.Header.Get("Content-Transfer-Encoding")}
	mr := multipart.NewReader(m.Body, params["boundary"])
	var parts []*multipart.Part
	var bodies [][]byte
	for {
		part, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("part %d: %w", len(parts)+1, err)
		}
		body, err := io.ReadAll(part)
		if err != nil {
			return nil, fmt.Errorf("part %d: %w", len(parts)+1, err)
		}
		if part.Header.Get("Content-Transfer-Encoding") == "quoted-printable" {
			if body, err = io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body))); err != nil {
				return nil, fmt.Errorf("part %d: %w", len(parts)+1, err)
			}
		}
		parts = append(parts, part)
		bodies = append(bodies, body)
	}
	if len(parts) != 3 {
		return nil, fmt.Errorf("%d parts, want 3", len(parts))
	}
	types := make([]string, 3)
	for i, part := range parts {
		if types[i], _, err = mime.ParseMediaType(part.Header.Get("Content-Type")); err != nil {
			return nil, fmt.Errorf("part %d Content-Type: %w", i+1, err)
		}
		switch cte := part.Header.Get("Content-Transfer-Encoding"); cte {
		case "", "7bit", "8bit":
		case "quoted-printable":
			if i == 2 && types[i] == "message/rfc822" {
				return nil, errors.New("message/rfc822 encoded")
			}
		default:
			return nil, fmt.Errorf("part %d CTE %q", i+1, cte)
		}
	}
	if types[0] != "text/plain" {
		return nil, fmt.Errorf("first part %s", types[0])
	}
	p.human = string(bodies[0])
	if types[1] != "message/delivery-status" {
		return nil, fmt.Errorf("second part %s", types[1])
	}
	for _, c := range bodies[1] {
		if c >= 0x80 {
			return nil, errors.New("delivery-status part not 7-bit")
		}
	}
	tr := textproto.NewReader(bufio.NewReader(io.MultiReader(bytes.NewReader(bodies[1]), strings.NewReader("\r\n"))))
	var blocks []textproto.MIMEHeader
	for {
		h, err := tr.ReadMIMEHeader()
		if err == io.EOF && len(h) == 0 {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("delivery-status block %d: %w", len(blocks)+1, err)
		}
		blocks = append(blocks, h)
	}
	if len(blocks) < 2 {
		return nil, fmt.Errorf("%d delivery-status blocks", len(blocks))
	}
	p.msgFields, p.rcpts = blocks[0], blocks[1:]
	if !strings.HasPrefix(p.msgFields.Get("Reporting-MTA"), "dns; ") {
		return nil, fmt.Errorf("Reporting-MTA %q", p.msgFields.Get("Reporting-MTA"))
	}
	for i, b := range p.rcpts {
		if len(b["Final-Recipient"]) != 1 || !strings.HasPrefix(b.Get("Final-Recipient"), "rfc822;") {
			return nil, fmt.Errorf("recipient %d Final-Recipient %q", i+1, b["Final-Recipient"])
		}
		if len(b["Action"]) != 1 || !map[string]bool{"failed": true, "delayed": true, "delivered": true, "relayed": true}[b.Get("Action")] {
			return nil, fmt.Errorf("recipient %d Action %q", i+1, b["Action"])
		}
		st := b.Get("Status")
		if len(b["Status"]) != 1 || !statusSyntax.MatchString(st) {
			return nil, fmt.Errorf("recipient %d Status %q", i+1, st)
		}
		if want := map[string]byte{"failed": '5', "delayed": '4', "delivered": '2', "relayed": '2'}[b.Get("Action")]; st[0] != want {
			return nil, fmt.Errorf("recipient %d Status %s for %s", i+1, st, b.Get("Action"))
		}
	}
	p.returnType, p.returnedCTE, p.returned = types[2], parts[2].Header.Get("Content-Transfer-Encoding"), string(bodies[2])
	switch types[2] {
	case "text/rfc822-headers":
		if strings.Contains(p.returned, "\r\n\r\n") {
			return nil, errors.New("header part has a body")
		}
	case "message/rfc822":
	default:
		return nil, fmt.Errorf("third part %s", types[2])
	}
	return p, nil
}
