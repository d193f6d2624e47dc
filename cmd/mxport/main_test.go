package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxport/mxport/store/storetest"
)

// bin is the mxport binary built for these tests: they run it as users do.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mxport-cli-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "mxport")
	out, err := exec.Command("go", "build", "-race", "-o", bin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build mxport: %v\n%s", err, out)
		os.Exit(1)
	}
	defer os.RemoveAll(dir)
	storetest.Main(m)
}

// result is one run of the binary.
type result struct {
	out, err string
	code     int
	dur      time.Duration
}

// mxport runs the binary with env (on top of a clean environment) and stdin.
func mxport(t *testing.T, env []string, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	start := time.Now()
	err := cmd.Run()
	r := result{out: o.String(), err: e.String(), dur: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run mxport %v: %v", args, err)
	}
	return r
}

// ok runs the binary and fails the test unless it exits 0.
func ok(t *testing.T, env []string, stdin string, args ...string) string {
	t.Helper()
	r := mxport(t, env, stdin, args...)
	if r.code != 0 {
		t.Fatalf("mxport %s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.err)
	}
	return r.out
}

// failsWith runs the binary, wants exit code and one stderr line containing
// every one of want.
func failsWith(t *testing.T, env []string, code int, want []string, args ...string) result {
	t.Helper()
	r := mxport(t, env, "", args...)
	if r.code != code {
		t.Fatalf("mxport %s: exit %d, want %d (stderr %q)", strings.Join(args, " "), r.code, code, r.err)
	}
	if lines := strings.Split(strings.TrimSuffix(r.err, "\n"), "\n"); len(lines) != 1 || lines[0] == "" {
		t.Fatalf("mxport %s: stderr is not one line: %q", strings.Join(args, " "), r.err)
	}
	for _, w := range want {
		if !strings.Contains(r.err, w) {
			t.Errorf("mxport %s: stderr %q does not contain %q", strings.Join(args, " "), r.err, w)
		}
	}
	return r
}

func redisEnv(t *testing.T) []string {
	return []string{"MXPORT_REDIS_URL=" + storetest.NewURL(t), "MXPORT_MX_HOSTS=mx1.fwd.test,mx2.fwd.test", "MXPORT_NS=ns1.fwd.test,ns2.fwd.test"}
}

func TestVersionAndUsage(t *testing.T) {
	if out := ok(t, nil, "", "version"); !strings.HasPrefix(out, "mxport ") {
		t.Errorf("version: %q", out)
	}
	if out := ok(t, nil, "", "help"); !strings.Contains(out, "record add ZONE NAME TYPE TTL DATA") {
		t.Errorf("help: %q", out)
	}
}

func TestTokensAndUsers(t *testing.T) {
	env := redisEnv(t)
	tokenRE := regexp.MustCompile(`^mxp_[A-Za-z0-9_-]{32}\n$`)
	for _, args := range [][]string{
		{"token", "create", "--role", "operator"},
		{"token", "create", "--role", "registrar", "--account", "reg1"},
		{"token", "create", "--account", "cust1", "--role", "customer"},
	} {
		if out := ok(t, env, "", args...); !tokenRE.MatchString(out) {
			t.Errorf("%v: stdout %q is not one token alone", args, out)
		}
	}
	failsWith(t, env, 2, []string{"--account is required"}, "token", "create", "--role", "customer")
	failsWith(t, env, 2, []string{"role", "king"}, "token", "create", "--role", "king")
	failsWith(t, env, 1, []string{"reg1", "registrar"}, "token", "create", "--role", "customer", "--account", "reg1")

	ok(t, env, "correct horse battery\n", "user", "create", "--email", "Ann@Example.com", "--role", "customer", "--account", "cust1")
	if r := mxport(t, env, "another long password\n", "user", "create", "--email", "ann@example.com", "--role", "customer", "--account", "cust1"); r.code != 1 || !strings.Contains(r.err, "exists") {
		t.Errorf("second user create: exit %d, stderr %q", r.code, r.err)
	}
	r := mxport(t, env, "short\n", "user", "create", "--email", "bob@example.com", "--role", "customer")
	if r.code != 1 || !strings.Contains(r.err, "password") {
		t.Errorf("short password: exit %d stderr %q", r.code, r.err)
	}
	failsWith(t, env, 2, []string{"email"}, "user", "create", "--email", "not-an-address", "--role", "operator")
}

func TestZonesAndRecords(t *testing.T) {
	env := redisEnv(t)
	if out := ok(t, env, "", "zone", "create", "Example.COM", "--account", "cust1"); !strings.Contains(out, "example.com") {
		t.Errorf("zone create: %q", out)
	}
	failsWith(t, env, 1, []string{"exists"}, "zone", "create", "example.com")
	ok(t, env, "", "zone", "create", "other.test")
	if out := ok(t, env, "", "zone", "list"); out != "example.com\nother.test\n" {
		t.Errorf("zone list: %q", out)
	}
	if out := ok(t, env, "", "zone", "list", "--account", "cust1"); out != "example.com\n" {
		t.Errorf("zone list --account: %q", out)
	}

	add := func(args ...string) string {
		return ok(t, env, "", append([]string{"record", "add", "example.com"}, args...)...)
	}
	mx := add("@", "MX", "3600", "10 mail.example.com:2525")
	if !regexp.MustCompile(`^\d+ @ 3600 MX 10 mail\.example\.com\.:2525\n$`).MatchString(mx) {
		t.Errorf("record add MX printed %q", mx)
	}
	add("mail", "A", "300", "192.0.2.7")
	add("@", "TXT", "300", `"v=spf1 -all"`)
	add("_sip._tcp", "SRV", "300", "0 5 5060 sip.example.com")

	list := ok(t, env, "", "record", "list", "example.com")
	lines := strings.Split(strings.TrimSuffix(list, "\n"), "\n")
	if len(lines) != 6 { // 2 NS + 4 added
		t.Fatalf("record list: %d lines:\n%s", len(lines), list)
	}
	for _, l := range lines {
		if len(strings.Fields(l)) < 5 {
			t.Errorf("record list line %q is not ID NAME TTL TYPE DATA", l)
		}
	}
	if !strings.Contains(list, " mail 300 A 192.0.2.7\n") || !strings.Contains(list, " @ 3600 NS ns1.fwd.test.\n") {
		t.Errorf("record list misses records:\n%s", list)
	}

	// Bad records: exit 1, one line naming the field.
	failsWith(t, env, 1, []string{"data", "300.1.1.1"}, "record", "add", "example.com", "www", "A", "300", "300.1.1.1")
	failsWith(t, env, 1, []string{"ttl"}, "record", "add", "example.com", "www", "A", "5", "192.0.2.1")
	failsWith(t, env, 1, []string{"ttl"}, "record", "add", "example.com", "www", "A", "soon", "192.0.2.1")
	failsWith(t, env, 1, []string{"type"}, "record", "add", "example.com", "www", "BOGUS", "300", "x")
	failsWith(t, env, 1, []string{"name"}, "record", "add", "example.com", "www.elsewhere.org.", "A", "300", "192.0.2.1")
	failsWith(t, env, 1, []string{"data", "port"}, "record", "add", "example.com", "@", "MX", "300", "10 mail.example.com:99999")
	failsWith(t, env, 1, []string{"data", "mx1.fwd.test"}, "record", "add", "example.com", "@", "MX", "300", "20 mx1.fwd.test:2525")
	failsWith(t, env, 1, []string{"type", "CNAME"}, "record", "add", "example.com", "mail", "CNAME", "300", "example.com")
	failsWith(t, env, 1, []string{"not found"}, "record", "add", "nowhere.test", "www", "A", "300", "192.0.2.1")

	id := strings.Fields(mx)[0]
	ok(t, env, "", "record", "remove", "example.com", id)
	failsWith(t, env, 1, []string{"not found"}, "record", "remove", "example.com", id)
	if list := ok(t, env, "", "record", "list", "example.com"); strings.Contains(list, " MX ") {
		t.Errorf("MX still listed after remove:\n%s", list)
	}

	ok(t, env, "", "zone", "delete", "other.test")
	failsWith(t, env, 1, []string{"not found"}, "zone", "delete", "other.test")
	failsWith(t, env, 1, []string{"not found"}, "record", "list", "other.test")
}

func TestExportImport(t *testing.T) {
	if _, err := exec.LookPath("named-checkzone"); err != nil {
		t.Fatal("named-checkzone not found: install bind9-utils (make test does)")
	}
	env := redisEnv(t)
	ok(t, env, "", "zone", "create", "example.com")
	for _, r := range [][]string{
		{"@", "MX", "3600", "10 mail.example.com:2525"},
		{"@", "MX", "3600", "20 backup.example.net"},
		{"mail", "A", "300", "192.0.2.7"},
		{"mail", "AAAA", "300", "2001:db8::7"},
		{"www", "CNAME", "300", "example.com"},
		{"@", "TXT", "300", `"v=spf1 mx -all" "second string"`},
		{"@", "CAA", "300", `0 issue "letsencrypt.org"`},
		{"*.dev", "A", "60", "192.0.2.8"},
	} {
		ok(t, env, "", append([]string{"record", "add", "example.com"}, r...)...)
	}
	exported := ok(t, env, "", "zone", "export", "example.com")
	file := filepath.Join(t.TempDir(), "example.com.zone")
	if err := os.WriteFile(file, []byte(exported), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("named-checkzone", "-k", "fail", "example.com", file).CombinedOutput(); err != nil {
		t.Fatalf("named-checkzone: %v\n%s\n%s", err, out, exported)
	}
	before := recordSet(ok(t, env, "", "record", "list", "example.com"))

	failsWith(t, env, 1, []string{"exists", "--replace"}, "zone", "import", file)
	ok(t, env, "", "zone", "delete", "example.com")
	ok(t, env, "", "zone", "import", file, "--account", "cust9")
	after := recordSet(ok(t, env, "", "record", "list", "example.com"))
	if before != after {
		t.Errorf("records changed across export -> import:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if !strings.Contains(after, "@ 3600 MX 10 mail.example.com.:2525") {
		t.Errorf("forwarded MX lost its port across export -> import:\n%s", after)
	}
	if out := ok(t, env, "", "zone", "list", "--account", "cust9"); out != "example.com\n" {
		t.Errorf("imported zone not owned by cust9: %q", out)
	}
	ok(t, env, "", "zone", "import", file, "--replace")

	broken := filepath.Join(t.TempDir(), "broken.zone")
	os.WriteFile(broken, []byte("$ORIGIN broken.test.\n$TTL 300\n@ SOA ns1 host 1 3600 900 1209600 300\n@ NS ns1.fwd.test.\nwww A 300.1.2.3\n"), 0o644)
	failsWith(t, env, 1, []string{"line", "5"}, "zone", "import", broken)
}

// recordSet drops the ids of "record list" output and sorts the lines.
func recordSet(list string) string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(list))
	for sc.Scan() {
		_, rest, _ := strings.Cut(sc.Text(), " ")
		out = append(out, rest)
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

func TestTSIG(t *testing.T) {
	env := redisEnv(t)
	ok(t, env, "", "zone", "create", "example.com")
	out := ok(t, env, "", "tsig", "create", "acme-key", "--zone", "example.com")
	secret, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out))
	if err != nil || len(secret) != 32 {
		t.Fatalf("tsig create printed %q: want a base64 256-bit secret (%v)", out, err)
	}
	out = ok(t, env, "", "tsig", "create", "xfr-key", "--zone", "example.com", "--algorithm", "hmac-sha512")
	if secret, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(out)); len(secret) != 64 {
		t.Errorf("hmac-sha512 secret is %d bytes, want 64", len(secret))
	}
	if list := ok(t, env, "", "tsig", "list"); list != "acme-key. hmac-sha256 example.com\nxfr-key. hmac-sha512 example.com\n" {
		t.Errorf("tsig list: %q", list)
	}
	failsWith(t, env, 1, []string{"exists"}, "tsig", "create", "acme-key", "--zone", "example.com")
	failsWith(t, env, 1, []string{"not found"}, "tsig", "create", "k2", "--zone", "missing.test")
	failsWith(t, env, 2, []string{"--zone"}, "tsig", "create", "k3")
	ok(t, env, "", "tsig", "delete", "acme-key")
	failsWith(t, env, 1, []string{"not found"}, "tsig", "delete", "acme-key")
}

