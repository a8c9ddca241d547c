"""Fencing: a conductor that may have lost its job does not act.

Architecture (doc/source/architecture.rst) section 4, "Fencing". A
conductor that ZooKeeper declared dead may come back (SIGSTOP, a frozen VM,
a long pause, a partition) inside the very task it was running, before any
session callback has run; another conductor may have resumed the flow
meanwhile. Every side effect of a flow's task therefore passes through
:func:`check` right before it is made, on the thread that makes it:

* writes to Nova's databases (instance, action, BDMs, tags, instance
  mapping, build request, cell0, quota usage; stock helpers included):
  through a SQLAlchemy ``before_cursor_execute`` listener on every engine
  of the process (:func:`install`), for INSERT, UPDATE and DELETE
  statements made while a task of a flow runs on that thread;
* calls that no database sees (the orc compute endpoint, stock's build
  cast, the scheduler, placement): an explicit :func:`check` at the one
  place each is sent from;
* the journal: every write of a claimed flow (:mod:`nova.orc.persistence
  .backend`, ``claim_flow(..., lease=...)``);
* writes on the journal's database (the API database unless ``[orc]
  connection`` names another: build request, instance mapping) also read
  the flow's row with a share lock in their own transaction and are
  refused once another conductor claimed the flow
  (:meth:`nova.orc.engine.JobRun.fence_in_transaction`): no window there.

:func:`check` asks the run's :meth:`nova.orc.engine.JobRun.fence`, which
holds only while the conductor's coordination lease is valid
(:meth:`nova.orc.coordination.Coordinator.hold_lease`: void from the moment
kazoo reports the connection suspended, and on the monotonic clock once a
session timeout less a margin has passed since the server last answered,
so a process waking from a pause finds it void before its next write).

What the lease cannot close is the interval between a check and the
request it guards reaching its target (a DB statement queued behind a row
lock, an HTTP request in flight): targets that can check a token close it
themselves (the compute checks the claim's token, the journal its owner
token); the rest (placement, the scheduler, the cell databases) is left
with that window, measured in ``tools/bench/journal``.

A frozen conductor can also hold what its successor needs: a transaction
it had open when it stopped keeps its row locks (the journal's share lock
on the flow row, an instance row being updated), and the database server
waits for a client whose TCP connection the kernel keeps alive, so the
conductor that took the job over would block on its first write until the
frozen one wakes (seen: 4 minutes, the length of the pause). Every
database connection of a conductor therefore carries a server-side limit
on how long it may sit idle inside a transaction (:func:`install`): the
ZooKeeper session timeout, after which the conductor's claims are gone
anyway; the server then ends the session and rolls its transaction back.

A task runs with its run bound to its thread (:func:`bound`, entered by
:meth:`nova.orc.tasks.base.OrcTask.pre_execute` / ``pre_revert``, left by
``post_execute`` / ``post_revert``): code outside a task (the RPC handler,
the orchestrator's bookkeeping, other services) is never fenced here.
"""

import re
import threading

from oslo_log import log as logging
import sqlalchemy as sa

LOG = logging.getLogger(__name__)

_current = threading.local()
_installed = False
_install_lock = threading.Lock()

#: statements that change a database (a DBAPI statement's first word)
_WRITE = re.compile(r'\s*(INSERT|UPDATE|DELETE|REPLACE|MERGE)\b', re.I)


def enter(run):
    """Bind ``run`` (a :class:`nova.orc.engine.JobRun`) to this thread: the
    side effects made on it from now on are fenced by its lease."""
    _current.run = run


def leave():
    """Unbind the run of this thread (a task's execute or revert ended)."""
    _current.run = None


def current():
    """The :class:`nova.orc.engine.JobRun` bound to this thread, or None."""
    return getattr(_current, 'run', None)


def check():
    """Right before a side effect: return only while the run of the task on
    this thread may still act (no-op outside a task).

    :raises nova.orc.exception.ClaimLost: the run's claim went with its
        coordination session; another conductor may run the flow now
    :raises nova.orc.exception.CoordinationUnavailable: whether the claim
        is still ours cannot be told within ``[orc]
        coordination_outage_timeout`` (ZooKeeper unreachable)
    """
    run = current()
    if run is not None:
        run.fence()


