#!/usr/bin/env bash
# A MANUAL smoke test of the containerised pair (deploy/compose.yaml). It is
# NOT run by CI: it needs Docker, root (nsenter into the containers' network
# namespaces) and the duet:local image. Run it on a host with nothing else
# on 198.18.10.0/24:
#
#   SKIP_CARGO=1 deploy/build-image.sh   # or without SKIP_CARGO: builds first
#   sudo deploy/smoke.sh
#
# What it does, every wait bounded:
#   1. brings the pair up under its own compose project (duetsmoke), so a
#      pair you run as project "duet" is never touched (it refuses to start
#      if 198.18.10.0/24 is already in use);
#   2. checks both units are healthy, exactly one is active and holds
#      198.18.10.10, and both run with NET_ADMIN + NET_RAW only;
#   3. planned handover: `docker stop` the active unit, measures how long
#      until the other holds .10 (limit HANDOVER_MAX_MS);
#   4. starts the stopped unit again: it must come back as standby;
#   5. crash: `docker kill` the active unit, measures how long until the
#      other holds .10 (limit CRASH_MAX_MS; the HA timeout is 3 s);
#   6. after each change, the host pings .10 over the bridge and checks its
#      ARP entry names the new holder's MAC (gratuitous ARP reached it).
# Always tears down (`down -v`: containers, network, state volumes), also
# on failure or Ctrl-C. Exits 0 only if every check passed.
#
# Environment: DUET_IMAGE (duet:local), HANDOVER_MAX_MS (1000),
# CRASH_MAX_MS (4000), KEEP_LOGS=1 prints both units' logs at the end.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

PROJECT=duetsmoke
SHARED=198.18.10.10
SUBNET=198.18.10.0/24
HANDOVER_MAX_MS=${HANDOVER_MAX_MS:-1000}
CRASH_MAX_MS=${CRASH_MAX_MS:-4000}
export DUET_IMAGE=${DUET_IMAGE:-duet:local}

say() { printf 'smoke: %s\n' "$*"; }
fail() {
    printf 'smoke: FAIL: %s\n' "$*" >&2
    exit 1
}

# --- preconditions ---------------------------------------------------------
[ "$(id -u)" = 0 ] || fail "run as root (nsenter into the containers' network namespaces)"
for t in docker nsenter ip ping timeout date; do
    command -v "$t" >/dev/null || fail "$t not found"
done
if command -v docker-compose >/dev/null; then
    compose=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
else
    fail "neither docker-compose nor 'docker compose' found"
fi
compose+=(-p "$PROJECT" -f "$here/compose.yaml")
docker image inspect "$DUET_IMAGE" >/dev/null 2>&1 ||
    fail "image $DUET_IMAGE missing: run deploy/build-image.sh first"
for n in $(docker network ls -q); do
    if docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' "$n" | grep -qw "$SUBNET"; then
        fail "$SUBNET is already used by docker network $(docker network inspect -f '{{.Name}}' "$n") (is the pair up? docker-compose down first)"
    fi
done
if [ ! -e certs/ca.pem ]; then
    say "no certificates yet: running make-certs.sh"
    ./make-certs.sh
fi

# --- teardown, always ------------------------------------------------------
ok=0
teardown() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "$ok" != 1 ] || [ "${KEEP_LOGS:-0}" = 1 ]; then
        for s in lb1 lb2; do
            local id
            id=$("${compose[@]}" ps -q "$s" 2>/dev/null || true)
            [ -n "$id" ] || continue
            echo "----- last log lines of $s -----" >&2
            docker logs --tail 40 "$id" 2>&1 | sed "s/^/$s| /" >&2 || true
        done
    fi
    say "tearing down (${compose[*]} down -v)"
    timeout 120 "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 ||
        echo "smoke: WARNING: down -v failed; clean up with: ${compose[*]} down -v" >&2
    if [ "$ok" = 1 ]; then say "PASS"; else say "FAILED (exit $rc)"; fi
    exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# --- helpers ---------------------------------------------------------------
