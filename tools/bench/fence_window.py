"""nova-orc-conductor that times the window the lease leaves open.

For ``tools/bench/fence-window`` only: ``tools/aio up`` runs it instead of
``nova-orc-conductor`` when ``AIO_CONDUCTOR_WRAPPER`` names this file.
The fencing guard (:mod:`nova.orc.fencing`) checks the lease right before
a side effect of a task is sent; what it cannot close is the time from
that check to the side effect landing at a target that checks no token.
This wrapper measures that time for every side effect a task makes on its
thread while bound to its run (:func:`nova.orc.fencing.current`):

* ``db-write``: an INSERT, UPDATE or DELETE, from its check
  (``before_cursor_execute``) to the database's answer
  (``after_cursor_execute``): a statement queued behind a row lock shows
  here;
* ``db-commit``: a transaction's COMMIT, from its check (the engine's
  ``commit`` event) to the session's ``after_commit``;
* ``http``: a request to placement, Cinder, Neutron or Glance through
  keystoneauth's ``Session.request`` (the checks of placement claims and
  deletes are made right before it), from its start to the answer.

Each sample is appended to ``$FENCE_WINDOW_FILE`` as ``KIND
MILLISECONDS`` (one line, ``O_APPEND``: safe across processes). Production
code has no such hooks.
"""

import os
import threading
import time

from keystoneauth1 import session as ks_session
import sqlalchemy as sa
from sqlalchemy import orm

from nova.orc.cmd import conductor
from nova.orc import fencing

OUT = os.environ.get('FENCE_WINDOW_FILE', '')
_started = threading.local()


def _record(kind, t0):
    line = '%s %.3f\n' % (kind, (time.perf_counter() - t0) * 1000.0)
    fd = os.open(OUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _before_write(conn, cursor, statement, parameters, context, many):
    if fencing.current() is not None and fencing.is_write(statement):
        _started.write = time.perf_counter()


def _after_write(conn, cursor, statement, parameters, context, many):
    t0 = getattr(_started, 'write', None)
    if t0 is not None:
        _started.write = None
        _record('db-write', t0)


def _before_commit(conn):
    if fencing.current() is not None:
        _started.commit = time.perf_counter()


def _after_commit(session):
    t0 = getattr(_started, 'commit', None)
    if t0 is not None:
        _started.commit = None
        _record('db-commit', t0)


def _timed_request(original):
    def request(self, *args, **kwargs):
        if fencing.current() is None:
            return original(self, *args, **kwargs)
        t0 = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            _record('http', t0)
    return request


def main():
    if not OUT:
        raise SystemExit('FENCE_WINDOW_FILE is not set')
    sa.event.listen(sa.engine.Engine, 'before_cursor_execute', _before_write)
    sa.event.listen(sa.engine.Engine, 'after_cursor_execute', _after_write)
    sa.event.listen(sa.engine.Engine, 'commit', _before_commit)
    sa.event.listen(orm.Session, 'after_commit', _after_commit)
    ks_session.Session.request = _timed_request(ks_session.Session.request)
    conductor.main()


if __name__ == '__main__':
    main()
