#!/bin/sh
# Install dtenant from a checkout: the Python package, the `dtenant` command and every
# system file listed in packaging/files.list.
#   packaging/install.sh            install onto this machine and activate it
#   packaging/install.sh DESTDIR    stage into DESTDIR only (packaging), activate nothing
#   --no-python                     leave the Python package to the caller (pybuild)
set -eu

python_too=yes
if [ "${1:-}" = "--no-python" ]; then python_too=no; shift; fi
destdir="${1:-}"
checkout="$(cd "$(dirname "$0")/.." && pwd)"
pydir="$destdir/usr/lib/python3/dist-packages"

if [ "$python_too" = yes ]; then
    # Exactly the checkout's modules, none left over from an earlier install (earlier
    # versions shipped the labs, a development tool, in the package).
    rm -rf "$pydir/dtenant_session"
    find "$checkout/dtenant_session" -name '*.py' | while read -r source; do
        relative="${source#"$checkout"/}"
        install -D -m 0644 "$source" "$pydir/$relative"
    done
    install -d "$destdir/usr/bin"
    cat > "$destdir/usr/bin/dtenant" <<'PY'
#!/usr/bin/python3
import sys

from dtenant_session.cli import main

sys.exit(main())
PY
    chmod 0755 "$destdir/usr/bin/dtenant"
fi

# A C source is built statically: root runs it with an environment users can fill, and
# only a program without a dynamic loader ignores LD_PRELOAD and its kind (the PAM hook).
# dpkg-buildpackage exports Debian's hardening flags; -static-pie keeps ASLR.
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
compile() {
    # shellcheck disable=SC2086  # the flags are word lists
    ${CC:-cc} ${CPPFLAGS:-} ${CFLAGS:--O2} -Wall -Wextra -static-pie ${LDFLAGS:-} -o "$2" "$1"
}

grep -v '^[[:space:]]*\(#\|$\)' "$checkout/packaging/files.list" | while read -r source target mode; do
    case "$mode" in
        *c) [ -e "$destdir$target" ] && continue; mode="${mode%c}" ;;  # keep local edits
    esac
    case "$source" in
        *.c) compile "$checkout/$source" "$build/program"; source="$build/program" ;;
        *) source="$checkout/$source" ;;
    esac
    install -D -m "$mode" "$source" "$destdir$target"
done

[ -n "$destdir" ] && exit 0
# Live install: activate. Each step is idempotent.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    # dtenant <= 0.2 turned forwarding on at boot by sysctl; dtenant now does it itself.
    rm -f /usr/lib/sysctl.d/60-dtenant.conf
    systemd-tmpfiles --create /usr/lib/tmpfiles.d/dtenant.conf
    # networkd is not enabled: the firewall's Wants= starts it at boot. Enabling it would
    # enable systemd-networkd-wait-online too (Also=), and on a host whose uplink networkd
    # does not manage, every boot would wait its 2-minute timeout (docker.service wants
    # network-online.target). A host that uses networkd keeps its own settings.
    systemctl enable --quiet dtenant-firewall.service dtenant-boot.service dtenant-reap.timer
    systemctl restart systemd-networkd.service   # reads networkd.conf.d only at start
    systemctl start dtenant-firewall.service dtenant-reap.timer
    systemctl try-restart dtenant-check.service   # this version's checks from now on
fi
dtenant setup
