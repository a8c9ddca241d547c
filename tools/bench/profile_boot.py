"""Counters and profiles of a boot burst on the all-in-one (the helper of
``tools/bench/aio-boot --profile DIR``).

Two commands, both run in the all-in-one's venv:

``counters --state S --out FILE``
    writes a JSON snapshot of what a burst costs, read from the processes'
    and servers' own counters:

    * ``cpu``: CPU seconds (user + system, ``/proc/PID/stat``) of every
      service ``tools/aio`` started (``S/pids/*.pid``), each with its
      child processes (the conductors' cotyledon workers, uwsgi's workers),
      summed per service kind (``nova-conductor1`` and ``nova-conductor2``
      are ``nova-conductor``);
    * ``zookeeper_packets``: packets the ZooKeeper server received
      (``mntr``'s ``zk_packets_received``), when the deployment's
      ``[orc] coordination_url`` is a ZooKeeper one;
    * ``transactions``: transactions committed, per database of Nova and
      placement (PostgreSQL's ``pg_stat_database.xact_commit``, reads
      included) or for the whole server (MySQL's ``Handler_commit``).

``report --dir DIR --servers N [--top K]``
    prints, per mode (``stock``, ``orc``) found in ``DIR``: the counters
    per boot (after minus before, divided by N) side by side with their
    ratio, then for every service profiled (py-spy's raw files
    ``MODE.SERVICE.txt``) the K functions with most samples, self (the
    sampled frame) and inclusive (anywhere in the stack), in seconds per
    boot (samples / rate / N).
"""

import argparse
import collections
import configparser
import glob
import json
import os
import re
import socket
import sys
import urllib.parse

CLOCK_TICKS = os.sysconf('SC_CLK_TCK')


def _conf(path):
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read(path)
    return parser


def _children(pid):
    kids = []
    for task in glob.glob('/proc/%d/task/*/children' % pid):
        try:
            with open(task) as f:
                kids += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return kids


def _cpu_seconds(pid):
    """User + system CPU seconds of ``pid`` and its descendants alive now
    (0.0 for a process that is gone)."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
        return 0.0
    # fields[0] is the state (field 3): utime and stime are fields 14, 15
    own = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return own + sum(_cpu_seconds(child) for child in _children(pid))


def service_kind(name):
    """``nova-conductor2`` -> ``nova-conductor``."""
    return re.sub(r'\d+$', '', name)


def cpu_by_service(state):
    """``{service kind: CPU seconds}`` of the services in ``state/pids``."""
    cpu = collections.Counter()
    for path in glob.glob(os.path.join(state, 'pids', '*.pid')):
        name = os.path.basename(path)[:-len('.pid')]
        try:
            with open(path) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            continue
        cpu[service_kind(name)] += _cpu_seconds(pid)
    return dict(cpu)


def zookeeper_packets(state):
    """Packets received by the deployment's ZooKeeper server, or None when
    it uses none."""
    url = _conf(os.path.join(state, 'etc', 'nova', 'nova.conf')).get(
        'orc', 'coordination_url', fallback='')
    if not url.startswith('zookeeper://'):
        return None
    host, _sep, port = urllib.parse.urlparse(url).netloc.partition(':')
    with socket.create_connection((host, int(port or 2181)), timeout=10) as s:
        s.sendall(b'mntr')
        data = b''
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    for line in data.decode().splitlines():
        key, _sep, value = line.partition('\t')
        if key == 'zk_packets_received':
            return int(value)
    raise RuntimeError('ZooKeeper %s: no zk_packets_received in mntr (is '
                       'mntr in 4lw.commands.whitelist?)' % url)


def transactions(state):
    """``{database: transactions committed}`` of Nova's and placement's
    databases (PostgreSQL), or ``{'server (mysql)': n}``."""
    import sqlalchemy as sa
    nova = _conf(os.path.join(state, 'etc', 'nova', 'nova.conf'))
    placement = _conf(os.path.join(state, 'etc', 'placement',
                                   'placement.conf'))
    urls = [nova.get('api_database', 'connection', fallback=None),
            nova.get('database', 'connection', fallback=None),
            placement.get('placement_database', 'connection',
                          fallback=None)]
    counts = {}
    for url in filter(None, urls):
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                if engine.dialect.name == 'postgresql':
                    counts[engine.url.database] = conn.execute(sa.text(
                        'SELECT xact_commit FROM pg_stat_database '
                        'WHERE datname = current_database()')).scalar()
                elif engine.dialect.name == 'mysql':
                    counts['server (mysql)'] = int(conn.execute(sa.text(
                        "SHOW GLOBAL STATUS LIKE 'Handler_commit'")
                    ).fetchone()[1])
        finally:
            engine.dispose()
    return counts


def counters(state):
    return {'cpu': cpu_by_service(state),
            'zookeeper_packets': zookeeper_packets(state),
            'transactions': transactions(state)}


# ------------------------------------------------------------- report
_FRAME = re.compile(r'^(?P<func>.*) \((?P<file>[^():]*)(:\d+)?\)$')
_PROCESS_FRAMES = re.compile(r'^(process \d+:"[^"]*";?)+')


def _function(frame):
    """``'Foo.bar (nova/x.py:12)'`` -> ``'Foo.bar (nova/x.py)'``."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    return '%s (%s)' % (match.group('func'), match.group('file'))


