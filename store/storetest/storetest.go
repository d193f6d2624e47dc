// Package storetest runs a real redis-server for tests: on a free loopback
// port, in a temporary directory, killed when the test binary ends. It is for
// tests only.
package storetest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mxport/mxport/store"
)

// Server is one redis-server process.
type Server struct {
	Addr   string // 127.0.0.1:port
	dir    string
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
	mu     sync.Mutex
}

// Start starts a redis-server with append-only persistence in a new
// temporary directory of t, and stops it at t's cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := start(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func start(dir, addr string) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("storetest: redis-server not found (make test installs it): %w", err)
	}
	s := &Server{dir: dir}
	for attempt := 0; attempt < 5; attempt++ {
		a := addr
		if a == "" {
			if a, err = freePort(); err != nil {
				return nil, err
			}
		}
		if err = s.run(bin, a); err == nil {
			return s, nil
		}
		if addr != "" {
			break
		}
	}
	return nil, err
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("storetest: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// run starts redis-server on addr and waits until it accepts commands.
func (s *Server) run(bin, addr string) error {
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin,
		"--bind", host, "--port", port, "--dir", s.dir,
		"--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
		"--databases", "1024", "--protected-mode", "no", "--loglevel", "warning",
		"--logfile", filepath.Join(s.dir, "redis.log"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("storetest: start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			return fmt.Errorf("storetest: redis-server on %s exited: %s", addr, strings.TrimSpace(string(log)))
		default:
		}
		if ping(addr) {
			s.mu.Lock()
			s.Addr, s.cmd, s.exited = addr, cmd, exited
			s.mu.Unlock()
			return nil
		}
		time.Sleep(20 * time.Millisecond) // poll with a deadline: redis-server has no readiness hook
	}
	cmd.Process.Kill()
	return fmt.Errorf("storetest: redis-server on %s did not answer within 10s", addr)
}

// ping reports whether a Redis answers PING on addr.
func ping(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// Stop kills the server (SIGKILL: like a crash; the append-only file keeps
// what was fsync'd) and waits for it to exit.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	for ping(s.Addr) {
		time.Sleep(10 * time.Millisecond)
	}
}

// Shutdown stops the server cleanly (SIGTERM: Redis writes out its
// append-only file) and waits for it to exit, for a test that needs Redis
// gone but its data kept; Stop is the crash.
func (s *Server) Shutdown() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}

// Restart stops the server and starts it again on the same address with
// the same data directory.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	bin, _ := exec.LookPath("redis-server")
	var err error
	for i := 0; i < 50; i++ { // the port may linger briefly after the kill
		if err = s.run(bin, s.Addr); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal(err)
}

// URL returns the redis:// URL of database db.
func (s *Server) URL(db int) string {
	return "redis://" + s.Addr + "/" + strconv.Itoa(db)
}

var (
	shared     *Server
	sharedErr  error
	sharedOnce sync.Once
	nextDB     atomic.Int32
)

// Options are the store options New uses.
var Options = store.Options{
	MXHosts: []string{"mx1.fwd.test", "mx2.fwd.test"},
	NS:      []string{"ns1.fwd.test", "ns2.fwd.test"},
}

// New returns a Store on a fresh, empty database of the package's shared
// redis-server (started at first use), closed at t's cleanup.
func New(t testing.TB) *store.Store {
	return NewWith(t, Options)
}

// NewWith is New with other options.
func NewWith(t testing.TB, o store.Options) *store.Store {
	t.Helper()
	return open(t, NewURL(t), o)
}

// Open returns a Store on database 0 of s, a server of the test's own,
// closed at t's cleanup.
func (s *Server) Open(t testing.TB, o store.Options) *store.Store {
	t.Helper()
	return open(t, s.URL(0), o)
}

func open(t testing.TB, url string, o store.Options) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), url, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// NewURL returns the redis:// URL of a fresh, empty database of the
// package's shared redis-server, for tests that run the mxport binary.
func NewURL(t testing.TB) string {
	t.Helper()
	srv := Shared(t)
	db := int(nextDB.Add(1))
	if db >= 1024 {
		t.Fatal("storetest: out of databases")
	}
	return srv.URL(db)
}

// Shared returns the package's shared server, starting it at first use. It
// runs until the test binary exits.
func Shared(t testing.TB) *Server {
	t.Helper()
	sharedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "storetest-")
		if err != nil {
			sharedErr = err
			return
		}
		shared, sharedErr = start(dir, "")
	})
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return shared
}

// Main runs a test package's tests and then stops the shared server and
// removes its directory; call it from TestMain.
func Main(m interface{ Run() int }) {
	code := m.Run()
	if shared != nil {
		shared.Stop()
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}
