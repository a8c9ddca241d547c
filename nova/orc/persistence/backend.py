"""TaskFlow persistence backend over Nova's database layer: the flow journal.

Why not TaskFlow's own SQL backend: measured here at ~224 ms (sqlite) to
~342 ms (PostgreSQL) of CPU per 5-task flow, because every save opens a
connection, rebuilds MetaData and Table objects and reads the row back before
writing it (measured on this project's machines). This backend implements the same plug-in API
(:class:`taskflow.persistence.base.Backend` / ``Connection``) with:

* Nova's engine facade: ``[orc] connection`` unset means the Nova API
  database engine (``nova.db.api.api.context_manager``), so the journal
  shares its pool; otherwise an engine facade of its own on that URL;
* one module-level :mod:`~nova.orc.persistence.tables` schema, statements
  compiled once and cached by SQLAlchemy;
* write-only saves: TaskFlow's storage always hands the full, current
  object, so a save is one ``UPDATE`` (an ``INSERT`` the first time), never a
  read-merge-write.

The journal is a write-ahead log
--------------------------------
A crash may come between any two statements; what the database holds must
then be a prefix of what happened, so that a resumed flow re-runs whatever
may have been cut short (its atoms are idempotent) and nothing else:

1. An atom's RUNNING or REVERTING state is committed before
   ``update_atom_details`` returns, hence before TaskFlow lets the atom's
   side effects (``execute`` / ``revert``) start. It is never deferred.
2. Every other atom write (SUCCESS, FAILURE, REVERTED, REVERT_FAILURE with
   the result or failure, PENDING and IGNORE resets, intentions, retry
   history, RETRYING) is deferred: kept in memory and committed in the same
   transaction as, and before, the flow's next write, which is the next
   RUNNING/REVERTING write of an atom of that flow or a write of the flow
   itself (the engine writes the flow's state when it stops, whatever the
   outcome). TaskFlow starts no side effect without one of these writes
   first, so an atom's result is durable before the next atom starts. A
   crash in between leaves the atom RUNNING (REVERTING) in the journal and a
   resume runs it again: exactly the recovery its idempotence provides.
3. ``update_flow_details`` of a flow claimed by this backend
   (``claim_flow``, below) is deferred the same way unless the flow's
   state is SUCCESS, REVERTED, FAILURE or SUSPENDED: the engine's first
   saves (the injected store, the atoms it adds, the flow's RUNNING state)
   ride with the first atom's RUNNING write, before which nothing happened;
   a crash before it leaves the flow as claimed, with no atoms. Saves of
   unclaimed flows, saves in those final states and ``save_logbook``
   commit at once (a caller that needs a running flow's meta durable at
   once uses ``save_logbook``).
4. The in-memory view (what was last committed per atom, what is
   deferred) changes only after the commit succeeded: a failed commit
   leaves it as it was, so TaskFlow's storage retry (on
   ``StorageFailure``) writes the same change again, deferred writes
   included.

The rule is generic: it depends on the state written, not on the atom. With
the parallel engine two atoms are RUNNING at once; each RUNNING write is
committed on its own (with what is deferred), a result that arrives while
the other atom still runs waits for the next write, and a crash re-runs
both. Retries (``RetryDetail``) follow the same rule: their RUNNING is
committed, their history rides with the REVERTING writes that follow a
failure.

Fencing
-------
:meth:`JournalConnection.claim_flow` records an owner token (increasing with
each takeover) in the flow's row. From then on every write of that flow's
rows by this backend is conditional on the recorded token not being greater
than the claimed one (``... AND EXISTS (SELECT ... owner_token <= :token FOR
SHARE)`` on atom rows, ``... AND owner_token <= :token`` on the flow row); a
write that finds a greater token fails with :class:`FlowFenced`, a
TaskFlow ``StorageFailure``, and so does every later one: a conductor that
lost its claim cannot write the journal after another one claimed it. The
share lock on the flow row orders a write and a concurrent claim: the claim
waits for the write's commit, or the write sees the claim.

Rows keep TaskFlow's ``to_dict()`` as JSON. Atom rows also get
``started_at`` (save in RUNNING or REVERTING) and ``finished_at`` (save in a
final state), which ``nova-orc flow show`` prints as timings.

What goes into the journal is what tasks return and what is injected
persistently; secrets (auth token, admin password, injected files) are
injected transiently by :mod:`nova.orc.engine` and never reach this module.
"""

import functools
import threading
import time
import weakref

from oslo_db.sqlalchemy import enginefacade
from oslo_log import log as logging
from oslo_serialization import jsonutils
from oslo_utils import timeutils
import sqlalchemy as sa
from taskflow import exceptions as tf_exc
from taskflow.persistence import base
from taskflow.persistence import models
from taskflow import states
from taskflow.types import failure as tf_failure

import nova.conf
from nova.db.api import api as api_db_api
from nova.orc import conf as orc_conf  # noqa: F401 - registers [orc]
from nova.orc.persistence import tables

CONF = nova.conf.CONF
LOG = logging.getLogger(__name__)

#: atom states committed before the save returns (side effects follow)
_STARTED_STATES = (states.RUNNING, states.REVERTING)
_FINISHED_STATES = (states.SUCCESS, states.FAILURE, states.REVERTED,
                    states.REVERT_FAILURE)
_FLOW_DONE_STATES = (states.SUCCESS, states.REVERTED, states.FAILURE)
#: flow states a claimed flow's save is committed in (the engine stops)
_FLOW_STOP_STATES = _FLOW_DONE_STATES + (states.SUSPENDED,)

