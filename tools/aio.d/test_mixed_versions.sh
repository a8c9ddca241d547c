#!/bin/bash
# A rolling upgrade on the all-in-one, in Nova's order: our conductor, some
# computes still stock.  A deployment of its own (state folder
# $AIO_MIXED_STATE, its own databases, vhost and ZooKeeper chroot; the venv
# of the default one), brought up with
#
#   AIO_COMPUTE_DRIVERS=2=fake.FakeRescheduleDriver \
#     tools/aio up --computes 3 --stock-computes 2
#
# aio-compute1: stock nova-compute; aio-compute2: stock nova-compute whose
# every first spawn of a server fails (nova's FakeRescheduleDriver);
# aio-compute3: nova-orc-compute.  With the real client, as admin:
#   1. a server on aio-compute1 (stock compute selected): ACTIVE there, its
#      boot flow's host steps the one coarse step build_on_stock_compute;
#   2. a server on aio-compute3 (orc compute selected): ACTIVE there,
#      through the fine-grained host steps (spawn);
#   3. aio-compute1 disabled, a server anywhere: the scheduler picks
#      aio-compute2 (most free RAM), its spawn fails, the stock compute
#      reschedules (stock build_instances) to aio-compute3: ACTIVE there,
#      the flow SUCCESS through build_on_stock_compute.
# Every server deleted, no lock left; then `tools/aio down --purge`.
# The default deployment must be down (the ports are the same).
# Prints 'N passed, N failed'; exits non-zero on a failure.
#
#   tools/aio.d/test_mixed_versions.sh
# Environment: AIO_MIXED_STATE (/var/tmp/nova-orc-aio-mixed), AIO_VENV
#   (default: the default deployment's, $AIO_STATE/venv),
#   AIO_TEST_KEEP=1 (no down at the end), AIO_TEST_WAIT (300 s a server).
set -uo pipefail
AIO=$(cd "$(dirname "$0")/.." && pwd)/aio
DEFAULT_STATE=${AIO_STATE:-/var/tmp/nova-orc-aio}
export AIO_VENV=${AIO_VENV:-$DEFAULT_STATE/venv}
export AIO_STATE=${AIO_MIXED_STATE:-/var/tmp/nova-orc-aio-mixed}
export AIO_DB_PREFIX=aio_mixed_ AIO_RABBIT_VHOST=nova-orc-aio-mixed
S=$AIO_STATE V=$AIO_VENV
WAIT=${AIO_TEST_WAIT:-300}
passed=0 failed=0
ok() { echo "PASS: $*"; passed=$((passed + 1)); }
ko() { echo "FAIL: $*"; failed=$((failed + 1)); }
check() {  # check DESCRIPTION CMD...
  local d=$1; shift
  if "$@"; then ok "$d"; else ko "$d"; fi
}
osc() { ( . "$S/openrc" && "$V/bin/openstack" "$@" ); }
orc() { "$V/bin/nova-orc" --config-file "$S/etc/nova/nova.conf" "$@" 2>/dev/null; }
finish() {
  local name
  for name in mixed-stock mixed-orc mixed-resched; do
    osc server delete "$name" --wait >/dev/null 2>&1
  done
  if [ "${AIO_TEST_KEEP:-0}" != 1 ]; then
    echo "+ tools/aio down --purge   ($S)"
    check "tools/aio down --purge exits 0" "$AIO" down --purge
  fi
  echo "$passed passed, $failed failed"
  [ "$failed" = 0 ]
  exit
}
boot() {  # boot NAME [openstack server create options]: create --wait, print the host
  local name=$1; shift
  echo "+ openstack server create --flavor m1.nano --image cirros-fake --nic none $* $name --wait" >&2
  timeout "$WAIT" "$BASH" -c "$(declare -f osc); S='$S' V='$V'; osc server create --flavor m1.nano --image cirros-fake --nic none $* '$name' --wait -f value -c OS-EXT-SRV-ATTR:host" 2>&1 | tail -n 3
}
flow_step_state() {  # flow_step_state SERVER ATOM: the atom's state in the server's flow
  orc flow show "$1" | awk -F'|' -v atom="$2" '$2 ~ "^ *"atom" *$" {print $3}' | awk '{print $1}'
}
check_step() {  # check_step SERVER ATOM STATE: the atom ended STATE in the server's flow
  local state
  state=$(flow_step_state "$1" "$2")
  check "$1: $2 $3 (got: ${state:-none})" [ "$state" = "$3" ]
}
check_flow() {  # check_flow SERVER: the server's boot flow ended SUCCESS
  local out
  out=$(orc flow show "$1")
  [[ ${out%%$'\n'*} == *'state SUCCESS'* ]]
}

