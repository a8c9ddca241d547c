#!/bin/bash
# The crash matrix's neutron part alone (tools/aio.d/crash_matrix.py
# --neutron-only): the all-in-one as tools/aio.d/test_failover.sh sets it up
# (3 conductors that SIGKILL themselves at a fault point, 2 computes whose
# fake spawn takes 2 s, 2 s ZooKeeper sessions) plus neutron
# (--with-neutron), then servers booted with a port on a network (created
# by nova, or by the user and passed as port=) while the conductor running
# them dies around the networks step, during spawn, while reverting, and
# once with the compute that ran the step restarted before the resume.
# Prints 'N passed, N failed'.
#
#   tools/aio.d/test_failover_neutron.sh [CASE...]  (default: the neutron cases)
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
# written by tools/aio.d/test_failover_neutron.sh
[orc_fake]
spawn_delay = 2
guests_dir = $S/guests
fail_spawn_file = $S/fail-spawn
fetch_image = True
CONF
rc=0
t0=$SECONDS
echo "+ tools/aio up --with-neutron --conductors 3 --computes 2"
if ! "$AIO" up --with-neutron --conductors 3 --computes 2 >/dev/null; then
  rm -f "$S/etc/nova/local.conf"
  echo "0 passed, 1 failed"; exit 1
fi
echo "(up: $((SECONDS - t0))s)"
V=$(. "$S/aio.env" && echo "$VENV")
"$V/bin/python" "$D/crash_matrix.py" --state "$S" --aio "$AIO" --neutron-only "$@" || rc=1
rm -f "$S/etc/nova/local.conf"
if [ "${AIO_TEST_KEEP:-0}" != 1 ]; then
  "$AIO" down >/dev/null || rc=1
fi
echo "(neutron part: $((SECONDS - t0))s)"
exit $rc
