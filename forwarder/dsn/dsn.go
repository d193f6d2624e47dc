// Package dsn builds delivery status notifications (RFC 3464, RFC 3461
// semantics): the bounce and delay reports the forwarder sends from <> to a
// sender. It knows no SMTP sessions, disk or Redis.
//
// Build is deterministic: the same Report and original give the same bytes
// (the MIME boundary and Message-ID derive from QueueID and Now), so callers
// can rebuild a report after a crash and tests can compare golden files.
package dsn

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/textproto"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Action of a report (RFC 3464 2.3.3).
type Action string

// The actions of RFC 3464 2.3.3 ("expanded" is never sent by the forwarder).
const (
	Failed    Action = "failed"
	Delayed   Action = "delayed"
	Delivered Action = "delivered"
	Relayed   Action = "relayed"
)

// Recipient is one recipient's status in a report.
type Recipient struct {
	Addr           string    // final recipient (rfc822)
	ORcpt          string    // DSN ORCPT= as given, e.g. "rfc822;user@example.com" ("" = none)
	Action         Action    // what happened to this recipient
	Status         string    // enhanced status "5.1.1"; derived with StatusOf from Diagnostic when empty or invalid
	RemoteMTA      string    // host name or [ip] of the remote that answered ("" when none answered)
	Diagnostic     string    // the remote reply exactly, e.g. "550 5.1.1 <bob@example.com>: no such user" ("" when none: then a local explanation goes in the human part)
	LastAttempt    time.Time // zero: no Last-Attempt-Date
	WillRetryUntil time.Time // for Delayed; zero: no Will-Retry-Until
}

// Report is the whole notification.
type Report struct {
	ReportingMTA string      // our --hostname
	From         string      // the DSN's recipient: the original envelope sender (must not be "" or "<>")
	Arrival      time.Time   // when we accepted the original; zero: no Arrival-Date
	EnvID        string      // original ENVID, xtext as given ("" = none)
	QueueID      string      // the original's queue ID; names the Message-ID and seeds the boundary
	Recipients   []Recipient // at least one
	ReturnFull   bool        // RET=FULL: include the whole original as message/rfc822; else only its headers as text/rfc822-headers (RFC 3462). Default HDRS.
	Now          time.Time   // Date header; zero: time.Now()
}

// MaxReturn caps a full return (RET=FULL): a larger original is returned as
// headers only, and the human-readable part says so.
const MaxReturn = 10 << 20

// maxHeaderReturn caps the returned header block; beyond, it is cut at a line
// boundary and the human-readable part says so.
const maxHeaderReturn = 256 << 10

// maxLine is the RFC 5322 2.1.1 limit on a line, without its CRLF.
const maxLine = 998

// Errors Build returns for a report that must not be sent.
var (
	// ErrNullSender: the original's sender is <>; RFC 3461 6.1 and RFC 5321
	// 4.5.5 forbid a notification to it.
	ErrNullSender = errors.New("dsn: null sender gets no notification")
	// ErrInvalid: the report lacks a recipient or has an unusable
	// ReportingMTA or From.
	ErrInvalid = errors.New("dsn: invalid report")
)

