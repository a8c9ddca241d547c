"""nova-orc-conductor that kills itself (SIGKILL) at a chosen fault point.

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
hook: one line ``ATOM WHEN [DELAY]`` with WHEN ``before`` (pre_execute),
``after`` (post_execute), ``during`` (pre_execute, then the kill comes DELAY
seconds later, while the task runs) or ``revert`` (pre_revert). The first
conductor process to reach the point renames the file to ``*.fired`` (one
death per fault) and writes its own name into it, then SIGKILLs itself.
"""

import os
import signal
import sys
import threading
import time

from nova.orc.cmd import conductor
from nova.orc.tasks import base

FAULT_FILE = os.environ.get('AIO_FAULT_FILE', '')


def _fault():
    try:
        with open(FAULT_FILE) as f:
            words = f.read().split()
    except OSError:
        return None
    return words if len(words) >= 2 else None


def _die(why, delay=0.0):
    """Take the fault (once across processes), then SIGKILL this process."""
    fired = FAULT_FILE + '.fired'
    try:
        os.rename(FAULT_FILE, fired)
    except OSError:
        return  # another conductor took it
    with open(fired, 'a') as f:
        f.write('\nkilled pid %d (%s) %s\n' % (
            os.getpid(), ' '.join(sys.argv[1:]), why))

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
        fault = _fault()
        if fault and fault[0] == task.name:
            if fault[1] == when:
                _die('%s %s' % (task.name, when))
            elif fault[1] == 'during' and when == 'before':
                _die('%s during, +%ss' % (task.name, fault[2]),
                     delay=float(fault[2]))
        return original(task, *args, **kwargs)
    return hook


def main():
    base.OrcTask.pre_execute = _hook('before', base.OrcTask.pre_execute)
    base.OrcTask.post_execute = _hook('after', base.OrcTask.post_execute)
    base.OrcTask.pre_revert = _hook('revert', base.OrcTask.pre_revert)
    conductor.main()


if __name__ == '__main__':
    main()
