#!/usr/bin/env bash
# Make sure RabbitMQ and Redis answer at the configured URLs before the tests
# or the demo run. Starts (and, if needed, installs) local instances when the
# configured host is local; otherwise prints the command(s) that would.
#
#   MTA_AMQP_URL   default amqp://guest:guest@127.0.0.1:5672/
#   MTA_REDIS_URL  default redis://127.0.0.1:6379/0
#
# Prints one line per service on stdout; diagnostics go to stderr.
# Exit status: 0 when both answer, 1 otherwise.
set -euo pipefail

AMQP_URL="${MTA_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}"
REDIS_URL="${MTA_REDIS_URL:-redis://127.0.0.1:6379/0}"

# rabbitmq-server / rabbitmqctl live in /usr/sbin, often not on a user's PATH.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

log() { printf '%s\n' "$*" >&2; }

# --------------------------------------------------------------------------
# URL parsing
# --------------------------------------------------------------------------

# urldecode STRING -> stdout
urldecode() {
    local s="${1//+/ }"
    printf '%b' "${s//%/\\x}"
}

# parse_url URL DEFAULT_PORT
# Sets URL_HOST, URL_PORT, URL_USER, URL_PASS. Handles
#   scheme://[user[:pass]@]host[:port][/vhost-or-db][?query][#frag]
# including bracketed IPv6 hosts ([::1]:6379).
parse_url() {
    local url="$1" defport="$2" rest userinfo="" hostport
    URL_HOST="" URL_PORT="" URL_USER="" URL_PASS=""
    rest="${url#*://}"
    rest="${rest%%[/?#]*}"
    if [[ "$rest" == *@* ]]; then
        userinfo="${rest%@*}"
        hostport="${rest##*@}"
    else
        hostport="$rest"
    fi
    if [[ -n "$userinfo" ]]; then
        if [[ "$userinfo" == *:* ]]; then
            URL_USER="$(urldecode "${userinfo%%:*}")"
            URL_PASS="$(urldecode "${userinfo#*:}")"
        else
            URL_USER="$(urldecode "$userinfo")"
        fi
    fi
    if [[ "$hostport" == \[* ]]; then
        URL_HOST="${hostport#\[}"
        URL_HOST="${URL_HOST%%\]*}"
        local after="${hostport#*\]}"
        URL_PORT="${after#:}"
    elif [[ "$hostport" == *:*:* ]]; then
        URL_HOST="$hostport"            # bare IPv6 address without port
    elif [[ "$hostport" == *:* ]]; then
        URL_HOST="${hostport%:*}"
        URL_PORT="${hostport##*:}"
    else
        URL_HOST="$hostport"
    fi
    URL_HOST="$(urldecode "$URL_HOST")"
    [[ -n "$URL_HOST" ]] || URL_HOST="127.0.0.1"
    [[ -n "$URL_PORT" ]] || URL_PORT="$defport"
    if ! [[ "$URL_PORT" =~ ^[0-9]+$ ]] || (( URL_PORT < 1 || URL_PORT > 65535 )); then
        log "error: invalid port '$URL_PORT' in URL '$url'"
        return 1
    fi
}

is_local() {
    case "$1" in
        127.0.0.1 | localhost | ::1 | localhost.localdomain | ip6-localhost) return 0 ;;
        *) return 1 ;;
    esac
}

# Display form of host:port (brackets for IPv6).
hp() { if [[ "$1" == *:* ]]; then printf '[%s]:%s' "$1" "$2"; else printf '%s:%s' "$1" "$2"; fi; }

# --------------------------------------------------------------------------
# Probes
# --------------------------------------------------------------------------

tcp_open() {
    timeout 2 bash -c ">/dev/tcp/$1/$2" 2>/dev/null
}

