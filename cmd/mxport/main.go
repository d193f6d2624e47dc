// Command mxport is the mxport DNS hosting service with MX port forwarding:
// "mxport serve" runs the dns, smtp and http roles; the other subcommands
// manage the store (accounts, tokens, zones, records, TSIG keys, dyndns
// update keys).
//
// Every flag has an MXPORT_* environment variable (see DESIGN.md); a flag
// given on the command line wins. Errors are one line on stderr and a
// non-zero exit: 2 for a bad command line, 1 for anything else.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
	"github.com/mxport/mxport/store/zonefile"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = ""

const usage = `usage: mxport COMMAND [flags]

  serve [flags]                              run the dns, smtp and http roles
  token create --role R [--account ID] [--name N]
                                             print one new API token
  user create --email E --role R [--account ID]
                                             password read from stdin
  zone create NAME [--account ID]
  zone delete NAME
  zone list [--account ID]
  zone import FILE [--zone NAME] [--account ID] [--replace]
  zone export NAME
  record add ZONE NAME TYPE TTL DATA
  record list ZONE                           one record a line: ID NAME TTL TYPE DATA
  record remove ZONE ID
  tsig create NAME --zone ZONE [--algorithm hmac-sha256|hmac-sha512|hmac-sha1]
  tsig list | tsig delete NAME
  updatekey create ZONE HOST                 print one new dyndns update key for HOST
  updatekey list ZONE                        one key a line: ID HOST CREATED LAST-USED
  updatekey revoke ZONE ID
  queue list | flush [DOMAIN] | remove ID
  version

Every command takes --redis URL (env MXPORT_REDIS_URL); see README.md for all flags.
`

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// cli carries a command's I/O.
type cli struct {
	in       io.Reader
	out, err io.Writer
}