_own_facades = {}
_own_facades_lock = threading.Lock()


def get_engine(url=None):
    """The SQLAlchemy engine of the journal database.

    :param url: the journal URL; None reads ``[orc] connection``
    No URL: Nova's API database engine (looked up on every call, so test
    fixtures that swap Nova's engine facade are followed). A URL: one
    engine facade per URL for the process.
    """
    if url is None:
        url = CONF.orc.connection
    if not url:
        return api_db_api.get_engine()
    with _own_facades_lock:
        facade = _own_facades.get(url)
        if facade is None:
            facade = enginefacade.transaction_context()
            facade.configure(connection=url, sqlite_fk=False)
            _own_facades[url] = facade
    return facade.writer.get_engine()


class JournalStats:
    """Cost of the journal, summed over a process (for benchmarks).

    ``calls`` save/load calls, ``seconds`` wall time spent in them,
    ``cpu_seconds`` CPU time of the calling threads spent in them.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.calls = 0
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    def add(self, wall, cpu):
        with self.lock:
            self.calls += 1
            self.seconds += wall
            self.cpu_seconds += cpu

    def snapshot(self):
        with self.lock:
            return {'calls': self.calls, 'seconds': self.seconds,
                    'cpu_seconds': self.cpu_seconds}


STATS = JournalStats()


def _measured(fn):
    """Count ``fn`` in :data:`STATS` and turn SQLAlchemy errors into
    TaskFlow's ``StorageFailure`` (what its storage layer retries)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        except sa.exc.SQLAlchemyError as e:
            raise tf_exc.StorageFailure('nova-orc journal: %s' % e, e)
        finally:
            STATS.add(time.perf_counter() - t0, time.thread_time() - c0)
    return wrapper


def _dumps(obj):
    data = obj.to_dict()
    meta = data.get('meta')
    if meta and 'progress' in meta:
        # TaskFlow saves a task's progress (0.0, then 1.0) around every
        # execute: the journal keeps timings instead, so progress-only
        # changes need no write at all
        data['meta'] = {k: v for k, v in meta.items() if k != 'progress'}
    return jsonutils.dumps(data)


class FlowFenced(tf_exc.StorageFailure):
    """The flow was claimed with a greater owner token than this backend's:
    the write was not done (and no later one of this backend will be).

    A TaskFlow ``StorageFailure``: the engine stops with it.
    """

    def __init__(self, flow_uuid, token, owner_token, reason=None):
        super().__init__(
            'nova-orc journal: flow %s: %s, this conductor claimed it with '
            '%s: write refused' % (
                flow_uuid, reason or 'claimed with owner token %s' %
                owner_token, token))
        self.flow_uuid = flow_uuid
        self.token = token
        self.owner_token = owner_token


def _statements(table, columns, insert_columns):
    """UPDATE and INSERT statements of ``table``, built once, with a bind
    parameter ``b_<column>`` per column (SQLAlchemy then reuses their
    compiled form). UPDATE writes ``columns``, INSERT ``insert_columns``
    and ``created_at`` (from ``b_updated_at``)."""
    where = table.c.uuid == sa.bindparam('b_uuid')
    values = {c: sa.bindparam('b_' + c) for c in columns}
    return {
        'update': table.update().where(where).values(**values),
        'insert': table.insert().values(
            uuid=sa.bindparam('b_uuid'),
            created_at=sa.bindparam('b_updated_at'),
            **{c: sa.bindparam('b_' + c) for c in insert_columns}),
    }


_LOGBOOK = _statements(tables.logbooks, ('name', 'data', 'updated_at'),
                       ('name', 'data', 'updated_at'))

_FLOW_COLUMNS = ('name', 'state', 'instance_uuid', 'data', 'updated_at')
_FLOW = _statements(tables.flow_details, _FLOW_COLUMNS,
                    _FLOW_COLUMNS + ('logbook_uuid',))


def _token_allows(flow_table):
    """The flow row's owner token is unset or not greater than
    ``b_token``."""
    return sa.or_(flow_table.c.owner_token.is_(None),
                  flow_table.c.owner_token <= sa.bindparam('b_token'))


#: the flow row's UPDATE when this backend claimed the flow
_FLOW['update_fenced'] = _FLOW['update'].where(
    _token_allows(tables.flow_details))
_CLAIM = tables.flow_details.update().where(
    tables.flow_details.c.uuid == sa.bindparam('b_uuid'),
    _token_allows(tables.flow_details),
).values(owner_token=sa.bindparam('b_token'))
_OWNER_TOKEN = sa.select(tables.flow_details.c.owner_token).where(
    tables.flow_details.c.uuid == sa.bindparam('b_uuid'))
#: the flow row's owner token, share-locked until the reader's commit
_OWNER_TOKEN_SHARED = _OWNER_TOKEN.with_for_update(read=True)
#: execution option of the journal's own connections: their statements are
#: fenced by their own conditions on the owner token, not by
#: :func:`fence_in_transaction` (a share lock taken before the journal's
#: UPDATE of the same row would invite lock upgrades and deadlocks)
JOURNAL_OPTION = 'nova_orc_journal'
_journal_engines = weakref.WeakKeyDictionary()


def _journal_engine(engine):
    """``engine`` with :data:`JOURNAL_OPTION` set (same pool)."""
    try:
        return _journal_engines[engine]
    except KeyError:
        option_engine = engine.execution_options(**{JOURNAL_OPTION: True})
        _journal_engines[engine] = option_engine
        return option_engine


