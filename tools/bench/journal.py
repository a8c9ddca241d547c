"""Cost of journaling one boot flow: nova-orc's backend vs TaskFlow's.

Builds the real boot flow (``nova.orc.flows.boot.get_flow``: same atoms,
retry and parallel branch) with every task's ``execute`` answering at once
with a result of the real size, and runs it with a TaskFlow serial engine
on each persistence backend, for each database:

* ``orc``: :class:`nova.orc.persistence.backend.JournalBackend`, each flow
  claimed first (``claim_flow``) as a conductor does, so every write is
  fenced by the owner token;
* ``taskflow-sql``: TaskFlow's stock SQLAlchemy backend, same database;
* ``memory``: TaskFlow's in-memory backend (no database: the floor);
* ``orc+lease`` (when ZooKeeper answers at ``--zookeeper``): ``orc`` with
  the claim's lease checked before every journal write, as a conductor's
  run does (``claim_flow(..., lease=JobRun.journal_lease)``, the run on a
  started ZooKeeper coordinator, the fencing guard installed): the lease's
  cost per boot is orc+lease minus orc. One ``fencing.check()`` with a
  fresh lease is also timed on its own (microseconds per check).

Printed per database: median CPU and wall ms per flow (process CPU time,
so only this process's work; the database server's is not counted), the
ratio orc / taskflow-sql, and the journal's own CPU per boot: the median
of orc minus memory over flows run side by side. Backends take turns flow
by flow so that the machine's noise hits all three alike. Databases: a
sqlite file in a temporary folder, and PostgreSQL / MySQL when a URL
answers (throw-away databases are created and dropped).

Usage: tools/bench/journal [--flows 20] [--postgresql URL] [--mysql URL]
"""

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time

import sqlalchemy as sa
from oslo_utils import uuidutils
import taskflow.engines
from taskflow.persistence import backends as tf_backends
from taskflow.persistence import models

import nova.conf
from nova import objects
from nova.orc import coordination
from nova.orc import engine as orc_engine
from nova.orc import fencing
from nova.orc.flows import boot
from nova.orc import jobboard
from nova.orc.flows import names
from nova.orc.persistence import backend as journal
from nova.orc.persistence import migration

CONF = nova.conf.CONF

SELECTION = {'nova_object.name': 'Selection', 'nova_object.data': {
    'service_host': 'host1', 'nodename': 'host1', 'cell_uuid': 'c' * 36,
    'compute_node_uuid': 'n' * 36, 'limits': None,
    'allocation_request': '{"allocations": {"%s": {"resources": '
    '{"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}}}}' % ('n' * 36),
    'allocation_request_version': '1.36'}}
RESULTS = {
    names.SCHEDULE: [SELECTION, SELECTION, SELECTION],
    names.CREATE_RECORD: 'c' * 36,
    names.LOCK: [['instance', 'i' * 36]],
    names.CLAIM_ALLOCATION: {'nova_object.data': {'x' * 20: 'y' * 1500}},
    names.CLAIM_HOST: {'host': 'host1', 'node': 'host1'},
    names.NETWORKS: '[]',
    names.BLOCK_DEVICES_TASK: [],
    names.SPAWN: {'host': 'host1', 'node': 'host1'},
}


class _Orchestrator:
    """What a :class:`nova.orc.engine.JobRun` asks of its orchestrator."""

    def __init__(self, coordinator):
        self.coordinator = coordinator


def _run(flow_id, coordinator=None):
    """A job run of ``flow_id``; on ``coordinator``'s current session when
    given (its lease is then what :meth:`JobRun.fence` checks)."""
    session = coordinator.session_id() if coordinator else None
    return orc_engine.JobRun(_Orchestrator(coordinator), jobboard.Claim(
        job=None, flow_id=flow_id, token=1, details={}, session=session))


def _flow(run):
    """The boot flow, its tasks answering at once and bound to ``run``,
    as a conductor binds them (their ``pre_execute`` checks the run for
    an abort and binds it to the thread for fencing)."""
    flow = boot.get_flow()
    for node, _data in flow.iter_nodes():
        _stub(node, run)
    return flow


