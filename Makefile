# upgradefs — every target works on a fresh Debian 12 machine as root with only
# the Swift toolchain installed: `deps` installs the system packages it needs.
SWIFT       ?= swift
CONFIG      ?= debug
BUILD_FLAGS ?= -c $(CONFIG)
BIN          = $(shell $(SWIFT) build $(BUILD_FLAGS) --show-bin-path)/upgradefs
APT_PACKAGES = libfuse3-dev fuse3 libsodium-dev libsystemd-dev pkg-config libsqlite3-dev curl openssl ca-certificates chromium postgresql
PREFIX      ?= /usr/local

.PHONY: all deps build release test unit-test interop-test demo publish-demo bench install clean

all: build

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@python3 -c 'import venv, ensurepip' 2>/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip; }

build: deps
	$(SWIFT) build $(BUILD_FLAGS)

release:
	$(MAKE) build CONFIG=release

# Unit tests, in-process server tests, real FUSE mounts, and python-tuf's
# ngclient checking the server independently. The end-to-end tests run one at a
# time: they block on real processes, and run side by side on two cores they
# starve the in-process tests' tasks.
test: deps build examples-test
	$(SWIFT) build $(BUILD_FLAGS) --build-tests
	$(SWIFT) test $(BUILD_FLAGS) --skip-build --skip IntegrationTests
	$(SWIFT) test $(BUILD_FLAGS) --skip-build --filter IntegrationTests --no-parallel
	$(MAKE) interop-test

interop-test: build
	UPGRADEFS_BIN=$(BIN) Tests/interop/run.sh

# The example app (examples/app) and scheduling functions (examples/sf): sh,
# coreutils, grep, sed and awk; no build needed. The SFs also run on real mounts
# when the upgradefs binary is built (make test builds it first).
.PHONY: examples-test
examples-test:
	UPGRADEFS_BIN="$${UPGRADEFS_BIN:-$$(test -x $(BIN) && echo $(BIN))}" sh Tests/examples/run.sh

# The fleet demo: a server, DEMO_NODES nodes (default 4) with their managers and apps, three
# upgrades (fast-reboot, rolling, canary). publish-demo: one node, publishing and verification.
demo: build
	UPGRADEFS_BIN=$(BIN) examples/demo.sh

publish-demo: build
	UPGRADEFS_BIN=$(BIN) examples/publish-demo.sh

# Release build (upgradefs and the load tool upgradefs-load), then reads through the mount, the whiteboard
# under load (BENCH_SECTIONS=load for that part alone), whiteboard latencies, and a fleet's rolling upgrade.
bench: deps
	$(MAKE) build CONFIG=release
	bin=$$($(SWIFT) build -c release --show-bin-path); \
	  UPGRADEFS_BIN=$$bin/upgradefs UPGRADEFS_LOAD_BIN=$$bin/upgradefs-load bench/run.sh && \
	  UPGRADEFS_BIN=$$bin/upgradefs bench/whiteboard.sh && \
	  UPGRADEFS_BIN=$$bin/upgradefs bench/fleet.sh

# The binary, the mount helper, the systemd units (enable them with `systemctl enable --now`), shell completions
# and the man page, both generated from the argument parser (the man page by its generate-manual plugin).
install: release
	install -m 0755 $$($(SWIFT) build -c release --show-bin-path)/upgradefs $(PREFIX)/bin/upgradefs
	install -m 0755 mount/mount.upgradefs /sbin/mount.upgradefs
	install -d $(PREFIX)/lib/systemd/system
	install -m 0644 mount/upgradefs-serve.service mount/upgradefs-mount.service mount/upgradefs-manager.service \
	  mount/upgradefs-layer.service \
	  $(PREFIX)/lib/systemd/system/
	-systemctl daemon-reload 2>/dev/null
	install -d $(PREFIX)/share/bash-completion/completions $(PREFIX)/share/zsh/site-functions \
	  $(PREFIX)/share/fish/vendor_completions.d $(PREFIX)/share/man/man1
	$(PREFIX)/bin/upgradefs --generate-completion-script bash > $(PREFIX)/share/bash-completion/completions/upgradefs
	$(PREFIX)/bin/upgradefs --generate-completion-script zsh > $(PREFIX)/share/zsh/site-functions/_upgradefs
	$(PREFIX)/bin/upgradefs --generate-completion-script fish > $(PREFIX)/share/fish/vendor_completions.d/upgradefs.fish
	$(SWIFT) package generate-manual --configuration release
	install -m 0644 .build/plugins/GenerateManual/outputs/upgradefs/upgradefs.1 $(PREFIX)/share/man/man1/upgradefs.1

clean:
	rm -rf .build