now_ms() { date +%s%3N; }
# Container ids, looked up once after `up` (docker-compose is slow to ask,
# and the ids stay the same across docker stop/start).
declare -A ids=()
cid() { if [ -n "${ids[$1]:-}" ]; then echo "${ids[$1]}"; else "${compose[@]}" ps -q "$1"; fi; }
pid_of() { docker inspect -f '{{.State.Pid}}' "$(cid "$1")"; }
# Whether unit $1 has the shared address on its eth0 (read from its netns).
holds() {
    local pid
    pid=$(pid_of "$1")
    [ "$pid" != 0 ] || return 1
    nsenter -t "$pid" -n ip -4 -o addr show dev eth0 2>/dev/null | grep -q " $SHARED/"
}
# The role in `duetctl status` (active, standby, ...), or "down".
role() {
    local out
    out=$(timeout 10 docker exec "$(cid "$1")" duetctl status 2>/dev/null) || {
        echo down
        return
    }
    sed -n '1s/.*, role \([a-z_]*\).*/\1/p' <<<"$out"
}
# wait_for SECONDS WHAT COMMAND...: runs COMMAND every 50 ms until it
# succeeds; prints how long that took (ms); fails after SECONDS.
wait_for() {
    local limit=$1 what=$2 t0
    shift 2
    t0=$(now_ms)
    while ! "$@"; do
        if [ $(($(now_ms) - t0)) -ge $((limit * 1000)) ]; then
            fail "$what: not within ${limit} s"
        fi
        sleep 0.05
    done
    echo $(($(now_ms) - t0))
}
healthy() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$(cid "$1")")" = healthy ]; }
is_role() { [ "$(role "$1")" = "$2" ]; }
# (From netlink: /sys seen through nsenter -n is still the host's.)
mac_of() { nsenter -t "$(pid_of "$1")" -n ip -o link show dev eth0 | sed -n 's/.* link\/ether \([0-9a-f:]*\).*/\1/p'; }
# The host reaches .10 over the bridge, and its ARP entry is $1's MAC.
host_sees() {
    local want
    want=$(mac_of "$1")
    [ -n "$want" ] || return 1
    ping -c 1 -W 1 "$SHARED" >/dev/null 2>&1 || return 1
    ip neigh show "$SHARED" | grep -qi "lladdr $want"
}
# Exactly unit $1 holds .10 (and the other does not).
only_holds() {
    local other=$2
    holds "$1" || fail "$1 does not hold $SHARED"
    if [ "$(docker inspect -f '{{.State.Running}}' "$(cid "$other")")" = true ] && holds "$other"; then
        fail "both units hold $SHARED"
    fi
}
caps_ok() {
    local pid eff
    pid=$(pid_of "$1")
    eff=$(awk '/^CapEff:/ { print $2 }' "/proc/$pid/status")
    # CAP_NET_ADMIN (12) and CAP_NET_RAW (13): 0x3000.
    [ "$eff" = 0000000000003000 ] || fail "$1 runs with capabilities $eff, not NET_ADMIN+NET_RAW (0000000000003000)"
    local uid
    uid=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")
    [ "$uid" = 10001 ] || fail "$1 runs as uid $uid, not duet (10001)"
    say "$1: uid $uid (duet), effective capabilities $eff (NET_ADMIN, NET_RAW), NoNewPrivs $(awk '/^NoNewPrivs:/ { print $2 }' "/proc/$pid/status"), read-only root $(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$(cid "$1")")"
}

# --- 1. up -----------------------------------------------------------------
say "image $DUET_IMAGE; compose: ${compose[*]}"
timeout 120 "${compose[@]}" up -d >/dev/null 2>&1 || fail "compose up failed: ${compose[*]} up -d"
for u in lb1 lb2; do
    ids[$u]=$("${compose[@]}" ps -q $u)
    [ -n "${ids[$u]}" ] || fail "no container for $u"
done