// run runs one command and returns the exit code.
func run(ctx context.Context, args []string, in io.Reader, out, errw io.Writer) int {
	c := &cli{in: in, out: out, err: errw}
	if len(args) == 0 {
		fmt.Fprint(errw, usage)
		return 2
	}
	err := c.dispatch(ctx, args)
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(out, usage)
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(errw, "mxport: %s (mxport help for usage)\n", oneLine(err.Error()))
		return 2
	}
	fmt.Fprintf(errw, "mxport: %s\n", oneLine(err.Error()))
	return 1
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func (c *cli) dispatch(ctx context.Context, args []string) error {
	cmd, rest := args[0], args[1:]
	sub := ""
	if len(rest) > 0 {
		sub = rest[0]
	}
	switch cmd {
	case "help", "-h", "--help", "-help":
		return flag.ErrHelp
	case "version", "--version":
		fmt.Fprintln(c.out, "mxport", buildVersion())
		return nil
	case "serve":
		return c.serve(ctx, rest)
	case "token", "user", "zone", "record", "tsig", "updatekey", "queue":
		if sub == "" {
			return usagef("%s: missing subcommand", cmd)
		}
		rest = rest[1:]
	default:
		return usagef("unknown command %q", cmd)
	}
	switch cmd + " " + sub {
	case "token create":
		return c.tokenCreate(ctx, rest)
	case "user create":
		return c.userCreate(ctx, rest)
	case "zone create":
		return c.zoneCreate(ctx, rest)
	case "zone delete":
		return simple(ctx, "zone delete", rest, []string{"NAME"}, func(s *store.Store, a []string) error {
			return s.DeleteZone(ctx, a[0])
		})
	case "zone list":
		return c.zoneList(ctx, rest)
	case "zone import":
		return c.zoneImport(ctx, rest)
	case "zone export":
		return c.zoneExport(ctx, rest)
	case "record add":
		return c.recordAdd(ctx, rest)
	case "record list":
		return c.recordList(ctx, rest)
	case "record remove":
		return simple(ctx, "record remove", rest, []string{"ZONE", "ID"}, func(s *store.Store, a []string) error {
			return s.RemoveRecord(ctx, a[0], a[1])
		})
	case "tsig create":
		return c.tsigCreate(ctx, rest)
	case "tsig list":
		return c.tsigList(ctx, rest)
	case "tsig delete":
		return simple(ctx, "tsig delete", rest, []string{"NAME"}, func(s *store.Store, a []string) error {
			return s.DeleteTSIGKey(ctx, a[0])
		})
	case "updatekey create":
		return c.updateKeyCreate(ctx, rest)
	case "updatekey list":
		return c.updateKeyList(ctx, rest)
	case "updatekey revoke":
		return simple(ctx, "updatekey revoke", rest, []string{"ZONE", "ID"}, func(s *store.Store, a []string) error {
			zd, err := s.ZoneData(ctx, a[0])
			if err != nil {
				return err
			}
			return s.RevokeUpdateKey(ctx, zd.Account, zd.Name, a[1])
		})
	case "queue list":
		return c.queueList(ctx, rest)
	case "queue flush":
		return c.queueFlush(ctx, rest)
	case "queue remove":
		return simple(ctx, "queue remove", rest, []string{"ID"}, func(s *store.Store, a []string) error {
			return s.PublishControl(ctx, store.Control{Kind: "remove", ID: a[0]})
		})
	}
	return usagef("unknown command %q", cmd+" "+sub)
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// command parses a store command's flags, checks the number of positional
// arguments and opens the store.
type command struct {
	cfg  config
	fs   *flag.FlagSet
	args []string
}

func newCommand(name string) *command {
	cmd := &command{}
	cmd.fs = newFlags(name, &cmd.cfg)
	return cmd
}

// parse parses args and wants exactly len(names) positional arguments.
func (cmd *command) parse(args []string, names ...string) error {
	pos, err := parse(cmd.fs, args)
	if err != nil {
		return err
	}
	if len(pos) != len(names) {
		return usagef("%s: want %s, got %d argument(s)", cmd.fs.Name(), strings.Join(names, " "), len(pos))
	}
	cmd.args = pos
	return nil
}

// with opens the store, runs f on it and closes it.
func (cmd *command) with(ctx context.Context, f func(*store.Store) error) error {
	s, err := cmd.cfg.open(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	return f(s)
}

// simple runs a command that takes only positional arguments (names) and
// acts on the store.
func simple(ctx context.Context, name string, args, names []string, f func(s *store.Store, a []string) error) error {
	cmd := newCommand(name)
	if err := cmd.parse(args, names...); err != nil {
		return err
	}
	return cmd.with(ctx, func(s *store.Store) error { return f(s, cmd.args) })
}

// defaultAccount is the account a command acts for when --account is not
// given: the operator's own for operators; registrars and customers need one.
func defaultAccount(role store.Role, account string) (string, error) {
	if account != "" {
		return account, store.CheckAccountID(account)
	}
	if role == store.RoleOperator {
		return "operator", nil
	}
	return "", usagef("--account is required for role %s", role)
}

func (c *cli) tokenCreate(ctx context.Context, args []string) error {
	cmd := newCommand("token create")
	roleName := cmd.fs.String("role", "", "operator, registrar or customer")
	account := cmd.fs.String("account", "", "the token's account (created if missing)")
	name := cmd.fs.String("name", "", "a label for the token")
	if err := cmd.parse(args); err != nil {
		return err
	}
	role, err := store.ParseRole(*roleName)
	if err != nil {
		return usagef("--role: %s", err.(*record.FieldError).Msg)
	}
	acct, err := defaultAccount(role, *account)
	if err != nil {
		return err
	}
	return cmd.with(ctx, func(s *store.Store) error {
		if _, err := s.EnsureAccount(ctx, acct, role); err != nil {
			return err
		}
		secret, _, err := s.CreateToken(ctx, acct, *name)
		if err != nil {
			return err
		}
		fmt.Fprintln(c.out, secret)
		return nil
	})
}

func (c *cli) userCreate(ctx context.Context, args []string) error {
	cmd := newCommand("user create")
	email := cmd.fs.String("email", "", "the user's email address (sign-in name)")
	roleName := cmd.fs.String("role", "", "operator, registrar or customer")
	account := cmd.fs.String("account", "", "the user's account (created if missing); default: operator, or one named after the email")
	if err := cmd.parse(args); err != nil {
		return err
	}
	role, err := store.ParseRole(*roleName)
	if err != nil {
		return usagef("--role: %s", err.(*record.FieldError).Msg)
	}
	e, err := store.CheckEmail(*email)
	if err != nil {
		return usagef("--email: %s", err.(*record.FieldError).Msg)
	}
	acct := *account
	if acct == "" && role != store.RoleOperator {
		acct = accountFromEmail(e)
	}
	if acct, err = defaultAccount(role, acct); err != nil {
		return err
	}
	line, err := bufio.NewReader(io.LimitReader(c.in, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read password from stdin: %w", err)
	}
	password := strings.TrimRight(line, "\r\n")
	return cmd.with(ctx, func(s *store.Store) error {
		if _, err := s.EnsureAccount(ctx, acct, role); err != nil {
			return err
		}
		u, err := s.CreateUser(ctx, e, acct, password)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.out, "user %s created (account %s, role %s)\n", u.Email, u.Account, u.Role)
		return nil
	})
}

// accountFromEmail names an account after an email address: lower case,
// '@' and other characters outside an account id become '.'.
func accountFromEmail(e string) string {
	b := []byte(e)
	for i, ch := range b {
		if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_' || ch == '.') {
			b[i] = '.'
		}
	}
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}

func (c *cli) zoneCreate(ctx context.Context, args []string) error {
	cmd := newCommand("zone create")
	account := cmd.fs.String("account", "", "the owning account (created as a customer account if missing); default: operator")
	if err := cmd.parse(args, "NAME"); err != nil {
		return err
	}
	acct, role, err := ownerAccount(*account)
	if err != nil {
		return err
	}
	return cmd.with(ctx, func(s *store.Store) error {
		if err := ensureOwner(ctx, s, acct, role); err != nil {
			return err
		}
		z, err := s.CreateZone(ctx, cmd.args[0], acct)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.out, "zone %s created (account %s, serial %d)\n", z.Name, z.Account, z.Serial)
		return nil
	})
}

