package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
)

// Scan is for start-up, before any other use of the spool: it deletes tmp/*
// and bodies without a meta (never acknowledged), moves unreadable metas and
// metas without a body (or whose body is not Size bytes) to quarantine/ with
// their body if any, logging an error with slog and never deleting them, and
// returns the good metas sorted by Arrived (then ID).
//
// A meta is good when it parses as JSON, its ID is its file name, it has at
// least one recipient, every recipient state is pending, delivered or failed,
// and its body is a regular file of exactly Size bytes.
//
// Scan returns an error only when a directory cannot be read or a bad meta
// cannot be moved aside; files it merely fails to delete are logged.
func (s *Spool) Scan() ([]*Meta, error) {
	log := s.logger()

	// tmp/: everything here is a write that never committed.
	tmpEntries, err := os.ReadDir(s.tmp)
	if err != nil {
		return nil, fmt.Errorf("spool: scan: %w", err)
	}
	for _, e := range tmpEntries {
		p := filepath.Join(s.tmp, e.Name())
		if err := os.RemoveAll(p); err != nil {
			log.Error("spool_tmp_remove_failed", "file", p, "err", err)
		}
	}

	// msg/: name -> regular file size (-1 for anything else).
	msgEntries, err := os.ReadDir(s.msg)
	if err != nil {
		return nil, fmt.Errorf("spool: scan: %w", err)
	}
	bodies := make(map[string]int64, len(msgEntries))
	for _, e := range msgEntries {
		size := int64(-1)
		if e.Type().IsRegular() {
			if fi, err := e.Info(); err == nil {
				size = fi.Size()
			}
		}
		bodies[e.Name()] = size
	}

	metaEntries, err := os.ReadDir(s.meta)
	if err != nil {
		return nil, fmt.Errorf("spool: scan: %w", err)
	}
	type result struct {
		name string
		m    *Meta
		why  error // non-nil: quarantine
	}
	results := make([]result, len(metaEntries))
	var wg sync.WaitGroup
	next := make(chan int)
	for range max(1, min(runtime.GOMAXPROCS(0), 16)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				name := metaEntries[i].Name()
				size, hasBody := bodies[name]
				m, why := s.checkMeta(name, metaEntries[i], size, hasBody)
				results[i] = result{name, m, why}
			}
		}()
	}
	for i := range metaEntries {
		next <- i
	}
	close(next)
	wg.Wait()

	var good []*Meta
	var firstErr error
	quarantined := false
	for _, r := range results {
		if r.why == nil {
			good = append(good, r.m)
			delete(bodies, r.name)
			continue
		}
		_, hasBody := bodies[r.name]
		delete(bodies, r.name)
		if err := s.quarantineMsg(r.name, hasBody); err != nil {
			log.Error("spool_quarantine_failed", "id", r.name, "reason", r.why.Error(), "err", err)
			if firstErr == nil {
				firstErr = fmt.Errorf("spool: scan: quarantine %s: %w", r.name, err)
			}
			continue
		}
		quarantined = true
		log.Error("spool_quarantined", "id", r.name, "body", hasBody, "err", r.why.Error(),
			"dir", s.quarantine)
	}

	// What is left in bodies has no meta: never acknowledged.
	for name := range bodies {
		p := filepath.Join(s.msg, name)
		if err := os.RemoveAll(p); err != nil {
			log.Error("spool_orphan_remove_failed", "file", p, "err", err)
			continue
		}
		log.Info("spool_orphan_removed", "id", name)
	}

	// Make the clean-up and the quarantine durable. The clean-up is not
	// needed for correctness (a second Scan would do it again) but keeps the
	// next start quiet.
	if err := s.syncDirs(s.msgSync, s.metaSync); err != nil {
		if quarantined && firstErr == nil {
			firstErr = fmt.Errorf("spool: scan: %w", err)
		}
		log.Error("spool_sync_failed", "dir", s.dir, "err", err)
	}
	if firstErr != nil {
		return nil, firstErr
	}

	sort.Slice(good, func(i, j int) bool {
		a, b := good[i], good[j]
		if !a.Arrived.Equal(b.Arrived) {
			return a.Arrived.Before(b.Arrived)
		}
		return a.ID < b.ID
	})
	return good, nil
}

// checkMeta reads and checks one meta; a non-nil error says why it must be
// quarantined.
func (s *Spool) checkMeta(name string, e fs.DirEntry, bodySize int64, hasBody bool) (*Meta, error) {
	if !ValidID(name) {
		return nil, errors.New("file name is not a message id")
	}
	if !e.Type().IsRegular() {
		return nil, errors.New("meta is not a regular file")
	}
	data, err := os.ReadFile(filepath.Join(s.meta, name))
	if err != nil {
		return nil, fmt.Errorf("read meta: %w", err)
	}
	m := new(Meta)
	if err := json.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("parse meta: %w", err)
	}
	if m.ID != name {
		return nil, fmt.Errorf("meta id %q is not its file name", m.ID)
	}
	if len(m.Rcpts) == 0 {
		return nil, errors.New("meta has no recipients")
	}
	for _, r := range m.Rcpts {
		switch r.State {
		case Pending, Delivered, Failed:
		default:
			return nil, fmt.Errorf("recipient %q has bad state %q", r.Addr, r.State)
		}
	}
	if !hasBody {
		return nil, errors.New("no body")
	}
	if bodySize < 0 {
		return nil, errors.New("body is not a regular file")
	}
	if bodySize != m.Size {
		return nil, fmt.Errorf("body is %d bytes, meta says %d", bodySize, m.Size)
	}
	return m, nil
}

// quarantineMsg moves meta/name to quarantine/name.meta and, if present,
// msg/name to quarantine/name.msg (a numbered suffix avoids overwriting an
// earlier quarantine), then fsyncs quarantine/.
func (s *Spool) quarantineMsg(name string, hasBody bool) error {
	base := s.freeQuarantineName(name)
	if hasBody {
		if err := os.Rename(filepath.Join(s.msg, name), base+".msg"); err != nil {
			return err
		}
	}
	if err := os.Rename(filepath.Join(s.meta, name), base+".meta"); err != nil {
		return err
	}
	return s.syncDirs(s.quarSync)
}

// freeQuarantineName returns a path prefix in quarantine/ for which neither
// .meta nor .msg exists. Names that are not IDs are made safe first.
func (s *Spool) freeQuarantineName(name string) string {
	safe := strings.Map(func(r rune) rune {
		if r == '/' || r == 0 || r == '.' {
			return '_'
		}
		return r
	}, name)
	for i := 0; ; i++ {
		b := safe
		if i > 0 {
			b = fmt.Sprintf("%s.%d", safe, i)
		}
		p := filepath.Join(s.quarantine, b)
		_, err1 := os.Lstat(p + ".meta")
		_, err2 := os.Lstat(p + ".msg")
		free1, free2 := errors.Is(err1, fs.ErrNotExist), errors.Is(err2, fs.ErrNotExist)
		if free1 && free2 {
			return p
		}
		if (!free1 && err1 != nil) || (!free2 && err2 != nil) {
			return p // cannot tell; the rename will report the problem
		}
	}
}