def is_write(statement):
    """Whether a DBAPI statement (str) changes the database."""
    return bool(_WRITE.match(statement))


def _before_cursor_execute(conn, cursor, statement, parameters, context,
                           executemany):
    run = current()
    if run is not None and is_write(statement):
        check()
        # where the database can hold the condition (the journal's, the
        # API database by default), it does, in the write's transaction
        run.fence_in_transaction(conn)


def _before_commit(conn):
    # a pause between a transaction's last statement and its COMMIT: the
    # writes land only if the lease still holds (raising here rolls the
    # transaction back: SQLAlchemy calls this before the DBAPI commit)
    if current() is not None:
        check()


#: the statement limiting a session's time idle inside a transaction, per
#: DBAPI module (its top package); ``%d`` is milliseconds or seconds
_IDLE_IN_TRANSACTION_LIMIT = {
    # the server terminates the session, rolling its transaction back
    'psycopg2': ('SET idle_in_transaction_session_timeout = %d', 1000),
    # the server closes a connection idle that long, in a transaction or
    # not (the pool's ping on checkout replaces a closed idle one)
    'pymysql': ('SET SESSION wait_timeout = %d', 1),
    'MySQLdb': ('SET SESSION wait_timeout = %d', 1),
}


def idle_in_transaction_limit(dbapi_connection, seconds):
    """Limit how long the database server lets this connection sit idle
    inside an open transaction to ``seconds`` (float, rounded up to the
    unit the server takes); the server then ends the session and rolls the
    transaction back, releasing its locks. PostgreSQL:
    ``idle_in_transaction_session_timeout``; MySQL/MariaDB: the session's
    ``wait_timeout`` (which also closes the connection when idle outside a
    transaction). Returns whether the limit was set (False for a database
    without one, e.g. sqlite, where a frozen process holds the file lock).
    """
    module = type(dbapi_connection).__module__.split('.')[0]
    limit = _IDLE_IN_TRANSACTION_LIMIT.get(module)
    if limit is None:
        return False
    statement, per_second = limit
    value = max(1, int(-(-seconds * per_second // 1)))
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(statement % value)
    finally:
        cursor.close()
    return True


def _on_checkout(dbapi_connection, connection_record, connection_proxy):
    # once per DBAPI connection, pooled before install() or after
    if connection_record.info.get('orc_idle_limit') is None:
        connection_record.info['orc_idle_limit'] = idle_in_transaction_limit(
            dbapi_connection, _idle_limit_seconds)


_idle_limit_seconds = None


def install(idle_in_transaction_seconds=None):
    """Fence every database write made by a task (idempotent): a
    ``before_cursor_execute`` listener on SQLAlchemy's ``Engine`` class,
    so on every engine of the process, Nova's API and cell databases and
    the journal's included, and a ``commit`` listener, so that a
    transaction whose statements passed does not commit once the lease is
    void (a pause right before its COMMIT). The statement is not sent, or
    the transaction not committed, when :func:`check` raises; the
    transaction is rolled back by its owner as for any database error.

    :param idle_in_transaction_seconds: float or None; with a value, every
        database connection of the process gets that limit on its time
        idle inside a transaction (:func:`idle_in_transaction_limit`, set
        at its first checkout from the pool), so that a transaction left
        open by a frozen process does not hold its locks past the time its
        claims live (pass ``[orc] zookeeper_session_timeout``)
    """
    global _installed, _idle_limit_seconds
    with _install_lock:
        if not _installed:
            sa.event.listen(sa.engine.Engine, 'before_cursor_execute',
                            _before_cursor_execute)
            sa.event.listen(sa.engine.Engine, 'commit', _before_commit)
            _installed = True
        if idle_in_transaction_seconds and _idle_limit_seconds is None:
            _idle_limit_seconds = idle_in_transaction_seconds
            sa.event.listen(sa.pool.Pool, 'checkout', _on_checkout)
    LOG.debug('nova-orc fencing: database writes of flow tasks are fenced; '
              'idle in a transaction at most %s s', _idle_limit_seconds)
