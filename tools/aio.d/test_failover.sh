#!/bin/bash
# Crash tests with real processes: the all-in-one with 3 nova-orc
# conductors (tools/aio.d/faulty_conductor.py: SIGKILL at a fault point),
# 2 computes with a fake driver whose spawn takes 2 s and which records its
# guests (orc_fake), ZooKeeper sessions of 2 s, then the crash matrix
# (tools/aio.d/crash_matrix.py: every step of the boot flow killed before
# and after its side effects, in the middle of spawn, during reverts, a
# paused conductor, a ZooKeeper restart).  Prints 'N passed, N failed'.
#
#   tools/aio.d/test_failover.sh [CASE...]     (default: the whole matrix)
# Environment: what tools/aio reads (AIO_STATE...), and
#   AIO_TEST_KEEP=1  leave the deployment up at the end
set -uo pipefail
D=$(cd "$(dirname "$0")" && pwd)
AIO=$(cd "$D/.." && pwd)/aio
S=${AIO_STATE:-/var/tmp/nova-orc-aio}
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
  echo "0 passed, 1 failed"; exit 1
fi
V=$(. "$S/aio.env" && echo "$VENV")
"$V/bin/python" "$D/crash_matrix.py" --state "$S" --aio "$AIO" "$@" || rc=1
if [ "${AIO_TEST_KEEP:-0}" != 1 ]; then
  rm -f "$S/etc/nova/local.conf"
  "$AIO" down >/dev/null || rc=1
fi
exit $rc