# --- 2. both up, one active holding .10 ------------------------------------
for u in lb1 lb2; do
    t=$(wait_for 60 "$u healthy (duetctl status answers)" healthy $u)
    say "$u healthy after ${t} ms (Docker health check: duetctl health)"
done
t=$(wait_for 30 "one unit active" eval 'is_role lb1 active || is_role lb2 active')
r1=$(role lb1)
r2=$(role lb2)
say "roles: lb1 $r1, lb2 $r2"
if [ "$r1" = active ] && [ "$r2" = standby ]; then
    active=lb1 standby=lb2
elif [ "$r2" = active ] && [ "$r1" = standby ]; then
    active=lb2 standby=lb1
else
    fail "expected one active and one standby, got lb1 $r1, lb2 $r2"
fi
wait_for 5 "$active holds $SHARED" holds $active >/dev/null
only_holds $active $standby
say "$active holds $SHARED"
caps_ok lb1
caps_ok lb2
t=$(wait_for 5 "host reaches $SHARED at $active's MAC" host_sees $active)
say "host reaches $SHARED at $active's MAC $(mac_of $active)"

# --- 3. planned handover: docker stop the active --------------------------
say "planned handover: docker stop $active"
t0=$(now_ms)
timeout 60 docker stop -t 30 "$(cid $active)" >/dev/null &
stopper=$!
t=$(wait_for 10 "$standby holds $SHARED after docker stop $active" holds $standby)
took=$(($(now_ms) - t0))
wait "$stopper" || fail "docker stop $active failed"
stopped=$(($(now_ms) - t0))
say "handover: $standby holds $SHARED ${took} ms after docker stop $active (limit ${HANDOVER_MAX_MS} ms); $active stopped after ${stopped} ms"
[ "$took" -le "$HANDOVER_MAX_MS" ] || fail "handover took ${took} ms > ${HANDOVER_MAX_MS} ms"
[ "$(role $standby)" = active ] || fail "$standby is $(role $standby), not active"
wait_for 5 "host reaches $SHARED at $standby's MAC" host_sees $standby >/dev/null
say "host reaches $SHARED at $standby's MAC $(mac_of $standby)"
old=$active active=$standby standby=$old

# --- 4. the stopped unit comes back as standby (no failback) ---------------
say "docker start $standby"
timeout 60 docker start "$(cid $standby)" >/dev/null || fail "docker start $standby failed"
t=$(wait_for 30 "$standby back as standby" is_role $standby standby)
say "$standby standby again after ${t} ms; $active $(role $active)"
[ "$(role $active)" = active ] || fail "$active is no longer active"
only_holds $active $standby

# --- 5. crash: docker kill the active ---------------------------------------
say "crash: docker kill $active"
t0=$(now_ms)
timeout 30 docker kill "$(cid $active)" >/dev/null || fail "docker kill $active failed"
wait_for 10 "$standby holds $SHARED after docker kill $active" holds $standby >/dev/null
took=$(($(now_ms) - t0))
say "crash takeover: $standby holds $SHARED ${took} ms after docker kill $active (limit ${CRASH_MAX_MS} ms; HA timeout 3 s)"
[ "$took" -le "$CRASH_MAX_MS" ] || fail "crash takeover took ${took} ms > ${CRASH_MAX_MS} ms"
[ "$(role $standby)" = active ] || fail "$standby is $(role $standby), not active"
wait_for 5 "host reaches $SHARED at $standby's MAC" host_sees $standby >/dev/null
say "host reaches $SHARED at $standby's MAC $(mac_of $standby)"

# --- logs: errors, for the record ------------------------------------------
for u in lb1 lb2; do
    n=$(docker logs "$(cid $u)" 2>&1 | grep -c ' ERROR ' || true)
    say "$u: $n ERROR line(s) in its log"
    docker logs "$(cid $u)" 2>&1 | grep ' ERROR ' | sed 's/^[^ ]* *//' | sort | uniq -c | sed "s/^/smoke:   $u: /" || true
done

ok=1
