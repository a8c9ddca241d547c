#!/bin/bash
# The test command (README): builds everything it needs on a fresh machine
# and runs nova-orc's suites.
#
#   ./run_tests.sh [SUITE...]     SUITE: unit functional compat aio failover
#                                 race (default: all)
#
# 1. a venv in $ORC_VENV (default .venv) with the pinned Nova
#    (constraints.txt), test requirements and this project installed
#    non-editable (nova/orc lands inside the installed nova package);
# 2. Nova's api-paste.ini where Nova's functional harness looks for it, and
#    the notification samples its sample tests read (from the sdist);
# 3. ZooKeeper from Debian's `zookeeper` package on 127.0.0.1:2181 unless
#    one answers there (tools/zookeeper);
# 4. the suites, each closing with "SUITE: N passed, N failed, N skipped",
#    then a "total:" line. Exit status is non-zero if any test failed.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")" && pwd)
VENV=${ORC_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
SUITES=${*:-unit functional compat aio failover race}
LOGDIR=${ORC_TEST_LOGS:-$ROOT/.test-logs}
T0=$(date +%s)
step() { echo "[run_tests $(( $(date +%s) - T0 ))s] $*"; }

set -e
if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q -U pip wheel setuptools
fi
step "installing requirements (constraints.txt)"
"$VENV/bin/pip" install -q -c "$ROOT/constraints.txt" \
  -r "$ROOT/requirements.txt" -r "$ROOT/test-requirements.txt"
step "installing nova-orc (non-editable)"
"$VENV/bin/pip" install -q --no-deps --force-reinstall "$ROOT" 2>&1 \
  | grep -v -i "warning\|join(" || true
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$SITE/etc"
ln -sfn "$VENV/etc/nova" "$SITE/etc/nova"   # Nova's harness reads api-paste.ini here
if [ ! -d "$SITE/doc/notification_samples" ]; then
  # Nova's notification sample tests (tools/compat) read them there; the
  # wheel lacks them, the 34.0.0 sdist has them
  step "notification samples (nova 34.0.0 sdist)"
  SDIST=$(mktemp -d)
  "$VENV/bin/pip" download -q --no-binary :all: --no-deps -d "$SDIST" nova==34.0.0
  tar -xzf "$SDIST/nova-34.0.0.tar.gz" -C "$SDIST" nova-34.0.0/doc/notification_samples
  mkdir -p "$SITE/doc"
  cp -r "$SDIST/nova-34.0.0/doc/notification_samples" "$SITE/doc/"
  rm -rf "$SDIST"
fi
step "ZooKeeper"
"$ROOT/tools/zookeeper" start
export ORC_TEST_ZOOKEEPER=${ORC_TEST_ZOOKEEPER:-127.0.0.1:2181}
export ORC_TOOLS=$ROOT/tools   # tests that start and stop a ZooKeeper of their own
set +e

mkdir -p "$LOGDIR"
RESULTS=()
run_suite() {  # run_suite NAME COMMAND...  (output in $LOGDIR/NAME.log)
  local name=$1; shift
  step "suite $name: $*"
  ( cd "${TMPDIR:-/tmp}" && "$@" ) > "$LOGDIR/$name.log" 2>&1
  local rc=$?
  grep -E "FAILED: |FAIL: |SKIPPED: |^([a-z-]+: )?[0-9]+ passed, [0-9]+ failed" "$LOGDIR/$name.log" | tail -40
  local line
  line=$(grep -E "^([a-z-]+: )?[0-9]+ passed, [0-9]+ failed" "$LOGDIR/$name.log" | tail -1)
  case $line in
    [0-9]*) line="$name: $line" ;;
  esac
  if [ -z "$line" ]; then
    echo "$name: no result line (rc=$rc); last lines of $LOGDIR/$name.log:"
    tail -30 "$LOGDIR/$name.log"
    line="$name: 0 passed, 1 failed, 0 skipped"
  elif [ $rc -ne 0 ] && echo "$line" | grep -q " 0 failed"; then
    line="$name: 0 passed, 1 failed, 0 skipped (exit status $rc)"
  fi
  RESULTS+=("$line")
}

PY="$VENV/bin/python"
for suite in $SUITES; do
  case $suite in
    unit) run_suite unit "$PY" "$ROOT/tools/testrun.py" unit nova.tests.unit.orc ;;
    functional) run_suite functional "$PY" "$ROOT/tools/testrun.py" functional nova.tests.functional.orc ;;
    compat)
      # ServersTest, and the notification test that reads the order of a
      # boot's task states (networks, then block devices)
      compat_tests="nova.tests.functional.test_servers.ServersTest
        nova.tests.functional.notification_sample_tests.test_instance.TestInstanceNotificationSample.test_create_delete_server_with_instance_update"
      # shellcheck disable=SC2086
      run_suite compat-orc "$ROOT/tools/compat" $compat_tests
      # shellcheck disable=SC2086
      run_suite compat-stock "$ROOT/tools/compat" --stock $compat_tests ;;
    aio)
      run_suite aio "$ROOT/tools/aio.d/test_aio.sh"
      run_suite aio-mixed "$ROOT/tools/aio.d/test_mixed_versions.sh" ;;
    failover)
      run_suite failover "$ROOT/tools/aio.d/test_failover.sh"
      run_suite failover-neutron "$ROOT/tools/aio.d/test_failover_neutron.sh" ;;
    race) run_suite race "$ROOT/tools/aio.d/test_delete_race.sh" ;;
    *) echo "unknown suite $suite (unit functional compat aio failover race)"; exit 2 ;;
  esac
done

passed=0; failed=0; skipped=0
for line in "${RESULTS[@]}"; do
  echo "  $line"
  p=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed.*/\1/')
  f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
  s=$(echo "$line" | grep -Eo '[0-9]+ skipped' | grep -Eo '[0-9]+' || echo 0)
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
done
step "done; logs in $LOGDIR"
echo "total: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
