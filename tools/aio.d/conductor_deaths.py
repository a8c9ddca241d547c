"""Repeated conductor deaths during boots: stock against nova-orc.

Stock's conductor lets go of a boot once it has cast it to the compute;
nova-orc's holds the boot through the spawn, and another conductor resumes
it from the journal once the dead one's ZooKeeper session expired. This
boots ``--boots`` servers on the all-in-one and, every ``--kill-every``
seconds, SIGKILLs the process group of one live conductor (chosen with
``random.Random(--seed)``), then brings it back the way systemd would, with
``tools/aio up`` (which restarts only dead services; it runs in the
background, one at a time, and its duration and any other service it
restarted are reported). The first kill comes ``--kill-every / 2`` s after
the first POST; killing stops once every boot ended (ACTIVE or ERROR) or
after ``--kill-bound`` s. The servers are POSTed one after the other from
a thread of their own: in a burst (``--spread 0``, the default) or one
every ``--spread`` s.

Then, dead conductors back, it waits (at most ``--settle`` s) for every
server to end and the deployment to be clean, and reports per mode: how
many servers are ACTIVE, ERROR, still BUILD; the :mod:`check_leaks`
problems by kind (allocations, guests, build requests, mappings, flows,
locks, jobs); the time from the first POST to the last server ended
(polled every second); for nova-orc how many boots were resumed and
quarantined; then deletes the servers and judges again.

With ``--pause S`` the conductors are paused instead of killed: every
``--kill-every`` seconds one conductor not paused already is stopped
(SIGSTOP of its process group: the launcher and its worker, as a frozen VM
would be) for ``S`` seconds, then continued (SIGCONT); nothing is
restarted. A pause longer than the ZooKeeper session makes the others take
its jobs over while it sleeps; on waking it must do nothing more. With
``--check`` every server must then end ACTIVE.

Two uses:

* ``tools/bench/conductor-deaths`` (the benchmark): for each mode brings
  the all-in-one up (``[AIO_STOCK=1] tools/aio up --conductors N --computes
  2`` with ``AIO_COMPUTE_DRIVER=orc_fake.SlowSpawnDriverWithoutFakeNodes``
  and ``[orc_fake] spawn_delay`` / ``guests_dir`` in
  ``$AIO_STATE/etc/nova/local.conf``), runs the trial, prints one line per
  mode and run and a comparison line (medians over ``--runs``);
* ``--no-deploy --check`` (the crash suite, ``test_failover.sh``): one orc
  trial on the deployment as it is; prints ``PASS:``/``FAIL:``
  (``FAIL`` when a server is left in BUILD or check_leaks finds a problem
  after the settle or after the delete).

Every loop and wait is bounded in count and time; every target is on
127.0.0.1 (the all-in-one's).
"""

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_leaks  # noqa: E402

SLOW_DRIVER = 'orc_fake.SlowSpawnDriverWithoutFakeNodes'
ENDED = ('ACTIVE', 'ERROR')


def _log(msg):
    print('[%s] %s' % (time.strftime('%H:%M:%S'), msg), flush=True)


class Reviver:
    """Runs ``tools/aio up`` in the background, one at a time, whenever
    asked (a request during a run makes one more run): dead conductors come
    back as under systemd, only later. Records each run's duration and the
    services it restarted that were not dead when it started."""

    def __init__(self, aio, state_dir, env, log_path):
        self.aio = aio
        self.state_dir = state_dir
        self.env = env
        self.log_path = log_path
        self.durations = []     # seconds per `tools/aio up`
        self.failures = 0       # runs that exited non-zero
        self.disturbed = []     # 'service (pid A -> B)' restarted while alive
        self._killed = set()    # killed since the running `up` began
        self._wanted = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def request(self):
        """Ask for a `tools/aio up` (soon, or right after the running one)."""
        self._idle.clear()
        self._wanted.set()

    def killed(self, service):
        """Note that ``service`` was killed: its restart is no disturbance.
        """
        self._killed.add(service)

    def wait_idle(self, timeout):
        """Wait up to ``timeout`` seconds until no run is asked or running;
        True if so."""
        return self._idle.wait(timeout)

    def close(self):
        self._stop = True
        self._wanted.set()

    def _loop(self):
        while not self._stop:
            self._wanted.wait()
            if self._stop:
                return
            self._wanted.clear()
            self._killed = set()
            before = check_leaks.service_pids(self.state_dir)
            t0 = time.monotonic()
            with open(self.log_path, 'a') as out:
                out.write('=== %s tools/aio up\n' % time.strftime('%T'))
                out.flush()
                try:
                    rc = subprocess.run(
                        [self.aio, 'up'], env=self.env, stdout=out,
                        stderr=subprocess.STDOUT, timeout=600).returncode
                except subprocess.TimeoutExpired:
                    rc = 'timeout'
            took = time.monotonic() - t0
            self.durations.append(took)
            after = check_leaks.service_pids(self.state_dir)
            for name, pid in before.items():
                if (name in after and after[name] != pid and
                        name not in self._killed):
                    self.disturbed.append('%s (pid %d -> %d)' % (
                        name, pid, after[name]))
            if rc != 0:
                self.failures += 1
                # e.g. a conductor killed while `up` pinged it: run again
                self._wanted.set()
            _log('tools/aio up: %.1fs, rc %s' % (took, rc))
            if not self._wanted.is_set():
                self._idle.set()