// ownerAccount is the account that owns zones a command creates: the one
// named by --account (a customer account if it must be created), else the
// operator's.
func ownerAccount(account string) (string, store.Role, error) {
	if account == "" {
		return "operator", store.RoleOperator, nil
	}
	if err := store.CheckAccountID(account); err != nil {
		return "", "", usagef("--account: %s", err.(*record.FieldError).Msg)
	}
	return account, store.RoleCustomer, nil
}

// ensureOwner creates the owner account when it is missing; an existing
// one is used whatever its role.
func ensureOwner(ctx context.Context, s *store.Store, account string, role store.Role) error {
	_, err := s.Account(ctx, account)
	if errors.Is(err, store.ErrNotFound) {
		_, err = s.EnsureAccount(ctx, account, role)
	}
	return err
}

func (c *cli) zoneList(ctx context.Context, args []string) error {
	cmd := newCommand("zone list")
	account := cmd.fs.String("account", "", "list only this account's zones")
	if err := cmd.parse(args); err != nil {
		return err
	}
	return cmd.with(ctx, func(s *store.Store) error {
		names, err := s.Zones(ctx, *account)
		if err != nil {
			return err
		}
		for _, n := range names {
			fmt.Fprintln(c.out, n)
		}
		return nil
	})
}

func (c *cli) zoneImport(ctx context.Context, args []string) error {
	cmd := newCommand("zone import")
	zone := cmd.fs.String("zone", "", "the zone's name; default: the SOA record's owner")
	account := cmd.fs.String("account", "", "the owning account of a new zone (created as a customer account if missing); default: operator")
	replace := cmd.fs.Bool("replace", false, "replace the records of an existing zone")
	if err := cmd.parse(args, "FILE"); err != nil {
		return err
	}
	f, err := os.Open(cmd.args[0])
	if err != nil {
		return err
	}
	defer f.Close()
	o, err := cmd.cfg.storeOptions()
	if err != nil {
		return err
	}
	zf, err := zonefile.Parse(f, *zone, cmd.args[0], record.Policy{MXHosts: o.MXHosts})
	if err != nil {
		return err
	}
	acct, role, err := ownerAccount(*account)
	if err != nil {
		return err
	}
	return cmd.with(ctx, func(s *store.Store) error {
		if err := ensureOwner(ctx, s, acct, role); err != nil {
			return err
		}
		z, err := s.ImportZone(ctx, zf.Name, acct, zf.SOA, zf.Serial, zf.Records, *replace)
		if errors.Is(err, store.ErrExists) {
			return fmt.Errorf("zone %s exists: use --replace to replace its records", zf.Name)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(c.out, "zone %s imported: %d records, serial %d\n", z.Name, len(zf.Records), z.Serial)
		return nil
	})
}

func (c *cli) zoneExport(ctx context.Context, args []string) error {
	cmd := newCommand("zone export")
	if err := cmd.parse(args, "NAME"); err != nil {
		return err
	}
	return cmd.with(ctx, func(s *store.Store) error {
		zd, err := s.ZoneData(ctx, cmd.args[0])
		if err != nil {
			return err
		}
		return zonefile.Write(c.out, zd)
	})
}

func (c *cli) recordAdd(ctx context.Context, args []string) error {
	cmd := newCommand("record add")
	if err := cmd.parse(args, "ZONE", "NAME", "TYPE", "TTL", "DATA"); err != nil {
		return err
	}
	ttl, err := strconv.ParseUint(cmd.args[3], 10, 32)
	if err != nil {
		return &record.FieldError{Field: "ttl", Msg: fmt.Sprintf("TTL %q is not a number of seconds", cmd.args[3])}
	}
	return cmd.with(ctx, func(s *store.Store) error {
		r, err := s.AddRecord(ctx, cmd.args[0], record.Record{Name: cmd.args[1], Type: cmd.args[2], TTL: uint32(ttl), Data: cmd.args[4]})
		if err != nil {
			return err
		}
		printRecord(c.out, r)
		return nil
	})
}

func printRecord(w io.Writer, r record.Record) {
	fmt.Fprintf(w, "%s %s %d %s %s\n", r.ID, r.Name, r.TTL, r.Type, r.Data)
}

func (c *cli) recordList(ctx context.Context, args []string) error {
	cmd := newCommand("record list")
	if err := cmd.parse(args, "ZONE"); err != nil {
		return err
	}
	return cmd.with(ctx, func(s *store.Store) error {
		zd, err := s.ZoneData(ctx, cmd.args[0])
		if err != nil {
			return err
		}
		for _, r := range zd.Records {
			printRecord(c.out, r)
		}
		return nil
	})
}

// listFlag is a repeatable flag that also splits on commas.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func (c *cli) tsigCreate(ctx context.Context, args []string) error {
	cmd := newCommand("tsig create")
	var zones listFlag
	cmd.fs.Var(&zones, "zone", "a zone the key may transfer and update (repeatable, or comma-separated)")
	alg := cmd.fs.String("algorithm", "hmac-sha256", "hmac-sha256, hmac-sha512 or hmac-sha1")
	if err := cmd.parse(args, "NAME"); err != nil {
		return err
	}
	if len(zones) == 0 {
		return usagef("tsig create: --zone is required")
	}
	return cmd.with(ctx, func(s *store.Store) error {
		k, err := s.CreateTSIGKey(ctx, cmd.args[0], *alg, zones)
		if err != nil {
			return err
		}
		fmt.Fprintln(c.out, k.Secret)
		return nil
	})
}