// Build writes the complete message (headers + multipart/report body, CRLF
// line endings) to w, reading the original message from original. It never
// includes more than the original's headers unless ReturnFull, and caps a
// full return at MaxReturn bytes (beyond, headers only, saying so).
//
// Recipient strings are made safe rather than refused: line breaks never
// reach a header, and the message/delivery-status part is always 7-bit
// (non-ASCII addresses xtext-encoded, other non-ASCII replaced by '?'; the
// exact text stays in the human-readable part). An original with 8-bit
// headers is returned as is in an 8bit part, and the message then carries
// "Content-Transfer-Encoding: 8bit": send it with BODY=8BITMIME. A header
// block with lines too long for SMTP is returned quoted-printable.
//
// Build reads at most MaxReturn+1 bytes of original (256 KiB with HDRS),
// holds them in memory, and does not close it. Errors: ErrNullSender,
// ErrInvalid (wrapped), or those of original and w.
func Build(w io.Writer, r Report, original io.Reader) error {
	if err := check(r); err != nil {
		return err
	}
	now := r.Now
	if now.IsZero() {
		now = time.Now()
	}

	ret, err := readOriginal(original, r.ReturnFull)
	if err != nil {
		return fmt.Errorf("dsn: read original %s: %w", r.QueueID, err)
	}
	recips := make([]recip, len(r.Recipients))
	for i, rc := range r.Recipients {
		recips[i] = normalise(rc)
	}
	human := humanText(r, recips, ret, now)
	status := statusText(r, recips)

	type part struct {
		hdr  textproto.MIMEHeader
		body []byte
	}
	parts := make([]part, 0, 3)
	humanCTE := transferEncoding(human)
	humanCharset := "us-ascii"
	if humanCTE != "7bit" {
		humanCharset = "utf-8"
	}
	if humanCTE == "quoted-printable" {
		human = qpEncode(human)
	}
	parts = append(parts, part{textproto.MIMEHeader{
		"Content-Type":              {mime.FormatMediaType("text/plain", map[string]string{"charset": humanCharset})},
		"Content-Description":       {"Notification"},
		"Content-Transfer-Encoding": {humanCTE},
	}, human})
	parts = append(parts, part{textproto.MIMEHeader{
		"Content-Type":        {"message/delivery-status"},
		"Content-Description": {"Delivery report"},
	}, status})
	if ret.full {
		parts = append(parts, part{textproto.MIMEHeader{
			"Content-Type":              {"message/rfc822"},
			"Content-Description":       {"Undelivered message"},
			"Content-Transfer-Encoding": {transferEncoding(ret.data)},
		}, ret.data})
	} else {
		cte := transferEncoding(ret.data)
		body := ret.data
		if cte == "quoted-printable" {
			body = qpEncode(body)
		}
		parts = append(parts, part{textproto.MIMEHeader{
			"Content-Type":              {"text/rfc822-headers"},
			"Content-Description":       {"Undelivered message headers"},
			"Content-Transfer-Encoding": {cte},
		}, body})
	}

	eightBit := false
	bodies := make([][]byte, 0, len(parts))
	for _, p := range parts {
		if p.hdr.Get("Content-Transfer-Encoding") == "8bit" {
			eightBit = true
		}
		bodies = append(bodies, p.body)
	}
	boundary := makeBoundary(r.QueueID, now, bodies)

	var b bytes.Buffer
	kind, subject := subjectOf(recips)
	hdr := func(name, value string) { b.WriteString(name + ": " + value + "\r\n") }
	hdr("From", "Mail Delivery System <MAILER-DAEMON@"+r.ReportingMTA+">")
	hdr("To", "<"+strings.TrimSuffix(strings.TrimPrefix(r.From, "<"), ">")+">")
	hdr("Subject", subject)
	hdr("Date", now.Format(time.RFC1123Z))
	hdr("Message-ID", "<"+idAtom(r.QueueID)+"."+strconv.FormatInt(now.UnixNano(), 10)+"."+kind+"@"+r.ReportingMTA+">")
	hdr("Auto-Submitted", "auto-replied") // RFC 3834 5
	hdr("MIME-Version", "1.0")
	hdr("Content-Type", mime.FormatMediaType("multipart/report", map[string]string{
		"report-type": "delivery-status",
		"boundary":    boundary,
	}))
	if eightBit {
		hdr("Content-Transfer-Encoding", "8bit")
	}
	b.WriteString("\r\n")
	b.WriteString("This is a MIME-encapsulated delivery status notification (RFC 3464).\r\n")

	mw := multipart.NewWriter(&b)
	if err := mw.SetBoundary(boundary); err != nil {
		return fmt.Errorf("dsn: boundary: %w", err)
	}
	for _, p := range parts {
		pw, err := mw.CreatePart(p.hdr)
		if err != nil {
			return fmt.Errorf("dsn: part: %w", err)
		}
		pw.Write(p.body) // bytes.Buffer: never fails
	}
	if err := mw.Close(); err != nil {
		return fmt.Errorf("dsn: close: %w", err)
	}
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("dsn: write %s: %w", r.QueueID, err)
	}
	return nil
}

func check(r Report) error {
	from := strings.TrimSpace(r.From)
	if from == "" || from == "<>" {
		return ErrNullSender
	}
	if len(from) > 900 || strings.ContainsFunc(from, func(c rune) bool { return c < 0x20 || c == 0x7f || c == utf8.RuneError }) || !utf8.ValidString(from) {
		return fmt.Errorf("%w: From %q", ErrInvalid, r.From)
	}
	if len(r.ReportingMTA) > 255 || !hostRE.MatchString(r.ReportingMTA) {
		return fmt.Errorf("%w: ReportingMTA %q", ErrInvalid, r.ReportingMTA)
	}
	if len(r.Recipients) == 0 {
		return fmt.Errorf("%w: no recipients", ErrInvalid)
	}
	return nil
}

var hostRE = regexp.MustCompile(`^([A-Za-z0-9_]([A-Za-z0-9_-]{0,62})\.?)+$|^\[[0-9A-Fa-f:.]+\]$|^\[IPv6:[0-9A-Fa-f:.]+\]$`)

