package dyndns

import (
	"strings"
	"testing"

	"github.com/mxport/mxport/store/record"
)

// FuzzParams: the /nic/update parameter parsing never panics, and what it
// accepts is what the store accepts.
func FuzzParams(f *testing.F) {
	f.Add("home.example.com,b.example.org", "192.0.2.1", "2001:db8::1")
	f.Add("HOME.Example.COM.", "192.0.2.1,2001:db8::1", "")
	f.Add("*.example.com,,localhost", "::ffff:192.0.2.1", "fe80::1%eth0")
	f.Add("_acme-challenge.example.com", "0.0.0.0", "ff02::1")
	f.Fuzz(func(t *testing.T, hostnames, myip, myipv6 string) {
		for _, h := range splitList(hostnames) {
			n, ok := hostName(h)
			if !ok {
				continue
			}
			if n != strings.ToLower(n) || strings.HasSuffix(n, ".") || !strings.Contains(n, ".") {
				t.Fatalf("hostName(%q) = %q", h, n)
			}
			zone := n[strings.Index(n, ".")+1:]
			owner, ok := record.RelativeOwner(zone, n)
			if !ok {
				t.Fatalf("%q not inside %q", n, zone)
			}
			if _, err := record.Normalize(zone, record.Record{Name: owner, Type: "A", TTL: DefaultTTL, Data: "192.0.2.1"}, record.Policy{}); err != nil {
				t.Fatalf("hostName accepted %q, the store refuses it: %v", h, err)
			}
		}
		v4, v6 := parseAddrs(myip, myipv6)
		if v4.IsValid() && !v4.Is4() || v6.IsValid() && (v6.Is4() || v6.Is4In6()) {
			t.Fatalf("parseAddrs(%q, %q) = %v, %v", myip, myipv6, v4, v6)
		}
		for _, a := range []string{v4.String(), v6.String()} {
			if a == "invalid IP" {
				continue
			}
			typ := "A"
			if strings.Contains(a, ":") {
				typ = "AAAA"
			}
			if _, err := record.Normalize("example.com", record.Record{Name: "h", Type: typ, TTL: DefaultTTL, Data: a}, record.Policy{}); err != nil {
				t.Fatalf("parseAddrs accepted %q, the store refuses it: %v", a, err)
			}
		}
	})
}