def _stub(node, run):
    if hasattr(node, 'iter_nodes'):
        for child, _data in node.iter_nodes():
            _stub(child, run)
        return
    if hasattr(node, 'bind'):
        node.bind(run)
    result = RESULTS.get(node.name)
    node.execute = lambda *a, _r=result, **kw: _r


STORE = {names.FLOW_ID: 'f' * 36, names.INSTANCE_UUID: 'i' * 36,
         names.REQUEST_SPEC: {'nova_object.data': {'x' * 20: 'y' * 3000}},
         names.IMAGE: {'id': 'img', 'name': 'cirros', 'properties': {}},
         names.REQUESTED_NETWORKS: None, names.BLOCK_DEVICE_MAPPING: None,
         names.TAGS: None, names.NUM_INSTANCES: 1,
         names.PRESELECTED_HOSTS: None,
         names.LOCK_RESOURCES: [['instance', 'i' * 36]]}
TRANSIENT = {names.CONTEXT: None, names.ADMIN_PASSWORD: 'secret',
             names.INJECTED_FILES: []}


def run_flows(backend, count, claim=False, coordinator=None):
    """Run ``count`` boot-shaped flows; returns ([cpu ms], [wall ms]).
    ``claim``: claim each flow (nova-orc's backend) before running it;
    ``coordinator``: with the lease of a run on its session."""
    cpu, wall = [], []
    for _ in range(count):
        c0, t0 = time.process_time(), time.perf_counter()
        book = models.LogBook('boot-bench')
        fd = models.FlowDetail(boot.NAME, uuidutils.generate_uuid())
        fd.meta = {'instance_uuid': uuidutils.generate_uuid()}
        book.add(fd)
        run = _run(fd.uuid, coordinator)
        with contextlib.closing(backend.get_connection()) as conn:
            conn.save_logbook(book)
            if claim:
                # a conductor's claim: every later write is fenced
                conn.claim_flow(fd.uuid, 1, lease=run.journal_lease
                                if coordinator else None)
        engine = taskflow.engines.load(_flow(run), store=STORE,
                                       flow_detail=fd, book=book,
                                       backend=backend, engine='serial')
        engine.storage.inject(TRANSIENT, transient=True)
        engine.run()
        cpu.append((time.process_time() - c0) * 1000)
        wall.append((time.perf_counter() - t0) * 1000)
    return cpu, wall


@contextlib.contextmanager
def throwaway_database(server_url):
    """A new database on ``server_url`` (PostgreSQL or MySQL), dropped at
    exit; yields its URL."""
    name = 'orc_bench_%s' % uuidutils.generate_uuid(dashed=False)[:10]
    admin_url = server_url + ('/postgres' if 'postgres' in server_url
                              else '/')
    admin = sa.create_engine(admin_url, isolation_level='AUTOCOMMIT')
    with admin.connect() as c:
        c.execute(sa.text('CREATE DATABASE %s' % name))
    try:
        yield '%s/%s' % (server_url, name)
    finally:
        for facade in journal._own_facades.values():
            facade.writer.get_engine().dispose()
        journal._own_facades.clear()
        with admin.connect() as c:
            c.execute(sa.text('DROP DATABASE %s%s' % (
                name, ' WITH (FORCE)' if 'postgres' in server_url else '')))
        admin.dispose()