// recip is a Recipient with its fields checked and defaults applied.
type recip struct {
	Recipient
	status string
}

var statusRE = regexp.MustCompile(`^[245]\.\d{1,3}\.\d{1,3}$`)

// normalise fills Status and makes its class agree with the action
// (RFC 3464 2.3.4: 2.x.x delivered or relayed, 4.x.x delayed, 5.x.x failed).
func normalise(rc Recipient) recip {
	st := rc.Status
	if !statusRE.MatchString(st) {
		code, text := splitReply(rc.Diagnostic)
		if rc.Diagnostic == "" {
			st = ""
		} else {
			st = StatusOf(code, text)
		}
	}
	want := byte('5')
	switch rc.Action {
	case Delayed:
		want = '4'
	case Delivered, Relayed:
		want = '2'
	}
	if st == "" {
		st = string(want) + ".0.0"
	}
	if st[0] != want {
		st = string(want) + st[1:]
	}
	return recip{rc, st}
}

// splitReply splits "550 5.1.1 text" (or "550-..." of a multi-line reply)
// into its code and text; code 0 when the reply has none.
func splitReply(reply string) (int, string) {
	if len(reply) >= 3 {
		if c, err := strconv.Atoi(reply[:3]); err == nil && c >= 200 && c <= 599 {
			if len(reply) == 3 {
				return c, ""
			}
			if reply[3] == ' ' || reply[3] == '-' {
				return c, reply[4:]
			}
		}
	}
	return 0, reply
}

var enhancedRE = regexp.MustCompile(`^\s*([245])\.(\d{1,3})\.(\d{1,3})(\s|$)`)

// StatusOf derives an RFC 3463 status from an SMTP reply: the enhanced code
// in the text when present ("550 5.1.1 ..." or "5.1.1 ..."), else from the
// code class (5xx → "5.0.0", 4xx → "4.0.0", 2xx → "2.0.0"). An enhanced
// code whose class disagrees with the reply code takes the reply code's
// class (RFC 3463 2, RFC 2034 4). Code 0 (no reply) with no enhanced code
// gives "4.0.0": not knowing is temporary.
func StatusOf(code int, text string) string {
	if code == 0 {
		code, text = splitReply(text)
	} else if c, t := splitReply(text); c == code {
		text = t // text given with its code in front
	}
	class := byte(0)
	switch code / 100 {
	case 2:
		class = '2'
	case 4:
		class = '4'
	case 5:
		class = '5'
	}
	if m := enhancedRE.FindStringSubmatch(text); m != nil {
		st := m[1] + "." + trimZeros(m[2]) + "." + trimZeros(m[3])
		if class != 0 && st[0] != class {
			st = string(class) + st[1:]
		}
		return st
	}
	if class == 0 {
		return "4.0.0"
	}
	return string(class) + ".0.0"
}

func trimZeros(s string) string {
	n, _ := strconv.Atoi(s)
	return strconv.Itoa(n)
}

// Wanted reports whether a recipient's NOTIFY= (as in the spool: "" default,
// "NEVER", or comma list SUCCESS,FAILURE,DELAY, any case) asks for a report
// of this action. RFC 3461 4.1: the default is FAILURE and DELAY; Delivered
// and Relayed answer SUCCESS (RFC 3461 6.2); NEVER wins.
func Wanted(notify string, a Action) bool {
	var success, failure, delay bool
	if strings.TrimSpace(notify) == "" {
		failure, delay = true, true
	}
	for _, k := range strings.Split(notify, ",") {
		switch strings.ToUpper(strings.TrimSpace(k)) {
		case "NEVER":
			return false
		case "SUCCESS":
			success = true
		case "FAILURE":
			failure = true
		case "DELAY":
			delay = true
		}
	}
	switch a {
	case Failed:
		return failure
	case Delayed:
		return delay
	case Delivered, Relayed:
		return success
	}
	return false
}

func subjectOf(rs []recip) (kind, subject string) {
	var failed, delayed bool
	for _, r := range rs {
		switch r.Action {
		case Delayed:
			delayed = true
		case Delivered, Relayed:
		default:
			failed = true
		}
	}
	switch {
	case failed:
		return "failed", "Undelivered Mail Returned to Sender"
	case delayed:
		return "delayed", "Delayed Mail (still being retried)"
	}
	return "success", "Successful Mail Delivery Report"
}

// returned is what part 3 carries.
type returned struct {
	data      []byte // CRLF lines
	full      bool   // data is the whole message
	tooBig    bool   // RET=FULL but over MaxReturn
	notIntact bool   // RET=FULL but not valid 8bit (NUL, line > 998)
	truncated bool   // header block cut at maxHeaderReturn
}

