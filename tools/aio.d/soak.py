"""One side of ``tools/bench/soak``: many boots through one conductor.

Runs in the all-in-one venv with the demo user's ``OS_*`` environment.
Boots ``--boots`` servers in batches of ``--batch`` (``--nic none``,
m1.nano, the aio image), waits for each batch to be ACTIVE, deletes it
and waits until it is gone, and samples the conductor's processes (the
process group named by ``--conductor-pid``: the service's launcher and its
workers) after the first batch (the start, once caches and pools are warm)
and after the last (the end):

* RSS: the sum of ``VmRSS`` over the group, bytes;
* threads: the sum of ``Threads``;
* sockets: open socket descriptors (``/proc/PID/fd`` links to
  ``socket:``), which counts database, RabbitMQ and ZooKeeper connections
  alike.

With ``--tracemalloc-dir`` (the conductor runs under
``tools/bench/tracemalloc_conductor.py``) a tracemalloc snapshot of the
conductor's processes is taken at both samples, ``start.PID.snapshot``
and ``end.PID.snapshot`` in that folder.

Prints one line per sample and ``LABEL start ... end ... growth ...``.
Exits non-zero when a server goes to ERROR or a batch does not end within
``--batch-timeout`` seconds. Every loop is bounded.
"""

import argparse
import os
import sys
import time

import openstack


def group_processes(pgid):
    """PIDs (ints) of the processes in process group ``pgid``."""
    pids = []
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % name) as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        # after the command: state, ppid, pgrp, ...
        if int(fields[2]) == pgid:
            pids.append(int(name))
    return pids


def sample(pgid):
    """``{'rss': bytes, 'threads': n, 'sockets': n, 'processes': n}`` of
    the process group ``pgid``."""
    rss = threads = sockets = 0
    pids = group_processes(pgid)
    for pid in pids:
        try:
            with open('/proc/%d/status' % pid) as f:
                for line in f:
                    if line.startswith('VmRSS:'):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith('Threads:'):
                        threads += int(line.split()[1])
            for fd in os.listdir('/proc/%d/fd' % pid):
                try:
                    if os.readlink('/proc/%d/fd/%s' % (pid, fd)).startswith(
                            'socket:'):
                        sockets += 1
                except OSError:
                    pass
        except OSError:
            continue
    return {'rss': rss, 'threads': threads, 'sockets': sockets,
            'processes': len(pids)}


def tracemalloc_snapshot(directory, name, pgid, timeout=300):
    """Ask every process of the conductor's group ``pgid`` for tracemalloc
    snapshot ``name`` and wait until each has written
    ``DIRECTORY/NAME.PID.snapshot`` (at most ``timeout`` seconds).

    :raises SystemExit: a snapshot did not come in time.
    """
    # the request file tools/bench/tracemalloc_conductor.py (REQUEST) reads
    request = os.path.join(directory, 'request')
    with open(request + '.part', 'w') as f:
        f.write(name)
    os.rename(request + '.part', request)
    deadline = time.monotonic() + timeout
    while True:
        missing = [pid for pid in group_processes(pgid)
                   if not os.path.exists(os.path.join(
                       directory, '%s.%d.snapshot' % (name, pid)))]
        if not missing:
            break
        if time.monotonic() > deadline:
            sys.exit('no tracemalloc snapshot %s from pids %s after %d s' % (
                name, missing, timeout))
        time.sleep(0.5)
    os.unlink(request)


def boot_batch(conn, label, index, count, image, flavor, timeout):
    """Boot ``count`` servers, wait ACTIVE, delete, wait gone (seconds
    bounded by ``timeout`` each way)."""
    servers = [conn.compute.create_server(
        name='soak-%s-%d-%d' % (label, index, i), image_id=image,
        flavor_id=flavor, networks='none') for i in range(count)]
    pending = {s.id for s in servers}
    deadline = time.monotonic() + timeout
    while pending:
        if time.monotonic() > deadline:
            sys.exit('batch %d: %d servers not ACTIVE after %d s' % (
                index, len(pending), timeout))
        for server in conn.compute.servers(name='^soak-%s-%d-' % (
                label, index)):
            if server.id in pending and server.status == 'ACTIVE':
                pending.discard(server.id)
            elif server.id in pending and server.status == 'ERROR':
                sys.exit('server %s went to ERROR' % server.id)
        time.sleep(0.5)
    for server in servers:
        conn.compute.delete_server(server)
    for server in servers:
        conn.compute.wait_for_delete(server, wait=timeout)


def _fmt(s):
    return 'rss %.1f MB, threads %d, sockets %d, processes %d' % (
        s['rss'] / 1e6, s['threads'], s['sockets'], s['processes'])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--label', required=True)
    parser.add_argument('--boots', type=int, default=1000)
    parser.add_argument('--batch', type=int, default=10)
    parser.add_argument('--conductor-pid', type=int, required=True,
                        help='process group id of the conductor service')
    parser.add_argument('--batch-timeout', type=int, default=300)
    parser.add_argument('--tracemalloc-dir',
                        help='take tracemalloc snapshots of the conductor '
                             '(tools/bench/tracemalloc_conductor.py) there')
    args = parser.parse_args()
    conn = openstack.connect(compute_api_version='2.37')
    image = conn.image.find_image('cirros-fake').id
    flavor = conn.compute.find_flavor('m1.nano').id
    batches = max(2, args.boots // args.batch)
    t0 = time.monotonic()
    start = None
    for index in range(batches):
        boot_batch(conn, args.label, index, args.batch, image, flavor,
                   args.batch_timeout)
        if index == 0:
            if args.tracemalloc_dir:
                tracemalloc_snapshot(args.tracemalloc_dir, 'start',
                                     args.conductor_pid)
            start = sample(args.conductor_pid)
            print('%s after batch 1: %s' % (args.label, _fmt(start)),
                  flush=True)
        elif (index + 1) % 10 == 0:
            print('%s after %d boots (%.0f s): %s' % (
                args.label, (index + 1) * args.batch,
                time.monotonic() - t0, _fmt(sample(args.conductor_pid))),
                flush=True)
    if args.tracemalloc_dir:
        tracemalloc_snapshot(args.tracemalloc_dir, 'end', args.conductor_pid)
    end = sample(args.conductor_pid)
    print('%s start %s; end %s; growth rss %+.1f MB, threads %+d, sockets '
          '%+d over %d boots after the first batch, %.0f s' % (
              args.label, _fmt(start), _fmt(end),
              (end['rss'] - start['rss']) / 1e6,
              end['threads'] - start['threads'],
              end['sockets'] - start['sockets'],
              (batches - 1) * args.batch, time.monotonic() - t0))


if __name__ == '__main__':
    main()
