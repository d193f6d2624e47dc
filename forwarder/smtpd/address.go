package smtpd

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// Address errors; the session maps each to its reply.
var (
	// errRelay: a relay trick (RFC 5321 7.1): %, ! or @ in the local part
	// (quoted or not), or an address literal as the domain. 550 5.7.1.
	errRelay = errors.New("relay trick")
	// errSyntax: not an RFC 5321 Mailbox. 501 5.1.3 (recipient), 5.1.7 (sender).
	errSyntax = errors.New("bad address syntax")
	// errNonASCII: a non-ASCII address without SMTPUTF8 (RFC 6531 3.5): 553 5.6.7.
	errNonASCII = errors.New("non-ASCII address without SMTPUTF8")
)

// mailbox is an address go-smtp passed us, split and checked.
type mailbox struct {
	local  string // as go-smtp gave it: a quoted local part arrives unquoted
	domain string // lower case when ASCII, else as given
	ascii  string // the domain in ASCII (A-labels): what route.Lookup takes
}

// String is the address in RFC 5321 form: the local part as a Dot-string
// when it is one, else re-quoted (4.1.2), so it can be sent on unchanged.
func (m mailbox) String() string { return quoteLocal(m.local) + "@" + m.domain }

// parseRecipient checks a forward-path (RFC 5321 4.1.2 Mailbox) for a
// recipient of ours. go-smtp has already dropped any source route
// (@a,@b:) and the quotes of a quoted local part, so what is left of a
// trick shows as an '@', '%' or '!' in the local part; the local part
// ends at the last '@'. Address literals are refused: we accept mail
// only for named, forwarded zones.
func parseRecipient(addr string, utf8OK bool) (mailbox, error) {
	i := strings.LastIndexByte(addr, '@')
	if i <= 0 || i == len(addr)-1 {
		return mailbox{}, errSyntax
	}
	local, domain := addr[:i], addr[i+1:]
	if strings.ContainsAny(local, "@%!") {
		return mailbox{}, errRelay
	}
	if domain[0] == '[' {
		return mailbox{}, errRelay
	}
	if err := checkLocal(local, utf8OK); err != nil {
		return mailbox{}, err
	}
	ascii, err := checkDomain(domain, utf8OK)
	if err != nil {
		return mailbox{}, err
	}
	if isASCII(domain) {
		domain = ascii
	}
	return mailbox{local: local, domain: domain, ascii: ascii}, nil
}

// parseSender checks a reverse-path (without <>, not the null one). It is
// more liberal than parseRecipient: any local part RFC 5321 can carry,
// and address literals, since we only ever send a DSN there.
func parseSender(addr string, utf8OK bool) (mailbox, error) {
	i := strings.LastIndexByte(addr, '@')
	if i <= 0 || i == len(addr)-1 {
		return mailbox{}, errSyntax
	}
	local, domain := addr[:i], addr[i+1:]
	if err := checkLocal(local, utf8OK); err != nil {
		return mailbox{}, err
	}
	if domain[0] == '[' {
		if !validLiteral(domain) {
			return mailbox{}, errSyntax
		}
		return mailbox{local: local, domain: domain, ascii: domain}, nil
	}
	ascii, err := checkDomain(domain, utf8OK)
	if err != nil {
		return mailbox{}, err
	}
	if isASCII(domain) {
		domain = ascii
	}
	return mailbox{local: local, domain: domain, ascii: ascii}, nil
}

// checkLocal accepts what a Local-part can carry once unquoted (RFC 5321
// 4.1.2: qtextSMTP and quoted-pair are %d32-126; RFC 6531 adds UTF-8).
// Control characters and invalid UTF-8 are refused.
func checkLocal(local string, utf8OK bool) error {
	if local == "" {
		return errSyntax
	}
	for i := 0; i < len(local); i++ {
		c := local[i]
		if c < 32 || c == 127 {
			return errSyntax
		}
		if c >= 0x80 {
			if !utf8OK {
				return errNonASCII
			}
			if !utf8.ValidString(local) {
				return errSyntax
			}
		}
	}
	return nil
}