func readOriginal(original io.Reader, full bool) (returned, error) {
	var ret returned
	if original == nil {
		return ret, nil
	}
	limit := int64(maxHeaderReturn)
	if full {
		limit = MaxReturn
	}
	raw, err := io.ReadAll(io.LimitReader(original, limit+1))
	if err != nil {
		return ret, err
	}
	over := int64(len(raw)) > limit
	data := crlf(raw)
	if full {
		if over {
			ret.tooBig = true
		} else if transferEncoding(data) == "quoted-printable" {
			ret.notIntact = true // message/rfc822 allows no encoding (RFC 2046 5.2.1)
		} else {
			if len(data) > 0 && !bytes.HasSuffix(data, []byte("\r\n")) {
				data = append(data, '\r', '\n')
			}
			ret.data, ret.full = data, true
			return ret, nil
		}
	}
	hdrs, complete := headerBlock(data)
	if !complete && over {
		// The header block did not end within what was read: cut it at a line.
		if i := bytes.LastIndex(hdrs, []byte("\r\n")); i >= 0 {
			hdrs = hdrs[:i+2]
		}
		if len(hdrs) > maxHeaderReturn {
			hdrs = hdrs[:maxHeaderReturn]
			if i := bytes.LastIndex(hdrs, []byte("\r\n")); i >= 0 {
				hdrs = hdrs[:i+2]
			}
		}
		ret.truncated = true
	}
	if len(hdrs) > 0 && !bytes.HasSuffix(hdrs, []byte("\r\n")) {
		hdrs = append(hdrs, '\r', '\n')
	}
	ret.data = hdrs
	return ret, nil
}

// headerBlock returns the header lines of msg (CRLF lines), without the
// blank line that ends them; complete is false when no blank line was found.
func headerBlock(msg []byte) (hdrs []byte, complete bool) {
	if bytes.HasPrefix(msg, []byte("\r\n")) {
		return nil, true
	}
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		return msg[:i+2], true
	}
	return msg, false
}

// crlf makes every line end CRLF: a bare LF or bare CR counts as a line end,
// as it does for the SMTP client that will carry the report (RFC 5321 2.3.8).
func crlf(b []byte) []byte {
	if !bytes.ContainsAny(b, "\r\n") {
		return b
	}
	out := make([]byte, 0, len(b)+len(b)/50)
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '\r':
			if i+1 < len(b) && b[i+1] == '\n' {
				i++
			}
			out = append(out, '\r', '\n')
		case '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, c)
		}
	}
	return out
}

// transferEncoding names the RFC 2045 encoding b (CRLF lines) needs:
// "7bit", "8bit", or "quoted-printable" when it has NUL or lines over 998.
func transferEncoding(b []byte) string {
	enc := "7bit"
	line := 0
	for i, c := range b {
		switch {
		case c == '\r' && i+1 < len(b) && b[i+1] == '\n':
			continue
		case c == '\n':
			line = 0
			continue
		case c == 0 || c == '\r' || c == '\n':
			return "quoted-printable"
		case c >= 0x80:
			enc = "8bit"
		}
		line++
		if line > maxLine {
			return "quoted-printable"
		}
	}
	return enc
}

func qpEncode(b []byte) []byte {
	var out bytes.Buffer
	qw := quotedprintable.NewWriter(&out)
	qw.Write(b) // bytes.Buffer: never fails
	qw.Close()
	enc := out.Bytes()
	if len(enc) > 0 && !bytes.HasSuffix(enc, []byte("\r\n")) {
		enc = append(enc, '\r', '\n')
	}
	return enc
}

// makeBoundary derives the MIME boundary from the queue ID and time, and
// perturbs it until no part contains it (RFC 2046 5.1.1).
func makeBoundary(queueID string, now time.Time, bodies [][]byte) string {
	for n := 0; ; n++ {
		sum := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%d\x00%d", queueID, now.UnixNano(), n)))
		b := "=_dsn_" + hex.EncodeToString(sum[:12])
		clash := false
		for _, body := range bodies {
			if bytes.Contains(body, []byte(b)) {
				clash = true
				break
			}
		}
		if !clash {
			return b
		}
	}
}

// idAtom makes s usable as the left of a Message-ID (RFC 5322 dot-atom-text).
func idAtom(s string) string {
	s = strings.Map(func(c rune) rune {
		if c < 0x80 && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("!#$%&'*+-/=?^_`{|}~", c)) {
			return c
		}
		return '-'
	}, s)
	if s == "" {
		return "dsn"
	}
	if len(s) > 64 {
		s = s[:64]
	}
	return s
}
