#!/usr/bin/env bash
# Tools the deploy tests use, from Debian's packages when missing (run as root, or with
# passwordless sudo): docker.io (dockerd), docker-compose, debootstrap, prometheus (promtool),
# systemd (systemd-analyze). Starts dockerd in the background when no daemon answers.
# Exit status 1, with the reason, when something cannot be had: the deploy tests then fail.
set -euo pipefail
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    if sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi
fi

declare -A need=([dockerd]=docker.io [debootstrap]=debootstrap [promtool]=prometheus
                 [systemd-analyze]=systemd)
if ! docker compose version >/dev/null 2>&1; then need[docker-compose]=docker-compose; fi
missing=()
for tool in "${!need[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${need[$tool]}")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 && -z "$SUDO" ]]; then
        echo "deploy tests need: ${missing[*]}; run: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "installing ${missing[*]} (apt-get)" >&2
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    if [[ $(id -u) -ne 0 && -z "$SUDO" ]]; then
        echo "no Docker daemon answers and dockerd cannot be started without root" >&2
        exit 1
    fi
    echo "starting dockerd (log: /var/tmp/sms-mta-dockerd.log)" >&2
    $SUDO sh -c 'nohup dockerd >/var/tmp/sms-mta-dockerd.log 2>&1 &'
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    if ! docker info >/dev/null 2>&1; then
        echo "dockerd did not come up in 60 s; its log:" >&2
        tail -20 /var/tmp/sms-mta-dockerd.log >&2
        exit 1
    fi
fi
echo "deploy tools: docker $(docker version --format '{{.Server.Version}}'), $(command -v promtool), $(command -v debootstrap), $(command -v systemd-analyze)"
