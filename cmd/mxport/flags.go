package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
)

// usageError is a bad command line: it is printed with the command's usage.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// config holds every flag of DESIGN.md's contract. Each flag takes its
// default from its MXPORT_* variable when set (even to ""), and a flag given
// on the command line wins.
type config struct {
	redis, dns, smtp, http, spool, hostname string
	mxHosts, ns, resolver                   string
	retrySchedule, maxQueueAge, spoolSync   string
	tlsCert, tlsKey                         string
	notify, allowTransfer, trustedProxies   string
	rrlRate, rrlSlip, rrlWindow             int
	httpRate, dyndnsRate                    int
}

// env returns the variable's value when it is set, else def.
func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// newFlags returns a flag set for command name with the store flags every
// command takes (--redis, --mx-hosts, --ns, --hostname).
func newFlags(name string, c *config) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	host, _ := os.Hostname()
	fs.StringVar(&c.redis, "redis", env("MXPORT_REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis URL (env MXPORT_REDIS_URL)")
	fs.StringVar(&c.mxHosts, "mx-hosts", env("MXPORT_MX_HOSTS", ""), "the service's MX host names, comma-separated (env MXPORT_MX_HOSTS)")
	fs.StringVar(&c.hostname, "hostname", env("MXPORT_HOSTNAME", host), "this host's name: SMTP greeting, Received, DSN (env MXPORT_HOSTNAME)")
	fs.StringVar(&c.ns, "ns", env("MXPORT_NS", ""), "name servers for new zones' NS and SOA MNAME, comma-separated; default --hostname (env MXPORT_NS)")
	return fs
}

// serveFlags adds the flags of the serve command.
func serveFlags(fs *flag.FlagSet, c *config) {
	fs.StringVar(&c.dns, "dns", env("MXPORT_DNS_ADDR", ":53"), `DNS address, UDP and TCP; "" = off (env MXPORT_DNS_ADDR)`)
	fs.StringVar(&c.smtp, "smtp", env("MXPORT_SMTP_ADDR", ":25"), `SMTP address; "" = off (env MXPORT_SMTP_ADDR)`)
	fs.StringVar(&c.http, "http", env("MXPORT_HTTP_ADDR", ":8080"), `HTTP address; "" = off (env MXPORT_HTTP_ADDR)`)
	fs.StringVar(&c.spool, "spool", env("MXPORT_SPOOL_DIR", "/var/spool/mxport"), "mail spool directory (env MXPORT_SPOOL_DIR)")
	fs.StringVar(&c.spoolSync, "spool-sync", env("MXPORT_SPOOL_SYNC", "fs"), "how the spool makes mail durable: fs (syncfs shared by concurrent sessions) or file (fsync per file) (env MXPORT_SPOOL_SYNC)")
	fs.StringVar(&c.resolver, "resolver", env("MXPORT_RESOLVER", ""), "host:port of the resolver for outbound lookups; default: the system's (env MXPORT_RESOLVER)")
	fs.StringVar(&c.retrySchedule, "retry-schedule", env("MXPORT_RETRY_SCHEDULE", "1m,2m,5m,10m,20m,30m,1h"), "delivery retry delays, the last repeats (env MXPORT_RETRY_SCHEDULE)")
	fs.StringVar(&c.maxQueueAge, "max-queue-age", env("MXPORT_MAX_QUEUE_AGE", "336h"), "bounce mail older than this (env MXPORT_MAX_QUEUE_AGE)")
	fs.StringVar(&c.tlsCert, "tls-cert", env("MXPORT_TLS_CERT", ""), "STARTTLS certificate file (env MXPORT_TLS_CERT)")
	fs.StringVar(&c.tlsKey, "tls-key", env("MXPORT_TLS_KEY", ""), "STARTTLS key file (env MXPORT_TLS_KEY)")
	fs.StringVar(&c.notify, "notify", env("MXPORT_NOTIFY", ""), "secondaries to NOTIFY of zone changes, host:port comma-separated (env MXPORT_NOTIFY)")
	fs.StringVar(&c.allowTransfer, "allow-transfer", env("MXPORT_ALLOW_TRANSFER", ""), "networks allowed AXFR without TSIG, CIDRs comma-separated (env MXPORT_ALLOW_TRANSFER)")
	fs.StringVar(&c.trustedProxies, "trusted-proxies", env("MXPORT_TRUSTED_PROXIES", ""), "proxies whose X-Forwarded-For the HTTP role believes, CIDRs comma-separated (env MXPORT_TRUSTED_PROXIES)")
	fs.IntVar(&c.dyndnsRate, "dyndns-rate", envInt("MXPORT_DYNDNS_RATE", 30), "dyndns2 updates per minute per token before \"abuse\" (env MXPORT_DYNDNS_RATE)")
	fs.IntVar(&c.httpRate, "http-rate", envInt("MXPORT_HTTP_RATE", 20), "HTTP requests per second per API token (or client address without one), burst twice that; 0 = no rate limiting (env MXPORT_HTTP_RATE)")
	fs.IntVar(&c.rrlRate, "rrl-rate", envInt("MXPORT_RRL_RATE", 20), "UDP responses per second per client network and response kind; 0 = no rate limiting (env MXPORT_RRL_RATE)")
	fs.IntVar(&c.rrlSlip, "rrl-slip", envInt("MXPORT_RRL_SLIP", 2), "every Nth rate-limited response is sent truncated instead of dropped; 0 = never (env MXPORT_RRL_SLIP)")
	fs.IntVar(&c.rrlWindow, "rrl-window", envInt("MXPORT_RRL_WINDOW", 5), "seconds of burst a client network may accumulate (env MXPORT_RRL_WINDOW)")
}

