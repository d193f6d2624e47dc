// Package spool owns messages on local disk. It knows no SMTP or Redis.
//
// A spool directory holds four subdirectories:
//
//	tmp/         files being written, and removed messages' files kept for reuse; garbage after a crash
//	msg/<id>     message bodies, written once and never changed
//	meta/<id>    envelope and delivery state (JSON); the commit record
//	quarantine/  metas (and their bodies) that Scan could not use, kept for an operator
//
// A message exists if and only if its meta exists. Put writes the body and
// the meta to files in tmp/ and syncs the file system, renames them into place
// (body first, meta last) and syncs again, so a nil error means the message is
// on stable storage (RFC 5321 6.1). Remove deletes the meta first. Scan, at
// start-up, removes what a crash left half written.
//
// Remove does not wait for a sync: its removal becomes durable with the
// spool's next sync that covers it (a Put's, or under SyncFS any sync), at
// the latest removeSyncDelay (200 ms) later, when a timer syncs. A removal
// lost in a crash only makes a delivered message come back, to be delivered
// again: a duplicate, never a loss. Close makes the pending removals durable
// at once.
//
// With SyncFS (the default) the syncs are syncfs(2) calls shared between
// concurrent callers (group commit): one covers the files and renames of every
// caller that got to it before it started, so twenty sessions finishing
// together cost two syncs, not forty fsyncs. The run that covers a group's
// files renames them into place itself, before the next run starts, so
// that next run covers the renames: a Put waits for the run under way (if
// any) and two more. syncfs flushes everything dirty
// on the spool's file system, so another process writing much to it delays
// the spool's syncs: give the spool a file system of its own, or use
// SyncFiles, which fsyncs each file (as Postfix does) and shares only the
// directory fsyncs.
//
// The files of removed messages are moved to tmp/ and written over by later
// messages rather than deleted: on a file system that allocates inodes slowly
// after many deletions (ext4 without a journal searches past every inode
// freed in the last half minute), a create and a delete per message would
// cost more the faster mail flows. A kept file is written over only once its
// removal is durable: else a crash could bring back the removed meta with a
// later message's contents in its file.
package spool

