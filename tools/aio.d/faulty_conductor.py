"""nova-orc-conductor that kills or pauses itself at a chosen fault point.

For the crash tests only (``tools/aio.d/test_failover.sh``): ``tools/aio
up`` runs it instead of ``nova-orc-conductor`` when
``AIO_CONDUCTOR_WRAPPER`` names this file. Production code has no fault
points; this script wraps the task hooks TaskFlow calls around every task
of a flow:

* ``pre_execute``: the task's RUNNING state is journaled, its side effects
  have not started;
* ``post_execute``: its side effects are done, its result is not journaled;
* ``pre_revert``: its REVERTING state is journaled, the undo has not started.

The fault is read from the file ``$AIO_FAULT_FILE`` when a task reaches a
hook: one line ``ATOM WHEN [ARG]`` with WHEN ``before`` (pre_execute),
``after`` (post_execute), ``during`` (pre_execute, then the kill comes ARG
seconds later, while the task runs) or ``revert`` (pre_revert): SIGKILL.
The pauses stop the process with SIGSTOP instead, for the crash matrix to
let it go on (SIGCONT) once another conductor took its job over:
``pause-before`` and ``pause-after`` at those hooks, ``pause-inside N``
inside the task, right before the first database transaction it begins
after N of its transactions that wrote were committed (between its
writes, never inside a transaction). ``ATOM`` ``post`` with WHEN
``pause-before`` pauses the RPC handler between journaling a flow and
posting its job. The first conductor process to reach the point renames
the file to ``*.fired`` (one fault per file) and writes its own name and
pid into it (``killed pid N`` or ``paused pid N``), then kills or stops
itself.
"""

import os
import signal
import sys
import threading
import time

import sqlalchemy as sa

from nova.orc.cmd import conductor
from nova.orc import engine
from nova.orc.tasks import base

FAULT_FILE = os.environ.get('AIO_FAULT_FILE', '')


def _fault():
    try:
        with open(FAULT_FILE) as f:
            words = f.read().split()
    except OSError:
        return None
    return words if len(words) >= 2 else None


#: per thread: the task running there and its committed write count
_task = threading.local()


def _take(verb, why):
    """Take the fault (once across processes); False when another
    conductor took it."""
    fired = FAULT_FILE + '.fired'
    try:
        os.rename(FAULT_FILE, fired)
    except OSError:
        return False  # another conductor took it
    with open(fired, 'a') as f:
        f.write('\n%s pid %d (%s) %s\n' % (
            verb, os.getpid(), ' '.join(sys.argv[1:]), why))
    return True


def _pause(why):
    """Take the fault, then SIGSTOP this process (the crash matrix sends
    SIGCONT); it goes on from here."""
    if _take('paused', why):
        with open(FAULT_FILE + '.fired', 'a') as f:
            f.write('paused_at %.3f\n' % time.time())
        os.kill(os.getpid(), signal.SIGSTOP)
        # the stop reaches every thread a moment after kill() returns:
        # this one must not go on meanwhile
        time.sleep(0.5)
        with open(FAULT_FILE + '.fired', 'a') as f:
            f.write('woke_at %.3f\n' % time.time())


def _die(why, delay=0.0):
    """Take the fault (once across processes), then SIGKILL this process."""
    if not _take('killed', why):
        return
    fired = FAULT_FILE + '.fired'

    def kill():
        with open(fired, 'a') as f:
            f.write('killed_at %.3f\n' % time.time())
        os.kill(os.getpid(), signal.SIGKILL)
    if delay:
        threading.Timer(delay, kill).start()
    else:
        kill()


def _hook(when, original):
    def hook(task, *args, **kwargs):
        if when == 'before':
            _task.name, _task.wrote, _task.committed = task.name, False, 0
        elif when == 'after':
            _task.name = None
        fault = _fault()
        if fault and fault[0] == task.name:
            if fault[1] == when:
                _die('%s %s' % (task.name, when))
            elif fault[1] == 'during' and when == 'before':
                _die('%s during, +%ss' % (task.name, fault[2]),
                     delay=float(fault[2]))
            elif fault[1] == 'pause-%s' % when:
                _pause('%s pause-%s' % (task.name, when))
        return original(task, *args, **kwargs)
    return hook


def _inside(fault):
    return (fault and len(fault) >= 3 and fault[1] == 'pause-inside' and
            fault[0] == getattr(_task, 'name', None))


def _on_write(conn, cursor, statement, parameters, context, executemany):
    if getattr(_task, 'name', None) and statement.lstrip()[:6].upper() in (
            'INSERT', 'UPDATE', 'DELETE'):
        _task.wrote = True


def _on_commit(conn):
    if getattr(_task, 'name', None) and _task.wrote:
        _task.committed += 1
        _task.wrote = False


def _on_begin(conn):
    fault = _fault()
    if _inside(fault) and _task.committed >= int(fault[2]):
        _pause('%s pause-inside after %d committed writes' % (
            fault[0], _task.committed))


def _post_hook(original):
    def post_job(orchestrator, *args, **kwargs):
        fault = _fault()
        if fault and fault[:2] == ['post', 'pause-before']:
            _pause('post pause-before')
        return original(orchestrator, *args, **kwargs)
    return post_job


def main():
    base.OrcTask.pre_execute = _hook('before', base.OrcTask.pre_execute)
    base.OrcTask.post_execute = _hook('after', base.OrcTask.post_execute)
    base.OrcTask.pre_revert = _hook('revert', base.OrcTask.pre_revert)
    engine.Orchestrator.post_job = _post_hook(engine.Orchestrator.post_job)
    # registered before the conductor starts: they run before nova-orc's
    # own fencing listener, so a pause lands before the lease check
    sa.event.listen(sa.engine.Engine, 'before_cursor_execute', _on_write)
    sa.event.listen(sa.engine.Engine, 'commit', _on_commit)
    sa.event.listen(sa.engine.Engine, 'begin', _on_begin)
    conductor.main()


if __name__ == '__main__':
    main()