// envInt is env for integer flags; a bad value is reported when flags are
// checked, like a bad flag.
func envInt(name string, def int) int {
	v, ok := os.LookupEnv(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		badEnv = append(badEnv, usagef("%s: %q is not a number", name, v))
		return def
	}
	return n
}

// badEnv collects environment values envInt could not parse.
var badEnv []error

// parse parses args, allowing flags after positional arguments
// ("zone create NAME --account ID"), and returns the positional ones.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// hostList parses a comma-separated list of host names.
func hostList(flagName, v string) ([]string, error) {
	var out []string
	for _, h := range strings.Split(v, ",") {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		n, err := record.ZoneName(h)
		if err != nil || net.ParseIP(n) != nil {
			return nil, usagef("--%s: %q is not a host name", flagName, h)
		}
		out = append(out, n)
	}
	return out, nil
}

// storeOptions derives the store options from the flags.
func (c *config) storeOptions() (store.Options, error) {
	mx, err := hostList("mx-hosts", c.mxHosts)
	if err != nil {
		return store.Options{}, err
	}
	nsv := c.ns
	if nsv == "" {
		nsv = c.hostname
	}
	ns, err := hostList("ns", nsv)
	if err != nil {
		return store.Options{}, err
	}
	return store.Options{MXHosts: mx, NS: ns}, nil
}

// open connects to the store; an unreachable Redis gives one clear error
// within a few seconds.
func (c *config) open(ctx context.Context) (*store.Store, error) {
	o, err := c.storeOptions()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := store.Open(ctx, c.redis, o)
	if err != nil {
		return nil, fmt.Errorf("redis %s: %w", store.RedactURL(c.redis), err)
	}
	return s, nil
}

// durations parses a comma-separated list of positive durations.
func durations(flagName, v string) ([]time.Duration, error) {
	var out []time.Duration
	for _, f := range strings.Split(v, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(f))
		if err != nil || d <= 0 {
			return nil, usagef("--%s: %q is not a positive duration (like 30s, 5m, 1h)", flagName, f)
		}
		out = append(out, d)
	}
	return out, nil
}

// prefixes parses a comma-separated list of CIDRs (a bare address is a /32
// or /128).
func prefixes(flagName, v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return nil, usagef("--%s: %q is not a CIDR", flagName, f)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// addrList parses a comma-separated list of host:port.
func addrList(flagName, v string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		if err := checkAddr(flagName, f); err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// checkAddr validates a listen or dial address: "" (off) or host:port.
func checkAddr(flagName, v string) error {
	if v == "" {
		return nil
	}
	if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
		return usagef("--%s: %q is not host:port", flagName, v)
	}
	return nil
}
