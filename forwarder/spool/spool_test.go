package spool

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// patternReader yields n bytes of pat repeated, generated as read: the body
// never exists whole in memory.
type patternReader struct {
	pat string
	n   int64
	off int64
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	if rem := r.n - r.off; int64(len(p)) > rem {
		p = p[:rem]
	}
	for i := range p {
		p[i] = r.pat[(r.off+int64(i))%int64(len(r.pat))]
	}
	r.off += int64(len(p))
	return len(p), nil
}

// failingReader yields good bytes, then an error.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

// checkPattern streams r and checks it is exactly n bytes of pat repeated.
func checkPattern(r io.Reader, pat string, n int64) error {
	buf := make([]byte, 32*1024)
	var off int64
	for {
		k, err := r.Read(buf)
		for i := 0; i < k; i++ {
			if off+int64(i) >= n {
				return fmt.Errorf("body longer than %d", n)
			}
			if buf[i] != pat[(off+int64(i))%int64(len(pat))] {
				return fmt.Errorf("byte %d differs", off+int64(i))
			}
		}
		off += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if off != n {
		return fmt.Errorf("body is %d bytes, want %d", off, n)
	}
	return nil
}

func openSpool(t testing.TB) *Spool {
	t.Helper()
	return openSpoolMode(t, SyncFS)
}

func openSpoolMode(t testing.TB, mode SyncMode) *Spool {
	t.Helper()
	s, err := OpenMode(filepath.Join(t.TempDir(), "spool"), mode)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // before TempDir's clean-up
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func newMeta(s *Spool) *Meta {
	return &Meta{
		ID:          s.NewID(),
		Zone:        "example.com",
		From:        "sender@example.org",
		Rcpts:       []Rcpt{{Addr: "user@example.com", State: Pending, Notify: "FAILURE,DELAY", ORcpt: "rfc822;user@example.com"}},
		Ret:         "HDRS",
		EnvID:       "env-1",
		Arrived:     time.Now().UTC().Truncate(time.Microsecond),
		NextAttempt: time.Now().UTC().Truncate(time.Microsecond),
	}
}

// files lists every file under the spool's dir, relative, sorted.
func files(t testing.TB, s *Spool) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(s.Dir(), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(s.Dir(), p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func TestOpenLayout(t *testing.T) {
	s := openSpool(t)
	for _, d := range []string{"tmp", "msg", "meta", "quarantine"} {
		fi, err := os.Stat(filepath.Join(s.Dir(), d))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, want dir 0700", d, fi.Mode())
		}
	}
	// Opening again is fine.
	if _, err := Open(s.Dir()); err != nil {
		t.Fatal(err)
	}
}

func TestPutBodyRoundTrip(t *testing.T) {
	s := openSpool(t)
	m := newMeta(s)
	const size = 5 << 20
	pat := "0123456789abcdefghijklmnopqrstuvwxyz\r\n"
	if err := s.Put(m, &patternReader{pat: pat, n: size}, 50<<20); err != nil {
		t.Fatal(err)
	}
	if m.Size != size {
		t.Fatalf("Size = %d, want %d", m.Size, size)
	}
	f, err := s.Body(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := checkPattern(f, pat, size); err != nil {
		t.Fatal(err)
	}
	if got := files(t, s); len(got) != 2 || got[0] != "meta/"+m.ID || got[1] != "msg/"+m.ID {
		t.Fatalf("files = %v", got)
	}
	ms, err := s.Scan()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 {
		t.Fatalf("Scan: %d metas", len(ms))
	}
	a, _ := json.Marshal(m)
	b, _ := json.Marshal(ms[0])
	if !bytes.Equal(a, b) {
		t.Fatalf("Scan meta:\n%s\nwant\n%s", b, a)
	}
}

func TestPutEmptyAndExactMax(t *testing.T) {
	s := openSpool(t)
	m := newMeta(s)
	if err := s.Put(m, strings.NewReader(""), 10); err != nil {
		t.Fatal(err)
	}
	m2 := newMeta(s)
	if err := s.Put(m2, strings.NewReader("0123456789"), 10); err != nil {
		t.Fatalf("exactly maxSize: %v", err)
	}
	if m.Size != 0 || m2.Size != 10 {
		t.Fatalf("sizes %d %d", m.Size, m2.Size)
	}
	ms, err := s.Scan()
	if err != nil || len(ms) != 2 {
		t.Fatalf("Scan: %d, %v", len(ms), err)
	}
}

func TestPutFailingReader(t *testing.T) {
	s := openSpool(t)
	m := newMeta(s)
	boom := errors.New("connection reset mid-DATA")
	r := &failingReader{r: &patternReader{pat: "x", n: 1 << 20}, err: boom}
	err := s.Put(m, r, 0)
	if !errors.Is(err, boom) {
		t.Fatalf("Put: %v, want wrapping %v", err, boom)
	}
	if got := files(t, s); len(got) != 0 {
		t.Fatalf("files left: %v", got)
	}
}

func TestPutTooBig(t *testing.T) {
	s := openSpool(t)
	m := newMeta(s)
	err := s.Put(m, &patternReader{pat: "y", n: 3 << 20}, 1<<20)
	if !errors.Is(err, ErrTooBig) {
		t.Fatalf("Put: %v, want ErrTooBig", err)
	}
	if got := files(t, s); len(got) != 0 {
		t.Fatalf("files left: %v", got)
	}
	if ms, err := s.Scan(); err != nil || len(ms) != 0 {
		t.Fatalf("Scan: %v %v", ms, err)
	}
}

func TestPutExistingID(t *testing.T) {
	s := openSpool(t)
	m := newMeta(s)
	if err := s.Put(m, strings.NewReader("first"), 0); err != nil {
		t.Fatal(err)
	}
	m2 := *m
	if err := s.Put(&m2, strings.NewReader("second!"), 0); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Put again: %v, want ErrExist", err)
	}
	f, err := s.Body(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := checkPattern(f, "first", 5); err != nil {
		t.Fatalf("first body damaged: %v", err)
	}
}

func TestUpdateScan(t *testing.T) {
	s := openSpool(t)
	m := newMeta(s)
	if err := s.Put(m, strings.NewReader("Subject: hi\r\n\r\nbody\r\n"), 0); err != nil {
		t.Fatal(err)
	}
	m.Attempts = 3
	m.NextAttempt = m.NextAttempt.Add(time.Hour)
	m.LastReply = "451 4.3.0 try later"
	m.Rcpts[0].State = Failed
	m.Rcpts[0].Code = 550
	m.Rcpts[0].Reply = "5.1.1 no such user"
	m.Rcpts[0].Target = "mail.example.com:2525"
	m.Delayed = true
	if err := s.Update(m); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	ms, err := s2.Scan()
	if err != nil || len(ms) != 1 {
		t.Fatalf("Scan: %v %v", ms, err)
	}
	got := ms[0]
	if got.Attempts != 3 || !got.NextAttempt.Equal(m.NextAttempt) || got.LastReply != m.LastReply ||
		got.Rcpts[0] != m.Rcpts[0] || !got.Delayed {
		t.Fatalf("Scan after Update: %+v", got)
	}
	if tmp := dirNames(t, filepath.Join(s.Dir(), "tmp")); len(tmp) != 0 {
		t.Fatalf("tmp left: %v", tmp)
	}
	// Update never creates.
	other := newMeta(s)
	if err := s.Update(other); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Update of unknown id: %v", err)
	}
}

func TestRemove(t *testing.T) {
	s := openSpool(t)
	m := newMeta(s)
	if err := s.Put(m, strings.NewReader("hello"), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(m.ID); err != nil {
		t.Fatal(err)
	}
	// The meta goes at once; the body waits in msg/ for the meta's removal
	// to be durable, but is no longer the message's.
	if got := files(t, s); len(got) != 2 || got[0] != "msg/"+m.ID || !strings.HasPrefix(got[1], "tmp/") {
		t.Fatalf("files left: %v", got)
	}
	if _, err := s.Body(m.ID); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Body after Remove: %v", err)
	}
	if err := s.Remove(m.ID); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("second Remove: %v", err)
	}
	if got := files(t, s); len(got) != 2 || got[0] != "msg/"+m.ID {
		t.Fatalf("a second Remove took the body before the meta's removal was durable: %v", got)
	}
	// Its two files wait in tmp/ for reuse; nothing else is left.
	settle(t, s)
	if got := files(t, s); len(got) != 2 || !strings.HasPrefix(got[0], "tmp/") || !strings.HasPrefix(got[1], "tmp/") {
		t.Fatalf("files left: %v", got)
	}
}

func writeFile(t *testing.T, p, data string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestScanCleanup(t *testing.T) {
	s := openSpool(t)
	var good []*Meta
	for i := range 3 {
		m := newMeta(s)
		m.Arrived = time.Date(2024, 1, 3-i, 0, 0, 0, 0, time.UTC) // reverse order
		if err := s.Put(m, strings.NewReader("body "+m.ID), 0); err != nil {
			t.Fatal(err)
		}
		good = append(good, m)
	}
	dir := s.Dir()
	// A crash mid-write.
	writeFile(t, filepath.Join(dir, "tmp", "x.msg.123"), "half a body")
	writeFile(t, filepath.Join(dir, "tmp", "y.meta.456"), `{"id":`)
	// A body whose meta never made it: never acknowledged.
	orphan := s.NewID()
	writeFile(t, filepath.Join(dir, "msg", orphan), "orphan body")
	// A meta without body.
	lonely := newMeta(s)
	lonely.Size = 4
	data, _ := json.Marshal(lonely)
	writeFile(t, filepath.Join(dir, "meta", lonely.ID), string(data))
	// A corrupt meta, with its body.
	corrupt := s.NewID()
	writeFile(t, filepath.Join(dir, "meta", corrupt), "{\x00garbage")
	writeFile(t, filepath.Join(dir, "msg", corrupt), "the corrupt one's body")
	// A body of the wrong size.
	short := newMeta(s)
	if err := s.Put(short, strings.NewReader("0123456789"), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(dir, "msg", short.ID), 4); err != nil {
		t.Fatal(err)
	}

	ms, err := s.Scan()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 {
		t.Fatalf("Scan returned %d metas, want 3", len(ms))
	}
	for i, m := range ms {
		if want := good[2-i].ID; m.ID != want {
			t.Errorf("ms[%d] = %s, want %s (sorted by Arrived)", i, m.ID, want)
		}
	}
	if tmp := dirNames(t, filepath.Join(dir, "tmp")); len(tmp) != 0 {
		t.Errorf("tmp left: %v", tmp)
	}
	if _, err := os.Stat(filepath.Join(dir, "msg", orphan)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("orphan body still there: %v", err)
	}
	q := dirNames(t, filepath.Join(dir, "quarantine"))
	want := []string{
		lonely.ID + ".meta",
		corrupt + ".meta", corrupt + ".msg",
		short.ID + ".meta", short.ID + ".msg",
	}
	sort.Strings(want)
	if strings.Join(q, " ") != strings.Join(want, " ") {
		t.Errorf("quarantine = %v, want %v", q, want)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "quarantine", corrupt+".meta")); string(b) != "{\x00garbage" {
		t.Errorf("quarantined meta altered: %q", b)
	}
	// Nothing else left in meta/ and msg/ but the good ones.
	if n := len(dirNames(t, filepath.Join(dir, "meta"))); n != 3 {
		t.Errorf("meta/ has %d files", n)
	}
	if n := len(dirNames(t, filepath.Join(dir, "msg"))); n != 3 {
		t.Errorf("msg/ has %d files", n)
	}

	// Quarantine never overwrites: the same bad meta again gets a new name.
	writeFile(t, filepath.Join(dir, "meta", corrupt), "again")
	if _, err := s.Scan(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "quarantine", corrupt+".1.meta")); string(b) != "again" {
		t.Errorf("second quarantine: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "quarantine", corrupt+".meta")); string(b) != "{\x00garbage" {
		t.Errorf("first quarantine overwritten: %q", b)
	}
}

func TestConcurrent(t *testing.T) {
	for _, mode := range []SyncMode{SyncFS, SyncFiles} {
		t.Run(mode.String(), func(t *testing.T) { testConcurrent(t, mode) })
	}
}

func testConcurrent(t *testing.T, mode SyncMode) {
	s := openSpoolMode(t, mode)
	const workers = 50
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	kept := make(chan *Meta, workers*4)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 4 {
				m := newMeta(s)
				n := int64(rand.IntN(64 << 10))
				if err := s.Put(m, &patternReader{pat: m.ID, n: n}, 0); err != nil {
					errs <- err
					return
				}
				// A Put with the same ID fails in its commit step, among the
				// other workers' steps of the same runs, and changes nothing.
				dup := *m
				if err := s.Put(&dup, strings.NewReader("dup"), 0); !errors.Is(err, fs.ErrExist) {
					errs <- fmt.Errorf("Put of %s again: %v, want ErrExist", m.ID, err)
					return
				}
				m.Attempts++
				m.Rcpts[0].State = Delivered
				if err := s.Update(m); err != nil {
					errs <- err
					return
				}
				f, err := s.Body(m.ID)
				if err != nil {
					errs <- err
					return
				}
				err = checkPattern(f, m.ID, n)
				f.Close()
				if err != nil {
					errs <- fmt.Errorf("%s: %w", m.ID, err)
					return
				}
				if (w+i)%2 == 0 {
					if err := s.Remove(m.ID); err != nil {
						errs <- err
						return
					}
				} else {
					kept <- m
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	close(kept)
	for err := range errs {
		t.Error(err)
	}
	want := map[string]bool{}
	for m := range kept {
		want[m.ID] = true
	}
	ms, err := s.Scan()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != len(want) {
		t.Fatalf("Scan: %d metas, want %d", len(ms), len(want))
	}
	for _, m := range ms {
		if !want[m.ID] || m.Attempts != 1 || m.Rcpts[0].State != Delivered {
			t.Errorf("unexpected meta %+v", m)
		}
	}
	if q := dirNames(t, filepath.Join(s.Dir(), "quarantine")); len(q) != 0 {
		t.Errorf("quarantine: %v", q)
	}
}

func TestNewID(t *testing.T) {
	s := openSpool(t)
	const n = 100_000
	seen := make(map[string]bool, n)
	prev := ""
	before := time.Now()
	for i := range n {
		id := s.NewID()
		if len(id) != IDLen || !ValidID(id) {
			t.Fatalf("bad id %q", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q after %d", id, i)
		}
		seen[id] = true
		if id <= prev {
			t.Fatalf("id %q not after %q", id, prev)
		}
		prev = id
	}
	// The leading characters carry the time: an ID made later sorts later
	// than one made earlier, even across a pause.
	time.Sleep(2 * time.Millisecond)
	later := s.NewID()
	if later <= prev {
		t.Fatalf("later id %q <= %q", later, prev)
	}
	b, err := idEncoding.DecodeString(later)
	if err != nil {
		t.Fatal(err)
	}
	var ns int64
	for _, c := range b[:8] {
		ns = ns<<8 | int64(c)
	}
	if ts := time.Unix(0, ns); ts.Before(before) || ts.After(time.Now().Add(time.Second)) {
		t.Fatalf("id time %v not near now", ts)
	}
}

func TestBadIDs(t *testing.T) {
	s := openSpool(t)
	outside := filepath.Join(filepath.Dir(s.Dir()), "x")
	writeFile(t, outside, "not the spool's")
	os.MkdirAll(filepath.Join(s.Dir(), "msg", "a"), 0o700)
	writeFile(t, filepath.Join(s.Dir(), "msg", "a", "b"), "nested")
	for _, id := range []string{"../x", "a/b", "", ".", "..", "/etc/passwd", "a\x00b", "a.b", "a b",
		strings.Repeat("a", MaxIDLen+1), "../../../../../../tmp/x", `a\b`} {
		if _, err := s.Body(id); !errors.Is(err, ErrBadID) {
			t.Errorf("Body(%q): %v", id, err)
		}
		if err := s.Update(&Meta{ID: id}); !errors.Is(err, ErrBadID) {
			t.Errorf("Update(%q): %v", id, err)
		}
		if err := s.Remove(id); !errors.Is(err, ErrBadID) {
			t.Errorf("Remove(%q): %v", id, err)
		}
		if err := s.Put(&Meta{ID: id}, strings.NewReader("x"), 0); !errors.Is(err, ErrBadID) {
			t.Errorf("Put(%q): %v", id, err)
		}
	}
	if b, err := os.ReadFile(outside); err != nil || string(b) != "not the spool's" {
		t.Fatalf("outside file touched: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "msg", "a", "b")); err != nil {
		t.Fatalf("nested file touched: %v", err)
	}
	if !ValidID(strings.Repeat("Z", MaxIDLen)) || !ValidID("a-b_c") {
		t.Fatal("good ids refused")
	}
}

// TestCrash kills a child that Puts, Updates and Removes messages with SIGKILL
// at random moments, then checks with Scan that every acknowledged message is
// there, complete and verified, and that no half-written file remains.
func TestCrash(t *testing.T) {
	if dir := os.Getenv("SPOOL_CRASH"); dir != "" {
		mode, err := ParseSyncMode(os.Getenv("SPOOL_CRASH_MODE"))
		if err != nil {
			t.Fatal(err)
		}
		crashChild(dir, mode)
		return
	}
	if testing.Short() {
		t.Skip("short")
	}
	for _, mode := range []SyncMode{SyncFS, SyncFiles} {
		t.Run(mode.String(), func(t *testing.T) { testCrash(t, mode) })
	}
}

func testCrash(t *testing.T, mode SyncMode) {
	dir := filepath.Join(t.TempDir(), "spool")
	acked := map[string]bool{} // acknowledged by Put, not (maybe) removed
	removing := map[string]bool{}
	const rounds = 8
	total := 0
	for round := range rounds {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrash$", "-test.count=1")
		cmd.Env = append(os.Environ(), "SPOOL_CRASH="+dir, "SPOOL_CRASH_MODE="+mode.String())
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// Let it get going (the first ack), then kill it at a random moment,
		// independent of what it prints.
		var kill *time.Timer
		for line := range lines {
			if kill == nil {
				delay := time.Duration(rand.IntN(300_000)) * time.Microsecond
				kill = time.AfterFunc(delay, func() { cmd.Process.Kill() }) // SIGKILL
			}
			verb, id, _ := strings.Cut(line, " ")
			switch verb {
			case "put":
				acked[id] = true
				total++
			case "removing":
				removing[id] = true
			}
		}
		cmd.Wait()

		s, err := OpenMode(dir, mode)
		if err != nil {
			t.Fatal(err)
		}
		ms, err := s.Scan()
		if err != nil {
			t.Fatal(err)
		}
		found := map[string]bool{}
		for _, m := range ms {
			found[m.ID] = true
			f, err := s.Body(m.ID)
			if err != nil {
				t.Fatalf("round %d: %s: %v", round, m.ID, err)
			}
			err = checkPattern(f, m.ID, m.Size)
			f.Close()
			if err != nil {
				t.Fatalf("round %d: %s: %v", round, m.ID, err)
			}
			if m.Attempts > 1 || len(m.Rcpts) != 1 {
				t.Fatalf("round %d: %s: bad meta %+v", round, m.ID, m)
			}
		}
		for id := range acked {
			if !found[id] && !removing[id] {
				t.Fatalf("round %d: acknowledged message %s lost", round, id)
			}
		}
		for _, d := range []string{"tmp", "quarantine"} {
			if left := dirNames(t, filepath.Join(dir, d)); len(left) != 0 {
				t.Fatalf("round %d: %s/ not empty: %v", round, d, left)
			}
		}
		if n := len(dirNames(t, filepath.Join(dir, "msg"))); n != len(ms) {
			t.Fatalf("round %d: msg/ has %d files for %d metas", round, n, len(ms))
		}
		t.Logf("round %d: %d acknowledged so far, %d in spool", round, total, len(ms))
	}
	if total == 0 {
		t.Fatal("child acknowledged nothing")
	}
}

// crashChild runs until killed: 4 goroutines Put messages whose body is their
// ID repeated, print "put ID" once Put returned nil, Update some, and Remove
// some (printing "removing ID" first).
func crashChild(dir string, mode SyncMode) {
	s, err := OpenMode(dir, mode)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	say := func(verb, id string) {
		mu.Lock()
		fmt.Fprintf(os.Stdout, "%s %s\n", verb, id) // unbuffered: written before return
		mu.Unlock()
	}
	time.AfterFunc(60*time.Second, func() { os.Exit(3) })
	for range 4 {
		go func() {
			for i := 0; ; i++ {
				m := newMeta(s)
				n := int64(rand.IntN(256 << 10))
				if err := s.Put(m, &patternReader{pat: m.ID, n: n}, 0); err != nil {
					fmt.Fprintln(os.Stderr, "put:", err)
					os.Exit(2)
				}
				say("put", m.ID)
				switch i % 3 {
				case 1:
					m.Attempts = 1
					if err := s.Update(m); err != nil {
						fmt.Fprintln(os.Stderr, "update:", err)
						os.Exit(2)
					}
				case 2:
					say("removing", m.ID)
					if err := s.Remove(m.ID); err != nil {
						fmt.Fprintln(os.Stderr, "remove:", err)
						os.Exit(2)
					}
				}
			}
		}()
	}
	select {}
}

func FuzzMeta(f *testing.F) {
	const id = "0123456789abcdefghijklmnop"
	good, _ := json.Marshal(&Meta{ID: id, Zone: "example.com", Rcpts: []Rcpt{{Addr: "a@example.com", State: Pending}}, Size: 5})
	f.Add(good)
	f.Add([]byte(`{"id":"0123456789abcdefghijklmnop","rcpts":[{"addr":"x","state":"pending"}],"size":6}`))
	f.Add([]byte(`{"id":"0123456789abcdefghijklmnop","rcpts":[{"addr":"x","state":"bogus"}],"size":5}`))
	f.Add([]byte(`{"id":"0123456789abcdefghijklmnop","rcpts":[],"size":5}`))
	f.Add([]byte(`{"id":"../../etc/passwd","rcpts":[{"addr":"x","state":"pending"}],"size":5}`))
	f.Add([]byte(`{"id":"0123456789abcdefghijklmnop","arrived":"not a time"}`))
	f.Add([]byte(`null`))
	f.Add([]byte(``))
	f.Add([]byte("\xff\xfe{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		s.SetLogger(discardLogger)
		if err := os.WriteFile(filepath.Join(s.Dir(), "msg", id), []byte("hello"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(s.Dir(), "meta", id), data, 0o600); err != nil {
			t.Fatal(err)
		}
		ms, err := s.Scan()
		if err != nil {
			t.Fatal(err)
		}
		q := dirNames(t, filepath.Join(s.Dir(), "quarantine"))
		switch {
		case len(ms) == 1 && len(q) == 0:
			if ms[0].ID != id || ms[0].Size != 5 || len(ms[0].Rcpts) == 0 {
				t.Fatalf("accepted bad meta %+v", ms[0])
			}
		case len(ms) == 0 && len(q) == 2:
			b, err := os.ReadFile(filepath.Join(s.Dir(), "quarantine", id+".meta"))
			if err != nil || !bytes.Equal(b, data) {
				t.Fatalf("quarantined meta: %q, %v", b, err)
			}
		default:
			t.Fatalf("Scan: %d metas, quarantine %v", len(ms), q)
		}
	})
}

func benchmarkPut(b *testing.B, size int, parallel bool) {
	s := openSpool(b)
	body := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	defer func() {
		if cpu := processCPU() - cpu0; cpu > 0 {
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
		}
	}()
	put := func() {
		m := newMeta(s)
		if err := s.Put(m, bytes.NewReader(body), 0); err != nil {
			b.Fatal(err)
		}
	}
	if parallel {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				put()
			}
		})
		return
	}
	for b.Loop() {
		put()
	}
}

// BenchmarkPut measures one writer; the cost is the fsyncs.
func BenchmarkPut(b *testing.B) {
	b.Run("4KiB", func(b *testing.B) { benchmarkPut(b, 4<<10, false) })
	b.Run("64KiB", func(b *testing.B) { benchmarkPut(b, 64<<10, false) })
}

// BenchmarkPutParallel measures 20×GOMAXPROCS concurrent writers, whose
// directory fsyncs are shared.
func BenchmarkPutParallel(b *testing.B) {
	for _, size := range []int{4 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			b.SetParallelism(20)
			benchmarkPut(b, size, true)
		})
	}
}

type panicReader struct{ n int }

func (p *panicReader) Read(b []byte) (int, error) {
	if p.n > 0 {
		p.n--
		return copy(b, "some bytes"), nil
	}
	panic("reader exploded")
}

func TestPutPanickingReader(t *testing.T) {
	s := openSpool(t)
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("no panic")
			}
		}()
		s.Put(newMeta(s), &panicReader{n: 3}, 0)
	}()
	if got := files(t, s); len(got) != 0 {
		t.Fatalf("files left: %v", got)
	}
}