def _same_database(engine, other):
    """Whether two engines reach one database: the same engine, or the same
    URL naming a server or a file (two in-memory SQLite engines, as Nova's
    test fixtures give the API and each cell, are two databases)."""
    if engine is other:
        return True
    url = engine.url
    if url.get_backend_name() == 'sqlite' and url.database in (
            None, '', ':memory:'):
        return False
    return (url.render_as_string(hide_password=False) ==
            other.url.render_as_string(hide_password=False))


def fence_in_transaction(connection, flow_uuid, token):
    """Right before a write of a flow's task, inside the write's own
    transaction: when that transaction is on the journal's database (the
    API database unless ``[orc] connection`` names another), read the
    flow's row with a share lock and refuse the write when another
    conductor claimed the flow (a greater owner token). The share lock
    orders the write and a takeover: :meth:`JournalConnection.claim_flow`
    waits for the write's transaction to end, or the write sees the claim;
    no window is left between check and write on that database (on
    PostgreSQL and MySQL; SQLite takes no row lock, and a statement in
    autocommit mode is its own transaction).

    Once per transaction: the share lock holds until its end, so later
    writes of the same transaction need no second read. The read goes
    through ``connection`` (SQLAlchemy's and oslo.db's error handling: a
    lost database connection is oslo.db's ``DBConnectionError``, as for
    the write itself).

    :param connection: the ``sqlalchemy.engine.Connection`` the write is
        executed on (``before_cursor_execute``'s)
    :param flow_uuid: str, the flow detail's uuid
    :param token: int, the owner token the run claimed the flow with
    :returns: True when checked (now or earlier in the transaction), False
        when the write is the journal's own or on another database (the
        cell databases: the lease alone fences them)
    :raises FlowFenced: the flow holds a greater token
    """
    if connection.get_execution_options().get(JOURNAL_OPTION):
        return False
    if not _same_database(connection.engine, get_engine()):
        return False
    transaction = connection.get_transaction()
    info = connection.info
    if transaction is not None and (
            info.get('nova_orc_fenced_transaction') is transaction and
            info.get('nova_orc_fenced_claim') == (flow_uuid, token)):
        return True
    owner_token = connection.execute(_OWNER_TOKEN_SHARED,
                                     {'b_uuid': flow_uuid}).scalar()
    if owner_token is not None and owner_token > int(token):
        raise FlowFenced(flow_uuid, token, owner_token)
    if transaction is not None:
        info['nova_orc_fenced_transaction'] = transaction
        info['nova_orc_fenced_claim'] = (flow_uuid, token)
    return True


def _atom_statements():
    """Atom row statements.

    ``update`` writes state, intention, data (name and type never change)
    and the timings: ``b_start`` true sets ``started_at`` and clears
    ``finished_at``, a ``b_finished_at`` sets ``finished_at``, otherwise
    both stay (one statement for every write, and one fenced twin).
    ``update_fenced`` also requires the flow's owner token not to be
    greater than ``b_token``. ``insert``: a new atom; ``flow_of``: an
    atom's flow.
    """
    ad = tables.atom_details
    fd = tables.flow_details
    where = ad.c.uuid == sa.bindparam('b_uuid')
    now = sa.bindparam('b_updated_at', type_=sa.DateTime)
    start = sa.bindparam('b_start', type_=sa.Boolean)
    update = ad.update().where(where).values(
        state=sa.bindparam('b_state'), intention=sa.bindparam('b_intention'),
        data=sa.bindparam('b_data'), updated_at=now,
        started_at=sa.case((start, now), else_=ad.c.started_at),
        finished_at=sa.case((start, sa.null()), else_=sa.func.coalesce(
            sa.bindparam('b_finished_at', type_=sa.DateTime),
            ad.c.finished_at)))
    guard = sa.select(sa.literal_column('1')).where(
        fd.c.uuid == sa.bindparam('b_flow_uuid'),
        _token_allows(fd)).with_for_update(read=True).exists()
    return {
        'update': update,
        'update_fenced': update.where(guard),
        'insert': ad.insert().values(
            uuid=sa.bindparam('b_uuid'), created_at=now,
            **{c: sa.bindparam('b_' + c) for c in (
                'flow_uuid', 'name', 'atom_type', 'state', 'intention',
                'data', 'updated_at')}),
        'flow_of': sa.select(ad.c.flow_uuid).where(where),
    }


_ATOM = _atom_statements()


class _AtomWrite:
    """One atom row write: its bind parameters (of ``_ATOM['update']``, or
    of ``_ATOM['insert']`` for a new atom) and the ``(state, data)`` it
    leaves in the row."""

    __slots__ = ('ad_uuid', 'state', 'data', 'params')

    def __init__(self, ad_uuid, state, data, params):
        self.ad_uuid = ad_uuid
        self.state = state
        self.data = data
        self.params = params


def _atom_write(ad, data, previous_state, pending):
    """The write of atom detail ``ad`` (JSON ``data``) over a row last in
    ``previous_state`` (None: unknown). ``pending``: the deferred write it
    replaces, if any (a finish time it set is kept)."""
    now = timeutils.utcnow()
    state = ad.state
    params = {'b_uuid': ad.uuid, 'b_state': state,
              'b_intention': ad.intention, 'b_data': data,
              'b_updated_at': now, 'b_start': False, 'b_finished_at': None}
    if state != previous_state and state in _STARTED_STATES:
        params['b_start'] = True
    elif state != previous_state and state in _FINISHED_STATES:
        params['b_finished_at'] = now
    elif pending is not None:
        # a later save of a finished atom (its intention, its meta) keeps
        # the finish time of the deferred write it replaces
        params['b_finished_at'] = pending.params['b_finished_at']
    return _AtomWrite(ad.uuid, state, data, params)


