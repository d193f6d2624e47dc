package dyndns

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxport/mxport/dnsserver"
)

// Real dyndns2 clients from Debian against Register: ddclient and inadyn.
// They are test dependencies (make test installs them); a missing one fails
// the test rather than skipping it.

func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/sbin"} { // not on every user's PATH
			if _, serr := os.Stat(filepath.Join(dir, name)); serr == nil {
				return filepath.Join(dir, name)
			}
		}
		t.Fatalf("%s not found (make test installs it; Debian package %s): %v", name, name, err)
	}
	return p
}

// runTool runs a client to completion (it updates once and exits) and
// returns its combined output.
func runTool(t *testing.T, dir, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s did not finish within 60s; output:\n%s", bin, out)
	}
	t.Logf("%s %s: exit %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	return string(out)
}

func TestDdclient(t *testing.T) {
	bin := lookTool(t, "ddclient")
	e := newEnv(t, Config{})
	run := func(t *testing.T, password, host string) string {
		t.Helper()
		dir := t.TempDir()
		conf := filepath.Join(dir, "ddclient.conf")
		// Debian 12's ddclient 3.10: use=ip with ip= is the static address
		// (deprecated for usev4=ipv4 and ipv4=, which 3.10's dyndns2 does
		// not read yet).
		text := strings.Join([]string{
			"daemon=0",
			"syslog=no",
			"ssl=no",
			"use=ip, ip=192.0.2.55",
			"protocol=dyndns2",
			"server=" + e.addr,
			"login=x",
			"password='" + password + "'",
			host,
			"",
		}, "\n")
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return runTool(t, dir, bin, "-daemon=0", "-foreground", "-file", conf,
			"-cache", filepath.Join(dir, "ddclient.cache"), "-verbose", "-noquiet")
	}
	dnsAddr := startDNS(t, e)
	t.Run("update", func(t *testing.T) {
		out := run(t, e.alice, "home.example.com")
		if !strings.Contains(out, "SUCCESS") || !strings.Contains(out, "good") {
			t.Errorf("ddclient output has no SUCCESS ... good")
		}
		if got := e.rrset(t, "example.com", "home", "A"); !slices.Equal(got, []string{"60 192.0.2.55"}) {
			t.Fatalf("A = %v, want 192.0.2.55", got)
		}
		waitDNS(t, dnsAddr, "home.example.com.", "192.0.2.55")
	})
	t.Run("again: nochg", func(t *testing.T) {
		out := run(t, e.alice, "home.example.com")
		if !strings.Contains(out, "nochg") {
			t.Errorf("ddclient output has no nochg")
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		out := run(t, "mxp_wrong", "wrong.example.com")
		// ddclient 3.10 parses the body only on a 2xx status; on our 401
		// it logs "authorization failed" with the whole reply, "badauth"
		// included.
		if !strings.Contains(out, "FAILED:   updating wrong.example.com: authorization failed") || !strings.Contains(out, "badauth") {
			t.Errorf("ddclient output has no authorization failure with badauth")
		}
		if got := e.rrset(t, "example.com", "wrong", "A"); got != nil {
			t.Fatalf("A = %v after a wrong password", got)
		}
	})
	t.Run("unknown host", func(t *testing.T) {
		out := run(t, e.alice, "home.nowhere.invalid")
		if !strings.Contains(out, "nohost") {
			t.Errorf("ddclient output has no nohost")
		}
	})
	t.Run("another tenant's host", func(t *testing.T) {
		out := run(t, e.bob, "home2.example.com")
		if !strings.Contains(out, "nohost") {
			t.Errorf("ddclient output has no nohost")
		}
		if got := e.rrset(t, "example.com", "home2", "A"); got != nil {
			t.Fatalf("A = %v", got)
		}
	})
	t.Run("update key", func(t *testing.T) {
		key, _, err := e.st.CreateUpdateKey(e.ctx, "example.com", "router")
		if err != nil {
			t.Fatal(err)
		}
		// ddclient sends both hosts in one request and reads a line each.
		out := run(t, key, "router.example.com,www.example.com")
		if !strings.Contains(out, "SUCCESS:  updating router.example.com") {
			t.Errorf("ddclient output has no success for router.example.com")
		}
		if !strings.Contains(out, "FAILED:   updating www.example.com") || !strings.Contains(out, "nohost") {
			t.Errorf("ddclient output has no nohost failure for www.example.com")
		}
		if got := e.rrset(t, "example.com", "router", "A"); !slices.Equal(got, []string{"60 192.0.2.55"}) {
			t.Fatalf("A = %v, want 192.0.2.55", got)
		}
		if got := e.rrset(t, "example.com", "www", "A"); got != nil {
			t.Fatalf("www A = %v after an update key for another host", got)
		}
		waitDNS(t, dnsAddr, "router.example.com.", "192.0.2.55")
	})
}

func TestInadyn(t *testing.T) {
	bin := lookTool(t, "inadyn")
	e := newEnv(t, Config{})
	dnsAddr := startDNS(t, e)
	run := func(t *testing.T, password, host, ip string) string {
		t.Helper()
		dir := t.TempDir()
		conf := filepath.Join(dir, "inadyn.conf")
		text := strings.Join([]string{
			"period = 300",
			"custom mxport {",
			`    username = "x"`,
			`    password = "` + password + `"`,
			`    ddns-server = "` + e.addr + `"`,
			`    ddns-path = "/nic/update?hostname=%h&myip=%i"`,
			"    ssl = false",
			`    checkip-command = "/bin/echo ` + ip + `"`,
			`    hostname = "` + host + `"`,
			"}",
			"",
		}, "\n")
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return runTool(t, dir, bin, "--once", "--foreground", "--force", "--no-pidfile",
			"--loglevel=debug", "--cache-dir="+dir, "--ident=inadyn-test", "--config="+conf)
	}
	t.Run("update", func(t *testing.T) {
		out := run(t, e.alice, "inadyn.example.com", "192.0.2.66")
		if !strings.Contains(out, "Successful alias table update for inadyn.example.com") {
			t.Errorf("inadyn output has no successful update")
		}
		if got := e.rrset(t, "example.com", "inadyn", "A"); !slices.Equal(got, []string{"60 192.0.2.66"}) {
			t.Fatalf("A = %v, want 192.0.2.66", got)
		}
	})
	t.Run("changed address", func(t *testing.T) {
		run(t, e.alice, "inadyn.example.com", "192.0.2.67")
		if got := e.rrset(t, "example.com", "inadyn", "A"); !slices.Equal(got, []string{"60 192.0.2.67"}) {
			t.Fatalf("A = %v, want 192.0.2.67", got)
		}
		waitDNS(t, dnsAddr, "inadyn.example.com.", "192.0.2.67")
	})
	t.Run("wrong password", func(t *testing.T) {
		out := run(t, "mxp_wrong", "inadyn2.example.com", "192.0.2.68")
		if !strings.Contains(out, "badauth") || !strings.Contains(out, "Authentication failure") {
			t.Errorf("inadyn output has no badauth authentication failure")
		}
		if got := e.rrset(t, "example.com", "inadyn2", "A"); got != nil {
			t.Fatalf("A = %v after a wrong password", got)
		}
	})
	t.Run("unknown host", func(t *testing.T) {
		out := run(t, e.alice, "inadyn.nowhere.invalid", "192.0.2.69")
		if !strings.Contains(out, "nohost") || strings.Contains(out, "Successful alias table update") {
			t.Errorf("inadyn output has no failed update with nohost")
		}
	})
	t.Run("update key", func(t *testing.T) {
		key, _, err := e.st.CreateUpdateKey(e.ctx, "example.com", "inadyn-key")
		if err != nil {
			t.Fatal(err)
		}
		out := run(t, key, "inadyn-key.example.com", "192.0.2.70")
		if !strings.Contains(out, "Successful alias table update for inadyn-key.example.com") {
			t.Errorf("inadyn output has no successful update")
		}
		if got := e.rrset(t, "example.com", "inadyn-key", "A"); !slices.Equal(got, []string{"60 192.0.2.70"}) {
			t.Fatalf("A = %v, want 192.0.2.70", got)
		}
		out = run(t, key, "inadyn.example.com", "192.0.2.71")
		if !strings.Contains(out, "nohost") || strings.Contains(out, "Successful alias table update") {
			t.Errorf("inadyn output has no failed update with nohost for another host")
		}
		if got := e.rrset(t, "example.com", "inadyn", "A"); !slices.Equal(got, []string{"60 192.0.2.67"}) {
			t.Fatalf("inadyn A = %v, want 192.0.2.67 untouched", got)
		}
	})
}

// startDNS runs the dns role over e's store, so a test can see the DNS
// answer change after an update.
func startDNS(t *testing.T, e *env) string {
	t.Helper()
	srv := dnsserver.New(e.st, dnsserver.Config{Addr: "127.0.0.1:0", UDPSockets: 1})
	if err := srv.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return srv.Addr()
}

// waitDNS polls the DNS role until name's A record is want.
func waitDNS(t *testing.T, addr, name, want string) {
	t.Helper()
	c := &dns.Client{Timeout: time.Second}
	deadline := time.Now().Add(5 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		if r, _, err := c.Exchange(m, addr); err == nil {
			for _, rr := range r.Answer {
				if a, ok := rr.(*dns.A); ok {
					last = a.A.String()
					if last == want {
						return
					}
				}
			}
		}
		time.Sleep(20 * time.Millisecond) // poll with a deadline
	}
	t.Fatalf("DNS answers %s A %q, want %s", name, last, want)
}