import (
	"cmp"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// State of one recipient.
type State string

// Recipient states.
const (
	Pending   State = "pending"
	Delivered State = "delivered"
	Failed    State = "failed"
)

// Rcpt is one recipient and its state.
type Rcpt struct {
	Addr   string `json:"addr"`
	Notify string `json:"notify,omitempty"` // DSN NOTIFY= as given: "" (default), "NEVER" or a comma list of SUCCESS, FAILURE, DELAY (RFC 3461)
	ORcpt  string `json:"orcpt,omitempty"`  // DSN ORCPT= as given ("rfc822;user@example.com")
	State  State  `json:"state"`
	Code   int    `json:"code,omitempty"`   // last reply code for this recipient
	Reply  string `json:"reply,omitempty"`  // last reply text, exactly as the remote sent it (or the local reason)
	Target string `json:"target,omitempty"` // host:port that gave it
}

// Meta is a message's envelope and delivery state: the commit record (a message
// exists iff its meta does).
type Meta struct {
	ID          string    `json:"id"`
	Zone        string    `json:"zone"` // the forwarded zone whose route delivers it (for a DSN: the zone of the bounced message)
	From        string    `json:"from"` // reverse-path without <>, "" = null sender
	Rcpts       []Rcpt    `json:"rcpts"`
	Ret         string    `json:"ret,omitempty"`      // DSN RET=: FULL or HDRS
	EnvID       string    `json:"envid,omitempty"`    // DSN ENVID=
	UTF8        bool      `json:"utf8,omitempty"`     // SMTPUTF8
	Body8Bit    bool      `json:"body8bit,omitempty"` // BODY=8BITMIME
	DSN         bool      `json:"dsn,omitempty"`      // a bounce we generated: deliver to the recipient domain's MX on port 25
	Arrived     time.Time `json:"arrived"`
	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"next_attempt"`
	LastReply   string    `json:"last_reply,omitempty"`
	Delayed     bool      `json:"delayed,omitempty"` // a "delayed" DSN was already sent
	Size        int64     `json:"size"`              // body bytes, set by Put
}

// ErrTooBig is returned by Put when the body exceeds its maxSize.
var ErrTooBig = errors.New("spool: message too big")

// ErrBadID is returned (wrapped) for an ID outside the ID alphabet: 1 to
// MaxIDLen characters of [0-9A-Za-z_-]. Such an ID is never used as a path.
var ErrBadID = errors.New("spool: bad message id")

// MaxIDLen is the longest ID the spool accepts. NewID makes IDLen characters.
const MaxIDLen = 64

// IDLen is the length of the IDs NewID makes.
const IDLen = 26

const (
	dirTmp        = "tmp"
	dirMsg        = "msg"
	dirMeta       = "meta"
	dirQuarantine = "quarantine"
)

// SyncMode says how a spool makes its writes durable.
type SyncMode int

const (
	// SyncFS shares syncfs(2) calls of the spool's file system between
	// concurrent writers.
	SyncFS SyncMode = iota
	// SyncFiles fsyncs every file it writes and shares the fsyncs of its
	// directories between concurrent writers.
	SyncFiles
)

// ParseSyncMode parses "fs" (SyncFS) or "file" (SyncFiles).
func ParseSyncMode(v string) (SyncMode, error) {
	switch v {
	case "fs":
		return SyncFS, nil
	case "file":
		return SyncFiles, nil
	}
	return 0, fmt.Errorf("spool sync mode %q: want fs or file", v)
}

// String returns "fs" or "file".
func (m SyncMode) String() string {
	if m == SyncFiles {
		return "file"
	}
	return "fs"
}

// removeSyncDelay is how long a removal may wait for a sync before the
// spool makes one for it.
const removeSyncDelay = 200 * time.Millisecond

// Spool is a spool directory. It is safe for concurrent use on different IDs;
// calls on the same ID must not overlap.
type Spool struct {
	dir                         string
	tmp, msg, meta, quarantine  string
	mode                        SyncMode
	fsSync                      *syncer       // SyncFS: syncfs of the spool's file system
	msgSync, metaSync, quarSync *syncer       // SyncFiles: fsync of msg/, meta/, quarantine/
	bodies, metas               *recycler     // in tmp/
	rm                          removals      // Remove's renames and deletions
	removeDelay                 time.Duration // removeSyncDelay; tests lengthen it
	log                         atomic.Pointer[slog.Logger]

	doomedMu sync.Mutex
	doomed   map[string]bool // removed messages whose body waits in msg/ for their meta's removal to be durable
	doomedQ  []doomedBody    // the same, in the order of their meta's removal

	timerMu sync.Mutex
	timer   *time.Timer // armed while removals wait for their sync
	closed  bool        // Close was called: Remove syncs before returning
}

// Open opens the spool in dir with SyncFS, creating dir and its
// subdirectories (0700) as needed and syncing them. It does not look at the
// messages: call Scan.
func Open(dir string) (*Spool, error) { return OpenMode(dir, SyncFS) }

// OpenMode is Open with the given sync mode.
func OpenMode(dir string, mode SyncMode) (*Spool, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: open %s: %w", dir, err)
	}
	s := &Spool{
		mode:        mode,
		dir:         abs,
		tmp:         filepath.Join(abs, dirTmp),
		msg:         filepath.Join(abs, dirMsg),
		meta:        filepath.Join(abs, dirMeta),
		quarantine:  filepath.Join(abs, dirQuarantine),
		removeDelay: removeSyncDelay,
		doomed:      map[string]bool{},
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("spool: open %s: %w", abs, err)
	}
	for _, d := range []string{s.tmp, s.msg, s.meta, s.quarantine} {
		if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("spool: open %s: %w", abs, err)
		}
		fi, err := os.Stat(d)
		if err != nil {
			return nil, fmt.Errorf("spool: open %s: %w", abs, err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("spool: open %s: %s is not a directory", abs, d)
		}
	}
	// A syncfs covers the removals made before it started.
	s.fsSync = newSyncer(func() error { return s.rm.cover(func() error { return syncFS(abs) }) })
	s.msgSync = newSyncer(func() error { return syncDir(s.msg) })
	s.metaSync = newSyncer(func() error { return syncDir(s.meta) })
	s.quarSync = newSyncer(func() error { return syncDir(s.quarantine) })
	tmpSync := newSyncer(func() error { return syncDir(s.tmp) })
	topSync := newSyncer(func() error { return syncDir(abs) })
	if err := s.syncDirs(s.msgSync, s.metaSync, s.quarSync, tmpSync, topSync); err != nil {
		return nil, fmt.Errorf("spool: open: %w", err)
	}
	s.bodies = &recycler{dir: s.tmp, prefix: keptPrefix + "msg.", rm: &s.rm}
	s.metas = &recycler{dir: s.tmp, prefix: keptPrefix + "meta.", rm: &s.rm}
	return s, nil
}

// Close makes the removals still waiting for a sync durable now, and stops
// the timer that would have; it returns that sync's error. The spool stays
// usable: after Close, Remove makes its removal durable before it returns.
func (s *Spool) Close() error {
	s.timerMu.Lock()
	s.closed = true
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	s.timerMu.Unlock()
	if err := s.flushRemovals(); err != nil {
		return fmt.Errorf("spool: close: %w", err)
	}
	return nil
}

// Dir returns the spool's directory (absolute).
func (s *Spool) Dir() string { return s.dir }

// SetLogger sets the logger Scan and the removals' timer report to; the
// default is slog.Default().
func (s *Spool) SetLogger(l *slog.Logger) { s.log.Store(l) }

func (s *Spool) logger() *slog.Logger {
	if l := s.log.Load(); l != nil {
		return l
	}
	return slog.Default()
}

// idEncoding is base32hex in lower case: its alphabet is in ASCII order, so
// IDs sort as the bytes they encode.
var idEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

var lastIDTime atomic.Int64

// NewID returns a new message ID: IDLen characters of [0-9a-v], the base32 of
// 8 bytes of time (Unix nanoseconds, strictly increasing within the process)
// and 8 random bytes. IDs from one process sort by creation time; IDs from
// different processes or hosts are unique by their random part.
func (s *Spool) NewID() string { return newID() }

func newID() string {
	now := time.Now().UnixNano()
	for {
		last := lastIDTime.Load()
		t := max(now, last+1)
		if lastIDTime.CompareAndSwap(last, t) {
			now = t
			break
		}
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now))
	rand.Read(b[8:]) // never fails (crypto/rand)
	return idEncoding.EncodeToString(b[:])
}

// ValidID reports whether id is in the ID alphabet: 1 to MaxIDLen characters
// of [0-9A-Za-z_-]. Only such IDs are ever joined to a path.
func ValidID(id string) bool {
	if id == "" || len(id) > MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

func checkID(op, id string) error {
	if !ValidID(id) {
		return fmt.Errorf("spool: %s %q: %w", op, id, ErrBadID)
	}
	return nil
}

// Put stores a new message: it streams body to a file in tmp/ and writes the
// meta to another, syncs them, renames the body to msg/ID and then the meta
// to meta/ID, and syncs again; only then it returns nil.
// m.ID must be set (NewID) and must not exist yet; Put sets m.Size. maxSize > 0
// limits the body: a longer one gives ErrTooBig. On any error nothing of the
// message is left (temporary files and body removed) and the error wraps the
// cause (the reader's error, ErrTooBig, ErrBadID, fs.ErrExist or an I/O error).
func (s *Spool) Put(m *Meta, body io.Reader, maxSize int64) error {
	if err := checkID("put", m.ID); err != nil {
		return err
	}
	id := m.ID
	msgPath := filepath.Join(s.msg, id)
	metaPath := filepath.Join(s.meta, id)

	// Body, into tmp/.
	f, err := s.bodies.create(id + ".msg.*")
	if err != nil {
		return fmt.Errorf("spool: put %s: create body: %w", id, err)
	}
	tmpBody, tmpMeta := f.Name(), ""
	renamedBody, renamedMeta, committed := false, false, false
	defer func() {
		if committed {
			return
		}
		// Undo (also when the reader panics), commit record first.
		if renamedMeta {
			os.Remove(metaPath)
			s.syncDirs(s.metaSync)
		}
		if renamedBody {
			os.Remove(msgPath)
		}
		os.Remove(tmpBody)
		if tmpMeta != "" {
			os.Remove(tmpMeta)
		}
	}()

	n, err := copyBody(f, body, maxSize)
	if err == nil {
		err = truncate(f, n)
	}
	if err == nil {
		err = s.syncFile(f)
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if errors.Is(err, ErrTooBig) {
		return fmt.Errorf("spool: put %s: %w", id, ErrTooBig)
	} else if err != nil {
		return fmt.Errorf("spool: put %s: write body: %w", id, err)
	}
	m.Size = n
	data, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("spool: put %s: encode meta: %w", id, err)
	}
	if tmpMeta, err = s.writeMeta(id, data); err != nil {
		return fmt.Errorf("spool: put %s: write meta: %w", id, err)
	}

	// Both files reach the disk before either is renamed into place, body
	// first, so that a meta is never seen without its body, and never over
	// an existing message; the renames reach it too before the message is
	// acknowledged. (If the power fails before, the message was not
	// acknowledged; on a file system that could persist the meta's rename
	// without the body's, Scan quarantines the meta.)
	err = s.commit(func() error {
		if err := renameNoReplace(tmpBody, msgPath); err != nil {
			return fmt.Errorf("commit body: %w", err)
		}
		renamedBody = true
		if err := renameNoReplace(tmpMeta, metaPath); err != nil {
			return fmt.Errorf("commit meta: %w", err)
		}
		renamedMeta = true
		return nil
	}, s.msgSync, s.metaSync)
	if err != nil {
		return fmt.Errorf("spool: put %s: %w", id, err)
	}
	committed = true
	return nil
}

// truncate cuts f, just written from its start with n bytes, to n bytes
// if it is longer (a reused file). It truncates only then: an ftruncate,
// even to the size a file has, costs a journal update.
func truncate(f *os.File, n int64) error {
	fi, err := f.Stat()
	if err != nil || fi.Size() <= n {
		return err
	}
	return f.Truncate(n)
}

// renameNoReplace renames oldpath to newpath unless newpath exists: then
// the error wraps fs.ErrExist. On a file system without RENAME_NOREPLACE it
// checks first, which is enough for IDs no two writers share.
func renameNoReplace(oldpath, newpath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		if _, err := os.Lstat(newpath); !errors.Is(err, fs.ErrNotExist) {
			return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: cmp.Or(err, fs.ErrExist)}
		}
		return os.Rename(oldpath, newpath)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	return nil
}

// rename is os.Rename without its Lstat of newpath (which only refuses to
// replace a directory, and costs a path lookup): the spool renames files
// to names it made.
func rename(oldpath, newpath string) error {
	if err := unix.Rename(oldpath, newpath); err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	return nil
}

// copyBody copies r to f, at most maxSize bytes when maxSize > 0, without
// holding the body in memory.
func copyBody(f *os.File, r io.Reader, maxSize int64) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	if maxSize <= 0 {
		return io.CopyBuffer(onlyWriter{f}, r, buf)
	}
	// Read one byte more than allowed to tell "exactly maxSize" from "more".
	n, err := io.CopyBuffer(onlyWriter{f}, io.LimitReader(r, maxSize+1), buf)
	if err != nil {
		return n, err
	}
	if n > maxSize {
		return n, ErrTooBig
	}
	return n, nil
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 64*1024); return &b }}

// onlyWriter hides *os.File's ReadFrom so io.CopyBuffer uses our buffer (and
// never a splice path that might behave differently on error).
type onlyWriter struct{ w io.Writer }

func (o onlyWriter) Write(p []byte) (int, error) { return o.w.Write(p) }

// recycler hands out files in dir (tmp/) for writing: files of removed
// messages whose removal is durable when it holds some, else new ones.
type recycler struct {
	dir, prefix string
	rm          *removals
	mu          sync.Mutex
	free        []keptFile // oldest first
	n           uint64
}

// keptFile is a file a recycler holds: its name in dir and the number
// (removals.made) of the removal that put it there.
type keptFile struct {
	name string
	seq  uint64
}

// keptPrefix starts the names of the files kept for reuse in tmp/; the
// temporary files of writes start with a message ID, which cannot hold '+'.
const keptPrefix = "+kept."

// Kept reports whether name, a file in a spool's tmp/, is a removed
// message's file kept for reuse rather than a write in progress.
func Kept(name string) bool { return strings.HasPrefix(name, keptPrefix) }

// maxRecycled bounds the files a recycler keeps; more are deleted.
const maxRecycled = 1024

// create opens a kept file for writing from its start (the caller writes,
// then truncates to its length) or creates one named after pattern, as
// os.CreateTemp does.
func (r *recycler) create(pattern string) (*os.File, error) {
	if name := r.take(); name != "" {
		if f, err := openFile(filepath.Join(r.dir, name), unix.O_WRONLY); err == nil {
			return f, nil
		}
		// Gone meanwhile (an operator cleaning tmp/): make a new one.
	}
	return os.CreateTemp(r.dir, pattern)
}

// take removes the oldest kept file from the list and returns its name if
// its removal is durable, else returns "".
func (r *recycler) take() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.free) == 0 || r.free[0].seq > r.rm.durable.Load() {
		return ""
	}
	name := r.free[0].name
	r.free = r.free[1:]
	return name
}

// writeMeta writes a meta to a file in tmp/ (a kept one if any), synced
// under SyncFiles, and returns its path. On error the file is removed.
func (s *Spool) writeMeta(id string, data []byte) (string, error) {
	f, err := s.metas.create(id + ".meta.*")
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil {
		err = truncate(f, int64(len(data)))
	}
	if err == nil {
		err = s.syncFile(f)
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// keep takes the file at path (a removed message's) for reuse: it renames it
// into dir, or deletes it when enough are kept (waiting for their sync or
// not). Either counts as a removal in r.rm, whose number it returns. The
// error is the rename's (or the deletion's), wrapping fs.ErrNotExist when
// path does not exist.
func (r *recycler) keep(path string) (uint64, error) {
	r.mu.Lock()
	full := len(r.free) >= maxRecycled
	r.n++
	name := fmt.Sprintf("%s%d", r.prefix, r.n)
	r.mu.Unlock()
	if full {
		if err := os.Remove(path); err != nil {
			return 0, err
		}
		return r.rm.add(), nil
	}
	if err := rename(path, filepath.Join(r.dir, name)); err != nil {
		return 0, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// Numbered after the rename, so a sync that covers the number covers it.
	seq := r.rm.add()
	r.free = append(r.free, keptFile{name: name, seq: seq})
	return seq, nil
}

// removals numbers Remove's renames and deletions of files in msg/ and
// meta/, and knows up to which number a sync made them durable.
type removals struct {
	made    atomic.Uint64 // removals so far; the n-th is numbered n once done
	durable atomic.Uint64 // removals numbered up to durable are on stable storage
}

// add counts a removal that is done and returns its number.
func (r *removals) add() uint64 { return r.made.Add(1) }

// pending reports whether a removal may not be durable yet.
func (r *removals) pending() bool { return r.made.Load() > r.durable.Load() }

// cover runs syncFn, which must make every removal done before it started
// durable, and on success marks those removals durable.
func (r *removals) cover(syncFn func() error) error {
	n := r.made.Load() // before syncFn starts
	if err := syncFn(); err != nil {
		return err
	}
	for {
		d := r.durable.Load()
		if n <= d || r.durable.CompareAndSwap(d, n) {
			return nil
		}
	}
}

// Body opens the body of message id for reading; the caller closes it.
func (s *Spool) Body(id string) (*os.File, error) {
	if err := checkID("body", id); err != nil {
		return nil, err
	}
	if s.doomedBody(id) {
		return nil, fmt.Errorf("spool: body %s: %w", id, fs.ErrNotExist)
	}
	f, err := openFile(filepath.Join(s.msg, id), unix.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("spool: body %s: %w", id, err)
	}
	return f, nil
}

// openFile opens an existing file as os.OpenFile(name, flag, 0) does, but
// never for the runtime's poller: on Linux os.OpenFile offers every file to
// epoll, which costs four fcntl calls and a failing epoll_ctl per open, and
// a spool file, on disk, is never pollable.
func openFile(name string, flag int) (*os.File, error) {
	fd, err := unix.Open(name, flag|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), name), nil
}

// Update rewrites the meta of an existing message atomically: a temporary
// file, a sync, a rename over meta/ID, a sync. m.Size is kept as given.
// The error wraps fs.ErrNotExist if the message does not exist (Update never
// creates a message).
func (s *Spool) Update(m *Meta) error {
	if err := checkID("update", m.ID); err != nil {
		return err
	}
	id := m.ID
	metaPath := filepath.Join(s.meta, id)
	if _, err := os.Lstat(metaPath); err != nil {
		return fmt.Errorf("spool: update %s: %w", id, err)
	}
	data, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("spool: update %s: encode meta: %w", id, err)
	}
	tmp, err := s.writeMeta(id, data)
	if err != nil {
		return fmt.Errorf("spool: update %s: write meta: %w", id, err)
	}
	renamed := false
	err = s.commit(func() error {
		if err := rename(tmp, metaPath); err != nil {
			return fmt.Errorf("commit meta: %w", err)
		}
		renamed = true
		return nil
	}, s.metaSync)
	if err != nil {
		if !renamed {
			os.Remove(tmp)
		}
		return fmt.Errorf("spool: update %s: %w", id, err)
	}
	return nil
}

// Remove deletes message id: the meta at once, the body once the meta's
// removal is durable (so that no crash can leave a meta without its body);
// their files go to tmp/ for reuse. It does not wait for a sync: a nil
// error means the message is gone, and its removal is durable within
// removeSyncDelay (at once after Close). If the removal is lost in a crash,
// the message comes back and is delivered again. A body left without its
// meta by a crash is removed by Scan. If the meta did not exist the body is
// removed at once and the error wraps fs.ErrNotExist.
func (s *Spool) Remove(id string) error {
	if err := checkID("remove", id); err != nil {
		return err
	}
	seq, metaErr := s.metas.keep(filepath.Join(s.meta, id))
	switch {
	case metaErr == nil:
		s.doomedMu.Lock()
		s.doomed[id] = true
		s.doomedQ = append(s.doomedQ, doomedBody{id: id, seq: seq})
		s.doomedMu.Unlock()
	case errors.Is(metaErr, fs.ErrNotExist) && !s.doomedBody(id):
		// No meta to wait for.
		if _, err := s.bodies.keep(filepath.Join(s.msg, id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("spool: remove %s: body: %w", id, err)
		}
	case errors.Is(metaErr, fs.ErrNotExist):
		// Removed already: its body waits for the meta's removal.
	default:
		return fmt.Errorf("spool: remove %s: %w", id, metaErr)
	}
	s.dropBodies()
	if err := s.syncRemovalsLater(); err != nil {
		return fmt.Errorf("spool: remove %s: %w", id, err)
	}
	if metaErr != nil {
		return fmt.Errorf("spool: remove %s: %w", id, metaErr)
	}
	return nil
}

// doomedBody reports whether id's body waits for its meta's removal.
func (s *Spool) doomedBody(id string) bool {
	s.doomedMu.Lock()
	defer s.doomedMu.Unlock()
	return s.doomed[id]
}

// doomedBody is a removed message whose body waits in msg/ for the removal
// of its meta, number seq, to be durable.
type doomedBody struct {
	id  string
	seq uint64
}

// dropBodies removes the bodies whose meta's removal is durable. A body
// waits for that: removed at once, its removal could reach the disk first,
// and a crash then would leave a meta without its body, which Scan
// quarantines.
func (s *Spool) dropBodies() {
	durable := s.rm.durable.Load()
	s.doomedMu.Lock()
	// Oldest first: one numbered out of order waits for the next round.
	n := 0
	for n < len(s.doomedQ) && s.doomedQ[n].seq <= durable {
		delete(s.doomed, s.doomedQ[n].id)
		n++
	}
	ready := s.doomedQ[:n:n]
	s.doomedQ = s.doomedQ[n:]
	s.doomedMu.Unlock()
	for _, d := range ready {
		if _, err := s.bodies.keep(filepath.Join(s.msg, d.id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.logger().Error("spool_remove_body_failed", "id", d.id, "err", err)
		}
	}
}

// waiting reports whether removals wait for a sync, or bodies for theirs.
func (s *Spool) waiting() bool {
	if s.rm.pending() {
		return true
	}
	s.doomedMu.Lock()
	defer s.doomedMu.Unlock()
	return len(s.doomed) > 0
}

// syncRemovalsLater arms the timer that makes the removals durable, unless
// it is armed already or none waits. After Close it syncs them now instead.
func (s *Spool) syncRemovalsLater() error {
	s.timerMu.Lock()
	closed := s.closed
	if !closed && s.timer == nil && s.waiting() {
		s.timer = time.AfterFunc(s.removeDelay, s.removalTimer)
	}
	s.timerMu.Unlock()
	if closed {
		return s.flushRemovals()
	}
	return nil
}

// removalTimer is the timer's function: it makes the removals done so far
// durable, logging an error unless the spool is gone.
func (s *Spool) removalTimer() {
	s.timerMu.Lock()
	s.timer = nil // a removal from now on arms the next one
	s.timerMu.Unlock()
	if err := s.syncRemovals(); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			s.logger().Error("spool_remove_sync_failed", "dir", s.dir, "err", err)
		}
		return
	}
	// The bodies dropped now are removals that wait in turn.
	s.syncRemovalsLater()
}

// flushRemovals makes every removal durable now, the bodies' included.
func (s *Spool) flushRemovals() error {
	// Twice: the bodies dropped by the first wait for the second.
	for range 2 {
		if err := s.syncRemovals(); err != nil {
			return err
		}
	}
	return nil
}

// syncRemovals makes the removals done before the call durable, if some
// may not be, and then drops the bodies that waited for them (their own
// removals are not synced).
func (s *Spool) syncRemovals() error {
	if s.rm.pending() {
		if err := s.syncDirs(s.msgSync, s.metaSync); err != nil {
			return err
		}
	}
	s.dropBodies()
	return nil
}

// syncFile fsyncs f, written and not yet closed, under SyncFiles; under
// SyncFS the first sync of commit covers it.
func (s *Spool) syncFile(f *os.File) error {
	if s.mode == SyncFiles {
		return f.Sync()
	}
	return nil
}

// commit makes the files written and closed before the call durable, then
// calls fn, which renames them into place in dirs, and makes its renames
// durable. Under SyncFS the syncs are the fsSync runs that every concurrent
// commit shares, and fn runs between them (see syncer.commit); under
// SyncFiles syncFile made the files durable, and the directories' fsyncs
// follow fn.
func (s *Spool) commit(fn func() error, dirs ...*syncer) error {
	if s.mode == SyncFS {
		return s.fsSync.commit(fn)
	}
	if err := fn(); err != nil {
		return err
	}
	return s.syncDirs(dirs...)
}

// syncDirs makes the renames and removals made in dirs before the call
// durable: one shared syncfs under SyncFS, else the directories' shared
// fsyncs, at the same time. A sync of the file system, or of both msg/ and
// meta/, covers the removals.
func (s *Spool) syncDirs(dirs ...*syncer) error {
	if s.mode == SyncFS {
		return s.fsSync.sync()
	}
	if slices.Contains(dirs, s.msgSync) && slices.Contains(dirs, s.metaSync) {
		return s.rm.cover(func() error { return fsyncDirs(dirs) })
	}
	return fsyncDirs(dirs)
}

// fsyncDirs runs the syncs of dirs at the same time.
func fsyncDirs(dirs []*syncer) error {
	errs := make(chan error, len(dirs))
	for _, d := range dirs[1:] {
		go func() { errs <- d.sync() }()
	}
	err := dirs[0].sync()
	for range dirs[1:] {
		err = cmp.Or(err, <-errs)
	}
	return err
}

// syncDir fsyncs a directory, making renames and removals in it durable.
func syncDir(dir string) error {
	d, err := openFile(dir, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// syncFS flushes the file system holding dir (syncfs(2)): every file
// written and every rename made on it before the call is on stable storage
// when it returns nil.
func syncFS(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, &os.PathError{Op: "open", Path: dir, Err: err})
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}

// syncer shares a sync between concurrent callers (group commit). A call to
// sync returns once a run that started after the call began has finished,
// so it covers every change the caller made before calling. While one run
// is under way, all callers that arrive wait for the next one, which one of
// them makes for all.
//
// commit adds a step between two runs: its function (renames into place)
// is called by the run that covers the caller's writes, right after it
// finishes and before the next run starts, and the caller returns once
// that next run has finished. The callers of one run thus share the next
// one for their renames too, and no rename waits for a run that started
// before it.
type syncer struct {
	run     func() error
	mu      sync.Mutex
	cond    sync.Cond
	running bool
	started uint64        // runs started
	done    uint64        // last run finished
	err     error         // its result
	steps   []*commitStep // for the next run to start to call once it has finished
}

// commitStep is a function a run calls once it has finished without error.
type commitStep struct {
	fn  func() error
	err error // fn's error, or the run's
}

func newSyncer(run func() error) *syncer {
	d := &syncer{run: run}
	d.cond.L = &d.mu
	return d
}

func (d *syncer) sync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	// If one is running it may have started before our change: wait for the next.
	d.await(d.started + 1)
	// The result of the latest run, which started after our change (an
	// error from a later one than ours is reported too: it errs on the safe
	// side).
	return d.err
}

// commit waits for a run that started after the call, has it call fn once
// it finished without error, and waits for the run after that one, which
// makes fn's changes durable. It returns fn's error, or the first run's, or
// the second's.
func (d *syncer) commit(fn func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := &commitStep{fn: fn}
	d.steps = append(d.steps, st)
	gen := d.started + 1 // the next run to start takes d.steps
	d.await(gen)
	if st.err != nil {
		return st.err
	}
	d.await(gen + 1)
	return d.err
}

// await returns once run want has finished, making runs while none is
// under way. d.mu is held.
func (d *syncer) await(want uint64) {
	for d.done < want {
		if d.running {
			d.cond.Wait()
			continue
		}
		d.running = true
		d.started++
		gen, steps := d.started, d.steps
		d.steps = nil
		d.mu.Unlock()
		err := d.run()
		for _, st := range steps {
			st.err = err
			if err == nil {
				st.err = st.fn()
			}
		}
		d.mu.Lock()
		d.running = false
		d.done = gen
		d.err = err
		d.cond.Broadcast()
	}
}
