#!/usr/bin/env bash
# nc_test.sh — health check of the running lottery server (owns nc_test.sh).
#
# Sends ONE protocol ECHO frame (docs/protocol.md: 02 01 <u32 length> <payload>) to the server's
# plaintext health port (HEALTH_PORT, 12346: it answers ECHO and nothing else; the agencies' port,
# 12345, is mutual TLS only, where netcat cannot speak) from a throwaway container on the server's
# own Docker network, using netcat: no netcat on the host and no published port needed (the
# compose file publishes none). Prints exactly one line on stdout and exits 0 or 1:
#     action: test_echo_server | result: success
#     action: test_echo_server | result: fail
# Diagnostics go to stderr.
#
# Environment:
#   NETCAT_IMAGE      image with sh, printf, nc, od (default busybox:latest;
#                     offline: NETCAT_IMAGE=lottery-offline/busybox:static)
#   SERVER_CONTAINER  server container name (default server); it is also the host name dialled
#   HEALTH_PORT       the server's health port (default 12346)
#   SERVER_PORT       deprecated alias of HEALTH_PORT (used, with a warning, only when HEALTH_PORT
#                     is unset); it no longer means the agencies' port, which is TLS only
#   NC_TEST_TIMEOUT   overall bound on the docker run, seconds (default 20)
#
# How the nc session ends: the server keeps the connection open after answering (it waits for
# more frames), and busybox nc may or may not half-close on stdin EOF. So nc's stdin is kept
# open (the frame followed by a sleep) and nc runs in the background writing to a file; the
# container polls that file and kills nc as soon as the expected number of bytes has arrived,
# when nc exits (refused / closed by the server), or after CONNECT_WAIT + REPLY_WAIT seconds
# (8 s). `nc -w` bounds the connect; `timeout` around `docker run` bounds everything
# (NC_TEST_TIMEOUT); a trap removes the container on every exit path.

set -u

NETCAT_IMAGE=${NETCAT_IMAGE:-busybox:latest}
SERVER_CONTAINER=${SERVER_CONTAINER:-server}
if [ -z "${HEALTH_PORT:-}" ] && [ -n "${SERVER_PORT:-}" ]; then
    echo "nc_test: SERVER_PORT is deprecated, use HEALTH_PORT (the server's plaintext health port)" >&2
    HEALTH_PORT=$SERVER_PORT
fi
HEALTH_PORT=${HEALTH_PORT:-12346}
NC_TEST_TIMEOUT=${NC_TEST_TIMEOUT:-20}
PAYLOAD="lottery-health-check"
CONNECT_WAIT=3  # nc -w: connect timeout
REPLY_WAIT=5    # seconds to wait for the whole echo once connected

NAME="nc_test_$$"

cleanup() {
    docker rm -f "$NAME" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP  # exit runs the EXIT trap

result() {
    echo "action: test_echo_server | result: $1"
}

fail() {
    echo "nc_test: $*" >&2
    result fail
    exit 1
}

command -v docker >/dev/null 2>&1 || fail "docker is not installed"
case $HEALTH_PORT in
    '' | *[!0-9]*) fail "HEALTH_PORT must be a number, got '$HEALTH_PORT'" ;;
esac
case $NC_TEST_TIMEOUT in
    '' | *[!0-9]* | 0) fail "NC_TEST_TIMEOUT must be a number of seconds >= 1, got '$NC_TEST_TIMEOUT'" ;;
esac
case $PAYLOAD in
    *[!A-Za-z0-9_.-]*) fail "the payload must be plain ASCII" ;;
esac

running=$(docker inspect -f '{{.State.Running}}' "$SERVER_CONTAINER" 2>/dev/null) \
    || fail "container '$SERVER_CONTAINER' does not exist"
[ "$running" = "true" ] || fail "container '$SERVER_CONTAINER' is not running"

network=$(docker inspect -f '{{range $name, $_ := .NetworkSettings.Networks}}{{println $name}}{{end}}' \
    "$SERVER_CONTAINER" 2>/dev/null | head -n 1)
case $network in
    '' | none | host) fail "container '$SERVER_CONTAINER' is not on a bridge network ('$network')" ;;
esac

# The header as octal escapes for printf (busybox printf may not know \x):
# version 2, type ECHO (1), payload length as a big-endian u32.
length=${#PAYLOAD}
header=$(printf '\\%03o\\%03o\\%03o\\%03o\\%03o\\%03o' 2 1 \
    $(( (length >> 24) & 255 )) $(( (length >> 16) & 255 )) $(( (length >> 8) & 255 )) $(( length & 255 )))
expected_bytes=$((6 + length))

# Runs inside the container. $1 host, $2 port, $3 header escapes, $4 payload, $5 expected byte
# count, $6 connect timeout, $7 reply wait. Exit 0 only if the reply is byte-for-byte the frame.
# shellcheck disable=SC2016
inner='
host=$1 port=$2 header=$3 payload=$4 want=$5 connect=$6 wait=$7
frame() { printf "$header"; printf "%s" "$payload"; }
frame > /tmp/sent
: > /tmp/got
{ cat /tmp/sent; sleep $((connect + wait + 2)); } | nc -w "$connect" "$host" "$port" > /tmp/got 2>/dev/null &
nc_pid=$!
ticks=$(( (connect + wait) * 5 ))
while [ "$ticks" -gt 0 ]; do
    got=$(wc -c < /tmp/got)
    [ "$got" -ge "$want" ] && break
    kill -0 "$nc_pid" 2>/dev/null || break
    sleep 0.2 2>/dev/null || sleep 1
    ticks=$((ticks - 1))
done
kill "$nc_pid" 2>/dev/null
sent=$(od -An -tx1 /tmp/sent | tr -d " \n")
got=$(od -An -tx1 /tmp/got | tr -d " \n")
[ -n "$got" ] && [ "$got" = "$sent" ] && exit 0
echo "sent: $sent" >&2
echo "got:  ${got:-(nothing)}" >&2
exit 1
'

timeout_cmd=()
if command -v timeout >/dev/null 2>&1; then
    # TERM reaches the container through docker run's signal proxy (--init makes its PID 1
    # forward it); KILL if the docker CLI itself does not end within 3 more seconds.
    timeout_cmd=(timeout --kill-after=3 "$NC_TEST_TIMEOUT")
fi

# In the background and waited for, so a TERM/INT to this script is handled at once (the
# trap then removes the container) instead of after docker run returns.
${timeout_cmd[@]+"${timeout_cmd[@]}"} docker run --rm --init --name "$NAME" --network "$network" \
    "$NETCAT_IMAGE" sh -c "$inner" nc_test "$SERVER_CONTAINER" "$HEALTH_PORT" "$header" \
    "$PAYLOAD" "$expected_bytes" "$CONNECT_WAIT" "$REPLY_WAIT" >/dev/null &
wait $!
status=$?
case $status in
    0) result success; exit 0 ;;
    124 | 137) fail "timed out after ${NC_TEST_TIMEOUT}s" ;;
    125) fail "docker run failed (image $NETCAT_IMAGE unavailable? network $network?)" ;;
    *) fail "no matching ECHO answer from $SERVER_CONTAINER:$HEALTH_PORT on network $network" ;;
esac