class Trial:
    """One mode's run: boots, kills, settle, judgement, delete."""

    def __init__(self, args, mode, seed, env):
        self.args = args
        self.mode = mode
        self.seed = seed
        self.env = env
        self.state_dir = args.state
        self.prefix = 'deaths-%s-%d-%s-' % (mode, seed,
                                             time.strftime('%H%M%S'))

    def _connect(self):
        return check_leaks.admin_connection(self.state_dir,
                                            compute_api_version='2.latest')

    def _settled_problems(self, timeout):
        """check_leaks problems once clean, or the last seen after
        ``timeout`` seconds: ``[(kind, message)]``."""
        deadline = time.monotonic() + timeout
        while True:
            found = check_leaks.classified_problems(
                check_leaks.state(self.state_dir))
            if not found or time.monotonic() > deadline:
                return found
            time.sleep(2)

    def _create_all(self, conn, image, flavor, created, t0):
        """POST the servers (burst, or one every --spread s); ``created``
        gets ``(server_id, seconds since t0)``; failures are recorded as
        ``(None, error)``."""
        for i in range(self.args.boots):
            wait = t0 + i * self.args.spread - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                server = conn.compute.create_server(
                    name='%s%d' % (self.prefix, i), image_id=image,
                    flavor_id=flavor, networks='none')
                created.append((server.id, time.monotonic() - t0))
            except Exception as e:
                created.append((None, '%s: %s' % (e.__class__.__name__, e)))

    def _pause_one(self, rng, kills, t0, paused):
        """SIGSTOP a conductor not paused already; SIGCONT it ``--pause``
        seconds later (a timer in ``paused``)."""
        live = check_leaks.service_pids(self.state_dir, 'nova-conductor')
        awake = sorted(name for name in live if name not in paused or
                       not paused[name].is_alive())
        if not awake:
            kills.append((time.monotonic() - t0, None))
            _log('pause: every conductor is paused, skipped')
            return
        name = rng.choice(awake)
        pid = live[name]
        os.killpg(pid, signal.SIGSTOP)

        def wake():
            try:
                os.killpg(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            _log('SIGCONT %s (process group %d)' % (name, pid))
        timer = threading.Timer(self.args.pause, wake)
        timer.start()
        paused[name] = timer
        kills.append((time.monotonic() - t0, name))
        _log('SIGSTOP %s (process group %d) for %ss' % (
            name, pid, self.args.pause))

    def _kill_one(self, rng, kills, t0, reviver):
        live = check_leaks.service_pids(self.state_dir, 'nova-conductor')
        if not live:
            kills.append((time.monotonic() - t0, None))
            _log('kill: no live conductor, skipped')
            return
        name = rng.choice(sorted(live))
        pid = live[name]
        try:
            os.killpg(pid, signal.SIGKILL)   # the launcher and its worker
        except ProcessLookupError:
            pass
        reviver.killed(name)
        kills.append((time.monotonic() - t0, name))
        _log('SIGKILL %s (process group %d), %d live before' % (
            name, pid, len(live)))

    def run(self):
        """Run the trial; returns its result dict."""
        args = self.args
        res = {'mode': self.mode, 'seed': self.seed, 'boots': args.boots,
               'pause': args.pause}
        conn = self._connect()
        image = conn.image.find_image('cirros-fake').id
        flavor = conn.compute.find_flavor('m1.nano').id
        res['before'] = [m for _k, m in check_leaks.classified_problems(
            check_leaks.state(self.state_dir))]
        for message in res['before']:
            _log('already there before the trial: %s' % message)
        project = conn.current_project_id
        quotas = conn.get_compute_quotas(project)
        saved = {k: quotas[k] for k in ('instances', 'cores', 'ram')}
        conn.set_compute_quotas(project, instances=-1, cores=-1, ram=-1)
        reviver = Reviver(args.aio, self.state_dir, self.env,
                          os.path.join(self.state_dir, 'logs',
                                       'conductor-deaths-up.log'))
        created = []
        try:
            self._boot_and_kill(conn, image, flavor, created, reviver, res)
            self._delete(conn, [sid for sid, _ in created if sid], res)
        finally:
            reviver.close()
            conn.set_compute_quotas(project, **saved)
        return res

    def _boot_and_kill(self, conn, image, flavor, created, reviver, res):
        args = self.args
        rng = random.Random(self.seed)
        kills, ended = [], {}
        t0 = time.monotonic()
        creator = threading.Thread(
            target=self._create_all,
            args=(self._connect(), image, flavor, created, t0), daemon=True)
        creator.start()
        next_kill = args.kill_every / 2.0
        status = {}
        paused = {}

        def poll():
            try:
                servers = list(conn.compute.servers(name='^' + self.prefix))
            except Exception as e:   # counted as 'not seen': polled again
                _log('server list: %s' % e)
                return
            for server in servers:
                status[server.id] = server.status
                if server.status in ENDED and server.id not in ended:
                    ended[server.id] = time.monotonic() - t0

        _log('%s: %d boots (%s), a conductor %s every %ss' % (
            self.mode, args.boots, 'burst' if not args.spread else
            'one every %ss' % args.spread,
            'paused for %ss' % args.pause if args.pause else 'killed',
            args.kill_every))
        while time.monotonic() - t0 < args.kill_bound:
            now = time.monotonic() - t0
            if now >= next_kill:
                if args.pause:
                    self._pause_one(rng, kills, t0, paused)
                else:
                    self._kill_one(rng, kills, t0, reviver)
                    reviver.request()
                next_kill += args.kill_every
            poll()
            ids = [sid for sid, _ in created if sid]
            if (not creator.is_alive() and
                    all(sid in ended for sid in ids)):
                break
            time.sleep(1)
        res['kill_loop'] = time.monotonic() - t0
        for timer in paused.values():
            # the last ones sleep their pause out: every conductor wakes
            timer.join(args.pause + 5)
        creator.join(timeout=120)
        res['kills'] = [name for _, name in kills if name]
        res['post_errors'] = [e for sid, e in created if sid is None]
        # conductors back, then the settle
        settle_end = time.monotonic() + args.settle
        reviver.request()
        reviver.wait_idle(max(1, settle_end - time.monotonic()))
        ids = [sid for sid, _ in created if sid]
        while time.monotonic() < settle_end:
            poll()
            if all(status.get(sid) in ENDED for sid in ids):
                break
            time.sleep(1)
        found = self._settled_problems(max(0, settle_end - time.monotonic()))
        poll()
        res['settled_after'] = time.monotonic() - t0
        for what in ('ACTIVE', 'ERROR', 'BUILD'):
            res[what] = sum(1 for sid in ids if status.get(sid) == what)
        res['other'] = len(ids) - res['ACTIVE'] - res['ERROR'] - res['BUILD']
        res['last_ended'] = (max(ended[sid] for sid in ids)
                             if ids and all(sid in ended for sid in ids)
                             else None)
        res['leaks'] = {k: sum(1 for kind, _ in found if kind == k)
                        for k in check_leaks.KINDS}
        res['leak_messages'] = [m for _, m in found]
        res['up_durations'] = list(reviver.durations)
        res['up_failures'] = reviver.failures
        res['disturbed'] = list(reviver.disturbed)
        if self.mode == 'orc':
            metas = check_leaks.flow_metas(self.state_dir)
            claims = [metas.get(sid, {}).get('claims', 0) for sid in ids]
            res['resumed'] = sum(1 for c in claims if c > 1)
            res['max_claims'] = max(claims or [0])
            res['quarantined'] = sum(
                1 for sid in ids if metas.get(sid, {}).get('quarantined'))

    def _delete(self, conn, ids, res):
        t0 = time.monotonic()
        for sid in ids:
            try:
                conn.compute.delete_server(sid)
            except Exception as e:
                _log('delete %s: %s' % (sid, e))
        left = set(ids)
        deadline = time.monotonic() + 180
        while left and time.monotonic() < deadline:
            left = {s.id for s in conn.compute.servers(name='^' + self.prefix)}
            time.sleep(1)
        res['not_deleted'] = len(left)
        res['delete_took'] = time.monotonic() - t0
        found = self._settled_problems(60)
        res['leaks_after_delete'] = {
            k: sum(1 for kind, _ in found if kind == k)
            for k in check_leaks.KINDS}
        res['leak_messages_after_delete'] = [m for _, m in found]


def _leak_text(leaks):
    parts = ['%d %s' % (n, k) for k, n in leaks.items() if n]
    return ', '.join(parts) if parts else 'none'


def summary(res):
    """One line for a trial's result."""
    last = ('%.1fs after the first POST' % res['last_ended']
            if res['last_ended'] is not None
            else 'never (%d not ended)' % (res['BUILD'] + res['other']))
    ups = res['up_durations']
    line = ('%s seed %d: %d boots, %d %s: %d ACTIVE, %d ERROR, %d BUILD'
            '%s; last ended %s; leaks %s; after delete '
            '%s%s; tools/aio up x%d median %.1fs (%d failed), restarted live '
            'services: %s' % (
                res['mode'], res['seed'], res['boots'], len(res['kills']),
                'pauses of %ss' % res['pause'] if res.get('pause')
                else 'kills',
                res['ACTIVE'], res['ERROR'], res['BUILD'],
                ', %d other' % res['other'] if res['other'] else '', last,
                _leak_text(res['leaks']),
                _leak_text(res['leaks_after_delete']),
                ' (%d not deleted)' % res['not_deleted']
                if res['not_deleted'] else '',
                len(ups), statistics.median(ups) if ups else 0,
                res['up_failures'], ', '.join(res['disturbed']) or 'none'))
    if res['mode'] == 'orc':
        line += '; resumed %d boots (max %d claims), quarantined %d' % (
            res['resumed'], res['max_claims'], res['quarantined'])
    if res['post_errors']:
        line += '; %d POSTs failed: %s' % (len(res['post_errors']),
                                           res['post_errors'][0])
    return line


def compare(results):
    """The comparison line: medians per mode over the runs."""
    parts = []
    for what in ('BUILD', 'ERROR', 'ACTIVE', 'leaks', 'last_ended'):
        vals = []
        for mode in ('stock', 'orc'):
            runs = [r for r in results if r['mode'] == mode]
            if not runs:
                continue
            if what == 'leaks':
                xs = [sum(r['leaks'].values()) +
                      sum(r['leaks_after_delete'].values()) for r in runs]
            elif what == 'last_ended':
                xs = [r['last_ended'] if r['last_ended'] is not None
                      else float('inf') for r in runs]
            else:
                xs = [r[what] for r in runs]
            m = statistics.median(xs)
            if what != 'last_ended':
                vals.append('%s %g' % (mode, m))
            else:
                vals.append('%s %s' % (mode, '%.1fs' % m if m != float('inf')
                                       else 'never'))
        parts.append('%s %s' % (what if what != 'last_ended' else
                                'last ended', ' / '.join(vals)))
    n = max([sum(1 for r in results if r['mode'] == m)
             for m in ('stock', 'orc')])
    return 'compare (medians over %d run(s) per mode): %s' % (
        n, '; '.join(parts))


def deploy(args, mode, env):
    """Bring the all-in-one up for ``mode`` with the slow fake driver."""
    local = os.path.join(args.state, 'etc', 'nova', 'local.conf')
    guests = os.path.join(args.state, 'guests')
    os.makedirs(os.path.dirname(local), exist_ok=True)
    os.makedirs(guests, exist_ok=True)
    with open(local, 'w') as f:
        f.write('# written by tools/bench/conductor-deaths\n[orc_fake]\n'
                'spawn_delay = %s\nguests_dir = %s\n' % (args.spawn_delay,
                                                         guests))
    t0 = time.monotonic()
    subprocess.run([args.aio, 'up', '--conductors', str(args.conductors),
                    '--computes', str(args.computes)], env=env, check=True,
                   stdout=subprocess.DEVNULL, timeout=900)
    _log('%s: tools/aio up --conductors %d --computes %d: %.1fs' % (
        mode, args.conductors, args.computes, time.monotonic() - t0))


def mode_env(mode, set_driver):
    """The environment of `tools/aio` for ``mode``: AIO_STOCK=1 for stock
    (and absent for orc); the slow fake driver when ``set_driver``."""
    env = dict(os.environ)
    env.pop('AIO_STOCK', None)
    if mode == 'stock':
        env['AIO_STOCK'] = '1'
    if set_driver:
        env['AIO_COMPUTE_DRIVER'] = SLOW_DRIVER
    return env


def main(argv=None):
    parser = argparse.ArgumentParser(prog='conductor_deaths.py')
    parser.add_argument('--state', required=True, help='AIO_STATE folder')
    parser.add_argument('--aio', required=True, help='path of tools/aio')
    parser.add_argument('--mode', choices=('stock', 'orc', 'both'),
                        default='both')
    parser.add_argument('--boots', type=int, default=12)
    parser.add_argument('--spawn-delay', type=float,
                        default=3.0, help='[orc_fake] spawn_delay, seconds')
    parser.add_argument('--kill-every', type=float, default=8.0,
                        help='seconds between two conductor kills')
    parser.add_argument('--kill-bound', type=float, default=150.0,
                        help='stop killing after this many seconds')
    parser.add_argument('--pause', type=float, default=0.0, metavar='S',
                        help='pause (SIGSTOP) conductors for S seconds '
                             'instead of killing them')
    parser.add_argument('--conductors', type=int, default=3)
    parser.add_argument('--computes', type=int, default=2)
    parser.add_argument('--spread', type=float, default=0.0,
                        help='seconds between two POSTs (0: a burst)')
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--runs', type=int, default=1,
                        help='runs per mode (seeds SEED, SEED+1...)')
    parser.add_argument('--settle', type=float, default=180.0,
                        help='seconds to wait, once killing stopped, for '
                             'every server to end and the leaks to go')
    parser.add_argument('--no-deploy', action='store_true',
                        help='use the deployment as it is (one mode)')
    parser.add_argument('--check', action='store_true',
                        help='print PASS:/FAIL: (no BUILD, no leak)')
    parser.add_argument('--json', metavar='FILE',
                        help='append each result as a JSON line')
    args = parser.parse_args(argv)
    modes = ['stock', 'orc'] if args.mode == 'both' else [args.mode]
    if args.no_deploy and len(modes) > 1:
        parser.error('--no-deploy runs one mode')
    results, failed = [], 0
    for run in range(args.runs):
        for mode in modes:
            seed = args.seed + run
            env = mode_env(mode, set_driver=not args.no_deploy)
            if not args.no_deploy:
                deploy(args, mode, env)
            res = Trial(args, mode, seed, env).run()
            results.append(res)
            if args.json:
                with open(args.json, 'a') as f:
                    f.write(json.dumps(res, sort_keys=True) + '\n')
            for message in res['leak_messages']:
                _log('LEAK: %s' % message)
            for message in res['leak_messages_after_delete']:
                _log('LEAK after delete: %s' % message)
            line = summary(res)
            print(line, flush=True)
            if args.check:
                bad = (res['BUILD'] + res['other'] + res['not_deleted'] +
                       sum(res['leaks'].values()) +
                       sum(res['leaks_after_delete'].values()) +
                       len(res['post_errors']) +
                       # paused, not killed: nothing excuses an ERROR
                       (res['ERROR'] if args.pause else 0))
                failed += bool(bad)
                print('%s: conductor-%s (%s)' % (
                    'FAIL' if bad else 'PASS',
                    'pauses' if args.pause else 'deaths', line), flush=True)
    print(compare(results), flush=True)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