# redis_ping HOST PORT USER PASS -> stdout: the reply's first line (e.g. PONG,
# +PONG, NOAUTH ...); status 0 only on PONG.
redis_ping() {
    local host="$1" port="$2" user="$3" pass="$4" reply=""
    if command -v redis-cli >/dev/null 2>&1; then
        local args=(-h "$host" -p "$port")
        if [[ -n "$pass" ]]; then
            [[ -n "$user" ]] && args+=(--user "$user")
            args+=(--no-auth-warning -a "$pass")
        fi
        reply="$(timeout 2 redis-cli "${args[@]}" ping 2>&1 | head -n1)" || true
        reply="${reply%$'\r'}"
        printf '%s\n' "$reply"
        [[ "$reply" == "PONG" ]]
        return
    fi
    # Fallback: speak RESP over /dev/tcp (AUTH first if a password is given).
    reply="$(R_HOST="$host" R_PORT="$port" R_USER="$user" R_PASS="$pass" LC_ALL=C \
        timeout 2 bash -c "$REDIS_TCP_PING" 2>/dev/null)" || true
    printf '%s\n' "$reply"
    [[ "$reply" == "+PONG" ]]
}

# Script run by redis_ping's /dev/tcp fallback (env: R_HOST R_PORT R_USER R_PASS).
read -r -d '' REDIS_TCP_PING <<'SCRIPT' || true
exec 3<>"/dev/tcp/$R_HOST/$R_PORT" || exit 1
bulk() { printf '$%d\r\n%s\r\n' "${#1}" "$1"; }
if [[ -n "$R_PASS" ]]; then
    if [[ -n "$R_USER" ]]; then
        { printf '*3\r\n'; bulk AUTH; bulk "$R_USER"; bulk "$R_PASS"; } >&3
    else
        { printf '*2\r\n'; bulk AUTH; bulk "$R_PASS"; } >&3
    fi
    IFS= read -r line <&3 || exit 1
    line="${line%$'\r'}"
    [[ "$line" == +OK* ]] || { printf '%s\n' "$line"; exit 1; }
fi
printf 'PING\r\n' >&3
IFS= read -r line <&3 || exit 1
printf '%s\n' "${line%$'\r'}"
SCRIPT

# amqp_handshake HOST PORT: send the AMQP 0-9-1 protocol header and expect a
# method frame (type 1, Connection.Start) back. Status 2: something answered,
# but not AMQP.
amqp_handshake() {
    A_HOST="$1" A_PORT="$2" LC_ALL=C timeout 3 bash -c '
        exec 3<>"/dev/tcp/$A_HOST/$A_PORT" || exit 1
        printf "AMQP\x00\x00\x09\x01" >&3
        IFS= read -r -N 1 -t 2 -u 3 b || exit 1
        [[ "$b" == $'"'"'\x01'"'"' ]] || exit 2
    ' 2>/dev/null
}

rabbit_ready() { tcp_open "$1" "$2" && amqp_handshake "$1" "$2"; }

# --------------------------------------------------------------------------
# Privileges / installation
# --------------------------------------------------------------------------

SUDO=()
CAN_ROOT=0
if [[ "$(id -u)" -eq 0 ]]; then
    CAN_ROOT=1
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    CAN_ROOT=1
    SUDO=(sudo -n)
fi

APT_UPDATED=0
# apt_install PACKAGE: returns 1 when it cannot (no root/sudo, no apt-get).
apt_install() {
    local pkg="$1"
    (( CAN_ROOT )) || { log "cannot install $pkg: not root and no passwordless sudo"; return 1; }
    command -v apt-get >/dev/null 2>&1 || { log "cannot install $pkg: apt-get not found"; return 1; }
    local apt=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=120)
    if (( ! APT_UPDATED )); then
        log "running apt-get update ..."
        "${apt[@]}" update >&2 || { log "apt-get update failed"; return 1; }
        APT_UPDATED=1
    fi
    log "installing $pkg ..."
    "${apt[@]}" install -y "$pkg" >&2 || { log "apt-get install $pkg failed"; return 1; }
}

# Prefix for hint commands shown to the user.
hint_sudo() { if [[ "$(id -u)" -eq 0 ]]; then printf ''; else printf 'sudo '; fi; }

# --------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------

redis_start_cmd() { # PORT HOST -> printable start command
    printf 'redis-server --daemonize yes --bind %s --port %s --save "" --appendonly no' "$(redis_bind "$2")" "$1"
}

redis_bind() { # HOST -> bind addresses
    local major
    major="$(redis-server --version 2>/dev/null | sed -n 's/.* v=\([0-9]*\)\..*/\1/p')"
    case "$1" in
        ::1 | ip6-localhost) echo "::1" ;;
        *) if [[ "${major:-0}" -ge 7 ]]; then echo "127.0.0.1 -::1"; else echo "127.0.0.1"; fi ;;
    esac
}

