# mxport: build, test and run a local instance. GNU make; Debian 12 for `deps`.
#
#   make run     install what is missing, build, start a local Redis, seed a demo zone,
#                serve DNS on 127.0.0.1:5353, SMTP on :2500 and the panel on :8080
#   make test    install what is missing, go vet, then all tests with the race detector
#
# The ?= settings below can be overridden on the command line or from the environment,
# e.g. `make run HTTP_ADDR=127.0.0.1:9090` or `DNS_ADDR=127.0.0.1:5300 make run`.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

# Go lives in /usr/local/go/bin on the development and CI machines; use it when no go
# is on PATH.
ifeq ($(shell command -v go 2>/dev/null),)
export PATH := /usr/local/go/bin:$(PATH)
endif
GO ?= go

ifndef VERSION
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
endif

# Commands the targets need, as command:package pairs for apt-get (Debian 12). Add a
# pair to extend; a package that provides several commands may appear more than once.
# A name with :: is a Perl module, checked with perl -M (its pair is Module=package,
# since the module name holds colons).
# gcc: `go test -race` needs cgo.
DEPS := \
	redis-server:redis-server \
	redis-cli:redis-server \
	named-checkzone:bind9-utils \
	dig:bind9-dnsutils \
	nsupdate:bind9-dnsutils \
	knotd:knot \
	swaks:swaks \
	Net::SSLeay=libnet-ssleay-perl \
	gcc:gcc \
	chromium:chromium \
	smtp-sink:postfix \
	ddclient:ddclient \
	inadyn:inadyn

# Local instance for `make run`.
REDIS_PORT ?= 6379
REDIS_URL ?= redis://127.0.0.1:$(REDIS_PORT)/0
REDIS_DIR ?= $(CURDIR)/data/redis
REDIS_WAIT ?= 30
DNS_ADDR ?= 127.0.0.1:5353
SMTP_ADDR ?= 127.0.0.1:2500
HTTP_ADDR ?= 127.0.0.1:8080
SPOOL_DIR ?= $(CURDIR)/data/spool
SMTP_HOSTNAME ?= localhost
MX_HOSTS ?= mx1.mxport.test,mx2.mxport.test
NS_HOSTS ?= ns1.mxport.test,ns2.mxport.test
DEMO_EMAIL ?= demo@demo.test
DEMO_PASSWORD ?= demo-password-123
DEMO_TOKEN_FILE ?= $(CURDIR)/data/demo-token

BENCH_ZONES ?= 100000

.PHONY: deps build test fuzz-smoke run redis-start redis-stop clean bench-store check-go

