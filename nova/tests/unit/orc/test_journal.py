"""The flow journal: TaskFlow persistence over Nova's DB layer.

Runs against sqlite (a temporary file) and the real PostgreSQL at
``ORC_TEST_POSTGRESQL`` (default ``postgresql+psycopg2://postgres@127.0.0.1``,
a throw-away database is created and dropped); no skipping.
"""

import os

import fixtures
import sqlalchemy as sa
from oslo_utils import uuidutils
import taskflow.engines
from taskflow.patterns import linear_flow
from taskflow.persistence import models
from taskflow import task
from taskflow.types import failure as tf_failure

from nova.orc.persistence import backend as journal
from nova.orc.persistence import migration
from nova.orc.persistence import tables
from nova import test

POSTGRESQL = os.environ.get('ORC_TEST_POSTGRESQL',
                            'postgresql+psycopg2://postgres@127.0.0.1')

RAN = []
HOOKS = {}


class Step(task.Task):
    def execute(self, secret, value):
        RAN.append(self.name)
        if self.name in HOOKS:
            HOOKS[self.name]()
        return {'step': self.name, 'value': value}


def _flow():
    return linear_flow.Flow('demo').add(
        *[Step('step%d' % i, provides='out%d' % i) for i in range(1, 6)])


class _JournalTests:

    def connection_url(self):
        raise NotImplementedError()

    def setUp(self):
        super().setUp()
        RAN[:] = []
        HOOKS.clear()
        self.flags(connection=self.connection_url(), group='orc')
        migration.db_sync()
        self.backend = journal.JournalBackend()

    def _new_flow_detail(self):
        book = models.LogBook('book')
        fd = models.FlowDetail('demo', uuidutils.generate_uuid())
        fd.meta = {'instance_uuid': 'inst-1', 'operation': 'demo'}
        book.add(fd)
        conn = self.backend.get_connection()
        conn.save_logbook(book)
        return book, fd

    def _engine(self, book, fd):
        engine = taskflow.engines.load(
            _flow(), flow_detail=fd, book=book, backend=self.backend,
            store={'value': 42})
        engine.storage.inject({'secret': 's3cr3t-password'}, transient=True)
        return engine

    def test_db_sync_is_idempotent_and_versioned(self):
        migration.db_sync()
        self.assertEqual('0001_journal', migration.db_version())
        names = sa.inspect(journal.get_engine()).get_table_names()
        for table in ('orc_logbooks', 'orc_flow_details', 'orc_atom_details',
                      'orc_alembic_version'):
            self.assertIn(table, names)

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

    def test_deferred_atom_states_ride_with_the_next_write(self):
        self.backend = journal.JournalBackend(deferred={'step2'})
        book, fd = self._new_flow_detail()
        conn = self.backend.get_connection()
        seen = {}

        def look(*names):
            rows = {r['detail'].name: r for r in conn.atom_rows(fd.uuid)}
            return [(rows[n]['detail'].state, rows[n]['started_at'])
                    for n in names]

        def look_step3():
            seen['step3'], seen['step2 seen by step3'] = look('step3',
                                                              'step2')
        HOOKS['step2'] = lambda: seen.update(step2=look('step2')[0])
        HOOKS['step3'] = look_step3
        self._engine(book, fd).run()
        # while running, step2's RUNNING state was not written on its own;
        # step3 (not deferred) shows RUNNING with its start time
        self.assertEqual(('PENDING', None), seen['step2'])
        self.assertEqual('RUNNING', seen['step3'][0])
        self.assertIsNotNone(seen['step3'][1])
        # step3's first write carried step2's result before it
        self.assertEqual('SUCCESS', seen['step2 seen by step3'][0])
        rows = {r['detail'].name: r for r in conn.atom_rows(fd.uuid)}
        self.assertEqual('SUCCESS', rows['step2']['detail'].state)
        self.assertIsNotNone(rows['step2']['started_at'])
        self.assertLessEqual(rows['step2']['started_at'],
                             rows['step2']['finished_at'])

    def test_resume_runs_only_what_did_not_finish(self):
        book, fd = self._new_flow_detail()
        engine = self._engine(book, fd)
        # run until step2 has succeeded, then drop the engine (a crash)
        for _state in engine.run_iter():
            if RAN == ['step1', 'step2']:
                break
        self.assertEqual(['step1', 'step2'], RAN)
        # a new conductor loads the flow from the journal alone
        conn = self.backend.get_connection()
        loaded_book = conn.get_logbook(book.uuid)
        loaded_fd = loaded_book.find(fd.uuid)
        engine = taskflow.engines.load(
            _flow(), flow_detail=loaded_fd, book=loaded_book,
            backend=self.backend)
        engine.storage.inject({'secret': 'again'}, transient=True)
        engine.run()
        self.assertEqual(['step1', 'step2', 'step3', 'step4', 'step5'], RAN)
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


class SqliteJournalTest(_JournalTests, test.TestCase):

    def connection_url(self):
        path = self.useFixture(fixtures.TempDir()).path
        return 'sqlite:///%s/journal.db' % path


class PostgreSQLJournalTest(_JournalTests, test.TestCase):

    def connection_url(self):
        name = 'orc_journal_%s' % uuidutils.generate_uuid(dashed=False)[:12]
        admin = sa.create_engine(POSTGRESQL + '/postgres',
                                 isolation_level='AUTOCOMMIT')
        with admin.connect() as c:
            c.execute(sa.text('CREATE DATABASE %s' % name))

        def drop():
            engine = journal._own_facades.pop(
                '%s/%s' % (POSTGRESQL, name), None)
            if engine is not None:
                engine.writer.get_engine().dispose()
            with admin.connect() as c:
                c.execute(sa.text('DROP DATABASE IF EXISTS %s WITH (FORCE)'
                                  % name))
            admin.dispose()
        self.addCleanup(drop)
        return '%s/%s' % (POSTGRESQL, name)