// isAtext reports an RFC 5322 atext character; RFC 6531 adds UTF-8.
func isAtext(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c >= 0x80:
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// quoteLocal returns local as a Dot-string when it is one, else as a
// Quoted-string with '"' and '\' escaped (RFC 5321 4.1.2).
func quoteLocal(local string) string {
	dot := local != "" && local[0] != '.' && local[len(local)-1] != '.' && !strings.Contains(local, "..")
	for i := 0; dot && i < len(local); i++ {
		dot = local[i] == '.' || isAtext(local[i])
	}
	if dot {
		return local
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(local); i++ {
		if local[i] == '"' || local[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(local[i])
	}
	b.WriteByte('"')
	return b.String()
}

// checkDomain checks an RFC 5321 Domain (LDH labels of 1-63 octets, at
// most 253 in all, no trailing dot) and returns it in lower-case ASCII. A
// non-ASCII domain (RFC 6531, only with SMTPUTF8) is converted label by
// label to A-labels with Punycode (RFC 3492) after lower-casing; no other
// IDNA mapping is done, so a domain not in NFC is refused later as not ours.
func checkDomain(domain string, utf8OK bool) (string, error) {
	if !isASCII(domain) {
		if !utf8OK {
			return "", errNonASCII
		}
		if !utf8.ValidString(domain) {
			return "", errSyntax
		}
		labels := strings.Split(domain, ".")
		for i, l := range labels {
			if isASCII(l) {
				labels[i] = strings.ToLower(l)
				continue
			}
			p, ok := punycode(strings.ToLower(l))
			if !ok {
				return "", errSyntax
			}
			labels[i] = "xn--" + p
		}
		domain = strings.Join(labels, ".")
	}
	domain = strings.ToLower(domain)
	if len(domain) > 253 {
		return "", errSyntax
	}
	for _, l := range strings.Split(domain, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return "", errSyntax
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", errSyntax
			}
		}
	}
	return domain, nil
}

// validLiteral checks an address literal's shape loosely: [...] with
// printable ASCII inside and no brackets or backslash (RFC 5321 4.1.3).
func validLiteral(s string) bool {
	if len(s) < 3 || s[0] != '[' || s[len(s)-1] != ']' {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		c := s[i]
		if c <= 32 || c >= 127 || c == '[' || c == ']' || c == '\\' {
			return false
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// punycode encodes a label per RFC 3492 6.3 (without the "xn--" prefix).
func punycode(label string) (string, bool) {
	const (
		base, tmin, tmax, skew, damp = 36, 1, 26, 38, 700
		initialBias, initialN        = 72, 128
	)
	runes := []rune(label)
	var out []byte
	for _, r := range runes {
		if r < 0x80 {
			out = append(out, byte(r))
		}
	}
	b := len(out)
	h := b
	if b > 0 {
		out = append(out, '-')
	}
	digit := func(d int) byte {
		if d < 26 {
			return byte('a' + d)
		}
		return byte('0' + d - 26)
	}
	adapt := func(delta, numPoints int, first bool) int {
		if first {
			delta /= damp
		} else {
			delta /= 2
		}
		delta += delta / numPoints
		k := 0
		for delta > ((base-tmin)*tmax)/2 {
			delta /= base - tmin
			k += base
		}
		return k + (base-tmin+1)*delta/(delta+skew)
	}
	n, delta, bias := initialN, 0, initialBias
	for h < len(runes) {
		m := int(^uint(0) >> 1)
		for _, r := range runes {
			if int(r) >= n && int(r) < m {
				m = int(r)
			}
		}
		if (m - n) > (1<<30)/(h+1) {
			return "", false
		}
		delta += (m - n) * (h + 1)
		n = m
		for _, r := range runes {
			if int(r) < n {
				delta++
			}
			if int(r) == n {
				q := delta
				for k := base; ; k += base {
					t := k - bias
					if t < tmin {
						t = tmin
					} else if t > tmax {
						t = tmax
					}
					if q < t {
						break
					}
					out = append(out, digit(t+(q-t)%(base-t)))
					q = (q - t) / (base - t)
				}
				out = append(out, digit(q))
				bias = adapt(delta, h+1, h == b)
				delta = 0
				h++
			}
		}
		delta++
		n++
	}
	return string(out), true
}
