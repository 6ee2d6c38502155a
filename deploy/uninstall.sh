#!/usr/bin/env bash
# Remove what deploy/install.sh installed.
#
#   sudo deploy/uninstall.sh              stop and disable the service; remove units, /opt/idnode, sysctl and
#                                         sysusers files. The store (/var/lib/idnode), the configuration
#                                         (/etc/idnode), the logs and the idnode user are kept.
#   sudo deploy/uninstall.sh --purge      also delete the store, configuration, logs and the idnode user
#   deploy/uninstall.sh --root DIR        the same inside a staged root (no systemctl, no user changes)
set -euo pipefail

ROOT=""
PREFIX="/opt/idnode"
PURGE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
        --root=*) ROOT="${1#--root=}"; shift ;;
        --prefix) PREFIX="${2:?}"; shift 2 ;;
        --purge) PURGE=1; shift ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "uninstall.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    echo "uninstall.sh: run as root (or give --root DIR)" >&2
    exit 1
fi
LIVE=$([ -z "$ROOT" ] && echo 1 || echo 0)

if [ "$LIVE" = 1 ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now idnode.socket idnode.service 2>/dev/null || true
fi
rm -f "$ROOT/etc/systemd/system/idnode.service" "$ROOT/etc/systemd/system/idnode.socket" \
      "$ROOT/etc/sysctl.d/60-idnode.conf" "$ROOT/usr/lib/sysusers.d/idnode.conf"
case "$PREFIX" in /?*) rm -rf "$ROOT$PREFIX" ;; *) echo "uninstall.sh: odd --prefix $PREFIX" >&2; exit 2 ;; esac
if [ "$LIVE" = 1 ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
if [ "$PURGE" = 1 ]; then
    rm -rf "$ROOT/var/lib/idnode" "$ROOT/etc/idnode" "$ROOT/var/log/idnode"
    if [ "$LIVE" = 1 ] && id idnode >/dev/null 2>&1; then
        userdel idnode || true
    fi
    echo "uninstall.sh: removed idnode, its store, configuration, logs and user"
else
    echo "uninstall.sh: removed idnode; kept $ROOT/var/lib/idnode, $ROOT/etc/idnode and $ROOT/var/log/idnode (--purge deletes them)"
fi
