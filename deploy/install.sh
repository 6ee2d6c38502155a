#!/usr/bin/env bash
# Install idnode as a systemd service on Debian (bookworm or later), or stage the same files under a root.
#
#   sudo deploy/install.sh                      install from this source tree (needs PyPI for dependencies)
#   sudo deploy/install.sh --wheelhouse DIR     install offline from wheels in DIR (`pip wheel . -w DIR`)
#   deploy/install.sh --root /tmp/stage --no-venv
#                                               stage the files only: no user, no systemctl, no network
#   sudo deploy/install.sh --enable             also enable and start idnode.service
#
# What it puts where (all under --root when given):
#   user and group  idnode (system account, no login), via /usr/lib/sysusers.d/idnode.conf
#   /opt/idnode/venv                 virtual environment with idnode and its dependencies (unless --no-venv)
#   /opt/idnode/README.md            the operations manual
#   /etc/systemd/system/             idnode.service, idnode.socket (the socket is not enabled by default)
#   /etc/idnode/idnode.toml          example configuration, only if no configuration is there yet;
#   /etc/idnode/idnode.toml.example  always the current example
#   /etc/sysctl.d/60-idnode.conf     kernel settings for SO_REUSEPORT hand-over and UDP buffers
#   /var/lib/idnode, /var/log/idnode state and log directories, owned by idnode
# Running it again upgrades in place (the configuration and the store are kept). deploy/uninstall.sh undoes it.
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

SRC="$(cd "$(dirname "$0")/.." && pwd)"
ROOT=""
PREFIX="/opt/idnode"
PYTHON="${PYTHON:-python3}"
VENV=1
WHEELHOUSE=""
WHEEL=""
ENABLE=0

while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
        --root=*) ROOT="${1#--root=}"; shift ;;
        --prefix) PREFIX="${2:?}"; shift 2 ;;
        --python) PYTHON="${2:?}"; shift 2 ;;
        --no-venv) VENV=0; shift ;;
        --wheelhouse) WHEELHOUSE="${2:?}"; shift 2 ;;
        --wheel) WHEEL="${2:?}"; shift 2 ;;
        --enable) ENABLE=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage 2 ;;
    esac
done

if [ -n "$ROOT" ]; then
    mkdir -p "$ROOT"
    ROOT="$(cd "$ROOT" && pwd)"
elif [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (or give --root DIR to stage the files)" >&2
    exit 1
fi
LIVE=$([ -z "$ROOT" ] && echo 1 || echo 0)
say() { echo "install.sh: $*"; }

# 1. The user, declared for systemd-sysusers (also applied at boot), created now on a live install.
install -d -m 755 "$ROOT/usr/lib/sysusers.d"
cat > "$ROOT/usr/lib/sysusers.d/idnode.conf" <<'EOF'
# idnode service account (deploy/install.sh)
u idnode - "idnode resolution node" /var/lib/idnode /usr/sbin/nologin
EOF
if [ "$LIVE" = 1 ]; then
    if command -v systemd-sysusers >/dev/null; then
        systemd-sysusers /usr/lib/sysusers.d/idnode.conf
    elif ! id idnode >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/idnode --no-create-home --shell /usr/sbin/nologin idnode
    fi
    say "user idnode: $(id idnode)"
fi

# 2. Directories. The unit also creates its State/Logs/Configuration directories; these make a staged tree
#    complete and let an operator load a store before the first start.
install -d -m 755 "$ROOT$PREFIX" "$ROOT/etc/idnode" "$ROOT/etc/systemd/system" "$ROOT/etc/sysctl.d"
install -d -m 750 "$ROOT/var/lib/idnode" "$ROOT/var/log/idnode"
if [ "$LIVE" = 1 ]; then
    chown idnode:idnode /var/lib/idnode /var/log/idnode
    chgrp idnode /etc/idnode
fi

# 3. The virtual environment.
if [ "$VENV" = 1 ]; then
    "$PYTHON" -m venv --clear "$ROOT$PREFIX/venv"
    PIP=("$ROOT$PREFIX/venv/bin/python" -m pip --quiet --disable-pip-version-check)
    if [ -n "$WHEELHOUSE" ]; then
        "${PIP[@]}" install --no-index --find-links "$WHEELHOUSE" "${WHEEL:-idnode}"
    elif [ -n "$WHEEL" ]; then
        "${PIP[@]}" install "$WHEEL"
    else
        "${PIP[@]}" install "$SRC"
    fi
    "$ROOT$PREFIX/venv/bin/idnode" --help >/dev/null
    say "virtual environment $ROOT$PREFIX/venv ready"
else
    say "skipping the virtual environment (--no-venv): $PREFIX/venv/bin/idnode must be provided"
fi
install -m 644 "$SRC/README.md" "$ROOT$PREFIX/README.md"

# 4. Units, configuration, kernel settings.
install -m 644 "$SRC/deploy/idnode.service" "$SRC/deploy/idnode.socket" "$ROOT/etc/systemd/system/"
install -m 644 "$SRC/deploy/idnode.toml.example" "$ROOT/etc/idnode/idnode.toml.example"
if [ ! -e "$ROOT/etc/idnode/idnode.toml" ]; then
    install -m 640 "$SRC/deploy/idnode.toml.example" "$ROOT/etc/idnode/idnode.toml"
    [ "$LIVE" = 1 ] && chgrp idnode /etc/idnode/idnode.toml
    say "wrote /etc/idnode/idnode.toml from the example: review site_address, binds and ports"
else
    say "kept the existing /etc/idnode/idnode.toml (the new example is idnode.toml.example)"
fi
cat > "$ROOT/etc/sysctl.d/60-idnode.conf" <<'EOF'
# idnode (deploy/install.sh)
# A worker replaced on reload closes its SO_REUSEPORT TCP listener: move connections still waiting in its
# accept queue to the new worker's listener instead of resetting them (Linux 5.14 and later).
net.ipv4.tcp_migrate_req = 1
# Let each worker's UDP socket have the 4 MiB receive buffer it asks for, to absorb bursts.
net.core.rmem_max = 8388608
EOF

# 5. Tell systemd.
if [ "$LIVE" = 1 ]; then
    sysctl -q -p /etc/sysctl.d/60-idnode.conf || say "kernel settings not applied now (they apply at boot)"
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        if [ "$ENABLE" = 1 ]; then
            systemctl enable --now idnode.service
            systemctl reload-or-restart idnode.service
        elif systemctl is-active --quiet idnode.service; then
            say "idnode is running the previous version: systemctl restart idnode to upgrade it"
        fi
    fi
fi

say "done. Next: put a store in /var/lib/idnode (sudo -u idnode $PREFIX/venv/bin/idnode load --data /var/lib/idnode FILE),"
say "      edit /etc/idnode/idnode.toml, then: systemctl enable --now idnode"
