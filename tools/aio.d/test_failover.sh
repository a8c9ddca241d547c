#!/bin/bash
# Crash tests with real processes: the all-in-one with 3 nova-orc
# conductors (tools/aio.d/faulty_conductor.py: SIGKILL at a fault point),
# 2 computes with a fake driver whose spawn takes 2 s and which records its
# guests (orc_fake), ZooKeeper sessions of 2 s, then the crash matrix
# (tools/aio.d/crash_matrix.py: every step of the boot flow killed before
# and after its side effects, in the middle of spawn, during reverts, a
# paused conductor, a ZooKeeper restart, the compute restarted around each
# host step, and the pause cases: the conductor paused past its session at
# each task boundary and inside create_record, woken once a peer
# finished), the case conductor-pauses (conductor_deaths.py --pause: 20
# boots in a burst, a conductor paused for 10 s every 12 s; it passes when
# every server is ACTIVE and check_leaks finds nothing, before and after
# the delete), then the case conductor-deaths
# (tools/aio.d/conductor_deaths.py, orc only: 6 boots in a burst, a live
# conductor SIGKILLed every 8 s and brought back by tools/aio up; it passes
# when no server is left in BUILD and check_leaks finds nothing, before and
# after the delete).  Prints 'N passed, N failed' for all of them.
#
#   tools/aio.d/test_failover.sh [CASE...]     (default: the matrix,
#                                               conductor-pauses and
#                                               conductor-deaths; 'pauses'
#                                               runs the pause cases alone,
#                                               'conductor-pauses' the burst)
#   tools/aio.d/test_failover.sh --bench ...   (crash_matrix.py's options)
# Environment: AIO_CRASH_STATE (/var/tmp/nova-orc-aio-crash: the crash
#   suites' own deployment, purged first; tools/aio.d/crash_deployment.sh),
#   what else tools/aio reads, and
#   AIO_TEST_KEEP=1  leave the deployment up at the end
set -uo pipefail
D=$(cd "$(dirname "$0")" && pwd)
AIO=$(cd "$D/.." && pwd)/aio
. "$D/crash_deployment.sh"   # S: a deployment of its own, purged first
crash_deployment_reset "$AIO" || { echo "0 passed, 1 failed"; exit 1; }
export AIO_ZK_SESSION_TIMEOUT=${AIO_ZK_SESSION_TIMEOUT:-2}
export AIO_CONDUCTOR_WRAPPER=$D/faulty_conductor.py
export AIO_FAULT_FILE=$S/fault
export AIO_COMPUTE_DRIVER=orc_fake.SlowSpawnDriverWithoutFakeNodes
mkdir -p "$S/etc/nova" "$S/guests"
cat > "$S/etc/nova/local.conf" <<CONF
# written by tools/aio.d/test_failover.sh
[orc_fake]
spawn_delay = 2
guests_dir = $S/guests
fail_spawn_file = $S/fail-spawn
CONF
rc=0
echo "+ tools/aio up --conductors 3 --computes 2"
if ! "$AIO" up --conductors 3 --computes 2; then
  rm -f "$S/etc/nova/local.conf"   # ours: not left behind
  echo "0 passed, 1 failed"; exit 1
fi
V=$(. "$S/aio.env" && echo "$VENV")
matrix=() deaths=0 pauses=0
case " $* " in
  *" -"*) matrix=("$@") ;;                 # options: crash_matrix.py's
  "  ") matrix=() deaths=1 pauses=1 ;;     # no case: the default matrix
  *) for a in "$@"; do
       case $a in
         conductor-deaths) deaths=1 ;;
         conductor-pauses) pauses=1 ;;
         *) matrix+=("$a") ;;
       esac
     done ;;
esac
passed=0 failed=0
if [ $# = 0 ] || [ ${#matrix[@]} -gt 0 ]; then
  out=$(mktemp)
  "$V/bin/python" "$D/crash_matrix.py" --state "$S" --aio "$AIO" "${matrix[@]}" | tee "$out" || rc=1
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$out" | tail -1)
  rm -f "$out"
  if [ -n "$line" ]; then
    set -- $line; passed=$1 failed=$3
  elif [ $rc != 0 ]; then failed=1; fi
fi
if [ $pauses = 1 ]; then
  echo "+ conductor_deaths.py --mode orc --no-deploy --check --pause 10 (case conductor-pauses)"
  rm -f "$S/fault" "$S/fault.fired" "$S/fail-spawn"
  if "$V/bin/python" "$D/conductor_deaths.py" --state "$S" --aio "$AIO" \
       --mode orc --no-deploy --check --boots 20 --pause 10 --kill-every 12 \
       --kill-bound 60 --settle 120 --seed 1; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1)) rc=1
  fi
  echo "$passed passed, $failed failed"
fi
if [ $deaths = 1 ]; then
  echo "+ conductor_deaths.py --mode orc --no-deploy --check (case conductor-deaths)"
  rm -f "$S/fault" "$S/fault.fired" "$S/fail-spawn"
  if "$V/bin/python" "$D/conductor_deaths.py" --state "$S" --aio "$AIO" \
       --mode orc --no-deploy --check --boots 6 --kill-every 8 \
       --kill-bound 45 --settle 60 --seed 1; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1)) rc=1
  fi
  echo "$passed passed, $failed failed"
fi
if [ "${AIO_TEST_KEEP:-0}" != 1 ]; then
  rm -f "$S/etc/nova/local.conf"
  "$AIO" down >/dev/null || rc=1
fi
exit $rc
