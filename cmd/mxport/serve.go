package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/mxport/mxport/dnsserver"
	"github.com/mxport/mxport/dnsserver/rrl"
	"github.com/mxport/mxport/dnsserver/update"
	"github.com/mxport/mxport/forwarder"
	"github.com/mxport/mxport/forwarder/spool"
	"github.com/mxport/mxport/panel"
	"github.com/mxport/mxport/panel/auth"
	"github.com/mxport/mxport/panel/dyndns"
	"github.com/mxport/mxport/panel/web"
)

// serveConfig is the validated configuration of "mxport serve".
type serveConfig struct {
	config
	retry         []time.Duration
	queueAge      time.Duration
	spoolSync     spool.SyncMode
	notifyTargets []string
	transferNets  []netip.Prefix
	proxies       []netip.Prefix
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
	if sc.proxies, err = prefixes("trusted-proxies", sc.trustedProxies); err != nil {
		return nil, err
	}
	if sc.rrlRate < 0 || sc.rrlSlip < 0 || sc.rrlWindow < 1 {
		return nil, usagef("--rrl-rate and --rrl-slip must be at least 0, --rrl-window at least 1")
	}
	if sc.httpRate < 0 {
		return nil, usagef("--http-rate must be at least 0")
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
	if sc.spoolSync, err = spool.ParseSyncMode(sc.config.spoolSync); err != nil {
		return nil, usagef("--spool-sync: %v", err)
	}
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
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var stops []func(context.Context) error
	var ready []func() error // readiness of each role's in-memory index
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
		ready = append(ready, func() error {
			if !d.Index().Loaded() {
				return errors.New("dns zone index not loaded")
			}
			return nil
		})
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
			Resolver: sc.resolver, Retry: sc.retry, MaxAge: sc.queueAge, SpoolSync: sc.spoolSync, TLS: tlsConf, Registry: reg,
		})
		if err := f.Start(ctx); err != nil {
			return err
		}
		stops = append(stops, f.Shutdown)
		ready = append(ready, func() error {
			if !f.Index().Loaded() {
				return errors.New("forwarder route index not loaded")
			}
			return nil
		})
	}
	if sc.http != "" {
		rate := float64(sc.httpRate)
		if rate == 0 {
			rate = -1 // off
		}
		a := auth.New(s)
		stop, err := startHTTP(ctx, sc, panel.Config{
			Rate: rate, Burst: 2 * sc.httpRate,
			Store: s, Auth: a, Gatherer: reg, Registerer: reg, TrustedProxies: sc.proxies,
			Routes: []func(*echo.Echo){
				func(e *echo.Echo) {
					dyndns.Register(e, dyndns.Config{Store: s, Auth: a, TrustedProxies: sc.proxies, RequestsPerMinute: sc.dyndnsRate})
				},
				func(e *echo.Echo) { web.Register(e, web.Config{Store: s, Auth: a, MXHosts: o.MXHosts}) },
			},
			Ready: func(context.Context) error {
				for _, r := range ready {
					if err := r(); err != nil {
						return err
					}
				}
				return nil
			},
		})
		if err != nil {
			return err
		}
		stops = append(stops, stop)
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

// startHTTP listens on --http and serves the panel until its stop function
// (graceful Shutdown) is called. A listen failure is returned at once.
func startHTTP(ctx context.Context, sc *serveConfig, cfg panel.Config) (func(context.Context) error, error) {
	l, err := net.Listen("tcp", sc.http)
	if err != nil {
		return nil, fmt.Errorf("http: %w", err)
	}
	srv := &http.Server{
		Handler:           panel.New(cfg),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Error("http serve", "addr", l.Addr().String(), "err", err)
		}
	}()
	slog.Info("http listening", "addr", l.Addr().String())
	return srv.Shutdown, nil
}