def read_raw(path):
    """py-spy's raw output (``frame;frame;... count`` per line, process
    frames first with ``--subprocesses``) as ``(self, inclusive, total)``:
    Counters of samples per function. Samples without a Python frame (a
    uwsgi worker waiting in C) are not counted."""
    own, inclusive, total = collections.Counter(), collections.Counter(), 0
    with open(path) as f:
        for line in f:
            stack, _sep, count = line.rstrip('\n').rpartition(' ')
            if not stack or not count.isdigit():
                continue
            count = int(count)
            # process frames first (their command lines may hold ';')
            stack = _PROCESS_FRAMES.sub('', stack)
            frames = [_function(fr) for fr in stack.split(';') if fr]
            if not frames:
                continue
            total += count
            own[frames[-1]] += count
            for function in set(frames):
                inclusive[function] += count
    return own, inclusive, total


def _delta(before, after):
    if isinstance(after, dict):
        return {k: _delta((before or {}).get(k, 0), v)
                for k, v in after.items()}
    if after is None or before is None:
        return None
    return after - before


def _ratio(orc, stock):
    if orc is None or stock in (None, 0):
        return '-'
    return '%.2f' % (orc / stock)


def report(directory, servers, top, rate):
    modes = [m for m in ('stock', 'orc') if os.path.exists(
        os.path.join(directory, 'counters.%s.before.json' % m))]
    per_boot = {}
    for mode in modes:
        with open(os.path.join(directory,
                               'counters.%s.before.json' % mode)) as f:
            before = json.load(f)
        with open(os.path.join(directory,
                               'counters.%s.after.json' % mode)) as f:
            after = json.load(f)
        per_boot[mode] = _delta(before, after)
    print('per boot (%d servers), from the processes\' and servers\' own '
          'counters' % servers)
    print('%-38s %12s %12s %9s' % ('', 'stock', 'orc', 'orc/stock'))

    def row(label, stock, orc, fmt):
        def cell(value):
            return '-' if value is None else fmt % (value / servers)
        print('%-38s %12s %12s %9s' % (
            label, cell(stock), cell(orc), _ratio(orc, stock)))
    stock, orc = per_boot.get('stock', {}), per_boot.get('orc', {})
    kinds = sorted(set(stock.get('cpu', {})) | set(orc.get('cpu', {})))
    for kind in kinds:
        row('CPU s, %s' % kind, stock.get('cpu', {}).get(kind),
            orc.get('cpu', {}).get(kind), '%.3f')
    row('CPU s, all services', sum(stock.get('cpu', {}).values()) or None,
        sum(orc.get('cpu', {}).values()) or None, '%.3f')
    row('ZooKeeper packets received', stock.get('zookeeper_packets'),
        orc.get('zookeeper_packets'), '%.1f')
    dbs = sorted(set(stock.get('transactions', {})) |
                 set(orc.get('transactions', {})))
    for db in dbs:
        row('transactions, %s' % db, stock.get('transactions', {}).get(db),
            orc.get('transactions', {}).get(db), '%.1f')
    for mode in modes:
        for path in sorted(glob.glob(os.path.join(directory,
                                                  '%s.*.txt' % mode))):
            service = os.path.basename(path)[len(mode) + 1:-len('.txt')]
            own, inclusive, total = read_raw(path)
            print('\n%s, %s: %d samples, %.3f s per boot' % (
                mode, service, total, total / rate / servers))
            for title, counter in (('self', own), ('inclusive', inclusive)):
                print('  top %d %s (s per boot, share of samples)' % (
                    top, title))
                for function, count in counter.most_common(top):
                    print('    %8.4f %5.1f%%  %s' % (
                        count / rate / servers, 100.0 * count / total,
                        function[:140]))


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest='command', required=True)
    c = sub.add_parser('counters')
    c.add_argument('--state', required=True)
    c.add_argument('--out', required=True)
    r = sub.add_parser('report')
    r.add_argument('--dir', required=True)
    r.add_argument('--servers', type=int, required=True)
    r.add_argument('--top', type=int, default=15)
    r.add_argument('--rate', type=int, required=True,
                   help='py-spy samples per second')
    args = parser.parse_args()
    if args.command == 'counters':
        with open(args.out, 'w') as f:
            json.dump(counters(args.state), f, indent=1)
    else:
        report(args.dir, args.servers, args.top, args.rate)


if __name__ == '__main__':
    sys.exit(main())