func (c *cli) tsigList(ctx context.Context, args []string) error {
	cmd := newCommand("tsig list")
	if err := cmd.parse(args); err != nil {
		return err
	}
	return cmd.with(ctx, func(s *store.Store) error {
		keys, err := s.TSIGKeys(ctx)
		if err != nil {
			return err
		}
		for _, k := range keys {
			fmt.Fprintf(c.out, "%s %s %s\n", k.Name, strings.TrimSuffix(k.Algorithm, "."), strings.Join(k.Zones, ","))
		}
		return nil
	})
}

func (c *cli) updateKeyCreate(ctx context.Context, args []string) error {
	cmd := newCommand("updatekey create")
	if err := cmd.parse(args, "ZONE", "HOST"); err != nil {
		return err
	}
	return cmd.with(ctx, func(s *store.Store) error {
		secret, _, err := s.CreateUpdateKey(ctx, cmd.args[0], cmd.args[1])
		if err != nil {
			return err
		}
		fmt.Fprintln(c.out, secret)
		return nil
	})
}

func (c *cli) updateKeyList(ctx context.Context, args []string) error {
	cmd := newCommand("updatekey list")
	if err := cmd.parse(args, "ZONE"); err != nil {
		return err
	}
	return cmd.with(ctx, func(s *store.Store) error {
		zd, err := s.ZoneData(ctx, cmd.args[0])
		if err != nil {
			return err
		}
		keys, err := s.UpdateKeys(ctx, zd.Account, zd.Name)
		if err != nil {
			return err
		}
		for _, k := range keys {
			used := "never"
			if !k.LastUsed.IsZero() {
				used = k.LastUsed.Format(time.RFC3339)
			}
			fmt.Fprintf(c.out, "%s %s %s %s\n", k.ID, k.Host, k.Created.Format(time.RFC3339), used)
		}
		return nil
	})
}

func (c *cli) queueList(ctx context.Context, args []string) error {
	cmd := newCommand("queue list")
	if err := cmd.parse(args); err != nil {
		return err
	}
	return cmd.with(ctx, func(s *store.Store) error {
		zones, err := s.Zones(ctx, "")
		if err != nil {
			return err
		}
		for _, z := range zones {
			items, err := s.Queued(ctx, z)
			if err != nil {
				return err
			}
			for _, it := range items {
				from := it.From
				if from == "" {
					from = "<>"
				}
				fmt.Fprintf(c.out, "%s %s %s %s attempts=%d next=%s node=%s %s\n", it.ID, it.Zone, from,
					strings.Join(it.Rcpts, ","), it.Attempts, it.NextAttempt.UTC().Format(time.RFC3339), it.Node, oneLine(it.LastReply))
			}
		}
		return nil
	})
}

func (c *cli) queueFlush(ctx context.Context, args []string) error {
	cmd := newCommand("queue flush")
	pos, err := parse(cmd.fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return usagef("queue flush: want [DOMAIN], got %d arguments", len(pos))
	}
	zone := ""
	if len(pos) == 1 {
		if zone, err = record.ZoneName(pos[0]); err != nil {
			return usagef("queue flush: %s", err.(*record.FieldError).Msg)
		}
	}
	return cmd.with(ctx, func(s *store.Store) error {
		return s.PublishControl(ctx, store.Control{Kind: "flush", Zone: zone})
	})
}
