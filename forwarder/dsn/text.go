package dsn

import (
	"bytes"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// statusText is the body of the message/delivery-status part (RFC 3464 2.1):
// the per-message fields, then one block per recipient, blank lines between.
// It is 7-bit with lines of at most 998 octets.
func statusText(r Report, rs []recip) []byte {
	var b bytes.Buffer
	field := func(name, value string) { b.WriteString(fold(name + ": " + value)) }

	// RFC 3464 2.2
	field("Reporting-MTA", "dns; "+r.ReportingMTA)
	if r.QueueID != "" {
		field("X-Mxport-Queue-ID", textValue(r.QueueID))
	}
	if r.EnvID != "" {
		field("Original-Envelope-Id", xtextValue(r.EnvID)) // RFC 3461 6.3 (d)
	}
	if !r.Arrival.IsZero() {
		field("Arrival-Date", r.Arrival.Format(time.RFC1123Z))
	}

	// RFC 3464 2.3
	for _, rc := range rs {
		b.WriteString("\r\n")
		if typ, addr, ok := strings.Cut(rc.ORcpt, ";"); ok && isAtom(strings.TrimSpace(typ)) {
			field("Original-Recipient", strings.TrimSpace(typ)+"; "+xtextValue(strings.TrimSpace(addr))) // RFC 3461 6.3 (e)
		}
		field("Final-Recipient", "rfc822; "+addrValue(rc.Addr))
		field("Action", string(actionOf(rc.Action)))
		field("Status", rc.status)
		if rc.RemoteMTA != "" {
			field("Remote-MTA", "dns; "+textValue(rc.RemoteMTA))
		}
		if rc.Diagnostic != "" {
			field("Diagnostic-Code", "smtp; "+textValue(rc.Diagnostic))
		}
		if !rc.LastAttempt.IsZero() {
			field("Last-Attempt-Date", rc.LastAttempt.Format(time.RFC1123Z))
		}
		if rc.Action == Delayed && !rc.WillRetryUntil.IsZero() {
			field("Will-Retry-Until", rc.WillRetryUntil.Format(time.RFC1123Z))
		}
	}
	return b.Bytes()
}

// actionOf maps an unknown action to failed, the one that cannot mislead.
func actionOf(a Action) Action {
	switch a {
	case Failed, Delayed, Delivered, Relayed:
		return a
	}
	return Failed
}

// humanText is the text/plain first part (RFC 3464 2.1, RFC 3462 1).
func humanText(r Report, rs []recip, ret returned, now time.Time) []byte {
	var b bytes.Buffer
	line := func(format string, args ...any) {
		b.WriteString(fmt.Sprintf(format, args...))
		b.WriteString("\r\n")
	}
	line("This is the mail system at host %s.", r.ReportingMTA)
	line("")
	if !r.Arrival.IsZero() {
		line("Your message of %s", r.Arrival.Format(time.RFC1123Z))
	} else {
		line("Your message")
	}
	if r.QueueID != "" {
		line("(queue ID %s) has a delivery report.", humanValue(r.QueueID))
	} else {
		line("has a delivery report.")
	}

	section := func(a Action, title string) {
		var these []recip
		for _, rc := range rs {
			if actionOf(rc.Action) == a {
				these = append(these, rc)
			}
		}
		if len(these) == 0 {
			return
		}
		line("")
		line("%s", title)
		for _, rc := range these {
			line("")
			line("<%s>:", humanValue(strings.Trim(rc.Addr, "<>")))
			explain(&b, rc, r.Arrival, now)
		}
	}
	section(Failed, "It could not be delivered to these recipients; the mail system has given up:")
	section(Delayed, "Delivery to these recipients has been delayed. The mail system will keep\r\ntrying; you do not need to send the message again:")
	section(Delivered, "It was delivered to these recipients:")
	section(Relayed, "It was passed on to these recipients' mail servers, which may send no\r\nfurther report:")

	line("")
	switch {
	case ret.tooBig:
		line("The message was larger than %d MiB, so only its headers are attached.", MaxReturn>>20)
	case ret.notIntact:
		line("The message has lines longer than %d characters or NUL characters and", maxLine)
		line("cannot be attached intact, so only its headers are attached.")
	case ret.full:
		line("The message is attached.")
	default:
		line("The headers of the message are attached.")
	}
	if ret.truncated {
		line("Its header section was longer than %d KiB and has been cut short.", maxHeaderReturn>>10)
	}
	return b.Bytes()
}

// explain writes the indented lines about one recipient: the remote's reply
// exactly, else a local explanation from the status.
func explain(b *bytes.Buffer, rc recip, arrival, now time.Time) {
	w := func(s string) { b.WriteString("    " + s + "\r\n") }
	if rc.Diagnostic != "" {
		if rc.RemoteMTA != "" {
			w("host " + humanValue(rc.RemoteMTA) + " said:")
		} else {
			w("the remote server said:")
		}
		for _, l := range strings.FieldsFunc(rc.Diagnostic, func(c rune) bool { return c == '\r' || c == '\n' }) {
			w("  " + humanValue(l))
		}
	} else {
		w(localExplanation(rc.status, arrival, now))
	}
	if !rc.LastAttempt.IsZero() {
		w("last attempt: " + rc.LastAttempt.Format(time.RFC1123Z))
	}
	if rc.Action == Delayed && !rc.WillRetryUntil.IsZero() {
		w("will retry until: " + rc.WillRetryUntil.Format(time.RFC1123Z))
	}
}

// localExplanation says in words what status means when no remote answered
// (RFC 3463 3).
func localExplanation(status string, arrival, now time.Time) string {
	detail := status[strings.IndexByte(status, '.'):]
	var s string
	switch detail {
	case ".4.7":
		s = "delivery time expired: no server accepted the message"
		if !arrival.IsZero() && now.After(arrival) {
			s += " in " + humanDuration(now.Sub(arrival))
		}
	case ".4.1":
		s = "no answer from the recipient's mail server"
	case ".4.2":
		s = "the connection to the recipient's mail server was broken"
	case ".4.3":
		s = "the recipient's mail server could not be looked up (DNS failure)"
	case ".4.4":
		s = "no route to the recipient's mail server"
	case ".4.6":
		s = "a mail loop was detected"
	case ".3.4":
		s = "the message is too big"
	case ".7.1":
		s = "delivery is not authorised"
	default:
		s = "delivery failed"
	}
	return s + " (status " + status + ")"
}

func humanDuration(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
	case d >= 2*time.Hour:
		return fmt.Sprintf("%d hours", int(d/time.Hour))
	}
	return d.Round(time.Second).String()
}