# deps: install through apt-get whatever command or Perl module of DEPS is missing. apt-get update
# runs only when something is missing; sudo only when not root.
deps:
	@PATH="$$PATH:/usr/sbin:/sbin"; missing=(); \
	have() { case "$$1" in \
		*::*=*) perl -M"$${1%%=*}" -e1 >/dev/null 2>&1 ;; \
		*) command -v "$${1%%:*}" >/dev/null 2>&1 ;; esac; }; \
	pkg() { case "$$1" in *::*=*) echo "$${1#*=}" ;; *) echo "$${1#*:}" ;; esac; }; \
	for pair in $(DEPS); do \
		have "$$pair" || missing+=("$$(pkg "$$pair")"); \
	done; \
	[ $${#missing[@]} -eq 0 ] && exit 0; \
	pkgs=$$(printf '%s\n' "$${missing[@]}" | sort -u | paste -sd' '); \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "deps: missing packages $$pkgs, and no apt-get to install them" >&2; exit 1; \
	fi; \
	sudo=; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	echo "deps: installing $$pkgs"; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q; \
	if printf '%s\n' "$${missing[@]}" | grep -qx postfix; then \
		echo 'postfix postfix/main_mailer_type select No configuration' | $$sudo debconf-set-selections; \
	fi; \
	if printf '%s\n' "$${missing[@]}" | grep -qx ddclient; then \
		printf '%s\n' 'ddclient ddclient/method select Network interface' \
			'ddclient ddclient/run_mode select On PPP connect' | $$sudo debconf-set-selections; \
	fi; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$pkgs; \
	for pair in $(DEPS); do \
		have "$$pair" || { echo "deps: $$pair still missing after installing $$(pkg "$$pair")" >&2; exit 1; }; \
	done

check-go:
	@command -v $(GO) >/dev/null 2>&1 || { echo "go not found on PATH nor in /usr/local/go/bin: install Go (see go.mod for the version)" >&2; exit 1; }

build: check-go
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/mxport ./cmd/mxport

test: deps check-go
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...
	$(MAKE) --no-print-directory fuzz-smoke

# fuzz-smoke: a short run of the DNS packet handler fuzzer: a count of executions, not a
# duration (a -fuzztime deadline can end a run with a spurious "context deadline exceeded").
# Longer runs: FUZZTIME=5m.
FUZZTIME ?= 200000x
fuzz-smoke: check-go
	$(GO) test -run '^$$' -fuzz '^FuzzHandler$$' -fuzztime $(FUZZTIME) ./dnsserver/

# redis-start: a persistent Redis under data/redis, unless one already answers.
redis-start: deps
	@if redis-cli -h 127.0.0.1 -p $(REDIS_PORT) ping 2>/dev/null | grep -qx PONG; then \
		echo "redis: using the server already answering on 127.0.0.1:$(REDIS_PORT)"; exit 0; \
	fi; \
	mkdir -p '$(REDIS_DIR)'; \
	echo "redis: starting on 127.0.0.1:$(REDIS_PORT), data in $(REDIS_DIR)"; \
	redis-server deploy/redis.conf --port $(REDIS_PORT) --dir '$(REDIS_DIR)' --daemonize yes \
		--pidfile '$(REDIS_DIR)/redis.pid' --logfile '$(REDIS_DIR)/redis.log'; \
	deadline=$$((SECONDS + $(REDIS_WAIT))); \
	until redis-cli -h 127.0.0.1 -p $(REDIS_PORT) ping 2>/dev/null | grep -qx PONG; do \
		if [ $$SECONDS -ge $$deadline ]; then \
			echo "redis: no answer on 127.0.0.1:$(REDIS_PORT) after $(REDIS_WAIT)s; last log lines:" >&2; \
			tail -n 20 '$(REDIS_DIR)/redis.log' >&2 || true; exit 1; \
		fi; \
		sleep 0.1; \
	done

# redis-stop: stop the Redis that redis-start started (found by its pid file); Redis
# saves and exits on SIGTERM.
redis-stop:
	@pidfile='$(REDIS_DIR)/redis.pid'; \
	[ -f "$$pidfile" ] || { echo "redis: no $$pidfile, nothing to stop"; exit 0; }; \
	pid=$$(cat "$$pidfile"); \
	if [ "$$(cat /proc/$$pid/comm 2>/dev/null)" != redis-server ]; then \
		echo "redis: pid $$pid is not running redis-server; removing stale $$pidfile"; rm -f "$$pidfile"; exit 0; \
	fi; \
	kill "$$pid"; \
	deadline=$$((SECONDS + $(REDIS_WAIT))); \
	while kill -0 "$$pid" 2>/dev/null; do \
		[ $$SECONDS -lt $$deadline ] || { echo "redis: pid $$pid still running after $(REDIS_WAIT)s" >&2; exit 1; }; \
		sleep 0.1; \
	done; \
	echo "redis: stopped"

run: deps build redis-start
	@MXPORT_REDIS_URL='$(REDIS_URL)' MXPORT_NS='$(NS_HOSTS)' MXPORT_MX_HOSTS='$(MX_HOSTS)' DEMO_EMAIL='$(DEMO_EMAIL)' DEMO_PASSWORD='$(DEMO_PASSWORD)' \
		DEMO_TOKEN_FILE='$(DEMO_TOKEN_FILE)' deploy/demo-seed.sh bin/mxport
	@mkdir -p '$(SPOOL_DIR)'
	@hostport() { local h=$${1%:*}; h=$${h#\[}; h=$${h%\]}; echo "$${h:-127.0.0.1} $${1##*:}"; }; \
	read -r dnshost dnsport <<<"$$(hostport '$(DNS_ADDR)')"; \
	read -r smtphost smtpport <<<"$$(hostport '$(SMTP_ADDR)')"; \
	read -r httphost httpport <<<"$$(hostport '$(HTTP_ADDR)')"; \
	case $$httphost in *:*) httphost="[$$httphost]";; esac; \
	env='$(if $(filter redis://127.0.0.1:6379/0,$(REDIS_URL)),,MXPORT_REDIS_URL=$(REDIS_URL) )'; \
	echo; \
	echo "What to try (Ctrl-C stops mxport; 'make redis-stop' stops the Redis started here):"; \
	echo "  dig @$$dnshost -p $$dnsport demo.test MX"; \
	echo "  dig @$$dnshost -p $$dnsport www.demo.test A"; \
	echo "  swaks --server $$smtphost:$$smtpport --to someone@demo.test"; \
	echo "  $${env}bin/mxport record list demo.test"; \
	echo "  curl -H 'Authorization: Bearer TOKEN' http://$$httphost:$$httpport/api/v1/zones   (TOKEN printed above)"; \
	echo "  panel: http://$$httphost:$$httpport/  login $(DEMO_EMAIL), password $(DEMO_PASSWORD)"; \
	echo
	exec bin/mxport serve --redis '$(REDIS_URL)' \
		--dns '$(DNS_ADDR)' --smtp '$(SMTP_ADDR)' --http '$(HTTP_ADDR)' \
		--spool '$(SPOOL_DIR)' --hostname '$(SMTP_HOSTNAME)' \
		--mx-hosts '$(MX_HOSTS)' --ns '$(NS_HOSTS)'

clean:
	rm -rf bin/

bench-store: deps check-go
	MXPORT_BENCH_ZONES=$(BENCH_ZONES) $(GO) test -run '^$$' -bench . -benchtime 1x ./store/