func TestUpdateKeys(t *testing.T) {
	env := redisEnv(t)
	ok(t, env, "", "zone", "create", "example.com", "--account", "c1")
	key := strings.TrimSpace(ok(t, env, "", "updatekey", "create", "example.com", "home"))
	if !regexp.MustCompile(`^mxu_[A-Za-z0-9_-]{32}$`).MatchString(key) {
		t.Fatalf("updatekey create printed %q: want one mxu_ key alone", key)
	}
	ok(t, env, "", "updatekey", "create", "example.com", "@")
	list := ok(t, env, "", "updatekey", "list", "example.com")
	lines := strings.Split(strings.TrimSuffix(list, "\n"), "\n")
	line := regexp.MustCompile(`^([0-9a-f]{16}) (\S+) \d{4}-\d\d-\d\dT\S+Z never$`)
	if len(lines) != 2 || !line.MatchString(lines[0]) || !line.MatchString(lines[1]) || strings.Contains(list, key) {
		t.Fatalf("updatekey list: %q", list)
	}
	if h := line.FindStringSubmatch(lines[0])[2]; h != "example.com" {
		t.Errorf("first key's host %q, want example.com (sorted by host)", h)
	}
	id := line.FindStringSubmatch(lines[1])[1]
	failsWith(t, env, 1, []string{"host", "not inside"}, "updatekey", "create", "example.com", "home.other.test.")
	failsWith(t, env, 1, []string{"not found"}, "updatekey", "create", "missing.test", "home")
	failsWith(t, env, 2, []string{"ZONE HOST"}, "updatekey", "create", "example.com")
	failsWith(t, env, 1, []string{"not found"}, "updatekey", "revoke", "example.com", "0123456789abcdef")
	ok(t, env, "", "updatekey", "revoke", "example.com", id)
	failsWith(t, env, 1, []string{"not found"}, "updatekey", "revoke", "example.com", id)
	if list := ok(t, env, "", "updatekey", "list", "example.com"); strings.Count(list, "\n") != 1 || strings.Contains(list, id) {
		t.Errorf("updatekey list after revoke: %q", list)
	}
}