// fold writes one "Name: value" field as lines of at most 998 octets,
// breaking before a space (RFC 5322 2.2.3); a word longer than a line is cut.
func fold(f string) string {
	var b strings.Builder
	for len(f) > maxLine {
		i := strings.LastIndexByte(f[1:maxLine+1], ' ') + 1
		if i <= 0 {
			f = f[:maxLine]
			break
		}
		b.WriteString(f[:i])
		b.WriteString("\r\n")
		f = f[i:]
	}
	b.WriteString(f)
	b.WriteString("\r\n")
	return b.String()
}

// textValue makes s one line of printable US-ASCII: line breaks and runs of
// white space become one space, other bytes '?'.
func textValue(s string) string {
	var b strings.Builder
	space := false
	for _, c := range s {
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			space = true
			continue
		case c < 0x20 || c >= 0x7f:
			c = '?'
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(c)
	}
	return b.String()
}

// addrValue is an address for a delivery-status field: as is when it is
// printable US-ASCII without spaces, else xtext-encoded (RFC 3461 4) so the
// part stays 7-bit and nothing is lost.
func addrValue(s string) string {
	s = strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">")
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return xtext(s)
		}
	}
	return s
}

// xtextValue decodes an xtext value (ENVID, ORCPT address) for a
// delivery-status field, RFC 3461 6.3; when the decoded form would not be
// printable US-ASCII, or s is not valid xtext, s is kept encoded.
func xtextValue(s string) string {
	dec, ok := unxtext(s)
	if !ok {
		return xtext(s)
	}
	for i := 0; i < len(dec); i++ {
		if dec[i] <= ' ' || dec[i] >= 0x7f {
			return textValue(s)
		}
	}
	return dec
}

// xtext encodes s (RFC 3461 4): '+', '=' and bytes outside 33..126 as +XX.
func xtext(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 33 || c > 126 || c == '+' || c == '=' {
			fmt.Fprintf(&b, "+%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func unxtext(s string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return "", false
			}
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
		case c < 33 || c > 126 || c == '=':
			return "", false
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'A' && c <= 'F' }

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'A' + 10
}

// isAtom reports whether s is an address type (RFC 3464 2.1.2: an atom).
func isAtom(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// humanValue makes s safe in a line of the text/plain part: valid UTF-8,
// control characters as '?'.
func humanValue(s string) string {
	s = strings.ToValidUTF8(s, "?")
	return strings.Map(func(c rune) rune {
		if c == '\t' {
			return ' '
		}
		if c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0) || c == utf8.RuneError {
			return '?'
		}
		return c
	}, s)
}
