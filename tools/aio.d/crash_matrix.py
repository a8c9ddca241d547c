"""Crash matrix: kill the conductor running a boot, at every step of it.

Run by ``tools/aio.d/test_failover.sh`` against an all-in-one brought up
with 3 conductors (``tools/aio.d/faulty_conductor.py``: a conductor kills
itself with SIGKILL at the fault point named in ``$AIO_FAULT_FILE``), 2
computes with a slow fake driver (``orc_fake``) and ZooKeeper sessions of
2 s. For each case it boots one server with the API, lets a conductor die
(or stops one with SIGSTOP, or restarts ZooKeeper), waits for the server's
end state, judges the deployment with :mod:`check_leaks`, deletes the
server, judges again, and brings dead conductors back (``tools/aio up``).

Cases (``ATOM WHEN``): every task of the boot flow ``before`` (its start is
journaled, nothing done) and ``after`` (done, result not journaled); spawn
``during`` (killed 1 s into a 2 s spawn); the host steps' ``revert`` (spawn
failing on every host, the conductor killed while undoing); plus
``paused`` (SIGSTOP past the session timeout while the spawn runs, SIGCONT
once another conductor finished) and ``zookeeper-restart`` (ZooKeeper
stopped and started while the spawn runs).

Pause cases (``ATOM pause-before``, ``ATOM pause-after``, ``ATOM
pause-inside N``, ``post pause-before``): the conductor stops itself
(SIGSTOP) at the point, past its session; once another conductor finished
the flow the matrix wakes it (SIGCONT) inside the task it was in. It must
do nothing more: the server stays ACTIVE, with one ``create`` action and
one set of BDMs, and ``check_leaks`` finds nothing (no guest, allocation,
lock, record or job left, no build request), before and after the delete.
``pause-inside N`` stops it between two database transactions of the task
after N of them wrote (``create_record pause-inside 1``: the instance
record created, its action, BDMs, mapping and build request delete not
yet); ``post pause-before`` stops the RPC handler between journaling the
flow and posting its job (another conductor adopts it).

With ``--with-neutron`` (or ``--neutron-only``) the neutron cases follow
(``neutron ATOM WHEN [MODIFIER...]``): the matrix first runs ``tools/aio up
--with-neutron`` (real neutron-server, ML2, a fake L2 agent) and creates a
network ``crash-net``; each server boots with one port on it, created by
nova, or with ``port`` a port the user created and passed as ``port=``.
``user``: the server is booted by the demo user (a member of the project
``demo``, not admin) and judged as that user's: its port belongs to the
project ``demo``, and the fake driver's image download (``[orc_fake]
fetch_image``, which ``test_failover_neutron.sh`` turns on) was made with
the demo user's credentials, so a flow resumed by another conductor acts as
the user who asked, not as Nova's service.
``restart-compute`` (a modifier of any case; the default cases have it
for each host step, ``claim_host``, ``networks``, ``block_devices``,
``spawn`` and ``finalize``, ``before`` and ``after``): once the conductor
died, the compute that ran the step (every compute when the server has no
host yet) is killed (SIGKILL) and started again (``tools/aio up``) before
the resumed flow reaches it, so that its in-memory step records are gone;
such a case is judged once the flow ended (the restarted compute puts the
build in ERROR before the flow goes on). A neutron case
is judged with the port checks of :mod:`check_leaks` too: exactly one port
for an ACTIVE server, none for a failed one, bound to the server's host, no
port of a server that is gone, the user's port kept and unbound after the
server's delete (or its failed build).

Prints ``PASS:``/``FAIL:`` per case, failover timings, and ``N passed, N
failed``; exits 1 on a failure.
"""

import argparse
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_leaks  # noqa: E402

TASKS = ['bury_on_failure', 'lock', 'schedule', 'create_record',
         'claim_allocation', 'claim_host', 'networks', 'block_devices',
         'spawn', 'finalize']