// testSyncer is a syncer of a temporary directory's file system that counts
// its runs and fails them when told to.
type testSyncer struct {
	*syncer
	started, finished atomic.Uint64
	fail              atomic.Bool
}

// newTestSyncer returns a testSyncer whose runs call hold (if not nil) first.
func newTestSyncer(t *testing.T, hold func()) *testSyncer {
	dir := t.TempDir()
	d := &testSyncer{}
	d.syncer = newSyncer(func() error {
		d.started.Add(1)
		defer d.finished.Add(1)
		if d.fail.Load() {
			return errors.New("disk on fire")
		}
		if hold != nil {
			hold()
		}
		return syncFS(dir)
	})
	return d
}

// checkShared fails the test if the calls made more than most runs.
func (d *testSyncer) checkShared(t *testing.T, calls, most int) {
	t.Helper()
	n := d.started.Load()
	if n > uint64(most) {
		t.Fatalf("%d runs for %d calls: not shared", n, calls)
	}
	t.Logf("%d runs for %d calls", n, calls)
}

// TestSyncerShared checks that concurrent syncs are shared, that every
// caller gets a run that started after it called, and that a failing run's
// error reaches its callers.
func TestSyncerShared(t *testing.T) {
	const callers = 200
	var entered atomic.Int64
	d := newTestSyncer(t, func() {
		for entered.Load() < callers { // the first run lasts until everyone has called
			runtime.Gosched()
		}
	})
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			before := d.started.Load()
			entered.Add(1)
			if err := d.sync(); err != nil {
				t.Error(err)
			}
			if f := d.finished.Load(); f <= before {
				t.Errorf("returned with run %d finished, but %d had started before the call", f, before)
			}
		})
	}
	wg.Wait()
	d.checkShared(t, callers, callers/10)
	d.fail.Store(true)
	if err := d.sync(); err == nil {
		t.Fatal("a failing sync reported success")
	}
}