def _atom_insert(ad, flow_uuid, now):
    """The INSERT of a new atom's row."""
    data = _dumps(ad)
    return _AtomWrite(ad.uuid, ad.state, data, {
        'b_uuid': ad.uuid, 'b_flow_uuid': flow_uuid, 'b_name': ad.name,
        'b_atom_type': models.atom_detail_type(ad), 'b_state': ad.state,
        'b_intention': ad.intention, 'b_data': data, 'b_updated_at': now})


def _flow_params(fd, book_uuid=None):
    """Bind parameters of flow detail ``fd``'s row."""
    return {'b_uuid': fd.uuid, 'b_name': fd.name, 'b_state': fd.state,
            'b_data': _dumps(fd),
            'b_instance_uuid': (fd.meta or {}).get('instance_uuid'),
            'b_logbook_uuid': book_uuid,
            'b_updated_at': timeutils.utcnow()}


class _Pending:
    """What a flow has not committed yet: its row (``flow``: the latest
    deferred flow save's parameters, or None), new atoms to insert
    (``inserts``) and atom writes (``writes``), both by atom uuid."""

    __slots__ = ('flow', 'inserts', 'writes')

    def __init__(self):
        self.flow = None
        self.inserts = {}
        self.writes = {}

    def snapshot(self):
        """A copy to commit: ``(flow, [inserts], [writes])``."""
        return (self.flow, list(self.inserts.values()),
                list(self.writes.values()))


def _retry_detail_from_dict(data):
    """``RetryDetail.from_dict`` without TaskFlow 6.5's decoding bug.

    Its ``decode_results`` reuses the name ``data`` for the failures it
    decodes, so every attempt that failed comes back with its provided value
    replaced by the last failure's dict: a resumed retry would then forget
    which hosts it tried. Decode the ``(provided, {atom: failure})`` pairs
    here instead.
    """
    obj = models.AtomDetail.from_dict.__func__(models.RetryDetail, data)
    obj.results = [
        (provided, {name: tf_failure.Failure.from_dict(failure)
                    for name, failure in failures.items()})
        for provided, failures in (obj.results or [])]
    return obj


def _loads(cls, text):
    data = jsonutils.loads(text)
    if cls is models.RetryDetail:
        return _retry_detail_from_dict(data)
    return cls.from_dict(data)