REVERTS = ['spawn', 'claim_host', 'claim_allocation', 'create_record']
#: the boot flow's steps that run on the compute
HOST_STEPS = ['claim_host', 'networks', 'block_devices', 'spawn', 'finalize']
#: words of a neutron case that are no part of its fault point
MODIFIERS = ('port', 'user', 'restart-compute')
NEUTRON_CASES = [
    'neutron networks before',
    'neutron networks after',
    'neutron spawn during 1',
    'neutron networks revert',
    'neutron networks after port',
    'neutron networks revert port',
    'neutron networks after restart-compute',
    'neutron networks after port restart-compute',
    'neutron networks before user',
]
NETWORK = 'crash-net'


#: conductors paused past their session and woken once a peer finished
PAUSES = (['%s pause-before' % task for task in TASKS] +
          ['create_record pause-inside 1'] +
          ['%s pause-after' % task for task in (
              'schedule', 'create_record', 'claim_allocation', 'spawn',
              'finalize')] +
          ['post pause-before'])


def default_cases():
    """The cases without neutron (servers booted with ``--nic none``)."""
    cases = []
    for task in TASKS:
        cases += ['%s before' % task, '%s after' % task]
    cases.append('spawn during 1')
    cases += ['%s revert' % task for task in REVERTS]
    cases += ['paused', 'zookeeper-restart']
    cases += ['%s %s restart-compute' % (task, when)
              for task in HOST_STEPS for when in ('before', 'after')]
    cases += PAUSES
    return cases