// TestSyncerCommit checks commit's order: a step runs after a run that
// started after its caller called, while no run is under way, and the call
// returns only after a run that started after the step; and that concurrent
// commits share their runs, with errors reaching their callers.
func TestSyncerCommit(t *testing.T) {
	const callers = 200
	d := newTestSyncer(t, nil)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			before := d.started.Load()
			var after uint64
			err := d.commit(func() error {
				if s, f := d.started.Load(), d.finished.Load(); s != f {
					t.Errorf("step ran during a run (%d started, %d finished)", s, f)
				}
				if f := d.finished.Load(); f <= before {
					t.Errorf("step ran after run %d, but run %d had started before the call", f, before)
				}
				after = d.started.Load()
				return nil
			})
			if err != nil {
				t.Error(err)
			}
			if f := d.finished.Load(); f <= after {
				t.Errorf("returned after run %d, but the step ran after run %d had started", f, after)
			}
		})
	}
	wg.Wait()
	d.checkShared(t, callers, callers/4)

	stepErr := errors.New("rename failed")
	if err := d.commit(func() error { return stepErr }); !errors.Is(err, stepErr) {
		t.Fatalf("commit with a failing step: %v, want %v", err, stepErr)
	}
	d.fail.Store(true)
	called := false
	if err := d.commit(func() error { called = true; return nil }); err == nil || called {
		t.Fatalf("commit over a failing run: err %v, step called %v; want an error and no call", err, called)
	}
}