def bench_database(label, url, flows, coordinator=None):
    CONF.set_override('connection', url, group='orc')
    migration.db_sync()
    orc_backend = journal.JournalBackend()
    tf_backend = tf_backends.fetch({'connection': url})
    with contextlib.closing(tf_backend.get_connection()) as conn:
        conn.upgrade()
    memory = tf_backends.fetch({'connection': 'memory://'})
    backends = [('orc', orc_backend), ('taskflow-sql', tf_backend),
                ('memory', memory)]
    if coordinator is not None:
        backends.append(('orc+lease', journal.JournalBackend()))

    def run(name, backend, count):
        return run_flows(backend, count, claim=name.startswith('orc'),
                         coordinator=coordinator
                         if name == 'orc+lease' else None)
    for name, backend in backends:
        # warm-up: imports, statement caches
        run(name, backend, 2)
    # one flow per backend in turn, so that machine noise hits them alike
    samples = {name: ([], []) for name, _backend in backends}
    for _ in range(flows):
        for name, backend in backends:
            cpu, wall = run(name, backend, 1)
            samples[name][0].extend(cpu)
            samples[name][1].extend(wall)
    results = {name: (statistics.median(cpu), statistics.median(wall))
               for name, (cpu, wall) in samples.items()}
    tf_backend.close()
    print('%-11s %-13s %9s %9s' % (label, 'backend', 'CPU ms', 'wall ms'))
    for name, (cpu, wall) in results.items():
        print('%-11s %-13s %9.1f %9.1f' % ('', name, cpu, wall))
    # the journal's own cost: orc minus memory, flow by flow (neighbours in
    # time), then the median
    journal_cpu = statistics.median(
        o - m for o, m in zip(samples['orc'][0], samples['memory'][0]))
    print('%-11s orc/taskflow-sql CPU ratio %.3f; journal CPU per boot '
          '(orc - memory) %.1f ms' % (
              '', results['orc'][0] / results['taskflow-sql'][0],
              journal_cpu))
    if coordinator is not None:
        lease_cpu = statistics.median(
            lo - o for lo, o in zip(samples['orc+lease'][0],
                                    samples['orc'][0]))
        print('%-11s lease CPU per boot (orc+lease - orc) %.2f ms' % (
            '', lease_cpu))
    sys.stdout.flush()
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(prog='tools/bench/journal')
    parser.add_argument('--flows', type=int, default=20)
    parser.add_argument('--postgresql',
                        default='postgresql+psycopg2://postgres@127.0.0.1')
    parser.add_argument('--mysql', default='mysql+pymysql://root@127.0.0.1')
    parser.add_argument('--zookeeper', default=os.environ.get(
        'ORC_TEST_ZOOKEEPER', '127.0.0.1:2181'),
        help='host:port for the orc+lease rows')
    args = parser.parse_args(argv)
    CONF([], project='nova')
    objects.register_all()
    print('journal benchmark: boot flow (11 atoms: 10 tasks, 1 retry), '
          '%d flows per backend, medians' % args.flows)
    coordinator = lease_coordinator(args.zookeeper)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bench_database('sqlite', 'sqlite:///%s' % os.path.join(
                tmp, 'journal.db'), args.flows, coordinator)
        for label, url in (('postgresql', args.postgresql),
                           ('mysql', args.mysql)):
            try:
                with throwaway_database(url) as db_url:
                    bench_database(label, db_url, args.flows, coordinator)
            except sa.exc.OperationalError as e:
                print('%-11s not reachable at %s: %s' % (
                    label, url, str(e).splitlines()[0]))
    finally:
        if coordinator is not None:
            coordinator.client.delete(coordinator.base, recursive=True)
            coordinator.stop()
    return 0


def lease_coordinator(hosts):
    """A started ZooKeeper coordinator on a chroot of its own, the fencing
    guard installed, and the cost of one check printed; None (said) when
    ZooKeeper does not answer."""
    coordinator = coordination.ZooKeeperCoordinator(
        'bench', 'zookeeper://%s/nova-orc-bench-%s' % (
            hosts, uuidutils.generate_uuid()[:8]))
    try:
        coordinator.start()
    except Exception as e:
        print('ZooKeeper not reachable at %s (%s): no orc+lease rows' % (
            hosts, e))
        return None
    fencing.install()
    run = _run('f' * 36, coordinator)
    fencing.enter(run)
    try:
        count = 20000
        t0 = time.perf_counter()
        for _ in range(count):
            fencing.check()
        per_check = (time.perf_counter() - t0) / count * 1e6
    finally:
        fencing.leave()
    print('fencing.check() with a fresh lease: %.2f us per check '
          '(%d checks)' % (per_check, count))
    return coordinator


if __name__ == '__main__':
    sys.exit(main())