class Matrix:

    def __init__(self, args):
        self.args = args
        self.state = args.state
        self.fault = os.path.join(self.state, 'fault')
        self.fail_spawn = os.path.join(self.state, 'fail-spawn')
        self.conn = check_leaks.admin_connection(
            self.state, compute_api_version='2.latest')
        self.image = self.conn.image.find_image('cirros-fake').id
        self.flavor = self.conn.compute.find_flavor('m1.nano').id
        self.passed = self.failed = 0
        self.network_id = None      # crash-net, once neutron is up
        self.user_conn = None       # as the demo user, once a case needs it
        self.preexisting = set()    # problems found before the neutron part

    # ------------------------------------------------------------ helpers
    def _log(self, msg):
        print('[%s] %s' % (time.strftime('%H:%M:%S'), msg), flush=True)

    def _check(self, ok, what):
        return None if ok else what

    def _server_end(self, server_id, timeout=180):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server = self.conn.compute.get_server(server_id)
            if server.status in ('ACTIVE', 'ERROR'):
                return server
            time.sleep(0.5)
        return self.conn.compute.get_server(server_id)

    def _settled(self, timeout=60, **port_checks):
        """check_leaks problems once the deployment settled (flows end just
        after the server's state), or the last problems seen;
        ``port_checks``: :func:`check_leaks.problems`' ``expected_ports``
        and ``user_ports``. Problems seen before the neutron part began are
        left out."""
        deadline = time.monotonic() + timeout
        while True:
            found = [p for p in check_leaks.problems(
                check_leaks.state(self.state), **port_checks)
                if p not in self.preexisting]
            if not found or time.monotonic() > deadline:
                return found
            time.sleep(1)

    def _delete(self, server_id, timeout=120):
        self.conn.compute.delete_server(server_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.conn.compute.find_server(server_id) is None:
                return True
            time.sleep(0.5)
        return False

    def _conductor_pids(self):
        pids = {}
        pid_dir = os.path.join(self.state, 'pids')
        for name in os.listdir(pid_dir):
            if name.startswith('nova-conductor') and name.endswith('.pid'):
                with open(os.path.join(pid_dir, name)) as f:
                    pid = int(f.read().strip() or 0)
                try:
                    os.kill(pid, 0)
                except OSError:
                    continue
                pids[name[:-4]] = pid
        return pids

    def _revive(self):
        """Bring dead conductors back (tools/aio up restarts only them)."""
        if len(self._conductor_pids()) >= 3:
            return
        self._log('tools/aio up: restarting dead conductors')
        subprocess.run([self.args.aio, 'up'], check=True,
                       stdout=subprocess.DEVNULL)

    def _flow_meta(self, server_id):
        rows = check_leaks._rows(self._journal_url(), (
            "SELECT data FROM orc_flow_details WHERE instance_uuid = '%s' "
            "ORDER BY created_at DESC" % server_id))
        return json.loads(rows[0][0])['meta'] if rows else {}

    def _flow_end(self, server_id, timeout=240):
        """The server once its boot flow ended (SUCCESS, REVERTED or
        FAILURE), or as it is when ``timeout`` passed: its status alone can
        pass through ERROR on the way (a restarted compute puts the
        instances it was building in ERROR before the flow goes on)."""
        self._wait_flow_ended(server_id, timeout)
        return self._server_end(server_id, timeout=30)

    def _wait_flow_ended(self, server_id, timeout):
        """True once the server's newest boot flow ended (SUCCESS,
        REVERTED or FAILURE), False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = check_leaks._rows(self._journal_url(), (
                "SELECT state FROM orc_flow_details WHERE instance_uuid = "
                "'%s' ORDER BY created_at DESC" % server_id))
            if rows and rows[0][0] in ('SUCCESS', 'REVERTED', 'FAILURE'):
                return True
            time.sleep(0.5)
        return False

    def _journal_url(self):
        nova = check_leaks._conf(os.path.join(self.state, 'etc', 'nova',
                                              'nova.conf'))
        return (nova.get('orc', 'connection', fallback=None) or
                nova.get('api_database', 'connection'))

    def _wait_flow_state(self, server_id, atom, wanted, timeout=60):
        """Wait until ``atom`` of the server's flow is ``wanted``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = check_leaks._rows(self._journal_url(), (
                "SELECT a.state FROM orc_atom_details a JOIN orc_flow_details"
                " f ON a.flow_uuid = f.uuid WHERE f.instance_uuid = '%s' AND "
                "a.name = '%s'" % (server_id, atom)))
            if rows and rows[0][0] == wanted:
                return True
            time.sleep(0.2)
        return False

    # -------------------------------------------------------------- cases
    def run_case(self, case):
        """Run one case (see the module's docstring), print PASS or FAIL."""
        for path in (self.fault, self.fault + '.fired', self.fail_spawn):
            if os.path.exists(path):
                os.unlink(path)
        words = case.split()
        neutron = words[0] == 'neutron'
        if neutron:
            self._neutron_setup()
            words = words[1:]
        modifiers = [w for w in words if w in MODIFIERS]
        words = [w for w in words if w not in MODIFIERS]
        expect = 'ACTIVE'
        if len(words) >= 2:
            if words[1] == 'revert':
                # every host fails the spawn: the flow reverts to ERROR and
                # the conductor dies while undoing
                with open(self.fail_spawn, 'w') as f:
                    f.write('aio-compute1 aio-compute2\n')
                expect = 'ERROR'
            with open(self.fault, 'w') as f:
                f.write(' '.join(words) + '\n')
        networks, user_port = 'none', None
        if neutron and 'port' in modifiers:
            user_port = self.conn.network.create_port(
                network_id=self.network_id,
                name='crash-%s' % case.replace(' ', '-')).id
            networks = [{'port': user_port}]
        elif neutron:
            networks = [{'uuid': self.network_id}]
        t0 = time.monotonic()
        booter = self._user_conn() if 'user' in modifiers else self.conn
        server = booter.compute.create_server(
            name='crash-%s' % case.replace(' ', '-'), image_id=self.image,
            flavor_id=self.flavor, networks=networks)
        problems = []
        pause = len(words) >= 2 and words[1].startswith('pause-')
        if pause:
            problems += self._wake_after_takeover(server.id, words[0])
        if case == 'paused':
            problems += self._pause_during_spawn(server.id)
        elif case == 'zookeeper-restart':
            problems += self._restart_zookeeper_during_spawn(server.id)
        if 'restart-compute' in modifiers:
            problems += self._restart_compute_after_fault(server.id)
        end = (self._flow_end(server.id)
               if neutron or 'restart-compute' in modifiers else
               self._server_end(server.id))
        took = time.monotonic() - t0
        problems.append(self._check(end.status == expect, 'server %s, not %s '
                                    '(fault: %s)' % (end.status, expect,
                                                     end.fault)))
        port_checks = {}
        if neutron:
            # one port on crash-net while ACTIVE, none after a failed build
            port_checks = {
                'expected_ports': {server.id: 1 if expect == 'ACTIVE' else 0},
                'user_ports': {user_port: server.id} if user_port else {}}
        # the flow ends after the server's state (killed after finalize:
        # the server is ACTIVE before another conductor resumes the flow)
        problems += self._settled(**port_checks)
        if len(words) >= 2:
            fired = os.path.exists(self.fault + '.fired')
            problems.append(self._check(fired, 'fault point never reached'))
            meta = self._flow_meta(server.id)
            # a poster paused before posting: adopted, claimed once
            claims = 1 if words[0] == 'post' else 2
            problems.append(self._check(
                meta.get('claims', 0) >= claims,
                'flow claimed %s times: no conductor resumed it' %
                meta.get('claims')))
        if pause:
            problems += self._one_of_each(server.id)
        if 'user' in modifiers and end.status == 'ACTIVE':
            problems += self._acted_as_user(server.id)
        if os.path.exists(self.fail_spawn):
            os.unlink(self.fail_spawn)
        problems.append(self._check(self._delete(server.id),
                                    'server not deleted'))
        port_checks.pop('expected_ports', None)
        problems += ['after delete: %s' % p
                     for p in self._settled(**port_checks)]
        if user_port:
            self.conn.network.delete_port(user_port, ignore_missing=True)
        problems = [p for p in problems if p]
        if problems:
            self.failed += 1
            print('FAIL: %s (%.1fs): %s' % (case, took, '; '.join(problems)),
                  flush=True)
        else:
            self.passed += 1
            print('PASS: %s (%.1fs, %s)' % (case, took, end.status),
                  flush=True)
        self._revive()

    def _neutron_running(self):
        """The deployment was brought up with neutron and its neutron-api
        runs (then nova's configuration has no stub in it)."""
        try:
            with open(os.path.join(self.state, 'aio.env')) as f:
                if 'WITH_NEUTRON=1' not in f.read().split():
                    return False
            with open(os.path.join(self.state, 'pids',
                                   'neutron-api.pid')) as f:
                os.kill(int(f.read().strip()), 0)
        except (OSError, ValueError):
            return False
        return True

    def _neutron_setup(self):
        """Once: ``tools/aio up --with-neutron`` unless neutron runs
        already, a fresh admin connection (the catalog now has the network
        service) and the network ``crash-net`` with a subnet."""
        if self.network_id:
            return
        t0 = time.monotonic()
        if not self._neutron_running():
            log = os.path.join(self.state, 'logs',
                               'crash-matrix-neutron-up.log')
            self._log('tools/aio up --with-neutron (output in %s)' % log)
            with open(log, 'a') as out:
                subprocess.run([self.args.aio, 'up', '--with-neutron'],
                               check=True, stdout=out,
                               stderr=subprocess.STDOUT)
        self.conn = check_leaks.admin_connection(
            self.state, compute_api_version='2.latest')
        net = self.conn.network.find_network(NETWORK)
        if net is None:
            # shared: the demo user boots on it too (the ``user`` cases)
            net = self.conn.network.create_network(name=NETWORK,
                                                   is_shared=True)
            self.conn.network.create_subnet(
                network_id=net.id, name=NETWORK + '-subnet', ip_version=4,
                cidr='10.78.0.0/24')
        self.network_id = net.id
        self.preexisting = set(check_leaks.problems(
            check_leaks.state(self.state)))
        for line in sorted(self.preexisting):
            self._log('NOTE: left before the neutron cases (not judged): %s'
                      % line)
        self._log('neutron up, network %s (%.0fs)' % (
            net.id, time.monotonic() - t0))

    def _restart_compute_after_fault(self, server_id):
        """As soon as the conductor died at its fault point, SIGKILL the
        compute the server is on and start it again (``tools/aio up``): the
        resumed flow's call waits in the compute's queue, and the compute
        that answers it has no record of the step's first run."""
        fired = self.fault + '.fired'
        deadline = time.monotonic() + 120
        while not os.path.exists(fired) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not os.path.exists(fired):
            return ['fault point never reached']
        host = self.conn.compute.get_server(server_id).compute_host or ''
        # before claim_host the server has no host yet: every compute
        names = (['nova-compute' + host.replace('aio-compute', '')] if host
                 else sorted(n[:-4] for n in os.listdir(
                     os.path.join(self.state, 'pids'))
                     if n.startswith('nova-compute') and n.endswith('.pid')))
        for name in names:
            try:
                with open(os.path.join(self.state, 'pids',
                                       name + '.pid')) as f:
                    pid = int(f.read().strip())
            except (OSError, ValueError):
                return ['no pid of %s (server on %r)' % (name, host)]
            os.killpg(pid, signal.SIGKILL)
        t0 = time.monotonic()
        self._log('SIGKILL %s (process groups); tools/aio up' %
                  ' '.join(names))
        subprocess.run([self.args.aio, 'up'], check=True,
                       stdout=subprocess.DEVNULL)
        self._log('%s started again, %.0fs after the kill' % (
            ' '.join(names), time.monotonic() - t0))
        return []

    def _user_conn(self):
        """A connection as the deployment's demo user (``demo-openrc``)."""
        if self.user_conn is None:
            self.user_conn = check_leaks.admin_connection(
                self.state, rc='demo-openrc', compute_api_version='2.latest')
        return self.user_conn

    def _acted_as_user(self, server_id):
        """The resumed build acted as the demo user who asked for it: the
        server's ports belong to the project ``demo``, and the guest's file
        (``[orc_fake] fetch_image``) names the demo user and project as the
        credentials its image was downloaded with."""
        user = self._user_conn()
        user_id, project_id = user.current_user_id, user.current_project_id
        problems = []
        ports = list(self.conn.network.ports(device_id=server_id))
        problems.append(self._check(ports, 'no port of the server'))
        for port in ports:
            problems.append(self._check(
                port.project_id == project_id,
                'port %s belongs to project %s, not demo (%s)' % (
                    port.id, port.project_id, project_id)))
        host = self.conn.compute.get_server(server_id).compute_host or ''
        nova = check_leaks._conf(os.path.join(self.state, 'etc', 'nova',
                                              'local.conf'))
        path = os.path.join(nova.get('orc_fake', 'guests_dir', fallback=''),
                            host, server_id)
        try:
            with open(path) as f:
                fetched = f.read().split()
        except OSError:
            fetched = []
        problems.append(self._check(
            fetched[:2] == [user_id, project_id],
            'image downloaded as %s, not as the demo user %s of project %s '
            '([orc_fake] fetch_image on?)' % (
                ' '.join(fetched[:2]) or 'nobody', user_id, project_id)))
        return problems

    def _running_conductor(self, server_id):
        meta = self._flow_meta(server_id)
        host = meta.get('conductor', '')
        name = 'nova-conductor' + host.replace('aio-conductor', '')
        return name, self._conductor_pids().get(name)

    def _pause_during_spawn(self, server_id):
        """SIGSTOP the conductor running the spawn past the session timeout;
        SIGCONT it once another conductor claimed the job: it must do
        nothing more (one guest, the journal intact, the boot finished by
        the other)."""
        if not self._wait_flow_state(server_id, 'spawn', 'RUNNING'):
            return ['spawn never started']
        name, pid = self._running_conductor(server_id)
        if not pid:
            return ['no live conductor runs the flow (%s)' % name]
        # the whole process group: the service's launcher and its worker
        os.killpg(pid, signal.SIGSTOP)
        self._log('SIGSTOP %s (process group %d)' % (name, pid))
        try:
            deadline = time.monotonic() + 60
            while (self._flow_meta(server_id).get('claims', 0) < 2 and
                   time.monotonic() < deadline):
                time.sleep(0.2)
            time.sleep(1)
        finally:
            os.killpg(pid, signal.SIGCONT)
            self._log('SIGCONT %s' % name)
        meta = self._flow_meta(server_id)
        return [self._check(meta.get('claims', 0) >= 2,
                            'nobody took over the paused conductor\'s job')]

    def _paused_pid(self, timeout=120):
        """The pid of the conductor that stopped itself at the fault
        point, once it did (None after ``timeout``)."""
        fired = self.fault + '.fired'
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(fired) as f:
                    for line in f:
                        if line.startswith('paused pid '):
                            return int(line.split()[2])
            except OSError:
                pass
            time.sleep(0.1)
        return None

    def _wake_after_takeover(self, server_id, atom, timeout=240):
        """Wait for the conductor to stop itself, then for another to end
        the flow (a poster paused before posting: the adopter, after
        ``ORPHAN_MIN_AGE`` and its scan); then SIGCONT it and give it time
        to act on what it was doing when it stopped."""
        pid = self._paused_pid()
        if pid is None:
            return ['fault point never reached']
        self._log('conductor pid %d stopped itself at %s' % (pid, atom))
        t0 = time.monotonic()
        try:
            if not self._wait_flow_ended(server_id, timeout):
                return ['no other conductor ended the flow within %ds' %
                        timeout]
        finally:
            os.kill(pid, signal.SIGCONT)
        self._log('flow ended by another conductor %.1fs after the pause; '
                  'SIGCONT %d' % (time.monotonic() - t0, pid))
        # it wakes inside the task it was in: whatever it does next is
        # done within a few seconds (its lease is void: no renewal, then
        # the lost session)
        time.sleep(5)
        return []

    def _one_of_each(self, server_id):
        """One ``create`` action and the BDMs of one build: a woken
        conductor that went on with its task would have made a second."""
        server = self.conn.compute.get_server(server_id)
        actions = [a.action for a in
                   self.conn.compute.server_actions(server_id)]
        problems = [self._check(actions == ['create'],
                                'instance actions %s' % actions)]
        bdms = sum(check_leaks._rows(url, (
            "SELECT count(*) FROM block_device_mapping WHERE instance_uuid "
            "= '%s' AND deleted = 0" % server_id))[0][0]
            for url in self._cell_urls())
        problems.append(self._check(bdms == 1, '%d BDMs' % bdms))
        problems.append(self._check(server.status == 'ACTIVE',
                                    'server %s after the wake-up' %
                                    server.status))
        return problems

    def _cell_urls(self):
        nova = check_leaks._conf(os.path.join(self.state, 'etc', 'nova',
                                              'nova.conf'))
        return [r[0] for r in check_leaks._rows(
            nova.get('api_database', 'connection'),
            'SELECT database_connection FROM cell_mappings')]

    def _restart_zookeeper_during_spawn(self, server_id):
        if not self._wait_flow_state(server_id, 'spawn', 'RUNNING'):
            return ['spawn never started']
        env = dict(os.environ)
        with open(os.path.join(self.state, 'aio.env')) as f:
            if 'ZK_STARTED=1' in f.read().split():
                # tools/aio started it (else: the one tools/zookeeper keeps
                # in its default state folder)
                env['ORC_ZK_STATE'] = os.path.join(self.state, 'zookeeper')
        zk = os.path.join(os.path.dirname(self.args.aio), 'zookeeper')
        subprocess.run([zk, 'stop'], env=env, check=False,
                       stdout=subprocess.DEVNULL)
        self._log('ZooKeeper stopped')
        time.sleep(1)
        subprocess.run([zk, 'start'], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        self._log('ZooKeeper started')
        return []


def _epoch(iso):
    return datetime.datetime.fromisoformat(iso).replace(
        tzinfo=datetime.timezone.utc).timestamp()


def bench(matrix, kills, session_timeout):
    """``tools/bench/failover``: kill the conductor as the spawn starts,
    ``kills`` times; print kill-to-resumed and kill-to-ACTIVE."""
    resumed, active = [], []
    for i in range(kills):
        for path in (matrix.fault, matrix.fault + '.fired'):
            if os.path.exists(path):
                os.unlink(path)
        with open(matrix.fault, 'w') as f:
            f.write('spawn before\n')
        server = matrix.conn.compute.create_server(
            name='failover-%d' % i, image_id=matrix.image,
            flavor_id=matrix.flavor, networks='none')
        end = matrix._server_end(server.id)
        seen_active = time.time()
        with open(matrix.fault + '.fired') as f:
            killed = [float(line.split()[1]) for line in f
                      if line.startswith('killed_at')][0]
        meta = matrix._flow_meta(server.id)
        if end.status != 'ACTIVE' or meta.get('claims') != 2:
            raise RuntimeError('kill %d: server %s, claims %s' % (
                i, end.status, meta.get('claims')))
        resumed.append(_epoch(meta['claimed_at']) - killed)
        launched = end.launched_at
        active.append((_epoch(launched) if launched else seen_active) -
                      killed)
        matrix._delete(server.id)
        matrix._revive()
        print('kill %d: resumed after %.2fs, ACTIVE after %.2fs' % (
            i + 1, resumed[-1], active[-1]), flush=True)
    print('session timeout %.1fs, %d kills: kill->resumed median %.2fs max '
          '%.2fs (overhead beyond the session timeout: median %.2fs); '
          'kill->ACTIVE median %.2fs max %.2fs' % (
              session_timeout, kills, statistics.median(resumed),
              max(resumed), statistics.median(resumed) - session_timeout,
              statistics.median(active), max(active)))


def main(argv=None):
    parser = argparse.ArgumentParser(prog='crash_matrix.py')
    parser.add_argument('--state', required=True)
    parser.add_argument('--aio', required=True, help='path of tools/aio')
    parser.add_argument('--bench', type=int, metavar='KILLS',
                        help='measure failover times instead')
    parser.add_argument('--session-timeout', type=float, default=2.0)
    parser.add_argument('--with-neutron', action='store_true',
                        help='the neutron cases too, after the others')
    parser.add_argument('--neutron-only', action='store_true',
                        help='the neutron cases only')
    parser.add_argument('cases', nargs='*', help='default: all')
    args = parser.parse_args(argv)
    matrix = Matrix(args)
    if args.bench:
        bench(matrix, args.bench, args.session_timeout)
        return 0
    cases = args.cases
    if cases == ['pauses']:
        cases = list(PAUSES)
    if not cases:
        cases = [] if args.neutron_only else default_cases()
        if args.with_neutron or args.neutron_only:
            cases += NEUTRON_CASES
    t0 = time.monotonic()
    print('crash matrix: %d cases' % len(cases), flush=True)
    for case in cases:
        matrix._log('case: %s' % case)
        try:
            matrix.run_case(case)
        except Exception as e:
            matrix.failed += 1
            print('FAIL: %s: %s: %s' % (case, e.__class__.__name__, e),
                  flush=True)
            try:
                matrix._revive()
            except Exception:
                pass
    matrix._log('%d cases in %.0fs' % (len(cases), time.monotonic() - t0))
    print('%d passed, %d failed' % (matrix.passed, matrix.failed))
    return 1 if matrix.failed else 0


if __name__ == '__main__':
    sys.exit(main())
