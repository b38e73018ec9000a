# Build and install anomalyd and anomaly-generator from source.
#
#   make                      # cargo build --release --workspace
#   sudo make install         # into /usr/local, configs into /etc
#   make install DESTDIR=/tmp/stage PREFIX=/usr SYSCONFDIR=/etc
#   sudo make uninstall       # the same variables as install
#
# install never overwrites a configuration file that exists (an operator's
# edits survive, as with the .deb's conffiles); uninstall removes a
# configuration file only when it is still the shipped one. The units are
# rewritten to name the installed paths. The system user comes from the
# sysusers.d file: run `systemd-sysusers` after installing (see README).
# Use `cargo deb` (packaging/build-deb) for a Debian package instead.

PREFIX ?= /usr/local
SYSCONFDIR ?= /etc
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/anomalyd
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
# Where the built binaries are taken from.
BUILD_DIR ?= target/release
CARGO ?= cargo
INSTALL ?= install

BINARIES := anomalyd anomaly-generator
CONFIGS := anomalyd.toml generator.toml
MAN8 := anomalyd.8 anomaly-generator.8
MAN5 := anomalyd.toml.5 anomaly-generator.toml.5
UNITS := anomalyd.service anomalyd.socket anomaly-generator.service

.PHONY: all build install uninstall check-man

all: build

build:
	$(CARGO) build --release --locked --workspace

install:
	@for bin in $(BINARIES); do \
	    test -x "$(BUILD_DIR)/$$bin" || { echo "make install: $(BUILD_DIR)/$$bin is missing; run 'make' first" >&2; exit 1; }; \
	done
	$(INSTALL) -d "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(MANDIR)/man8" "$(DESTDIR)$(MANDIR)/man5" \
	    "$(DESTDIR)$(SYSCONFDIR)/anomalyd/conf.d" "$(DESTDIR)$(SYSCONFDIR)/logrotate.d" \
	    "$(DESTDIR)$(UNITDIR)" "$(DESTDIR)$(SYSUSERSDIR)" "$(DESTDIR)$(DOCDIR)"
	for bin in $(BINARIES); do $(INSTALL) -m 0755 "$(BUILD_DIR)/$$bin" "$(DESTDIR)$(BINDIR)/$$bin" || exit 1; done
	for page in $(MAN8); do $(INSTALL) -m 0644 "man/$$page" "$(DESTDIR)$(MANDIR)/man8/$$page" || exit 1; done
	for page in $(MAN5); do $(INSTALL) -m 0644 "man/$$page" "$(DESTDIR)$(MANDIR)/man5/$$page" || exit 1; done
	@for conf in $(CONFIGS); do \
	    dest="$(DESTDIR)$(SYSCONFDIR)/anomalyd/$$conf"; \
	    if [ -e "$$dest" ]; then echo "keeping $$dest (exists)"; \
	    else echo "installing $$dest"; $(INSTALL) -m 0644 "etc/anomalyd/$$conf" "$$dest" || exit 1; fi; \
	done
	$(INSTALL) -m 0644 etc/anomalyd/conf.d/README "$(DESTDIR)$(SYSCONFDIR)/anomalyd/conf.d/README"
	$(INSTALL) -m 0644 packaging/logrotate/anomalyd "$(DESTDIR)$(SYSCONFDIR)/logrotate.d/anomalyd"
	for unit in $(UNITS); do \
	    sed -e 's|/usr/bin/|$(BINDIR)/|g' -e 's|/etc/anomalyd/|$(SYSCONFDIR)/anomalyd/|g' \
	        "packaging/$$unit" >"$(DESTDIR)$(UNITDIR)/$$unit" || exit 1; \
	    chmod 0644 "$(DESTDIR)$(UNITDIR)/$$unit"; \
	done
	$(INSTALL) -m 0644 packaging/sysusers.d/anomalyd.conf "$(DESTDIR)$(SYSUSERSDIR)/anomalyd.conf"
	$(INSTALL) -m 0644 README.md "$(DESTDIR)$(DOCDIR)/README.md"

uninstall:
	for bin in $(BINARIES); do rm -f "$(DESTDIR)$(BINDIR)/$$bin"; done
	for page in $(MAN8); do rm -f "$(DESTDIR)$(MANDIR)/man8/$$page"; done
	for page in $(MAN5); do rm -f "$(DESTDIR)$(MANDIR)/man5/$$page"; done
	for unit in $(UNITS); do rm -f "$(DESTDIR)$(UNITDIR)/$$unit"; done
	rm -f "$(DESTDIR)$(SYSUSERSDIR)/anomalyd.conf" "$(DESTDIR)$(SYSCONFDIR)/logrotate.d/anomalyd" \
	    "$(DESTDIR)$(SYSCONFDIR)/anomalyd/conf.d/README" "$(DESTDIR)$(DOCDIR)/README.md"
	@for conf in $(CONFIGS); do \
	    dest="$(DESTDIR)$(SYSCONFDIR)/anomalyd/$$conf"; \
	    if [ -e "$$dest" ] && ! cmp -s "$$dest" "etc/anomalyd/$$conf"; then echo "keeping $$dest (edited)"; \
	    else rm -f "$$dest"; fi; \
	done
	-rmdir "$(DESTDIR)$(SYSCONFDIR)/anomalyd/conf.d" "$(DESTDIR)$(SYSCONFDIR)/anomalyd" \
	    "$(DESTDIR)$(DOCDIR)" 2>/dev/null

# Every man page formats without a warning (also run by .ci/run).
check-man:
	@for page in man/*.[58]; do \
	    out=$$(groff -man -ww -z "$$page" 2>&1); \
	    if [ -n "$$out" ]; then echo "$$page:"; echo "$$out"; exit 1; fi; \
	done; echo "check-man: no warnings"
