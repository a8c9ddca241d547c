"""The flow journal: TaskFlow persistence over Nova's DB layer.

Runs against sqlite (a temporary file) and the real PostgreSQL at
``ORC_TEST_POSTGRESQL`` (default ``postgresql+psycopg2://postgres@127.0.0.1``,
a throw-away database is created and dropped); no skipping.

The write-ahead tests read the database through a SQLAlchemy engine of
their own (nothing of the journal's objects, caches or pool), at every
boundary of a run: after each journal call returns, and inside each task
just before and just after its side effect. A crash at a boundary is
simulated by letting the run go on as a ghost (journal calls write
nothing, side effects are not recorded), so the database is exactly what
it was at that boundary; a fresh backend then resumes the flow.
"""

import json
import os
import threading
from unittest import mock

import fixtures
import futurist
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from oslo_utils import uuidutils
import taskflow.engines
from taskflow import exceptions as tf_exc
from taskflow.patterns import linear_flow
from taskflow.patterns import unordered_flow
from taskflow.persistence import models
from taskflow import retry
from taskflow import states
from taskflow import storage as tf_storage
from taskflow import task
from taskflow.types import failure as tf_failure
import tenacity

from nova.orc import engine as engine_mod
from nova.orc import exception as orc_exc
from nova.orc import fencing
from nova.orc import jobboard
from nova.orc.persistence import backend as journal
from nova.orc.persistence import migration
from nova.orc.persistence import tables
from nova import test

MYSQL = os.environ.get('ORC_TEST_MYSQL', 'mysql+pymysql://root@127.0.0.1')
POSTGRESQL = os.environ.get('ORC_TEST_POSTGRESQL',
                            'postgresql+psycopg2://postgres@127.0.0.1')

RAN = []
HOOKS = {}

#: side effects of the boot-shaped flow, in order: (kind, atom name, host)
#: with kind execute (started), executed, failed, revert, reverted
EVENTS = []
#: atom name -> host on which its execute fails
FAIL = {}
#: callables called with a label at every boundary of a run
BOUNDARY = []
_ghost = threading.Event()


def _boundary(label):
    if not _ghost.is_set():
        for check in list(BOUNDARY):
            check(label)


def _record(kind, name, host):
    if not _ghost.is_set():
        EVENTS.append((kind, name, host))


class Step(task.Task):
    def execute(self, secret, value):
        if _ghost.is_set():
            return {'step': self.name, 'value': value}
        RAN.append(self.name)
        if self.name in HOOKS:
            HOOKS[self.name]()
        return {'step': self.name, 'value': value}


def _flow():
    return linear_flow.Flow('demo').add(
        *[Step('step%d' % i, provides='out%d' % i) for i in range(1, 6)])


class Act(task.Task):
    """A step of the boot-shaped flow: its side effect is an EVENTS entry,
    with a boundary just before and just after it."""

    def _execute(self, host):
        _boundary(('execute', self.name))
        _record('execute', self.name, host)
        if host is not None and FAIL.get(self.name) == host:
            _record('failed', self.name, host)
            _boundary(('failed', self.name))
            raise RuntimeError('%s failed on %s' % (self.name, host))
        _record('executed', self.name, host)
        _boundary(('executed', self.name))
        return {'step': self.name, 'host': host}

    def _revert(self, host):
        _boundary(('revert', self.name))
        _record('revert', self.name, host)
        _record('reverted', self.name, host)
        _boundary(('reverted', self.name))

    def execute(self, value):
        return self._execute(None)

    def revert(self, value, **kwargs):
        self._revert(None)


class HostAct(Act):
    """A step inside the host retry: it takes the host the retry chose."""

    def execute(self, value, host):
        return self._execute(host)

    def revert(self, value, host, **kwargs):
        self._revert(host)


#: the boot flow's shape (nova/orc/flows/boot.py): linear steps, a retry
#: over hosts around claim -> claim -> (networks || block_devices) -> spawn
PREDECESSORS = {
    'lock': ['bury'], 'schedule': ['lock'], 'create_record': ['schedule'],
    'claim_allocation': ['create_record', 'host_retry'],
    'claim_host': ['claim_allocation'], 'networks': ['claim_host'],
    'block_devices': ['claim_host'], 'spawn': ['networks', 'block_devices'],
    'finalize': ['spawn'],
}
OUTSIDE_RETRY = ('bury', 'lock', 'schedule', 'create_record')


def _boot_like_flow():
    host = linear_flow.Flow('host', retry=retry.ParameterizedForEach(
        'host_retry', provides='host', rebind={'values': 'hosts'}))
    host.add(HostAct('claim_allocation', provides='allocation'),
             HostAct('claim_host', provides='claim'),
             unordered_flow.Flow('resources').add(
                 HostAct('networks', provides='network_info'),
                 HostAct('block_devices', provides='block_device_info')),
             HostAct('spawn', provides='spawned'))
    return linear_flow.Flow('boot').add(
        Act('bury'), Act('lock'), Act('schedule', provides='hosts_ignored'),
        Act('create_record', provides='cell'), host, Act('finalize'))


#: what the database may show for an atom, given its last side-effect
#: event: never less than what happened, at most the next intent (a
#: RUNNING or REVERTING write comes before its side effect)
ALLOWED = {
    None: {None, states.PENDING, states.RUNNING},
    'execute': {states.RUNNING},
    'executed': {states.RUNNING, states.SUCCESS, states.REVERTING},
    'failed': {states.RUNNING, states.FAILURE, states.REVERTING},
    'revert': {states.REVERTING},
    'reverted': {states.REVERTING, states.REVERTED, states.PENDING,
                 states.RUNNING},
}