class JournalBackend(base.Backend):
    """TaskFlow backend object; ``conf`` is ignored (config is ``[orc]``).

    The write-ahead rule (module docstring) is applied to every atom alike.

    One instance serves all flows of a process; it keeps, per atom it
    wrote, the state and data last committed (so a save that changes
    nothing the journal keeps writes nothing), per flow what is deferred
    and the owner token it claimed the flow with. A flow is forgotten when
    its state is written as SUCCESS, REVERTED or FAILURE.
    """

    def __init__(self, conf=None):
        super().__init__(conf or {})
        # read once: the journal's hot path must not look options up
        self.url = CONF.orc.connection or ''
        self._lock = threading.Lock()
        # atom uuid -> (flow uuid, state, data) as last committed
        self._atoms = {}
        # flow uuid -> set of its atom uuids in _atoms
        self._flow_atoms = {}
        # flow uuid -> _Pending: not committed yet
        self._pending = {}
        # atom uuid -> flow uuid, for atoms whose INSERT is deferred
        self._new_atoms = {}
        # flow uuid -> owner token claimed by this backend
        self._tokens = {}
        # flow uuid -> the greater owner token that fenced this backend off
        self._fenced = {}
        # flow uuid -> callable run before each write of the flow (the
        # run's lease, see claim_flow)
        self._leases = {}

    def get_connection(self):
        return JournalConnection(self)

    def close(self):
        pass

    # all of the below hold self._lock only for dict operations
    def _atom_view(self, ad_uuid):
        """``(flow uuid, state, data, pending write)`` of an atom: state
        and data as committed (or as its deferred INSERT will write them),
        or None when this backend has not written the atom."""
        with self._lock:
            known = self._atoms.get(ad_uuid)
            if known is not None:
                flow_uuid, state, data = known
                pending = self._pending.get(flow_uuid)
            else:
                flow_uuid = self._new_atoms.get(ad_uuid)
                if flow_uuid is None:
                    return None
                pending = self._pending[flow_uuid]
                row = pending.inserts[ad_uuid]
                state, data = row.state, row.data
            write = pending.writes.get(ad_uuid) if pending else None
            return flow_uuid, state, data, write

    def _check_not_fenced(self, flow_uuid):
        # with self._lock held
        fenced = self._fenced.get(flow_uuid)
        if fenced is not None:
            raise FlowFenced(flow_uuid, self._tokens.get(flow_uuid), fenced)

    def _defer(self, flow_uuid, write):
        with self._lock:
            self._check_not_fenced(flow_uuid)
            pending = self._pending.get(flow_uuid)
            if pending is None:
                pending = self._pending[flow_uuid] = _Pending()
            pending.writes[write.ad_uuid] = write

    def _drop_pending(self, flow_uuid, write):
        with self._lock:
            pending = self._pending.get(flow_uuid)
            if pending and pending.writes.get(write.ad_uuid) is write:
                del pending.writes[write.ad_uuid]

    def _defer_flow(self, fd):
        """Defer the save of claimed flow detail ``fd`` (its row and its
        atoms new to this backend).

        :returns: False (nothing deferred) unless the flow is claimed
        """
        with self._lock:
            if fd.uuid not in self._tokens:
                return False
            self._check_not_fenced(fd.uuid)
            pending = self._pending.get(fd.uuid)
            if pending is None:
                pending = self._pending[fd.uuid] = _Pending()
            pending.flow = _flow_params(fd)
            now = pending.flow['b_updated_at']
            for ad in fd:
                if (ad.uuid not in self._atoms and
                        ad.uuid not in pending.inserts):
                    pending.inserts[ad.uuid] = _atom_insert(ad, fd.uuid, now)
                    self._new_atoms[ad.uuid] = fd.uuid
            return True

    def _new_in(self, fd, snapshot):
        """Atom details of ``fd`` this backend has neither written nor
        deferred in ``snapshot``."""
        deferred = {row.ad_uuid for row in snapshot[1]}
        with self._lock:
            return [ad for ad in fd
                    if ad.uuid not in self._atoms and ad.uuid not in deferred]

    def _start(self, flow_uuid):
        """``(owner token or None, snapshot of what is deferred)`` for a
        transaction writing ``flow_uuid``.

        :raises FlowFenced: a greater token was seen for the flow, or the
            lease the flow was claimed with does not hold
        """
        lease = self._leases.get(flow_uuid)
        if lease is not None:
            lease()
        with self._lock:
            self._check_not_fenced(flow_uuid)
            pending = self._pending.get(flow_uuid)
            return (self._tokens.get(flow_uuid),
                    pending.snapshot() if pending else (None, [], []))

    def _committed(self, flow_uuid, snapshot, written, done=False):
        """After the commit: what ``snapshot`` held is no longer pending
        (unless replaced meanwhile); ``written`` (``(atom uuid, state,
        data)``, in order) is what the rows hold."""
        with self._lock:
            if done:
                self._forget(flow_uuid)
                return
            pending = self._pending.get(flow_uuid)
            if pending is not None:
                flow, inserts, writes = snapshot
                if flow is not None and pending.flow is flow:
                    pending.flow = None
                for row in inserts:
                    if pending.inserts.get(row.ad_uuid) is row:
                        del pending.inserts[row.ad_uuid]
                        self._new_atoms.pop(row.ad_uuid, None)
                for write in writes:
                    if pending.writes.get(write.ad_uuid) is write:
                        del pending.writes[write.ad_uuid]
                if not (pending.flow or pending.inserts or pending.writes):
                    del self._pending[flow_uuid]
            atoms = self._flow_atoms.setdefault(flow_uuid, set())
            for ad_uuid, state, data in written:
                self._atoms[ad_uuid] = (flow_uuid, state, data)
                atoms.add(ad_uuid)

    def _forget(self, flow_uuid):
        # with self._lock held
        for ad_uuid in self._flow_atoms.pop(flow_uuid, ()):
            self._atoms.pop(ad_uuid, None)
        pending = self._pending.pop(flow_uuid, None)
        for ad_uuid in (pending.inserts if pending else ()):
            self._new_atoms.pop(ad_uuid, None)
        self._tokens.pop(flow_uuid, None)
        self._fenced.pop(flow_uuid, None)
        self._leases.pop(flow_uuid, None)

    def forget_flow(self, flow_uuid):
        """Drop what this backend keeps of a flow whose run ended here
        without a final state (suspended, its claim lost, given back): its
        caches, deferred writes, token and lease (which holds the run).
        A later claim of the flow starts afresh, as it would anyway."""
        with self._lock:
            self._forget(flow_uuid)

    def _forget_all(self):
        with self._lock:
            for cache in (self._atoms, self._flow_atoms, self._pending,
                          self._new_atoms, self._tokens, self._fenced,
                          self._leases):
                cache.clear()

    def _fence(self, flow_uuid, owner_token):
        with self._lock:
            self._fenced[flow_uuid] = owner_token

    def _claimed(self, flow_uuid, token, lease=None):
        """A new run of the flow: what this backend had of it is dropped
        (its rows are rewritten at the run's first flow save)."""
        with self._lock:
            self._forget(flow_uuid)
            self._tokens[flow_uuid] = token
            if lease is not None:
                self._leases[flow_uuid] = lease