// BenchmarkScan measures a start-up Scan of 10,000 messages (files written
// without fsync to save time); ns/op is per Scan.
func BenchmarkScan(b *testing.B) {
	s := openSpool(b)
	s.SetLogger(discardLogger)
	const n = 10_000
	for range n {
		m := newMeta(s)
		m.Size = 1000
		data, _ := json.Marshal(m)
		if err := os.WriteFile(filepath.Join(s.Dir(), "msg", m.ID), bytes.Repeat([]byte("x"), 1000), 0o600); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(s.Dir(), "meta", m.ID), data, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		ms, err := s.Scan()
		if err != nil || len(ms) != n {
			b.Fatalf("Scan: %d, %v", len(ms), err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/msg")
}

// msgFiles returns the body's and the meta's file info of message id.
func msgFiles(t *testing.T, s *Spool, id string) (body, meta os.FileInfo) {
	t.Helper()
	b, err := os.Stat(filepath.Join(s.Dir(), "msg", id))
	if err != nil {
		t.Fatal(err)
	}
	m, err := os.Stat(filepath.Join(s.Dir(), "meta", id))
	if err != nil {
		t.Fatal(err)
	}
	return b, m
}

// putMsg puts a new message with the given body.
func putMsg(t *testing.T, s *Spool, body string) *Meta {
	t.Helper()
	m := newMeta(s)
	if err := s.Put(m, strings.NewReader(body), 0); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRecycle: a removed message's files are written over by a later
// message (same inodes, no new ones), which reads back exactly, however
// longer the old contents were; Scan clears the kept files.
func TestRecycle(t *testing.T) {
	s := openSpool(t)
	first := newMeta(s)
	first.Rcpts = append(first.Rcpts, Rcpt{Addr: strings.Repeat("long", 50) + "@example.com", State: Pending})
	if err := s.Put(first, &patternReader{pat: "0123456789", n: 100000}, 0); err != nil {
		t.Fatal(err)
	}
	b1, m1 := msgFiles(t, s, first.ID)
	if err := s.Remove(first.ID); err != nil {
		t.Fatal(err)
	}
	settle(t, s)
	second := putMsg(t, s, "short body\r\n")
	b2, m2 := msgFiles(t, s, second.ID)
	if !os.SameFile(b1, b2) || !os.SameFile(m1, m2) {
		t.Fatal("the second message got new files, not the removed one's")
	}
	if b2.Size() != int64(len("short body\r\n")) {
		t.Fatalf("reused body file is %d bytes", b2.Size())
	}
	f, err := s.Body(second.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(f)
	f.Close()
	if err != nil || string(got) != "short body\r\n" {
		t.Fatalf("body %q, %v", got, err)
	}
	metas, err := s.Scan()
	if err != nil {
		t.Fatal(err)
	}
	if len(metas) != 1 || metas[0].ID != second.ID || len(metas[0].Rcpts) != 1 || metas[0].Size != b2.Size() {
		t.Fatalf("Scan after reuse: %+v", metas)
	}
	if left := dirNames(t, filepath.Join(s.Dir(), "tmp")); len(left) != 0 {
		t.Fatalf("Scan left tmp/ %v", left)
	}
}

// settle makes every removal durable and drops the bodies waiting for it,
// as the timer does in two rounds.
func settle(t *testing.T, s *Spool) {
	t.Helper()
	if err := s.flushRemovals(); err != nil {
		t.Fatal(err)
	}
	if s.waiting() {
		t.Fatal("removals still waiting after two syncs")
	}
}

// TestReuseOnlyDurable: a removed message's body stays in msg/ until the
// removal of its meta is durable (else a crash could leave the meta without
// it), and neither file is written over until its removal is durable (else
// a crash could bring back the meta holding a later message's contents).
// Under SyncFS any sync (an Update's) covers a removal; under SyncFiles an
// fsync of meta/ alone (an Update's) does not, a Put's of msg/ and meta/
// does.
func TestReuseOnlyDurable(t *testing.T) {
	for _, mode := range []SyncMode{SyncFS, SyncFiles} {
		t.Run(mode.String(), func(t *testing.T) {
			s := openSpoolMode(t, mode)
			s.removeDelay = time.Hour // only the test's calls sync
			other, other2 := putMsg(t, s, "other"), putMsg(t, s, "other2")
			old := putMsg(t, s, "old")
			oldBody, oldMeta := msgFiles(t, s, old.ID)
			if err := s.Remove(old.ID); err != nil {
				t.Fatal(err)
			}
			bodyLeft := func() bool {
				_, err := os.Stat(filepath.Join(s.Dir(), "msg", old.ID))
				return err == nil
			}
			if !bodyLeft() {
				t.Fatal("body removed before its meta's removal was durable")
			}
			other.Attempts++
			if err := s.Update(other); err != nil {
				t.Fatal(err)
			}
			if _, m := msgFiles(t, s, other.ID); os.SameFile(m, oldMeta) {
				t.Fatal("Update reused the removed meta's file before the removal was durable")
			}
			next := putMsg(t, s, "next")
			nextBody, nextMeta := msgFiles(t, s, next.ID)
			if os.SameFile(nextBody, oldBody) {
				t.Fatal("Put reused the body of a message whose meta's removal was not durable")
			}
			if got, want := os.SameFile(nextMeta, oldMeta), mode == SyncFS; got != want {
				t.Fatalf("after an Update's sync: removed meta's file reused %v, want %v", got, want)
			}
			// next's Put synced msg/ and meta/: the meta's removal is durable,
			// so the next Remove drops the body too, which a later sync
			// makes reusable.
			if err := s.Remove(other2.ID); err != nil {
				t.Fatal(err)
			}
			if bodyLeft() {
				t.Fatal("body still in msg/ after its meta's removal was durable")
			}
			putMsg(t, s, "its sync makes the body's removal durable")
			last := putMsg(t, s, "last")
			if b, _ := msgFiles(t, s, last.ID); !os.SameFile(b, oldBody) {
				t.Fatal("removed body's file not reused once its removal was durable")
			}
		})
	}
}

// TestReuseOldestFirst: the files of an older, durable removal are reused
// while a newer removal still waits for its sync (as it always does when
// mail flows).
func TestReuseOldestFirst(t *testing.T) {
	s := openSpool(t)
	s.removeDelay = time.Hour
	a, b := putMsg(t, s, "a"), putMsg(t, s, "b")
	aBody, aMeta := msgFiles(t, s, a.ID)
	if err := s.Remove(a.ID); err != nil {
		t.Fatal(err)
	}
	settle(t, s)
	if err := s.Remove(b.ID); err != nil {
		t.Fatal(err)
	}
	next := putMsg(t, s, "next")
	if nb, nm := msgFiles(t, s, next.ID); !os.SameFile(nb, aBody) || !os.SameFile(nm, aMeta) {
		t.Fatal("the durable removal's files were not reused")
	}
}

// waitFor polls cond until it holds, failing the test after 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s after 10s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// armed returns the spool's removal timer, nil if none is armed.
func armed(s *Spool) *time.Timer {
	s.timerMu.Lock()
	defer s.timerMu.Unlock()
	return s.timer
}

// TestRemoveTimer: with nothing else syncing, the timer makes a removal
// durable, and the removed files are reused from then on.
func TestRemoveTimer(t *testing.T) {
	for _, mode := range []SyncMode{SyncFS, SyncFiles} {
		t.Run(mode.String(), func(t *testing.T) {
			s := openSpoolMode(t, mode)
			old := putMsg(t, s, "old")
			oldBody, oldMeta := msgFiles(t, s, old.ID)
			if s.rm.pending() {
				t.Fatal("a removal pending before any Remove")
			}
			if err := s.Remove(old.ID); err != nil {
				t.Fatal(err)
			}
			// Two rounds: the meta's removal, then the body's.
			waitFor(t, "durable", func() bool { return !s.waiting() })
			if armed(s) != nil {
				t.Fatal("timer still armed after its syncs")
			}
			if _, err := os.Stat(filepath.Join(s.Dir(), "msg", old.ID)); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("body after the timer: %v", err)
			}
			next := putMsg(t, s, "next")
			if b, m := msgFiles(t, s, next.ID); !os.SameFile(b, oldBody) || !os.SameFile(m, oldMeta) {
				t.Fatal("removed files not reused after the timer's sync")
			}
		})
	}
}

// TestClose: Removes arm one timer; Close stops it and makes the removals
// durable; a Remove after Close is durable when it returns.
func TestClose(t *testing.T) {
	for _, mode := range []SyncMode{SyncFS, SyncFiles} {
		t.Run(mode.String(), func(t *testing.T) {
			s := openSpoolMode(t, mode)
			s.removeDelay = time.Hour
			a, b, c := putMsg(t, s, "a"), putMsg(t, s, "b"), putMsg(t, s, "c")
			aBody, aMeta := msgFiles(t, s, a.ID)
			if err := s.Remove(a.ID); err != nil {
				t.Fatal(err)
			}
			timer := armed(s)
			if timer == nil || !s.rm.pending() {
				t.Fatalf("after Remove: timer %v, pending %v", timer, s.rm.pending())
			}
			if err := s.Remove(b.ID); err != nil {
				t.Fatal(err)
			}
			if armed(s) != timer {
				t.Fatal("a second Remove armed another timer")
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if s.waiting() || armed(s) != nil || timer.Stop() {
				t.Fatalf("after Close: waiting %v, timer %v", s.waiting(), armed(s))
			}
			if err := s.Remove(c.ID); err != nil {
				t.Fatal(err)
			}
			if s.waiting() || armed(s) != nil {
				t.Fatalf("after Close and Remove: waiting %v, timer %v", s.waiting(), armed(s))
			}
			next := putMsg(t, s, "next")
			if nb, nm := msgFiles(t, s, next.ID); !os.SameFile(nb, aBody) || !os.SameFile(nm, aMeta) {
				t.Fatal("removed files not reused after Close")
			}
			if err := s.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
		})
	}
}

func TestParseSyncMode(t *testing.T) {
	for _, mode := range []SyncMode{SyncFS, SyncFiles} {
		if got, err := ParseSyncMode(mode.String()); err != nil || got != mode {
			t.Errorf("ParseSyncMode(%q) = %v, %v", mode.String(), got, err)
		}
	}
	if _, err := ParseSyncMode("fsync"); err == nil {
		t.Error("ParseSyncMode accepted fsync")
	}
}