class _JournalTests:

    def connection_url(self):
        raise NotImplementedError()

    def setUp(self):
        super().setUp()
        RAN[:] = []
        HOOKS.clear()
        EVENTS[:] = []
        FAIL.clear()
        BOUNDARY[:] = []
        _ghost.clear()
        self.url = self.connection_url()
        self.flags(connection=self.url, group='orc')
        migration.db_sync()
        self.backend = journal.JournalBackend()
        # reads of what is committed, through an engine of the test's own
        self.reader = sa.create_engine(self.url)
        self.addCleanup(self.reader.dispose)
        # TaskFlow's storage waits 5 s between its retries of a failed save
        for method in (tf_storage.Storage._save_atom_detail,
                       tf_storage.Storage._save_flow_detail):
            self.useFixture(fixtures.MockPatchObject(
                method.retry, 'wait', tenacity.wait_none()))
        self._spy_journal()

    # ------------------------------------------------------------ helpers
    def _new_flow_detail(self, backend=None):
        book = models.LogBook('book')
        fd = models.FlowDetail('demo', uuidutils.generate_uuid())
        fd.meta = {'instance_uuid': 'inst-1', 'operation': 'demo'}
        book.add(fd)
        conn = (backend or self.backend).get_connection()
        conn.save_logbook(book)
        return book, fd

    def _engine(self, book, fd, backend=None):
        engine = taskflow.engines.load(
            _flow(), flow_detail=fd, book=book,
            backend=backend or self.backend, store={'value': 42})
        engine.storage.inject({'secret': 's3cr3t-password'}, transient=True)
        return engine

    def _committed(self, fd_uuid):
        """``(flow state, {atom name: (state, data)})`` as committed."""
        fd, ad = tables.flow_details, tables.atom_details
        with self.reader.connect() as c:
            flow = c.execute(sa.select(fd.c.state).where(
                fd.c.uuid == fd_uuid)).scalar()
            atoms = {r.name: (r.state, json.loads(r.data))
                     for r in c.execute(sa.select(
                         ad.c.name, ad.c.state, ad.c.data).where(
                             ad.c.flow_uuid == fd_uuid))}
        return flow, atoms

    def _states(self, fd_uuid):
        return {name: state
                for name, (state, _d) in self._committed(fd_uuid)[1].items()}

    def _spy_journal(self):
        """Call ``self.after_write(method, detail)`` after each journal
        write returns; in a ghost run, journal writes write nothing."""
        self.after_write = None
        cls = journal.JournalConnection
        for name in ('update_atom_details', 'update_flow_details',
                     'save_logbook'):
            original = getattr(cls, name)

            def spy(conn, detail, _original=original, _name=name):
                if _ghost.is_set():
                    return detail
                result = _original(conn, detail)
                if self.after_write is not None:
                    self.after_write(_name, detail)
                return result
            self.useFixture(fixtures.MockPatchObject(cls, name, spy))

    def _check_prefix(self, fd_uuid, label):
        """The journal at this boundary is a prefix of what happened."""
        before = list(EVENTS)
        committed = self._states(fd_uuid)
        after = list(EVENTS)
        last = {}
        for kind, name, _host in before:
            last[name] = kind
        moved = {name for _k, name, _h in after[len(before):]}
        for name in set(committed) | set(last):
            if name in moved or name in ('host_retry',) or (
                    name.startswith('_')):
                continue
            state = committed.get(name)
            self.assertIn(state, ALLOWED[last.get(name)],
                          '%s: %s is %s in the journal after %s' % (
                              label, name, state, last.get(name)))
        if label[0] == 'execute':
            # the results of the atoms before it are durable
            for pred in PREDECESSORS.get(label[1], ()):
                self.assertEqual(states.SUCCESS, committed.get(pred),
                                 '%s: %s' % (label, pred))

    def _load_boot_like(self, book, fd, backend, engine_kind):
        options = {'engine': engine_kind}
        if engine_kind == 'parallel':
            executor = futurist.ThreadPoolExecutor(max_workers=2)
            self.addCleanup(executor.shutdown)
            options['executor'] = executor
        return taskflow.engines.load(
            _boot_like_flow(), flow_detail=fd, book=book, backend=backend,
            store={'value': 42, 'hosts': ['host1', 'host2']}, **options)

    def _boot_like_run(self, engine_kind, crash_at=None, claim=False):
        """Run the boot-shaped flow, checking the journal at every
        boundary; with ``crash_at`` (an int), the process "dies" at that
        boundary (and only that one is checked). Returns ``(book, fd,
        crash points, crash)``: crash points are the boundaries where what
        the journal holds or what happened changed since the one before;
        crash is ``(committed atoms, events)`` at the crash. ``claim``:
        the flow is claimed first, as a conductor does."""
        book, fd = self._new_flow_detail()
        if claim:
            self.backend.get_connection().claim_flow(fd.uuid, 1)
        seen = [0]
        points = []
        last = [None]
        crash = []
        violations = []
        lock = threading.Lock()

        def at_boundary(label):
            with lock:
                if _ghost.is_set():
                    return
                if crash_at is None or seen[0] == crash_at:
                    try:
                        self._check_prefix(fd.uuid, label)
                    except AssertionError as e:
                        # raised inside a task, the engine would take it
                        # for the task's failure
                        violations.append(str(e))
                if crash_at is None:
                    state = (len(EVENTS), sorted(self._states(
                        fd.uuid).items()))
                    if state != last[0]:
                        points.append(seen[0])
                        last[0] = state
                elif seen[0] == crash_at:
                    crash.append((self._committed(fd.uuid)[1],
                                  list(EVENTS)))
                    _ghost.set()
                seen[0] += 1

        engine = self._load_boot_like(book, fd, self.backend, engine_kind)
        self.after_write = lambda method, detail: at_boundary(
            ('journal', method, detail.name, getattr(detail, 'state', None)))
        BOUNDARY.append(at_boundary)
        try:
            engine.run()
        finally:
            BOUNDARY.remove(at_boundary)
            self.after_write = None
        self.assertEqual([], violations[:3])
        return book, fd, points, crash[0] if crash else None

    def _resume_boot_like(self, book, fd, engine_kind, claim=False):
        """A new conductor (a fresh backend) resumes the flow from the
        journal alone (``claim``: claiming it first, with a greater
        token); returns the events of the resumed run."""
        _ghost.clear()
        EVENTS[:] = []
        backend = journal.JournalBackend()
        conn = backend.get_connection()
        if claim:
            conn.claim_flow(fd.uuid, 2)
        loaded_book = conn.get_logbook(book.uuid)
        loaded_fd = loaded_book.find(fd.uuid)
        engine = self._load_boot_like(loaded_book, loaded_fd, backend,
                                      engine_kind)
        engine.run()
        flow_state, atoms = self._committed(fd.uuid)
        self.assertEqual(states.SUCCESS, flow_state)
        for name, (state, _data) in atoms.items():
            self.assertEqual(states.SUCCESS, state, name)
        return list(EVENTS)

    # -------------------------------------------------------------- tests
    def test_db_sync_is_idempotent_and_versioned(self):
        migration.db_sync()
        self.assertEqual('0002_owner_token', migration.db_version())
        inspector = sa.inspect(journal.get_engine())
        names = inspector.get_table_names()
        for table in ('orc_logbooks', 'orc_flow_details', 'orc_atom_details',
                      'orc_alembic_version'):
            self.assertIn(table, names)
        self.assertIn('owner_token', [
            c['name'] for c in inspector.get_columns('orc_flow_details')])

    def test_run_is_journaled_with_timings_and_without_secrets(self):
        book, fd = self._new_flow_detail()
        self._engine(book, fd).run()
        conn = self.backend.get_connection()
        [flow] = conn.list_flows(instance_uuid='inst-1')
        self.assertEqual('SUCCESS', flow['state'])
        rows = {r['detail'].name: r for r in conn.atom_rows(fd.uuid)}
        for i in range(1, 6):
            row = rows['step%d' % i]
            self.assertEqual('SUCCESS', row['detail'].state)
            self.assertEqual({'step': 'step%d' % i, 'value': 42},
                             row['detail'].results)
            self.assertIsNotNone(row['started_at'])
            self.assertGreaterEqual(row['finished_at'], row['started_at'])
        # the transiently injected secret never reached the database
        with journal.get_engine().connect() as c:
            for table in (tables.logbooks, tables.flow_details,
                          tables.atom_details):
                for row in c.execute(sa.select(table.c.data)):
                    self.assertNotIn('s3cr3t', row.data)
        # and the logbook reads back whole through TaskFlow's API
        loaded_fd = conn.get_logbook(book.uuid).find(fd.uuid)
        self.assertEqual('SUCCESS', loaded_fd.state)
        [step3] = [a for a in loaded_fd if a.name == 'step3']
        self.assertEqual({'step': 'step3', 'value': 42}, step3.results)

    def test_running_is_committed_before_the_side_effect(self):
        # (a) a crash right after each atom's RUNNING write: the journal, as
        # read from outside, shows the atom RUNNING and the one before it
        # done; the next step's side effect has not happened
        book, fd = self._new_flow_detail()
        seen = {}

        def after(method, detail):
            if (method == 'update_atom_details' and
                    detail.state == states.RUNNING and
                    detail.name not in seen):
                committed = self._states(fd.uuid)
                seen[detail.name] = (committed[detail.name], list(RAN))
                i = int(detail.name[4:])
                if i > 1:
                    self.assertEqual(states.SUCCESS,
                                     committed['step%d' % (i - 1)])
        self.after_write = after
        self._engine(book, fd).run()
        self.assertEqual(
            {'step%d' % i: (states.RUNNING,
                            ['step%d' % j for j in range(1, i)])
             for i in range(1, 6)}, seen)

    def test_crash_after_running_write_resumes_that_atom(self):
        # (a) + (d): the process dies right after step3's RUNNING write;
        # a new conductor reads step3 RUNNING and runs it (and the rest)
        book, fd = self._new_flow_detail()

        def after(method, detail):
            if detail.name == 'step3' and detail.state == states.RUNNING:
                _ghost.set()
        self.after_write = after
        self._engine(book, fd).run()
        self.after_write = None
        self.assertEqual(['step1', 'step2'], RAN)
        # what a fresh backend (a new process) reads
        atoms = {a.name: a.state for a in journal.JournalBackend(
        ).get_connection().get_atoms_for_flow(fd.uuid)}
        self.assertEqual(states.SUCCESS, atoms['step2'])
        self.assertEqual(states.RUNNING, atoms['step3'])
        self.assertEqual(states.PENDING, atoms['step4'])
        _ghost.clear()
        backend = journal.JournalBackend()
        loaded_book = backend.get_connection().get_logbook(book.uuid)
        engine = taskflow.engines.load(
            _flow(), flow_detail=loaded_book.find(fd.uuid),
            book=loaded_book, backend=backend)
        engine.storage.inject({'secret': 'again'}, transient=True)
        engine.run()
        self.assertEqual(['step1', 'step2', 'step3', 'step4', 'step5'], RAN)

    def test_journal_is_a_prefix_of_what_happened_serial(self):
        # (b) at every boundary, with a retry that fails over to host2
        FAIL['spawn'] = 'host1'
        _book, fd, points, _crash = self._boot_like_run('serial')
        self.assertGreater(len(points), 40)
        self.assertIn(('execute', 'spawn', 'host2'), EVENTS)
        self.assertIn(('reverted', 'claim_allocation', 'host1'), EVENTS)
        _flow_state, atoms = self._committed(fd.uuid)
        self.assertEqual('host2', atoms['spawn'][1]['results']['host'])

    def test_journal_is_a_prefix_of_what_happened_claimed(self):
        FAIL['spawn'] = 'host1'
        _book, fd, points, _crash = self._boot_like_run('serial', claim=True)
        self.assertGreater(len(points), 40)
        self.assertIn(('execute', 'spawn', 'host2'), EVENTS)
        _flow_state, atoms = self._committed(fd.uuid)
        self.assertEqual('host2', atoms['spawn'][1]['results']['host'])

    def test_journal_is_a_prefix_of_what_happened_parallel(self):
        # (b) two atoms RUNNING at once (networks || block_devices)
        FAIL['spawn'] = 'host1'
        _book, _fd, points, _crash = self._boot_like_run('parallel')
        self.assertGreater(len(points), 40)
        self.assertIn(('execute', 'spawn', 'host2'), EVENTS)

    def _crash_everywhere(self, engine_kind, fail, claim=False):
        """(d) crash at each boundary in turn, resume, check that only
        what was not finished runs again."""
        if fail:
            FAIL['spawn'] = 'host1'
        _book, _fd, points, _crash = self._boot_like_run(engine_kind,
                                                         claim=claim)
        for crash_at in points:
            EVENTS[:] = []
            _ghost.clear()
            book, fd, _seen, crash = self._boot_like_run(
                engine_kind, crash_at=crash_at, claim=claim)
            committed, before = crash
            where = 'crash at boundary %d: %s' % (crash_at, committed)
            if not committed:
                # the flow's saves ride with its first atom's RUNNING
                # write: before it, nothing happened (nothing to resume;
                # the store of the flow is not in the journal either)
                self.assertEqual([], before, where)
                continue
            resumed = self._resume_boot_like(book, fd, engine_kind,
                                             claim=claim)
            done = {name for name, (state, _d) in committed.items()
                    if state == states.SUCCESS}
            ran_again = [name for kind, name, _h in resumed
                         if kind == 'execute']
            if not fail:
                # every atom not finished runs once, no finished one again
                self.assertEqual(
                    sorted((set(PREDECESSORS) | {'bury'}) - done),
                    sorted(ran_again), where)
                self.assertNotIn('revert', [k for k, _n, _h in resumed])
                # what ran before the crash and runs again: at most the
                # atoms in flight (the parallel pair)
                executed = {n for k, n, _h in before if k == 'executed'}
                self.assertLessEqual(len(executed & set(ran_again)), 2,
                                     where)
                continue
            for name in OUTSIDE_RETRY:
                if name in done:
                    self.assertNotIn(name, ran_again, where)
            history = committed.get('host_retry', (None, {}))[1].get(
                'results') or []
            failed_on_host1 = any(
                provided == 'host1' and failures
                for provided, failures in history)
            spawned_on = [h for k, n, h in resumed
                          if k == 'execute' and n == 'spawn']
            if failed_on_host1:
                # the failure is durable: host1 is not tried again
                self.assertNotIn('host1', spawned_on, where)
            self.assertEqual('host2', spawned_on[-1] if spawned_on else
                             committed['spawn'][1]['results']['host'],
                             where)

    def test_resume_after_a_crash_at_each_boundary_serial(self):
        self._crash_everywhere('serial', fail=False)

    def test_resume_after_a_crash_at_each_boundary_parallel(self):
        self._crash_everywhere('parallel', fail=False)

    def test_resume_after_a_crash_at_each_boundary_with_failover(self):
        self._crash_everywhere('serial', fail=True)

    def test_resume_after_a_crash_at_each_boundary_claimed(self):
        # a conductor's run: claimed (flow saves deferred too), resumed by
        # a conductor claiming with a greater token
        self._crash_everywhere('parallel', fail=True, claim=True)

    def _fail_commits(self, count=1):
        """The next ``count`` commits of the journal engine fail."""
        engine = journal.get_engine()
        left = [count]

        def commit(conn):
            if left[0] > 0:
                left[0] -= 1
                raise sa.exc.OperationalError(
                    'COMMIT', None, Exception('injected commit failure'))
        sa_event.listen(engine, 'commit', commit)
        self.addCleanup(sa_event.remove, engine, 'commit', commit)
        return left

    def test_failed_commit_is_written_by_taskflows_retry(self):
        # (c) the commit of step3's RUNNING write (which carries step2's
        # result) fails once: TaskFlow's storage retries the save, and the
        # retry must really write it
        book, fd = self._new_flow_detail()
        calls = []

        def before(conn, detail):
            calls.append((detail.name, detail.state))
            if (detail.name, detail.state) == ('step3', states.RUNNING) and \
                    calls.count(('step3', states.RUNNING)) == 1:
                self._fail_commits(1)
        original = journal.JournalConnection.update_atom_details

        def spy(conn, detail):
            before(conn, detail)
            return original(conn, detail)
        self.useFixture(fixtures.MockPatchObject(
            journal.JournalConnection, 'update_atom_details', spy))
        seen = {}
        HOOKS['step3'] = lambda: seen.update(self._states(fd.uuid))
        self._engine(book, fd).run()
        # the save was tried twice, and the second try wrote (TaskFlow
        # saves RUNNING once more for the progress)
        self.assertEqual(3, calls.count(('step3', states.RUNNING)))
        self.assertEqual(states.RUNNING, seen['step3'])
        self.assertEqual(states.SUCCESS, seen['step2'])
        # read back through a fresh backend
        atoms = {a.name: a for a in journal.JournalBackend(
        ).get_connection().get_atoms_for_flow(fd.uuid)}
        for i in range(1, 6):
            self.assertEqual(states.SUCCESS, atoms['step%d' % i].state)

    def test_failed_commit_of_new_atoms_is_written_by_the_retry(self):
        # (c) the engine's flow save that adds the flow's atoms fails at
        # commit once: the retry must still insert them
        book, fd = self._new_flow_detail()
        saves = []
        armed = [True]
        original = journal.JournalConnection.update_flow_details

        def spy(conn, detail):
            adds_steps = 'step1' in [ad.name for ad in detail]
            if adds_steps and armed:
                armed.pop()
                self._fail_commits(1)
            result = original(conn, detail)
            if adds_steps and len(saves) < 2:
                # reached only by a save that did not raise
                saves.append(self._states(fd.uuid))
            return result
        self.useFixture(fixtures.MockPatchObject(
            journal.JournalConnection, 'update_flow_details', spy))
        self._engine(book, fd).run()
        # right after the retried save, every atom is in the journal
        self.assertEqual(
            {'step%d' % i: states.PENDING for i in range(1, 6)},
            {k: v for k, v in saves[0].items() if k.startswith('step')})
        atoms = {a.name: a.state for a in journal.JournalBackend(
        ).get_connection().get_atoms_for_flow(fd.uuid)}
        self.assertEqual({'step%d' % i: states.SUCCESS for i in range(1, 6)},
                         {k: v for k, v in atoms.items()
                          if k.startswith('step')})

    def test_failed_commit_keeps_the_deferred_result(self):
        # (c) step2's result rides with step3's RUNNING write; that commit
        # fails once and TaskFlow's retry writes both
        book, fd = self._new_flow_detail()
        original = journal.JournalConnection.update_atom_details
        state = {'armed': True}

        def spy(conn, detail):
            if (detail.name, detail.state) == ('step3', states.RUNNING) and \
                    state.pop('armed', False):
                self._fail_commits(1)
            return original(conn, detail)
        self.useFixture(fixtures.MockPatchObject(
            journal.JournalConnection, 'update_atom_details', spy))
        seen = {}
        HOOKS['step3'] = lambda: seen.update(self._committed(fd.uuid)[1])
        self._engine(book, fd).run()
        self.assertEqual(states.SUCCESS, seen['step2'][0])
        self.assertEqual({'step': 'step2', 'value': 42},
                         seen['step2'][1]['results'])

    def test_failed_commit_of_a_claimed_flows_first_write(self):
        # (c) a claimed flow's saves (its row, its new atoms, the injected
        # store) ride with step1's RUNNING write; that commit fails once
        # and TaskFlow's retry writes all of it
        book, fd = self._new_flow_detail()
        self.backend.get_connection().claim_flow(fd.uuid, 1)
        original = journal.JournalConnection.update_atom_details
        armed = [True]

        def spy(conn, detail):
            if (detail.name, detail.state) == ('step1', states.RUNNING) and \
                    armed:
                armed.pop()
                self._fail_commits(1)
            return original(conn, detail)
        self.useFixture(fixtures.MockPatchObject(
            journal.JournalConnection, 'update_atom_details', spy))
        seen = {}
        HOOKS['step1'] = lambda: seen.update(
            zip(('flow', 'atoms'), self._committed(fd.uuid)))
        self._engine(book, fd).run()
        self.assertEqual(states.RUNNING, seen['flow'])
        self.assertEqual(
            {'step1': states.RUNNING, 'step2': states.PENDING,
             'step3': states.PENDING, 'step4': states.PENDING,
             'step5': states.PENDING},
            {k: v[0] for k, v in seen['atoms'].items()
             if k.startswith('step')})
        [injector] = [v for k, v in seen['atoms'].items()
                      if k.startswith('_')]
        self.assertEqual((states.SUCCESS, 42),
                         (injector[0], injector[1]['results']['value']))
        self.assertEqual(states.SUCCESS, self._committed(fd.uuid)[0])

    def test_resume_runs_only_what_did_not_finish(self):
        book, fd = self._new_flow_detail()
        engine = self._engine(book, fd)
        # run until step2 has succeeded, then drop the engine (a crash)
        for _state in engine.run_iter():
            if RAN == ['step1', 'step2']:
                break
        self.assertEqual(['step1', 'step2'], RAN)
        at_crash = self._states(fd.uuid)
        self.assertEqual(states.SUCCESS, at_crash['step1'])
        # a new conductor loads the flow from the journal alone
        conn = journal.JournalBackend().get_connection()
        loaded_book = conn.get_logbook(book.uuid)
        loaded_fd = loaded_book.find(fd.uuid)
        engine = taskflow.engines.load(
            _flow(), flow_detail=loaded_fd, book=loaded_book,
            backend=self.backend)
        engine.storage.inject({'secret': 'again'}, transient=True)
        engine.run()
        # step2 runs again unless its result was durable (it rides with
        # step3's RUNNING write); step1 does not
        again = [] if at_crash['step2'] == states.SUCCESS else ['step2']
        self.assertEqual(['step1', 'step2'] + again + [
            'step3', 'step4', 'step5'], RAN)
        [flow] = conn.list_flows(instance_uuid='inst-1')
        self.assertEqual('SUCCESS', flow['state'])

    def test_retry_history_reads_back_with_its_provided_values(self):
        # TaskFlow 6.5's RetryDetail.from_dict loses the provided value of
        # every failed attempt; the journal must not
        book, fd = self._new_flow_detail()
        detail = models.RetryDetail('host_retry', uuidutils.generate_uuid())
        try:
            raise RuntimeError('spawn failed on host1')
        except RuntimeError:
            failure = tf_failure.Failure()
        detail.results = [({'host': 'host1'}, {'spawn': failure}),
                          ({'host': 'host2'}, {})]
        fd.add(detail)
        conn = self.backend.get_connection()
        conn.update_flow_details(fd)
        [row] = [r for r in conn.atom_rows(fd.uuid)
                 if r['detail'].name == 'host_retry']
        results = row['detail'].results
        self.assertEqual([{'host': 'host1'}, {'host': 'host2'}],
                         [provided for provided, _f in results])
        self.assertEqual('spawn failed on host1',
                         results[0][1]['spawn'].exception_str)

    # ---------------------------------------------------------- fencing
    def _task_table(self):
        """A table of the journal's database a task writes to (Nova's
        build requests or instance mappings share the API database with
        the journal by default)."""
        engine = journal.get_engine()
        with engine.begin() as c:
            c.execute(sa.text('CREATE TABLE task_writes (id INTEGER)'))
        self.addCleanup(self._drop_task_table, engine)
        return engine

    @staticmethod
    def _drop_task_table(engine):
        with engine.begin() as c:
            c.execute(sa.text('DROP TABLE task_writes'))

    @staticmethod
    def _task_write(engine, flow_uuid, token, value):
        """A task's write, checked in its own transaction as the fencing
        listener does right before it."""
        with engine.begin() as c:
            checked = journal.fence_in_transaction(c, flow_uuid, token)
            c.execute(sa.text('INSERT INTO task_writes VALUES (%d)' % value))
        return checked

    def _task_rows(self):
        with self.reader.connect() as c:
            return sorted(r[0] for r in c.execute(
                sa.text('SELECT id FROM task_writes')))

    def test_a_write_on_the_journal_database_after_a_takeover_is_refused(
            self):
        book, fd = self._new_flow_detail()
        self.backend.get_connection().claim_flow(fd.uuid, 1)
        engine = self._task_table()
        self.assertTrue(self._task_write(engine, fd.uuid, 1, 1))
        journal.JournalBackend().get_connection().claim_flow(fd.uuid, 2)
        self.assertRaises(journal.FlowFenced, self._task_write, engine,
                          fd.uuid, 1, 2)
        self.assertTrue(self._task_write(engine, fd.uuid, 2, 3))
        self.assertEqual([1, 3], self._task_rows())

    def test_a_write_on_another_database_is_left_to_the_lease(self):
        book, fd = self._new_flow_detail()
        other = sa.create_engine('sqlite://')
        self.addCleanup(other.dispose)
        with other.begin() as c:
            self.assertFalse(journal.fence_in_transaction(c, fd.uuid, 1))

    def test_the_journals_own_statements_are_not_checked_again(self):
        # they carry their own condition on the owner token; a share lock
        # taken before their UPDATE of the flow row would invite deadlocks
        book, fd = self._new_flow_detail()
        self.backend.get_connection().claim_flow(fd.uuid, 2)
        with journal._journal_engine(journal.get_engine()).begin() as c:
            self.assertFalse(journal.fence_in_transaction(c, fd.uuid, 1))

    def test_one_check_per_transaction(self):
        book, fd = self._new_flow_detail()
        self.backend.get_connection().claim_flow(fd.uuid, 1)
        engine = self._task_table()
        reads = []

        def count(conn, cursor, statement, *args):
            if 'orc_flow_details' in statement:
                reads.append(statement)
        sa_event.listen(engine, 'before_cursor_execute', count)
        self.addCleanup(sa_event.remove, engine, 'before_cursor_execute',
                        count)
        with engine.begin() as c:
            for value in (1, 2, 3):
                self.assertTrue(journal.fence_in_transaction(c, fd.uuid, 1))
                c.execute(sa.text('INSERT INTO task_writes VALUES (%d)' %
                                  value))
        self.assertEqual(1, len(reads))
        self.assertTrue(self._task_write(engine, fd.uuid, 1, 4))
        self.assertEqual(2, len(reads))

    def test_the_fencing_listener_checks_a_tasks_write(self):
        """The real listener, a run bound to the thread: the check runs
        inside ``before_cursor_execute`` on the write's own connection."""
        book, fd = self._new_flow_detail()
        self.backend.get_connection().claim_flow(fd.uuid, 1)
        engine = self._task_table()
        fencing.install()
        run = engine_mod.JobRun(mock.Mock(), jobboard.Claim(
            None, fd.uuid, 1, {}))
        run.orchestrator.coordinator.hold_lease.return_value = None
        fencing.enter(run)
        self.addCleanup(fencing.leave)
        with engine.begin() as c:
            c.execute(sa.text('INSERT INTO task_writes VALUES (1)'))
        journal.JournalBackend().get_connection().claim_flow(fd.uuid, 2)

        def write():
            with engine.begin() as c:
                c.execute(sa.text('INSERT INTO task_writes VALUES (2)'))
        self.assertRaises(orc_exc.ClaimLost, write)
        fencing.leave()
        self.assertTrue(run.lost)
        self.assertEqual([1], self._task_rows())

    def test_a_conductor_that_lost_its_claim_cannot_write(self):
        book, fd = self._new_flow_detail()
        conn_a = self.backend.get_connection()
        conn_a.claim_flow(fd.uuid, 1)
        backend_b = journal.JournalBackend()
        seen = {}

        def takeover():
            # another conductor claims the flow while step3 runs here
            backend_b.get_connection().claim_flow(fd.uuid, 2)
            seen.update(self._committed(fd.uuid)[1])
        HOOKS['step3'] = takeover
        engine = self._engine(book, fd)
        self.assertRaises(tf_exc.StorageFailure, engine.run)
        # nothing of the first conductor landed after the second claimed
        self.assertEqual(seen, self._committed(fd.uuid)[1])
        self.assertEqual(states.RUNNING, seen['step3'][0])
        self.assertEqual(states.PENDING, seen['step4'][0])
        self.assertEqual(['step1', 'step2', 'step3'], RAN)
        # and its writes keep failing, retried or not
        step4 = [a for a in engine.storage._flowdetail
                 if a.name == 'step4'][0].copy()
        step4.state = states.RUNNING
        self.assertRaises(tf_exc.StorageFailure,
                          conn_a.update_atom_details, step4)
        self.assertRaises(tf_exc.StorageFailure,
                          conn_a.update_flow_details,
                          engine.storage._flowdetail)
        self.assertRaises(tf_exc.StorageFailure, conn_a.claim_flow,
                          fd.uuid, 1)
        self.assertEqual(seen, self._committed(fd.uuid)[1])
        # the new owner writes and resumes
        loaded_book = backend_b.get_connection().get_logbook(book.uuid)
        engine = taskflow.engines.load(
            _flow(), flow_detail=loaded_book.find(fd.uuid),
            book=loaded_book, backend=backend_b)
        engine.storage.inject({'secret': 'again'}, transient=True)
        HOOKS.clear()
        engine.run()
        self.assertEqual(['step1', 'step2', 'step3', 'step3', 'step4',
                          'step5'], RAN)
        self.assertEqual(states.SUCCESS, self._committed(fd.uuid)[0])

    def test_a_run_whose_lease_is_void_cannot_write_before_any_takeover(
            self):
        # a conductor that wakes from a pause inside step3, its session
        # gone, before any other conductor claimed the flow (its owner
        # token is still the greatest): the lease given to claim_flow
        # refuses every later write of the run
        book, fd = self._new_flow_detail()
        void = []
        checks = []

        def lease():
            checks.append(bool(void))
            if void:
                raise journal.FlowFenced(fd.uuid, 1, None,
                                         reason='lease void')
        self.backend.get_connection().claim_flow(fd.uuid, 1, lease=lease)
        seen = {}

        def wake_up_lost():
            void.append(True)
            seen.update(self._committed(fd.uuid)[1])
        HOOKS['step3'] = wake_up_lost
        engine = self._engine(book, fd)
        self.assertRaises(tf_exc.StorageFailure, engine.run)
        self.assertEqual(['step1', 'step2', 'step3'], RAN)
        self.assertEqual(seen, self._committed(fd.uuid)[1])
        self.assertEqual(states.RUNNING, seen['step3'][0])
        # asked before the claim and before each write, refused after
        self.assertEqual([False] * (checks.index(True)),
                         checks[:checks.index(True)])
        self.assertGreaterEqual(checks.index(True), 3)

    def test_claim_waits_for_a_write_in_flight(self):
        # a claim that comes while a write of the old owner is in flight
        # (its guarded UPDATE done, its commit not yet) does not get in
        # between: it waits for that commit (PostgreSQL: the write's share
        # lock on the flow row), or fails busy and is claimed again later
        # (sqlite's database lock); the write lands, nothing after it
        book, fd = self._new_flow_detail()
        self.backend.get_connection().claim_flow(fd.uuid, 1)
        conn_b = journal.JournalBackend().get_connection()
        claimed = []

        def claim_b():
            try:
                conn_b.claim_flow(fd.uuid, 2)
                claimed.append('claimed')
            except tf_exc.StorageFailure as e:
                claimed.append(e)
        claim = threading.Thread(target=claim_b)

        def step3():
            # the write has committed: the claim is through, or claims now
            claim.join(10)
            if claimed != ['claimed']:
                self.assertIn('locked', str(claimed[0]))
                conn_b.claim_flow(fd.uuid, 2)
        HOOKS['step3'] = step3
        seen = {}
        claim_armed = []
        engine = journal.get_engine()

        def commit(conn):
            if seen or not claim_armed:
                return
            claim.start()
            claim.join(0.5)
            seen['claimed before the commit'] = 'claimed' in claimed
        sa_event.listen(engine, 'commit', commit)
        self.addCleanup(sa_event.remove, engine, 'commit', commit)
        original = journal.JournalConnection.update_atom_details

        def spy(conn, detail):
            if (detail.name, detail.state) == ('step3', states.RUNNING):
                claim_armed.append(True)
            return original(conn, detail)
        self.useFixture(fixtures.MockPatchObject(
            journal.JournalConnection, 'update_atom_details', spy))
        self.assertRaises(tf_exc.StorageFailure, self._engine(book, fd).run)
        self.assertFalse(claim.is_alive())
        self.assertEqual({'claimed before the commit': False}, seen)
        atoms = self._committed(fd.uuid)[1]
        # step3's RUNNING write (with step2's result) landed, then the
        # claim; nothing of the old owner after it (step4 never started)
        self.assertEqual(states.SUCCESS, atoms['step2'][0])
        self.assertEqual(states.RUNNING, atoms['step3'][0])
        self.assertEqual(states.PENDING, atoms['step4'][0])
        self.assertEqual(['step1', 'step2', 'step3'], RAN)

    def test_claims_only_go_up(self):
        book, fd = self._new_flow_detail()
        conn = self.backend.get_connection()
        conn.claim_flow(fd.uuid, 5)
        conn.claim_flow(fd.uuid, 5)
        other = journal.JournalBackend().get_connection()
        self.assertRaises(tf_exc.StorageFailure, other.claim_flow,
                          fd.uuid, 4)
        other.claim_flow(fd.uuid, 6)
        self.assertRaises(tf_exc.NotFound, conn.claim_flow,
                          uuidutils.generate_uuid(), 1)
        with self.reader.connect() as c:
            self.assertEqual(6, c.execute(sa.select(
                tables.flow_details.c.owner_token).where(
                    tables.flow_details.c.uuid == fd.uuid)).scalar())

    def test_claimed_flow_runs_and_resumes(self):
        # the claimed path writes the same journal as the unclaimed one
        book, fd = self._new_flow_detail()
        self.backend.get_connection().claim_flow(fd.uuid, 1)
        FAIL['spawn'] = 'host1'
        engine = self._load_boot_like(book, fd, self.backend, 'serial')
        engine.run()
        flow_state, atoms = self._committed(fd.uuid)
        self.assertEqual(states.SUCCESS, flow_state)
        self.assertEqual('host2', atoms['spawn'][1]['results']['host'])

    def test_destroy_logbook(self):
        book, fd = self._new_flow_detail()
        self._engine(book, fd).run()
        conn = self.backend.get_connection()
        conn.destroy_logbook(book.uuid)
        self.assertEqual([], conn.list_flows())
        self.assertEqual([], conn.atom_rows(fd.uuid))

    def test_stats_count_journal_work(self):
        journal.STATS.reset()
        book, fd = self._new_flow_detail()
        self._engine(book, fd).run()
        stats = journal.STATS.snapshot()
        self.assertGreater(stats['calls'], 10)
        self.assertGreater(stats['seconds'], 0)