ensure_redis() {
    local host port user pass reply
    parse_url "$REDIS_URL" 6379 || return 1
    host="$URL_HOST" port="$URL_PORT" user="$URL_USER" pass="$URL_PASS"
    local where; where="$(hp "$host" "$port")"

    if tcp_open "$host" "$port"; then
        if reply="$(redis_ping "$host" "$port" "$user" "$pass")"; then
            echo "redis: ok at $where"
            return 0
        fi
        log "redis: port $where is open but PING got '${reply:-no reply}' instead of PONG"
        log "  (wrong password in MTA_REDIS_URL, or something else listens on that port)"
        echo "redis: FAILED at $where"
        return 1
    fi

    local start_hint
    start_hint="$(hint_sudo)apt-get install -y redis-server && redis-server --daemonize yes --bind 127.0.0.1 --port $port --save \"\" --appendonly no"
    if ! is_local "$host"; then
        log "redis: nothing answers at $where (MTA_REDIS_URL=$REDIS_URL) and it is not a local host."
        log "  start Redis on $host, e.g.: $start_hint"
        log "  or point MTA_REDIS_URL at a local Redis, e.g. redis://127.0.0.1:6379/0"
        echo "redis: FAILED at $where"
        return 1
    fi

    if ! command -v redis-server >/dev/null 2>&1; then
        if ! apt_install redis-server; then
            log "redis: run: $start_hint"
            echo "redis: FAILED at $where"
            return 1
        fi
        # The package may have started a service on the default port already.
        if tcp_open "$host" "$port" && redis_ping "$host" "$port" "$user" "$pass" >/dev/null; then
            echo "redis: started at $where"
            return 0
        fi
    fi

    # Data/log locations: system dirs when usable, else a temp dir.
    local dir="" logfile=""
    if mkdir -p /var/lib/redis 2>/dev/null && [[ -w /var/lib/redis ]]; then dir=/var/lib/redis; fi
    if mkdir -p /var/log/redis 2>/dev/null && [[ -w /var/log/redis ]]; then
        if [[ "$port" == 6379 ]]; then logfile=/var/log/redis/ci.log; else logfile="/var/log/redis/ci-$port.log"; fi
    fi
    if [[ -z "$dir" || -z "$logfile" ]]; then
        local tmp; tmp="$(mktemp -d "${TMPDIR:-/tmp}/mta-redis-$port.XXXXXX")"
        [[ -n "$dir" ]] || dir="$tmp"
        [[ -n "$logfile" ]] || logfile="$tmp/redis.log"
    fi

    local bind; read -r -a bind <<<"$(redis_bind "$host")"
    log "redis: starting redis-server on $where (log: $logfile)"
    if ! redis-server --daemonize yes --bind "${bind[@]}" --port "$port" \
            --save "" --appendonly no --dir "$dir" --logfile "$logfile" \
            --pidfile "$dir/redis-$port.pid" >&2; then
        log "redis: redis-server failed to start; see $logfile"
        log "  try: $(redis_start_cmd "$port" "$host")"
        echo "redis: FAILED at $where"
        return 1
    fi

    local i
    for ((i = 0; i < 50; i++)); do
        if tcp_open "$host" "$port" && redis_ping "$host" "$port" "$user" "$pass" >/dev/null; then
            echo "redis: started at $where"
            return 0
        fi
        sleep 0.2
    done
    log "redis: started redis-server but it does not answer PING at $where; see $logfile"
    echo "redis: FAILED at $where"
    return 1
}

# --------------------------------------------------------------------------
# RabbitMQ
# --------------------------------------------------------------------------

# wait_rabbit HOST PORT: up to 60 s for TCP, then up to 30 s for AMQP.
wait_rabbit() {
    local host="$1" port="$2" deadline=$((SECONDS + 60))
    until tcp_open "$host" "$port"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
    if command -v rabbitmqctl >/dev/null 2>&1 && (( CAN_ROOT )); then
        timeout 35 "${SUDO[@]}" rabbitmqctl await_startup --timeout 30 >/dev/null 2>&1 || true
    fi
    local deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)); do
        amqp_handshake "$host" "$port" && return 0
        sleep 1
    done
    return 1
}

