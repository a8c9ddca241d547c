"""nova-orc-conductor under tracemalloc, for ``tools/bench/soak --tracemalloc``.

``tools/aio up`` runs it instead of ``nova-orc-conductor`` (same
arguments) when ``AIO_CONDUCTOR_WRAPPER`` names this file. It starts
:mod:`tracemalloc` before Nova is imported (``SOAK_TRACEMALLOC_FRAMES``
frames a trace, default 10), then runs the conductor as
:func:`nova.orc.cmd.conductor.main` does.

Snapshots are taken on request, so that the benchmark takes them when it
samples the conductor. Every process of the service (the launcher and the
workers it forks, which inherit the tracing) runs a thread that looks every
second for the file ``$SOAK_TRACEMALLOC_DIR/request``; it holds a name
(``start``, ``end``). For a name it has not served yet the thread runs
``gc.collect()`` and writes the snapshot to
``$SOAK_TRACEMALLOC_DIR/NAME.PID.snapshot`` (``tracemalloc.Snapshot.dump``,
to a temporary name first and renamed, so a reader never sees half a
file); the requester removes the request once every process has answered.
:func:`compare` (``python tracemalloc_conductor.py compare OLD NEW``)
prints the allocation sites whose traced memory grew most between two
snapshots.

A benchmark tool: production code has no such hook.
"""

import gc
import os
import sys
import threading
import time
import tracemalloc

REQUEST = 'request'  # tools/aio.d/soak.py writes it under this name


def _snapshots(directory):
    """Serve snapshot requests in ``directory`` forever (one look a
    second), each name once, for this process."""
    request = os.path.join(directory, REQUEST)
    served = set()
    while True:
        time.sleep(1)
        try:
            with open(request) as f:
                name = f.read().strip()
        except OSError:
            continue
        if not name or name in served:
            continue
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
        path = os.path.join(directory, '%s.%d.snapshot' % (name, os.getpid()))
        snapshot.dump(path + '.part')
        os.rename(path + '.part', path)
        served.add(name)


def _serve_snapshots():
    threading.Thread(target=_snapshots,
                     args=(os.environ['SOAK_TRACEMALLOC_DIR'],),
                     daemon=True).start()


def run_conductor():
    """Trace, serve snapshot requests, run nova-orc-conductor.

    :raises SystemExit: ``SOAK_TRACEMALLOC_DIR`` is not set.
    """
    if not os.environ.get('SOAK_TRACEMALLOC_DIR'):
        sys.exit('SOAK_TRACEMALLOC_DIR: the folder for the snapshots is not set')
    tracemalloc.start(int(os.environ.get('SOAK_TRACEMALLOC_FRAMES', '10')))
    from nova.orc.cmd import conductor  # as the binary (patches, if eventlet)
    _serve_snapshots()
    # a forked worker keeps the tracing but not the thread
    os.register_at_fork(after_in_child=_serve_snapshots)
    conductor.main()


def compare(old_path, new_path, limit=25):
    """Print the traced totals (MB) of snapshots ``old_path`` and
    ``new_path``, then the ``limit`` allocation sites (grouped by whole
    traceback, every recorded frame printed, oldest first) whose size grew
    most between them, in kB. Traces whose most recent frame is in this
    file or in tracemalloc (the snapshot thread's own) are left out.
    """
    excluded = [tracemalloc.Filter(False, __file__),
                tracemalloc.Filter(False, tracemalloc.__file__)]
    old = tracemalloc.Snapshot.load(old_path).filter_traces(excluded)
    new = tracemalloc.Snapshot.load(new_path).filter_traces(excluded)
    diffs = new.compare_to(old, 'traceback')
    total_old = sum(s.size for s in old.statistics('filename'))
    total_new = sum(s.size for s in new.statistics('filename'))
    print('traced: %.1f MB -> %.1f MB (%+.1f MB)' % (
        total_old / 1e6, total_new / 1e6, (total_new - total_old) / 1e6))
    for diff in diffs[:limit]:
        print('%+9.1f kB %+7d blocks  (now %.1f kB)' % (
            diff.size_diff / 1e3, diff.count_diff, diff.size / 1e3))
        # all frames: the caller that keeps a block is rarely the
        # innermost one (a json.loads under a journal read, say)
        for line in diff.traceback.format():
            print('    ' + line)


if __name__ == '__main__':
    if sys.argv[1:2] == ['compare']:
        compare(*sys.argv[2:4])
    else:
        run_conductor()
