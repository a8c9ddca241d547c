#!/bin/bash
# End-to-end test of tools/aio: up, boot a server with the real openstack
# client (--nic none --wait), check it is ACTIVE, that its create action is
# listed and that its events include nova-orc's per-task events (orc_*),
# delete it; then tools/aio's own cycle: down, up, up, restart
# nova-compute1, demo in a row, none refused by the lock ($AIO_STATE/.lock)
# and no process left holding it open; down.  Prints 'N passed, N failed';
# exits non-zero on a failure.
#
#   tools/aio.d/test_aio.sh [tools/aio up options, e.g. --computes 2]
# Environment: what tools/aio reads (AIO_STATE, AIO_VENV, AIO_STOCK...), and
#   AIO_TEST_KEEP=1  leave the deployment up at the end (no `tools/aio down`)
#   AIO_TEST_WAIT    seconds for the server to become ACTIVE/deleted (300)
set -uo pipefail
AIO=$(cd "$(dirname "$0")/.." && pwd)/aio
S=${AIO_STATE:-/var/tmp/nova-orc-aio}
V=${AIO_VENV:-$S/venv}
WAIT=${AIO_TEST_WAIT:-300}
NAME=aio-test-$$
passed=0 failed=0
ok() { echo "PASS: $*"; passed=$((passed + 1)); }
ko() { echo "FAIL: $*"; failed=$((failed + 1)); }
check() {  # check DESCRIPTION CMD...
  local d=$1; shift
  if "$@"; then ok "$d"; else ko "$d"; fi
}
osc() { ( . "$S/demo-openrc" && "$V/bin/openstack" "$@" ); }
osc_admin() { ( . "$S/openrc" && "$V/bin/openstack" "$@" ); }
jget() {  # jget PYEXPR : evaluate on the JSON document read from stdin (as d)
  "$V/bin/python" -c "import json, sys; d = json.load(sys.stdin); print($1)"
}
lock_holders() {  # processes with $S/.lock open: "PID COMMAND" lines
  local fd pid
  for fd in $(find /proc/[0-9]*/fd -maxdepth 1 -lname "$S/.lock" 2>/dev/null); do
    pid=${fd#/proc/}; pid=${pid%%/*}
    echo "$pid $(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | cut -c1-80)"
  done | sort -u
}
aio_cycle_step() {  # aio_cycle_step ARGS... : tools/aio ARGS, then who holds the lock
  local out rc holders t=$SECONDS
  echo "+ tools/aio $*"
  out=$("$AIO" "$@" 2>&1); rc=$?
  printf '%s\n' "$out" | tail -n 2
  echo "(tools/aio $*: $((SECONDS - t))s)"
  check "tools/aio $* exits 0" [ $rc = 0 ]
  if printf '%s\n' "$out" | grep -q 'another tools/aio command holds'; then
    ko "tools/aio $*: refused, the lock is held: $(lock_holders | tr '\n' ';')"
  fi
  holders=$(lock_holders)
  check "no process holds $S/.lock after tools/aio $*${holders:+ (held by: $(echo "$holders" | tr '\n' ';'))}" [ -z "$holders" ]
}
finish() {
  if [ "${AIO_TEST_KEEP:-0}" != 1 ]; then
    echo "+ tools/aio down"
    check "tools/aio down exits 0" "$AIO" down
    check "no service pid left after down" bash -c "! ls '$S'/pids/*.pid >/dev/null 2>&1"
  fi
  echo "$passed passed, $failed failed"
  [ "$failed" = 0 ]
  exit
}

echo "+ tools/aio up $*"
if "$AIO" up "$@"; then ok "tools/aio up exits 0"; else ko "tools/aio up exits 0"; finish; fi
V=$(. "$S/aio.env" && echo "${AIO_VENV:-$VENV}")   # the venv up used

echo "+ openstack server create --flavor m1.nano --image cirros-fake --nic none $NAME --wait"
out=$(timeout "$WAIT" "$BASH" -c "$(declare -f osc); S='$S' V='$V'; osc server create --flavor m1.nano --image cirros-fake --nic none '$NAME' --wait -f json" 2>&1)
rc=$?
printf '%s\n' "$out" | tail -n 5
check "server create --wait exits 0" [ $rc = 0 ]
id=$(printf '%s\n' "$out" | sed -n '/^{/,$p' | jget "d['id']" 2>/dev/null)
status=$(osc server show "$NAME" -f value -c status 2>/dev/null)
check "server $NAME is ACTIVE (status: ${status:-?})" [ "$status" = ACTIVE ]

echo "+ openstack server event list $NAME"
events=$(osc server event list "$NAME" -f json 2>&1)
printf '%s\n' "$events" | head -c 2000; echo
req=$(printf '%s\n' "$events" | jget "[e['Request ID'] for e in d if e['Action'] == 'create'][0]" 2>/dev/null)
check "event list shows the create action" [ -n "$req" ]

if [ -n "$req" ] && [ -n "$id" ]; then
  echo "+ openstack server event show $id $req   (admin: events need admin by policy)"
  detail=$(osc_admin server event show "$id" "$req" -f json 2>&1)
  names=$(printf '%s\n' "$detail" | jget "' '.join(e['event'] for e in d['events'])" 2>/dev/null)
  echo "events: ${names:-none}"
  check "event show lists events named orc_*" bash -c "printf '%s\n' $names | grep -q '^orc_'"
else
  ko "event show lists events named orc_* (no create action to show)"
fi

echo "+ openstack server delete $NAME --wait"
timeout "$WAIT" "$BASH" -c "$(declare -f osc); S='$S' V='$V'; osc server delete '$NAME' --wait"
check "server delete --wait exits 0" [ $? = 0 ]
check "server $NAME is gone" bash -c "! ( . '$S/demo-openrc' && '$V/bin/openstack' server show '$NAME' >/dev/null 2>&1 )"

# tools/aio survives its own cycle: a service it starts (ZooKeeper when it
# owns it, any other) must not inherit the lock and keep it after the command
t0=$SECONDS
for step in down up up "restart nova-compute1" demo; do
  # shellcheck disable=SC2086
  aio_cycle_step $step
done
echo "(cycle: $((SECONDS - t0))s; ZooKeeper $(grep -q '^ZK_STARTED=1' "$S/aio.env" && echo 'started by tools/aio: its restart was covered' || echo 'external: the restart of its own was not covered'))"
finish
