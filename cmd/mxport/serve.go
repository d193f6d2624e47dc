package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mxport/mxport/dnsserver"
	"github.com/mxport/mxport/dnsserver/rrl"
	"github.com/mxport/mxport/dnsserver/update"
	"github.com/mxport/mxport/forwarder"
)

// serveConfig is the validated configuration of "mxport serve".
type serveConfig struct {
	config
	retry         []time.Duration
	queueAge      time.Duration
	notifyTargets []string
	transferNets  []netip.Prefix
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
	if len(badEnv) > 0 {
		return nil, badEnv[0]
	}
	if sc.notifyTargets, err = addrList("notify", sc.notify); err != nil {
		return nil, err
	}
	if sc.transferNets, err = prefixes("allow-transfer", sc.allowTransfer); err != nil {
		return nil, err
	}
	if sc.rrlRate < 0 || sc.rrlSlip < 0 || sc.rrlWindow < 1 {
		return nil, usagef("--rrl-rate and --rrl-slip must be at least 0, --rrl-window at least 1")
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
	o, _ := sc.storeOptions()
	reg := prometheus.NewRegistry()
	var stops []func(context.Context) error
	if sc.dns != "" {
		d := dnsserver.New(s, dnsserver.Config{
			Addr: sc.dns, MXHosts: o.MXHosts, Notify: sc.notifyTargets, AllowTransfer: sc.transferNets,
			RRL:     rrl.Config{ResponsesPerSecond: sc.rrlRate, Slip: sc.rrlSlip, Window: sc.rrlWindow},
			Updater: update.New(s), Metrics: dnsserver.NewMetrics(reg),
		})
		if err := d.Start(ctx); err != nil {
			return err
		}
		stops = append(stops, d.Shutdown)
	}
	if sc.smtp != "" {
		var tlsConf *tls.Config
		if sc.tlsCert != "" {
			cert, err := tls.LoadX509KeyPair(sc.tlsCert, sc.tlsKey)
			if err != nil {
				return usagef("--tls-cert/--tls-key: %v", err)
			}
			tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}}
		}
		f := forwarder.New(s, forwarder.Config{
			Addr: sc.smtp, Hostname: sc.hostname, SpoolDir: sc.spool, MXHosts: o.MXHosts,
			Resolver: sc.resolver, Retry: sc.retry, MaxAge: sc.queueAge, TLS: tlsConf, Registry: reg,
		})
		if err := f.Start(ctx); err != nil {
			return err
		}
		stops = append(stops, f.Shutdown)
	}
	if sc.http != "" {
		log.Warn("role not built yet", "role", "http", "addr", sc.http)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, stop := range stops {
			if err := stop(sctx); err != nil {
				log.Warn("shutdown", "err", err)
			}
		}
	}()
	log.Info("serving", "version", buildVersion(), "pid", os.Getpid(), "hostname", sc.hostname)
	<-ctx.Done()
	log.Info("stopping", "reason", fmt.Sprint(context.Cause(ctx)))
	return nil
}