if curl -s -o /dev/null --max-time 2 http://127.0.0.1:8774/; then
  ko "port 8774 is free (another deployment runs: tools/aio down first)"; finish
fi
echo "+ AIO_COMPUTE_DRIVERS=2=fake.FakeRescheduleDriver tools/aio up --computes 3 --stock-computes 2   ($S)"
if AIO_COMPUTE_DRIVERS=2=fake.FakeRescheduleDriver "$AIO" up --computes 3 --stock-computes 2; then
  ok "tools/aio up --computes 3 --stock-computes 2 exits 0"
else
  ko "tools/aio up --computes 3 --stock-computes 2 exits 0"; finish
fi
cmdline() { tr '\0' ' ' < "/proc/$(cat "$S/pids/nova-compute$1.pid")/cmdline"; }
for i in 1 2; do
  check "aio-compute$i runs stock nova-compute" bash -c "[[ '$(cmdline $i)' == */bin/nova-compute\ * ]]"
done
check "aio-compute3 runs nova-orc-compute" bash -c "[[ '$(cmdline 3)' == */bin/nova-orc-compute\ * ]]"
check "aio-compute2 runs FakeRescheduleDriver" grep -q 'compute_driver = fake.FakeRescheduleDriver' "$S/etc/nova/compute2.conf"

# 1. stock compute selected
host=$(boot mixed-stock --availability-zone nova:aio-compute1)
check "server on a stock compute: ACTIVE on aio-compute1 (got: $host)" [ "$host" = aio-compute1 ]
check "its boot flow ended SUCCESS" check_flow mixed-stock
check_step mixed-stock build_on_stock_compute SUCCESS   # its host steps
check_step mixed-stock spawn IGNORE                     # the orc branch, not taken

# 2. orc compute selected
host=$(boot mixed-orc --availability-zone nova:aio-compute3)
check "server on an orc compute: ACTIVE on aio-compute3 (got: $host)" [ "$host" = aio-compute3 ]
check "its boot flow ended SUCCESS" check_flow mixed-orc
check_step mixed-orc spawn SUCCESS                      # its host steps
check_step mixed-orc build_on_stock_compute IGNORE      # the stock branch, not taken

# 3. a reschedule from a stock compute to an orc compute
echo "+ openstack compute service set --disable aio-compute1 nova-compute"
osc compute service set --disable aio-compute1 nova-compute
host=$(boot mixed-resched)
check "rescheduled server: ACTIVE on aio-compute3 (got: $host)" [ "$host" = aio-compute3 ]
check "its boot flow ended SUCCESS" check_flow mixed-resched
check_step mixed-resched build_on_stock_compute SUCCESS # tried on aio-compute2 first
check "aio-compute2 failed its spawn and rescheduled it" \
  grep -q "was re-scheduled: .*FakeRescheduleDriver" "$S/logs/nova-compute2.log"
osc compute service set --enable aio-compute1 nova-compute

for name in mixed-stock mixed-orc mixed-resched; do
  timeout "$WAIT" "$BASH" -c "$(declare -f osc); S='$S' V='$V'; osc server delete '$name' --wait" >/dev/null 2>&1
  check "server $name deleted" [ $? = 0 ]
done
locks=$(orc lock list | grep -c '^| instance ')
check "no lock left (got: $locks)" [ "$locks" = 0 ]
finish
