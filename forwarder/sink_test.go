package forwarder_test

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mxport/mxport/store/record"
)

// smtpSink finds Postfix's smtp-sink, which lives in /usr/sbin (often not
// on PATH).
func smtpSink(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("smtp-sink"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/smtp-sink"); err == nil {
		return "/usr/sbin/smtp-sink"
	}
	t.Fatal("smtp-sink not found in PATH nor /usr/sbin: install postfix (make test installs it)")
	return ""
}

// freePort returns a port that was free a moment ago, for a child process
// that must bind it itself.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return port(t, l.Addr().String())
}

// startSink runs smtp-sink on 127.0.0.1, dumping each transaction to a file
// in the returned directory, until the test ends.
func startSink(t *testing.T) (addr, dumpDir string) {
	t.Helper()
	bin := smtpSink(t)
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dumpDir = t.TempDir()
	addr = "127.0.0.1:" + freePort(t)
	var out bytes.Buffer
	cmd := exec.Command(bin, "-d", filepath.Join(dumpDir, "%M."), "-u", u.Username, addr, "100")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	waitFor(t, 10*time.Second, "smtp-sink listening on "+addr, func() bool {
		select {
		case <-exited:
			t.Fatalf("smtp-sink exited: %s", out.String())
		default:
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	// The probe connection above is a session too, but it sends no
	// transaction, so it leaves no dump file.
	return addr, dumpDir
}

// sinkDump is one transaction as smtp-sink -d dumps it: its X-* records,
// then the message as received with CRLF turned into LF, then an empty line.
type sinkDump struct {
	mailArgs string
	rcptArgs []string
	helo     string
	message  []byte // after smtp-sink's own Received header, LF line ends
}

// parseDump splits a dump file; ok is false while the file is incomplete.
func parseDump(data []byte) (d sinkDump, ok bool) {
	s := string(data)
	if !strings.HasSuffix(s, "\n\n") {
		return d, false
	}
	for {
		line, rest, found := strings.Cut(s, "\n")
		if !found {
			return d, false
		}
		name, val, _ := strings.Cut(line, ": ")
		switch name {
		case "X-Client-Addr", "X-Client-Proto":
		case "X-Helo-Args":
			d.helo = val
		case "X-Mail-Args":
			d.mailArgs = val
		case "X-Rcpt-Args":
			d.rcptArgs = append(d.rcptArgs, val)
		case "Received": // smtp-sink's: three lines, then the message
			s = rest
			for strings.HasPrefix(s, "\t") || strings.HasPrefix(s, " ") {
				_, s, _ = strings.Cut(s, "\n")
			}
			d.message = []byte(strings.TrimSuffix(s, "\n"))
			return d, true
		default:
			return d, false
		}
		s = rest
	}
}

// TestRealSink: swaks -> mxport -> Postfix's smtp-sink as the home server.
// The sink sees the original envelope, and the message byte for byte
// behind our one Received header (the dump turns CRLF into LF).
func TestRealSink(t *testing.T) {
	if _, err := exec.LookPath("swaks"); err != nil {
		t.Fatal("swaks not found (make test installs it)")
	}
	sinkAddr, dumpDir := startSink(t)
	e := start(t, []time.Duration{200 * time.Millisecond}, time.Hour)
	// Route example.com to the sink; the smtptest home goes down so that an
	// attempt made before the index hears of the change cannot deliver.
	e.home.Close()
	if _, err := e.st.UpdateRecord(bg, "example.com", e.mxID, record.Record{Name: "@", Type: "MX", TTL: 300,
		Data: "10 home.example.com:" + port(t, sinkAddr)}); err != nil {
		t.Fatal(err)
	}

	body := "From: Alice <alice@sender.test>\r\n" +
		"To: Bob <bob@example.com>, carol@example.com\r\n" +
		"Subject: real sink, byte for byte\r\n" +
		"Message-ID: <real-sink-1@sender.test>\r\n" +
		"Date: Mon, 2 Mar 2026 10:00:00 +0000\r\n" +
		"X-Folded: first part\r\n" +
		"\tsecond part\r\n" +
		"\r\n" +
		"Hello Bob,\r\n" +
		".a line that starts with a dot\r\n" +
		"..and one with two\r\n" +
		"trailing spaces   \r\n" +
		"\r\n" +
		"\r\n" +
		strings.Repeat("0123456789", 99) + "\r\n" +
		"bye\r\n"
	cmd := exec.Command("swaks", "--server", e.addr, "--ehlo", "client.test",
		"--from", "alice@sender.test", "--to", "bob@example.com,carol@example.com", "--data", "-")
	// swaks ends what it reads with CRLF before the final dot: give it the
	// message without its last line end, so the DATA is exactly body.
	cmd.Stdin = strings.NewReader(strings.TrimSuffix(body, "\r\n"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`<[-~]  250 2\.0\.0 OK: queued as `).Match(out) {
		t.Fatalf("swaks saw no 250 queued:\n%s", out)
	}

	var dump sinkDump
	waitFor(t, 15*time.Second, "smtp-sink dump file", func() bool {
		files, _ := filepath.Glob(filepath.Join(dumpDir, "*"))
		if len(files) > 1 {
			t.Fatalf("smtp-sink dumped %d transactions, want 1: %v", len(files), files)
		}
		if len(files) == 0 {
			return false
		}
		data, err := os.ReadFile(files[0])
		if err != nil {
			return false
		}
		d, ok := parseDump(data)
		if ok && bytes.HasSuffix(d.message, []byte("bye\n")) {
			dump = d
			return true
		}
		return false
	})
	waitFor(t, 5*time.Second, "queue empty", func() bool { return e.f.Queue().Len() == 0 })

	// Envelope: the original reverse-path and both recipients, in one
	// transaction; the sink records each command's arguments.
	if f := strings.Fields(dump.mailArgs); len(f) == 0 || f[0] != "<alice@sender.test>" {
		t.Errorf("MAIL FROM at the sink: %q, want <alice@sender.test>", dump.mailArgs)
	}
	var rcpts []string
	for _, a := range dump.rcptArgs {
		rcpts = append(rcpts, strings.Fields(a)[0])
	}
	if strings.Join(rcpts, ",") != "<bob@example.com>,<carol@example.com>" {
		t.Errorf("RCPT TO at the sink: %q, want bob then carol", dump.rcptArgs)
	}
	if dump.helo != "mx1.fwd.test" {
		t.Errorf("EHLO at the sink: %q, want mx1.fwd.test", dump.helo)
	}

	// Message: our Received header, then the original bytes.
	got := string(dump.message)
	if !strings.HasPrefix(got, "Received: from client.test ") || !strings.Contains(got, "by mx1.fwd.test") {
		t.Fatalf("message at the sink does not start with our Received header:\n%s", got)
	}
	i := strings.Index(got, "\n")
	for i >= 0 && i+1 < len(got) && (got[i+1] == ' ' || got[i+1] == '\t') {
		i += 1 + strings.Index(got[i+1:], "\n")
	}
	received, rest := got[:i+1], got[i+1:]
	if strings.Count(got, "Received: ") != 1 {
		t.Errorf("more than one Received header added:\n%s", got)
	}
	if want := strings.ReplaceAll(body, "\r\n", "\n"); rest != want {
		t.Errorf("message changed on the way:\n got %q\nwant %q", rest, want)
	}
	if !strings.Contains(received, "with ESMTP") {
		t.Errorf("Received header without the protocol: %q", received)
	}
}