class SameDatabaseTest(test.TestCase):
    """Which writes the in-transaction check applies to: the journal's
    database only (Nova's functional fixtures give the API database and
    each cell an in-memory SQLite engine of their own)."""

    def _engine(self, url):
        engine = sa.create_engine(url)
        self.addCleanup(engine.dispose)
        return engine

    def test_two_in_memory_sqlite_engines_are_two_databases(self):
        a, b = self._engine('sqlite://'), self._engine('sqlite://')
        self.assertFalse(journal._same_database(a, b))
        self.assertTrue(journal._same_database(a, a))

    def test_one_url_naming_a_server_or_a_file_is_one_database(self):
        url = 'sqlite:///%s/api.db' % self.useFixture(
            fixtures.TempDir()).path
        self.assertTrue(journal._same_database(self._engine(url),
                                               self._engine(url)))
        self.assertFalse(journal._same_database(
            self._engine(POSTGRESQL + '/nova_api'),
            self._engine(POSTGRESQL + '/nova_cell1')))


class SqliteJournalTest(_JournalTests, test.TestCase):

    def connection_url(self):
        path = self.useFixture(fixtures.TempDir()).path
        return 'sqlite:///%s/journal.db?timeout=1' % path


class _RowLockingJournalTests(_JournalTests):
    """Databases that lock rows (PostgreSQL, MySQL)."""

    def test_a_takeover_waits_for_a_checked_write_to_commit(self):
        """The share lock a task's write takes on the flow row orders it
        with a takeover: the claim waits for the write's commit, so the
        write cannot land after the new owner started."""
        book, fd = self._new_flow_detail()
        self.backend.get_connection().claim_flow(fd.uuid, 1)
        engine = self._task_table()
        claimed = threading.Event()

        def takeover():
            journal.JournalBackend().get_connection().claim_flow(fd.uuid, 2)
            claimed.set()
        with engine.begin() as c:
            self.assertTrue(journal.fence_in_transaction(c, fd.uuid, 1))
            c.execute(sa.text('INSERT INTO task_writes VALUES (1)'))
            thread = threading.Thread(target=takeover)
            thread.start()
            self.assertFalse(claimed.wait(1.0))
        thread.join(10)
        self.assertTrue(claimed.is_set())
        self.assertEqual([1], self._task_rows())
        self.assertRaises(journal.FlowFenced, self._task_write, engine,
                          fd.uuid, 1, 2)


