package web_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/labstack/echo/v4"
	"github.com/miekg/dns"

	"github.com/mxport/mxport/dnsserver"
	"github.com/mxport/mxport/panel/auth"
	"github.com/mxport/mxport/panel/web"
	"github.com/mxport/mxport/store/storetest"
)

// chromium finds Debian's chromium (make test installs it); the test is
// skipped without it, like the other tests that need an outside peer.
func chromium(t *testing.T) string {
	for _, p := range []string{os.Getenv("MXPORT_CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p == "" {
			continue
		}
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Fatal("chromium not found (make test installs Debian's chromium)")
	return ""
}

// TestBrowser drives the panel with a real headless Chromium: sign in,
// create a zone, add an A record and a forwarding MX, read the forwarding
// preview, check that the DNS role over the same store answers the
// service's MX hosts, and see a bad MX port rejected next to the data field.
func TestBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	exe := chromium(t)
	st := storetest.New(t)
	ctx := context.Background()
	if _, err := st.CreateAccount(ctx, "carol", "customer", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateUser(ctx, "carol@example.test", "carol", "carol-password-1"); err != nil {
		t.Fatal(err)
	}

	e := echo.New()
	e.IPExtractor = echo.ExtractIPDirect()
	web.Register(e, web.Config{Store: st, Auth: auth.New(st), MXHosts: storetest.Options.MXHosts})
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)

	// The DNS role over the same store, on sockets the test opened.
	pc, l := listenDNS(t)
	dnsSrv := dnsserver.New(st, dnsserver.Config{MXHosts: storetest.Options.MXHosts})
	if err := dnsSrv.Serve(ctx, []net.PacketConn{pc}, l); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		dnsSrv.Shutdown(sctx)
	})

	// One deadline for the whole browser session.
	bctx, cancelAll := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancelAll)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1100, 1400),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(bctx, opts...)
	t.Cleanup(cancelAlloc) // waits for the browser to exit
	cctx, cancelTab := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancelTab)

	// submit clicks a form's button and waits for the page it leads to.
	submit := func(what, button string, steps ...chromedp.Action[chromedp.Void]) int64 {
		t.Helper()
		resp, err := chromedp.RunResponse(cctx, append(steps, chromedp.Click(chromedp.CSS(button)))...)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return resp.Status
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(cctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	location := func() string {
		t.Helper()
		u, err := chromedp.Run(cctx, chromedp.Location())
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimPrefix(u, srv.URL)
	}
	record := func(name, typ, ttl, data string) []chromedp.Action[chromedp.Void] {
		return []chromedp.Action[chromedp.Void]{
			chromedp.SetValue(chromedp.CSS("#name"), name),
			chromedp.SetValue(chromedp.CSS("#type"), typ),
			chromedp.SetValue(chromedp.CSS("#ttl"), ttl),
			chromedp.SetValue(chromedp.CSS("#data"), data),
		}
	}

	// Sign in: "/" sends a stranger to the sign-in form.
	if err := chromedp.Do(cctx, chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#email"))); err != nil {
		t.Fatalf("open the panel: %v", err)
	}
	if s := submit("sign in", "main form button[type=submit]",
		chromedp.SendKeys(chromedp.CSS("#email"), "carol@example.test"),
		chromedp.SendKeys(chromedp.CSS("#password"), "carol-password-1")); s != http.StatusOK || location() != "/zones" {
		t.Fatalf("sign in: status %d at %s", s, location())
	}

	// Create a zone.
	if s := submit("create zone", "#create-zone button[type=submit]",
		chromedp.SendKeys(chromedp.CSS("#zone-name"), "browser.test")); s != http.StatusOK || location() != "/zones/browser.test?done=created" {
		t.Fatalf("create zone: status %d at %s", s, location())
	}

	// An A record, then the forwarding MX.
	if s := submit("add A", "#add-record button[type=submit]", record("www", "A", "300", "192.0.2.7")...); s != http.StatusOK {
		t.Fatalf("add A: status %d", s)
	}
	if s := submit("add MX", "#add-record button[type=submit]", record("@", "MX", "3600", "mail.example.com:2525")...); s != http.StatusOK {
		t.Fatalf("add MX: status %d", s)
	}
	if rec := text("#records tbody"); !strings.Contains(rec, "192.0.2.7") || !strings.Contains(rec, "10 mail.example.com.:2525") {
		t.Errorf("record table: %q", rec)
	}
	if pub := text("#published"); !strings.Contains(pub, "10 mx1.fwd.test") || !strings.Contains(pub, "20 mx2.fwd.test") {
		t.Errorf("preview publishes %q", pub)
	}
	if route := text("#route"); route != "mail.example.com port 2525" {
		t.Errorf("preview route %q", route)
	}

	// The DNS role answers the service's MX hosts for the zone, and the A.
	waitDNS(t, pc.LocalAddr().String(), "browser.test.", dns.TypeMX, []string{"10 mx1.fwd.test.", "20 mx2.fwd.test."})
	waitDNS(t, pc.LocalAddr().String(), "www.browser.test.", dns.TypeA, []string{"192.0.2.7"})

	// A bad port: the error sits next to the data field, the input kept.
	if s := submit("bad MX", "#add-record button[type=submit]", record("@", "MX", "3600", "mail.example.com:99999")...); s != http.StatusBadRequest {
		t.Errorf("bad MX: status %d, want 400", s)
	}
	if msg := text("#data-error"); !strings.Contains(msg, "99999") || !strings.Contains(msg, "port") {
		t.Errorf("data error %q", msg)
	}
	next, err := chromedp.Run(cctx, chromedp.Evaluate[bool](`(() => {
		const input = document.querySelector('#data'), err = document.querySelector('#data-error');
		return input.parentElement === err.parentElement && input.value === 'mail.example.com:99999' &&
			input.getAttribute('aria-invalid') === 'true' && input.getAttribute('aria-describedby').includes('data-error') &&
			document.querySelectorAll('.field-error').length === 1;
	})()`))
	if err != nil || !next {
		t.Errorf("the error is not next to the data field, or the input is lost (%v)", err)
	}

	png, err := chromedp.Run(cctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	shot := filepath.Join(os.TempDir(), "mxport-web-browser-test.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))
}

// listenDNS opens UDP and TCP sockets on one free loopback port; a port
// free for UDP may be taken for TCP, so it tries a few.
func listenDNS(t *testing.T) (net.PacketConn, net.Listener) {
	t.Helper()
	var err error
	for range 20 {
		var pc net.PacketConn
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			break
		}
		var l net.Listener
		if l, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			return pc, l
		}
		pc.Close()
	}
	t.Fatalf("dns sockets: %v", err)
	return nil, nil
}

// waitDNS asks the server until it answers qname/qtype with exactly want
// (RDATA strings, any order); the server follows the store asynchronously.
func waitDNS(t *testing.T, addr, qname string, qtype uint16, want []string) {
	t.Helper()
	c := &dns.Client{Timeout: time.Second}
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	var got []string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		got = got[:0]
		r, _, err := c.Exchange(m, addr)
		if err == nil && r.Rcode == dns.RcodeSuccess {
			for _, rr := range r.Answer {
				got = append(got, strings.TrimPrefix(rr.String(), rr.Header().String()))
			}
			slices.Sort(got)
			if slices.Equal(got, want) {
				return
			}
		}
		time.Sleep(50 * time.Millisecond) // poll with a deadline: the index loads and follows in the background
	}
	t.Fatalf("DNS %s %s: got %v, want %v", qname, dns.TypeToString[qtype], got, want)
}