class JournalConnection(base.Connection):
    """One TaskFlow connection; stateless apart from the backend caches."""

    def __init__(self, backend):
        self._backend = backend

    @property
    def backend(self):
        return self._backend

    def _engine(self):
        return _journal_engine(get_engine(self._backend.url))

    def close(self):
        pass

    def upgrade(self):
        from nova.orc.persistence import migration
        migration.db_sync()

    @_measured
    def validate(self):
        with self._engine().connect() as conn:
            conn.execute(sa.select(tables.logbooks.c.uuid).limit(1))

    @_measured
    def clear_all(self):
        with self._engine().begin() as conn:
            for table in (tables.atom_details, tables.flow_details,
                          tables.logbooks):
                conn.execute(table.delete())
        self._backend._forget_all()

    # ------------------------------------------------------------ fencing
    @_measured
    def claim_flow(self, flow_uuid, token, lease=None):
        """Record ``token`` as the owner token of flow ``flow_uuid``.

        From then on every write of the flow's rows (flow and atoms) by
        this backend is refused with :class:`FlowFenced` once the row holds
        a greater token (another conductor claimed the flow), and the
        saves of the flow detail itself are deferred while the flow runs
        (module docstring). Claiming again with the same token is a no-op;
        the claim also drops what this backend kept of an earlier run of
        the flow (deferred writes, cached rows). Call it after
        ``save_logbook`` (the row must exist), before running or resuming
        the flow; it lasts until the flow's state is written as SUCCESS,
        REVERTED or FAILURE.

        :param flow_uuid: str, the flow detail's uuid
        :param token: int, the owner token of this run (increasing with
            each takeover, e.g. from the ZooKeeper claim)
        :param lease: ``callable()`` run before every later write of the
            flow by this backend (and before this claim), raising
            :class:`FlowFenced` (or another ``StorageFailure``) when the
            claim may be lost: it closes the interval in which a conductor
            woken from a pause could still write before another one claimed
            the flow (:meth:`nova.orc.engine.JobRun.journal_lease`)
        :raises FlowFenced: the flow holds a greater token already
        :raises taskflow.exceptions.NotFound: no such flow
        """
        token = int(token)
        if lease is not None:
            lease()
        with self._engine().begin() as conn:
            params = {'b_uuid': flow_uuid, 'b_token': token}
            if conn.execute(_CLAIM, params).rowcount == 0:
                row = conn.execute(_OWNER_TOKEN, params).first()
                if row is None:
                    raise tf_exc.NotFound('No flow detail %s' % flow_uuid)
                raise FlowFenced(flow_uuid, token, row.owner_token)
        self._backend._claimed(flow_uuid, token, lease)

    def _check_fence(self, conn, flow_uuid, token):
        """An UPDATE of a claimed flow matched no row: raise
        :class:`FlowFenced` when the flow holds a greater token (and
        remember it), NotFound when the flow is gone."""
        row = conn.execute(_OWNER_TOKEN, {'b_uuid': flow_uuid}).first()
        if row is None:
            raise tf_exc.NotFound('No flow detail %s' % flow_uuid)
        if row.owner_token is not None and row.owner_token > token:
            self._backend._fence(flow_uuid, row.owner_token)
            raise FlowFenced(flow_uuid, token, row.owner_token)

    # ------------------------------------------------------------- writes
    @staticmethod
    def _upsert(conn, stmts, params):
        """One UPDATE; an INSERT when the row does not exist yet."""
        if conn.execute(stmts['update'], params).rowcount == 0:
            conn.execute(stmts['insert'], params)

    def _write_flow(self, conn, flow_uuid, token, params):
        """The flow row; with a ``token``, only while the flow's token
        allows it (and then the row stays locked until the commit)."""
        if token is None:
            self._upsert(conn, _FLOW, params)
            return
        params = dict(params, b_token=token)
        if conn.execute(_FLOW['update_fenced'], params).rowcount == 0:
            # the row was claimed: it exists, unless destroyed
            self._check_fence(conn, flow_uuid, token)
            raise tf_exc.StorageFailure(
                'nova-orc journal: flow %s: no row matched' % flow_uuid)

    @staticmethod
    def _insert_atoms(conn, rows):
        """New atom rows (an atom of a flow loaded from the journal may
        exist already: then an UPDATE)."""
        ad = tables.atom_details
        existing = {r.uuid for r in conn.execute(
            sa.select(ad.c.uuid).where(ad.c.uuid.in_(
                [row.ad_uuid for row in rows])))}
        fresh = [row.params for row in rows if row.ad_uuid not in existing]
        if fresh:
            conn.execute(_ATOM['insert'], fresh)
        for row in rows:
            if row.ad_uuid in existing:
                conn.execute(_ATOM['update'], dict(
                    row.params, b_start=False, b_finished_at=None))

    def _write_atoms(self, conn, flow_uuid, token, writes, guarded=True):
        """Atom ``writes`` of flow ``flow_uuid``, one UPDATE each (on
        PostgreSQL cheaper than one executemany); with a ``token`` and
        ``guarded``, each only while the flow's token allows it."""
        fenced = token is not None and guarded
        stmt = _ATOM['update_fenced' if fenced else 'update']
        for write in writes:
            params = write.params
            if fenced:
                params = dict(params, b_flow_uuid=flow_uuid, b_token=token)
            if conn.execute(stmt, params).rowcount == 0:
                if fenced:
                    self._check_fence(conn, flow_uuid, token)
                # TaskFlow's contract: an atom is created with its flow
                raise tf_exc.NotFound('No atom detail %s' % write.ad_uuid)

    def _write_flow_part(self, conn, flow_uuid, token, snapshot, fd=None,
                         book_uuid=None, write=None):
        """In ``conn``'s transaction, what flow ``flow_uuid`` has to write:
        its row (``fd``'s, else the deferred one), new atoms (deferred and
        ``fd``'s), deferred atom writes, then ``write``. Returns the
        ``(atom uuid, state, data)`` written, in order."""
        flow, inserts, writes = snapshot
        if fd is not None:
            flow = _flow_params(fd, book_uuid)
            now = flow['b_updated_at']
            inserts = inserts + [_atom_insert(ad, fd.uuid, now)
                                 for ad in self._backend._new_in(
                                     fd, snapshot)]
        if write is not None:
            writes = [w for w in writes if w.ad_uuid != write.ad_uuid]
            writes.append(write)
        if flow is not None:
            # first: with a token this UPDATE is the fence and holds the
            # flow row for the rest of the transaction
            self._write_flow(conn, flow_uuid, token, flow)
        if inserts:
            self._insert_atoms(conn, inserts)
        self._write_atoms(conn, flow_uuid, token, writes,
                          guarded=flow is None)
        return [(w.ad_uuid, w.state, w.data) for w in inserts + writes]

    def _commit_atom(self, flow_uuid, write):
        """Commit ``write`` with what the flow deferred, before it."""
        backend = self._backend
        token, snapshot = backend._start(flow_uuid)
        with self._engine().begin() as conn:
            written = self._write_flow_part(conn, flow_uuid, token, snapshot,
                                            write=write)
        backend._committed(flow_uuid, snapshot, written)

    @_measured
    def update_atom_details(self, atom_detail):
        """Persist one atom detail (the write-ahead rule, module
        docstring): RUNNING and REVERTING are committed before returning,
        with what the flow deferred; other states are deferred to the
        flow's next write; nothing is written when nothing the journal
        keeps changed (e.g. only TaskFlow's progress).

        :raises taskflow.exceptions.NotFound: the atom has no row
        :raises FlowFenced: the flow was claimed with a greater token
        :raises taskflow.exceptions.StorageFailure: database error
            (TaskFlow's storage retries the save)
        """
        ad = atom_detail
        backend = self._backend
        data = _dumps(ad)
        view = backend._atom_view(ad.uuid)
        if view is None:
            self._write_unknown_atom(ad, data)
            return ad
        flow_uuid, state, committed, pending = view
        if pending is not None:
            if pending.state == ad.state and pending.data == data:
                return ad
            if state == ad.state and committed == data:
                # back to what the row holds: nothing left to write
                backend._drop_pending(flow_uuid, pending)
                return ad
            write = _atom_write(ad, data, pending.state, pending)
        elif state == ad.state and committed == data:
            return ad
        else:
            write = _atom_write(ad, data, state, None)
        if ad.state in _STARTED_STATES:
            self._commit_atom(flow_uuid, write)
        else:
            backend._defer(flow_uuid, write)
        return ad

    def _write_unknown_atom(self, ad, data):
        """An atom this backend has not written (e.g. of a flow loaded from
        the journal, before the run's first flow save): written at once,
        whatever its state, once its flow is known from its row."""
        with self._engine().connect() as conn:
            flow_uuid = conn.execute(_ATOM['flow_of'],
                                     {'b_uuid': ad.uuid}).scalar()
        if flow_uuid is None:
            raise tf_exc.NotFound('No atom detail %s' % ad.uuid)
        self._commit_atom(flow_uuid, _atom_write(ad, data, None, None))

    def _commit_flows(self, fds, book=None):
        """One transaction: the logbook row (``book``), then per flow its
        row, its new atoms and what it deferred."""
        backend = self._backend
        started = [(fd,) + backend._start(fd.uuid) for fd in fds]
        written = []
        with self._engine().begin() as conn:
            if book is not None:
                self._upsert(conn, _LOGBOOK, {
                    'b_uuid': book.uuid, 'b_name': book.name,
                    'b_data': jsonutils.dumps(book.to_dict(
                        marshal_time=True)),
                    'b_updated_at': timeutils.utcnow()})
            for fd, token, snapshot in started:
                written.append(self._write_flow_part(
                    conn, fd.uuid, token, snapshot, fd=fd,
                    book_uuid=book.uuid if book else None))
        for (fd, _token, snapshot), rows in zip(started, written):
            backend._committed(fd.uuid, snapshot, rows,
                               done=fd.state in _FLOW_DONE_STATES)

    @_measured
    def update_flow_details(self, flow_detail):
        """Persist a flow detail and the atom details new to the journal,
        with what the flow deferred, in one transaction; for a flow this
        backend claimed, deferred to the flow's next write unless its
        state is SUCCESS, REVERTED, FAILURE or SUSPENDED (module
        docstring).

        :raises FlowFenced: the flow was claimed with a greater token
        """
        if (flow_detail.state in _FLOW_STOP_STATES or
                not self._backend._defer_flow(flow_detail)):
            self._commit_flows([flow_detail])
        return flow_detail

    @_measured
    def save_logbook(self, book):
        """Persist a logbook with its flow details and their atoms, in one
        transaction."""
        self._commit_flows(list(book), book=book)
        return book

    @_measured
    def destroy_logbook(self, book_uuid):
        with self._engine().begin() as conn:
            flows = [r.uuid for r in conn.execute(
                sa.select(tables.flow_details.c.uuid).where(
                    tables.flow_details.c.logbook_uuid == book_uuid))]
            if flows:
                conn.execute(tables.atom_details.delete().where(
                    tables.atom_details.c.flow_uuid.in_(flows)))
                conn.execute(tables.flow_details.delete().where(
                    tables.flow_details.c.uuid.in_(flows)))
            result = conn.execute(tables.logbooks.delete().where(
                tables.logbooks.c.uuid == book_uuid))
            if result.rowcount == 0:
                raise tf_exc.NotFound('No logbook %s' % book_uuid)
        with self._backend._lock:
            for flow_uuid in flows:
                self._backend._forget(flow_uuid)

    # -------------------------------------------------------------- reads
    @_measured
    def get_logbook(self, book_uuid, lazy=False):
        with self._engine().connect() as conn:
            row = conn.execute(sa.select(tables.logbooks).where(
                tables.logbooks.c.uuid == book_uuid)).first()
            if row is None:
                raise tf_exc.NotFound('No logbook %s' % book_uuid)
            book = models.LogBook.from_dict(jsonutils.loads(row.data),
                                            unmarshal_time=True)
            if not lazy:
                for fd in self._flows_for_book(conn, book_uuid, lazy=False):
                    book.add(fd)
        return book

    def get_logbooks(self, lazy=False):
        with self._engine().connect() as conn:
            uuids = [r.uuid for r in conn.execute(
                sa.select(tables.logbooks.c.uuid).order_by(
                    tables.logbooks.c.created_at))]
        for uuid in uuids:
            yield self.get_logbook(uuid, lazy=lazy)

    def _flows_for_book(self, conn, book_uuid, lazy):
        rows = conn.execute(sa.select(tables.flow_details).where(
            tables.flow_details.c.logbook_uuid == book_uuid).order_by(
                tables.flow_details.c.created_at)).all()
        for row in rows:
            fd = _loads(models.FlowDetail, row.data)
            if not lazy:
                for ad in self._atoms_for_flow(conn, fd.uuid):
                    fd.add(ad)
            yield fd

    @_measured
    def get_flows_for_book(self, book_uuid, lazy=False):
        with self._engine().connect() as conn:
            return list(self._flows_for_book(conn, book_uuid, lazy))

    @_measured
    def get_flow_details(self, fd_uuid, lazy=False):
        with self._engine().connect() as conn:
            row = conn.execute(sa.select(tables.flow_details).where(
                tables.flow_details.c.uuid == fd_uuid)).first()
            if row is None:
                raise tf_exc.NotFound('No flow detail %s' % fd_uuid)
            fd = _loads(models.FlowDetail, row.data)
            if not lazy:
                for ad in self._atoms_for_flow(conn, fd_uuid):
                    fd.add(ad)
        return fd

    def _atoms_for_flow(self, conn, fd_uuid):
        rows = conn.execute(sa.select(tables.atom_details).where(
            tables.atom_details.c.flow_uuid == fd_uuid).order_by(
                tables.atom_details.c.created_at)).all()
        for row in rows:
            cls = models.atom_detail_class(row.atom_type)
            yield _loads(cls, row.data)

    @_measured
    def get_atoms_for_flow(self, fd_uuid):
        with self._engine().connect() as conn:
            return list(self._atoms_for_flow(conn, fd_uuid))

    @_measured
    def get_atom_details(self, ad_uuid):
        with self._engine().connect() as conn:
            row = conn.execute(sa.select(tables.atom_details).where(
                tables.atom_details.c.uuid == ad_uuid)).first()
        if row is None:
            raise tf_exc.NotFound('No atom detail %s' % ad_uuid)
        return _loads(models.atom_detail_class(row.atom_type), row.data)

    @_measured
    def flow_state(self, fd_uuid):
        """The journaled state of flow ``fd_uuid``, or None if unknown."""
        fd = tables.flow_details
        with self._engine().connect() as conn:
            row = conn.execute(sa.select(fd.c.state).where(
                fd.c.uuid == fd_uuid)).first()
        return row.state if row else None

    # ------------------------------------------- queries for the operator
    def list_flows(self, instance_uuid=None, flow_uuid=None, limit=None,
                   unended=False, created_before=None):
        """Flow rows (newest first) as dicts: uuid, logbook_uuid, name,
        state, instance_uuid, meta, created_at, updated_at; optionally only
        those of one instance or the one flow, only those that have not
        ended (``unended``: neither SUCCESS nor REVERTED, a flow never run
        included), only those created before ``created_before`` (naive UTC
        datetime)."""
        fd = tables.flow_details
        query = sa.select(fd).order_by(fd.c.created_at.desc())
        if instance_uuid:
            query = query.where(fd.c.instance_uuid == instance_uuid)
        if flow_uuid:
            query = query.where(fd.c.uuid == flow_uuid)
        if unended:
            query = query.where(sa.or_(
                fd.c.state.is_(None),
                fd.c.state.notin_([states.SUCCESS, states.REVERTED])))
        if created_before is not None:
            query = query.where(fd.c.created_at < created_before)
        if limit:
            query = query.limit(limit)
        with self._engine().connect() as conn:
            rows = conn.execute(query).all()
        flows = []
        for row in rows:
            data = jsonutils.loads(row.data)
            flows.append({'uuid': row.uuid, 'logbook_uuid': row.logbook_uuid,
                          'name': row.name, 'state': row.state,
                          'instance_uuid': row.instance_uuid,
                          'meta': data.get('meta') or {},
                          'created_at': row.created_at,
                          'updated_at': row.updated_at})
        return flows

    def atom_rows(self, fd_uuid):
        """Atom rows of a flow, in creation order, as dicts with the atom
        detail (``detail``), ``atom_type``, ``started_at``, ``finished_at``."""
        ad = tables.atom_details
        with self._engine().connect() as conn:
            rows = conn.execute(sa.select(ad).where(
                ad.c.flow_uuid == fd_uuid).order_by(ad.c.created_at)).all()
        return [{'detail': _loads(models.atom_detail_class(r.atom_type),
                                  r.data),
                 'atom_type': r.atom_type, 'started_at': r.started_at,
                 'finished_at': r.finished_at} for r in rows]
