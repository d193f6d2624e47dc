#!/usr/bin/env bash
# demo-seed.sh MXPORT_BIN: put a demo account into Redis for `make run`; safe to rerun.
#
# Creates, when missing:
#   - zone demo.test (account demo), forwarded: its MX points at mail.demo.test:2525;
#   - the panel user demo@demo.test (customer of account demo);
#   - an API token of account demo.
# Redis comes from MXPORT_REDIS_URL (mxport's default when unset).
#
# The zone's records are added only when the zone itself is created; to reseed them,
# `mxport zone delete demo.test` and run again.
#
# Environment:
#   DEMO_EMAIL       panel login (default demo@demo.test)
#   DEMO_PASSWORD    its password (default demo-password-123; used only when creating)
#   DEMO_TOKEN_FILE  where to keep the token so later runs print it instead of making
#                    another (default: unset, a new token on every run)
set -euo pipefail

if [ $# -ne 1 ]; then
	echo "usage: $0 MXPORT_BIN" >&2
	exit 2
fi
bin=$1
[ -x "$bin" ] || { echo "$0: $bin is not an executable" >&2; exit 1; }

zone=demo.test
account=demo
email=${DEMO_EMAIL:-demo@demo.test}
password=${DEMO_PASSWORD:-demo-password-123}
token_file=${DEMO_TOKEN_FILE:-}

say() { echo "demo-seed: $*"; }

zones=$("$bin" zone list)
zone_created=false
if grep -qxF -e "$zone" -e "$zone." <<<"$zones"; then
	say "zone $zone exists, leaving it and its records as they are"
else
	"$bin" zone create "$zone" --account "$account"
	"$bin" record add "$zone" www A 300 192.0.2.10
	"$bin" record add "$zone" @ MX 3600 "10 mail.$zone:2525"
	"$bin" record add "$zone" mail A 300 127.0.0.1
	"$bin" record add "$zone" @ TXT 300 '"v=spf1 -all"'
	zone_created=true
	say "zone $zone created (www A, forwarded MX to mail.$zone:2525, mail A, SPF)"
fi

# The password goes in on stdin. A second run finds the user: mxport says "exists".
if out=$("$bin" user create --email "$email" --role customer --account "$account" 2>&1 <<<"$password"); then
	say "user $email created"
else
	case $out in
	*exists*) say "user $email exists, password unchanged" ;;
	*)
		echo "$out" >&2
		exit 1
		;;
	esac
fi

# A cached token is trusted only while the zone created with it still exists: a fresh
# zone means a fresh (or different) Redis, where the old token is unknown.
if [ -n "$token_file" ] && [ "$zone_created" = false ] && [ -s "$token_file" ]; then
	token=$(<"$token_file")
	say "API token (from $token_file)"
else
	token=$("$bin" token create --role customer --account "$account")
	if [ -n "$token_file" ]; then
		mkdir -p "$(dirname "$token_file")"
		(umask 077 && printf '%s\n' "$token" >"$token_file")
	fi
	say "API token created"
fi

cat <<EOF

Demo account "$account"
  panel login:  $email
  password:     $password
  API token:    $token
EOF
