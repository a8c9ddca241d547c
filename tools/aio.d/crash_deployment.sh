# Sourced by the crash suites (test_failover.sh, test_failover_neutron.sh,
# test_delete_race.sh): the deployment they run on is one of their own,
# never the default one a user may have left servers in, and it starts
# empty.
#
#   state folder  $AIO_CRASH_STATE (/var/tmp/nova-orc-aio-crash)
#   databases     aio_crash_*, RabbitMQ vhost nova-orc-aio-crash, ZooKeeper
#                 chroot /nova-orc-aio-crash
#   venv          the default deployment's ($AIO_STATE/venv, built by
#                 `tools/aio up` when missing), unless AIO_VENV says another
#
# What an earlier run left there (a deployment kept with AIO_TEST_KEEP=1,
# servers, guests, flows, locks) would fail every leak check of the
# matrix, so each suite begins with `tools/aio down --purge` of this state.
# The default deployment must be down: the ports are the same.
# Sets S (the state folder) and exports what tools/aio reads.
DEFAULT_STATE=${AIO_STATE:-/var/tmp/nova-orc-aio}
export AIO_VENV=${AIO_VENV:-$DEFAULT_STATE/venv}
export AIO_STATE=${AIO_CRASH_STATE:-/var/tmp/nova-orc-aio-crash}
export AIO_DB_PREFIX=aio_crash_ AIO_RABBIT_VHOST=nova-orc-aio-crash
S=$AIO_STATE

crash_deployment_reset() {  # crash_deployment_reset AIO: down --purge of $S
  local aio=$1
  if curl -s -o /dev/null --max-time 2 http://127.0.0.1:8774/ &&
     ! [ -f "$S/pids/nova-api.pid" ]; then
    echo "FAIL: another deployment answers on port 8774 (tools/aio down first)"
    return 1
  fi
  if [ -d "$S" ]; then
    echo "+ tools/aio down --purge   ($S: what an earlier run left)"
    "$aio" down --purge >/dev/null || return 1
  fi
  return 0
}