func TestBadCommandLines(t *testing.T) {
	env := redisEnv(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"zone"}, "missing subcommand"},
		{[]string{"zone", "create"}, "want NAME"},
		{[]string{"zone", "create", "a.test", "b.test"}, "got 2"},
		{[]string{"zone", "create", "a.test", "--nope"}, "-nope"},
		{[]string{"record", "add", "a.test", "www", "A", "300"}, "ZONE NAME TYPE TTL DATA"},
		{[]string{"serve", "--retry-schedule", "1m,soon"}, "retry-schedule"},
		{[]string{"serve", "--max-queue-age", "-1h"}, "max-queue-age"},
		{[]string{"serve", "--spool-sync", "sometimes"}, "spool-sync"},
		{[]string{"serve", "--dns", "localhost"}, "--dns"},
		{[]string{"serve", "--tls-cert", "/nonexistent.pem"}, "go together"},
		{[]string{"serve", "--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"}, "tls"},
		{[]string{"serve", "--mx-hosts", "192.0.2.1"}, "--mx-hosts"},
	} {
		failsWith(t, env, 2, []string{tc.want}, tc.args...)
	}
	// A bad value in the environment is reported like a bad flag.
	failsWith(t, append(env, "MXPORT_RETRY_SCHEDULE=often"), 2, []string{"retry-schedule"}, "serve")
	failsWith(t, env, 2, []string{"DOMAIN"}, "queue", "flush", "a.test", "b.test")
	failsWith(t, env, 2, []string{"want ID"}, "queue", "remove")
}

func TestRedisUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "redis://" + l.Addr().String() + "/0"
	l.Close()
	for _, args := range [][]string{
		{"zone", "list"},
		{"serve", "--dns", "", "--smtp", "", "--http", ""},
		{"token", "create", "--role", "operator"},
	} {
		r := failsWith(t, []string{"MXPORT_REDIS_URL=" + dead}, 1, []string{"redis", "unavailable"}, args...)
		if r.dur > 5*time.Second {
			t.Errorf("%v: took %v to report an unreachable Redis", args, r.dur)
		}
	}
	failsWith(t, []string{"MXPORT_REDIS_URL=" + dead}, 1, []string{"unknown scheme"}, "zone", "list", "--redis", "mysql://x")
	// The flag wins over the environment.
	good := storetest.NewURL(t)
	ok(t, []string{"MXPORT_REDIS_URL=" + dead}, "", "zone", "list", "--redis", good)
}

func TestServeStartsAndStops(t *testing.T) {
	env := append(redisEnv(t), "MXPORT_DNS_ADDR=127.0.0.1:0", "MXPORT_SMTP_ADDR=", "MXPORT_HTTP_ADDR=")
	cmd := exec.Command(bin, "serve", "--spool", t.TempDir(), "--hostname", "mx.test")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var seen []string
	waitLine := func(want string) string {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case l, more := <-lines:
				if !more {
					t.Fatalf("serve exited before logging %q; it logged:\n%s", want, strings.Join(seen, "\n"))
				}
				seen = append(seen, l)
				if strings.Contains(l, want) {
					return l
				}
			case <-deadline:
				t.Fatalf("serve did not log %q within 10s", want)
			}
		}
	}
	if l := waitLine("msg=serving"); !strings.Contains(l, "hostname=mx.test") {
		t.Errorf("serving line: %q", l)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitLine("msg=stopping")
	for range lines {
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("serve after SIGTERM: %v, want exit 0", err)
	}
}
