package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// serveConfig is the validated configuration of "mxport serve".
type serveConfig struct {
	config
	retry    []time.Duration
	queueAge time.Duration
}

// parseServe parses and validates serve's flags: every mistake is caught
// here, before anything starts.
func parseServe(args []string) (*serveConfig, error) {
	sc := &serveConfig{}
	fs := newFlags("serve", &sc.config)
	serveFlags(fs, &sc.config)
	pos, err := parse(fs, args)
	if err != nil {
		return nil, err
	}
	if len(pos) > 0 {
		return nil, usagef("serve: unexpected argument %q", pos[0])
	}
	for _, a := range []struct{ name, v string }{{"dns", sc.dns}, {"smtp", sc.smtp}, {"http", sc.http}, {"resolver", sc.resolver}} {
		if err := checkAddr(a.name, a.v); err != nil {
			return nil, err
		}
	}
	if sc.retry, err = durations("retry-schedule", sc.retrySchedule); err != nil {
		return nil, err
	}
	age, err := durations("max-queue-age", sc.config.maxQueueAge)
	if err != nil {
		return nil, err
	}
	sc.queueAge = age[0]
	if (sc.tlsCert == "") != (sc.tlsKey == "") {
		return nil, usagef("--tls-cert and --tls-key go together")
	}
	if sc.tlsCert != "" {
		if _, err := tls.LoadX509KeyPair(sc.tlsCert, sc.tlsKey); err != nil {
			return nil, usagef("--tls-cert/--tls-key: %v", err)
		}
	}
	if sc.hostname == "" {
		return nil, usagef("--hostname is empty and the machine's host name is unknown")
	}
	if _, err := sc.storeOptions(); err != nil {
		return nil, err
	}
	return sc, nil
}

// serve runs the roles until SIGINT or SIGTERM.
func (c *cli) serve(ctx context.Context, args []string) error {
	sc, err := parseServe(args)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(c.err, nil))
	slog.SetDefault(log)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	s, err := sc.open(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	for _, r := range []struct{ name, addr string }{{"dns", sc.dns}, {"smtp", sc.smtp}, {"http", sc.http}} {
		if r.addr != "" {
			log.Warn("role not built yet", "role", r.name, "addr", r.addr)
		}
	}
	log.Info("serving", "version", buildVersion(), "pid", os.Getpid(), "hostname", sc.hostname)
	<-ctx.Done()
	log.Info("stopping", "reason", fmt.Sprint(context.Cause(ctx)))
	return nil
}