ensure_rabbitmq() {
    local host port
    local defport=5672
    [[ "$AMQP_URL" == amqps://* ]] && defport=5671
    parse_url "$AMQP_URL" "$defport" || return 1
    host="$URL_HOST" port="$URL_PORT"
    local where; where="$(hp "$host" "$port")"

    if tcp_open "$host" "$port"; then
        local rc=0
        amqp_handshake "$host" "$port" || rc=$?
        if (( rc == 0 )); then
            echo "rabbitmq: ok at $where"
            return 0
        fi
        if (( rc == 2 )) && [[ "$AMQP_URL" != amqps://* ]]; then
            log "rabbitmq: $where answers, but not with an AMQP handshake (another service on that port?)"
            echo "rabbitmq: FAILED at $where"
            return 1
        fi
        if [[ "$AMQP_URL" == amqps://* ]]; then
            # TLS listener: a plain AMQP header gets no answer; connect is enough.
            echo "rabbitmq: ok at $where"
            return 0
        fi
        # Port open but no AMQP answer yet: most likely still booting.
        log "rabbitmq: $where accepts TCP but no AMQP handshake yet; waiting up to 30 s ..."
        local deadline=$((SECONDS + 30))
        while ((SECONDS < deadline)); do
            sleep 1
            if amqp_handshake "$host" "$port"; then
                echo "rabbitmq: ok at $where"
                return 0
            fi
        done
        log "rabbitmq: $where accepts TCP but never answered the AMQP handshake"
        echo "rabbitmq: FAILED at $where"
        return 1
    fi

    local start_hint
    start_hint="$(hint_sudo)apt-get install -y rabbitmq-server && $(hint_sudo)rabbitmq-server -detached"
    if ! is_local "$host"; then
        log "rabbitmq: nothing answers at $where (MTA_AMQP_URL=$AMQP_URL) and it is not a local host."
        log "  start RabbitMQ on $host, e.g.: $start_hint"
        log "  or point MTA_AMQP_URL at a local broker, e.g. amqp://guest:guest@127.0.0.1:5672/"
        echo "rabbitmq: FAILED at $where"
        return 1
    fi
    if [[ "$port" != 5672 ]]; then
        log "rabbitmq: nothing answers at $where; this script only starts a local broker on the default port 5672."
        log "  run: $(hint_sudo)env RABBITMQ_NODE_PORT=$port rabbitmq-server -detached"
        log "  or use MTA_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/"
        echo "rabbitmq: FAILED at $where"
        return 1
    fi
    if (( ! CAN_ROOT )); then
        log "rabbitmq: nothing answers at $where and starting a broker needs root (no passwordless sudo)."
        if command -v rabbitmq-server >/dev/null 2>&1; then
            log "  run: sudo rabbitmq-server -detached"
        else
            log "  run: $start_hint"
        fi
        echo "rabbitmq: FAILED at $where"
        return 1
    fi

    if ! command -v rabbitmq-server >/dev/null 2>&1; then
        if ! apt_install rabbitmq-server; then
            log "rabbitmq: run: $start_hint"
            echo "rabbitmq: FAILED at $where"
            return 1
        fi
        # The package's init script may already have started it.
        if rabbit_ready "$host" "$port"; then
            echo "rabbitmq: started at $where"
            return 0
        fi
    fi
    log "rabbitmq: starting rabbitmq-server -detached (waiting up to 60 s for $where) ..."
    if ! "${SUDO[@]}" rabbitmq-server -detached >&2; then
        # Could be a node that is already booting (e.g. started by the
        # package's postinst); still wait for it before giving up.
        log "rabbitmq: 'rabbitmq-server -detached' returned an error; waiting anyway"
    fi
    if wait_rabbit "$host" "$port"; then
        echo "rabbitmq: started at $where"
        return 0
    fi
    log "rabbitmq: started rabbitmq-server but $where does not answer AMQP; see /var/log/rabbitmq/"
    echo "rabbitmq: FAILED at $where"
    return 1
}

# --------------------------------------------------------------------------

status=0
ensure_rabbitmq || status=1
ensure_redis || status=1
exit "$status"