def _database_of_its_own(test_case, server_url, admin_database,
                         drop_statement, url_suffix=''):
    """A new database on the server ``server_url`` for ``test_case``,
    dropped at its clean-up (the journal engine made for it disposed
    first); returns its URL."""
    name = 'orc_journal_%s' % uuidutils.generate_uuid(dashed=False)[:12]
    admin = sa.create_engine('%s/%s' % (server_url, admin_database),
                             isolation_level='AUTOCOMMIT')
    with admin.connect() as c:
        c.execute(sa.text('CREATE DATABASE %s' % name))
    url = '%s/%s%s' % (server_url, name, url_suffix)

    def drop():
        facade = journal._own_facades.pop(url, None)
        if facade is not None:
            facade.writer.get_engine().dispose()
        with admin.connect() as c:
            c.execute(sa.text(drop_statement % name))
        admin.dispose()
    test_case.addCleanup(drop)
    return url


class PostgreSQLJournalTest(_RowLockingJournalTests, test.TestCase):

    def connection_url(self):
        return _database_of_its_own(
            self, POSTGRESQL, 'postgres',
            'DROP DATABASE IF EXISTS %s WITH (FORCE)')


class MySQLJournalTest(_RowLockingJournalTests, test.TestCase):
    """The journal on MariaDB/MySQL (InnoDB: row locks, LOCK IN SHARE MODE
    for the in-transaction fencing check)."""

    def connection_url(self):
        return _database_of_its_own(self, MYSQL, 'mysql',
                                    'DROP DATABASE IF EXISTS %s',
                                    url_suffix='?charset=utf8mb4')
