package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeHTTP runs serve with every role and uses the http role: health,
// readiness (indexes loaded), metrics of all roles, and the API with a
// token made by the CLI.
func TestServeHTTP(t *testing.T) {
	env := append(redisEnv(t), "MXPORT_DNS_ADDR=127.0.0.1:0", "MXPORT_SMTP_ADDR=127.0.0.1:0", "MXPORT_HTTP_ADDR=127.0.0.1:0",
		"MXPORT_TRUSTED_PROXIES=10.0.0.0/8", "MXPORT_MX_HOSTS=mx1.fwd.test")
	tok := strings.TrimSpace(ok(t, env, "", "token", "create", "--role", "customer", "--account", "c1"))
	cmd := exec.Command(bin, "serve", "--spool", t.TempDir(), "--hostname", "mx.test")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	addr := ""
	deadline := time.After(15 * time.Second)
	for addr == "" {
		select {
		case l, more := <-lines:
			if !more {
				t.Fatal("serve exited")
			}
			if m := regexp.MustCompile(`msg="http listening" addr=(\S+)`).FindStringSubmatch(l); m != nil {
				addr = m[1]
			}
		case <-deadline:
			t.Fatal("no http listening line")
		}
	}
	go func() {
		for range lines {
		}
	}()
	base := "http://" + addr
	get := func(path, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := get("/healthz", ""); code != 200 {
		t.Errorf("healthz %d %q", code, body)
	}
	ready := false
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if code, _ := get("/readyz", ""); code == 200 {
			ready = true
			break
		}
	}
	if !ready {
		t.Fatal("never ready")
	}
	req, _ := http.NewRequest("POST", base+"/api/v1/zones", strings.NewReader(`{"name":"example.com"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 201 {
		t.Errorf("create zone: %d", res.StatusCode)
	}
	code, body := get("/api/v1/zones", tok)
	var zones []struct{ Name string }
	if code != 200 || json.Unmarshal([]byte(body), &zones) != nil || len(zones) != 1 || zones[0].Name != "example.com" {
		t.Errorf("list zones: %d %s", code, body)
	}
	// A per-host update key made by the CLI updates its host through
	// /nic/update, and is no API token.
	key := strings.TrimSpace(ok(t, env, "", "updatekey", "create", "example.com", "home"))
	req, _ = http.NewRequest("GET", base+"/nic/update?hostname=home.example.com,www.example.com&myip=192.0.2.9", nil)
	req.SetBasicAuth("router", key)
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(b) != "good 192.0.2.9\nnohost\n" {
		t.Errorf("/nic/update with an update key: %d %q", res.StatusCode, b)
	}
	if code, body := get("/api/v1/zones", key); code != 401 {
		t.Errorf("update key as bearer: %d %s", code, body)
	}
	_, metrics := get("/metrics", "")
	for _, want := range []string{"go_goroutines", "process_cpu_seconds_total", "mxport_http_requests_total", "mxport_dns_", "mxport_queue_messages", "mxport_delivery_connections_total"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve after SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop")
	}
}

func TestTrustedProxiesFlag(t *testing.T) {
	env := redisEnv(t)
	failsWith(t, env, 2, []string{"--trusted-proxies"}, "serve", "--trusted-proxies", "10.0.0.0/33")
	failsWith(t, append(env, "MXPORT_TRUSTED_PROXIES=nonsense"), 2, []string{"--trusted-proxies"}, "serve")
	failsWith(t, env, 2, []string{"--http-rate"}, "serve", "--http-rate", "-1")
}
