"""Conductor failover on the functional harness, with a real ZooKeeper.

Two nova-orc conductors share one ZooKeeper chroot. The conductor running a
boot "dies" at a chosen point: its ZooKeeper session is closed (its job
claim and liveness node vanish, as when a killed process's session
expires) and the thread running the step freezes there for the rest of the
test, so it never acts again. The other conductor must claim the job,
resume the flow from the journal, and finish it with nothing done twice and
nothing left behind. (Real processes killed with SIGKILL: the all-in-one
crash matrix, ``tools/aio.d/test_failover.sh``.)
"""

import threading
import time

from oslo_db import exception as db_exc
from oslo_utils import importutils
from taskflow.patterns import linear_flow
from taskflow.patterns import unordered_flow

from nova.db.main import api as main_db_api
from nova import exception
from nova import objects
from nova.orc.compute import manager as orc_compute
from nova.orc.flows import boot as boot_flow
from nova.orc.flows import names
from nova.orc import coordination
from nova.orc.compute import rpcapi as orc_rpcapi
from nova.orc import exception as orc_exc
from nova.orc import fencing
from nova.orc import jobboard
from nova.orc import manager as orc_manager
from nova.orc.persistence import backend as journal
from nova.orc.tasks import base as task_base
from nova.orc.tasks import compute as compute_tasks
from nova.orc.tasks import instance as instance_tasks
from nova.orc.tasks import locks as lock_tasks
from nova.orc.tasks import network as network_tasks
from nova.orc.tasks import scheduler as scheduler_tasks
from nova.orc.tasks import volume as volume_tasks
from nova.tests.functional.orc import fixtures as orc_fixtures
from nova.tests.functional.orc import test_boot
from nova.tests.unit.orc import test_coordination

MANAGER = 'nova.conductor.manager.ComputeTaskManager'
HOST_API = 'nova.orc.compute.rpcapi.OrcComputeAPI'


def _boot_flow_version_1():
    """The boot flow as version 1 of ``nova.orc.flows.boot.get_flow``
    built it (frozen here: a journal it wrote must stay resumable)."""
    host_steps = linear_flow.Flow(
        'host', retry=scheduler_tasks.HostRetry(
            names.HOST_RETRY, provides=names.SELECTION,
            rebind={'values': names.HOST_LIST}))
    host_steps.add(
        scheduler_tasks.ClaimAllocation(name=names.CLAIM_ALLOCATION,
                                        provides=names.SPEC_WITH_MAPPING),
        compute_tasks.ClaimHost(name=names.CLAIM_HOST, provides=names.CLAIM),
        unordered_flow.Flow('resources').add(
            network_tasks.AllocateNetworks(name=names.NETWORKS,
                                           provides=names.NETWORK_INFO),
            volume_tasks.PrepareBlockDevices(name=names.BLOCK_DEVICES_TASK,
                                             provides=names.BLOCK_DEVICES)),
        compute_tasks.Spawn(name=names.SPAWN, provides=names.SPAWNED),
    )
    flow = linear_flow.Flow(names.BOOT)
    flow.add(
        instance_tasks.BuryInCell0OnFailure(name=names.BURY_ON_FAILURE),
        lock_tasks.LockResources(name=names.LOCK),
        scheduler_tasks.Schedule(name=names.SCHEDULE,
                                 provides=names.HOST_LIST),
        instance_tasks.CreateRecord(name=names.CREATE_RECORD,
                                    provides=names.CELL_UUID),
        host_steps,
        compute_tasks.Finalize(name=names.FINALIZE),
    )
    return flow


# journaled under the factory's real name, as version 1 journaled it
_boot_flow_version_1.__module__ = boot_flow.__name__
_boot_flow_version_1.__name__ = 'get_flow'
_boot_flow_version_1.__qualname__ = 'get_flow'


class OrcFailoverTestBase(test_boot.OrcBootTestBase):
    """A second conductor (conductor2) and the means to kill the one
    running a boot at a chosen point (:meth:`_die_around`)."""

    def setUp(self):
        super().setUp()
        # short sessions: the survivor notices the death within a second
        self.flags(zookeeper_session_timeout=2, group='orc')
        # the survivor unseals the admin password the API generated
        self.flags(secret_key='failover-test', group='orc')
        self.conductor2 = self.start_service('conductor', host='conductor2')
        self.frozen = threading.Event()
        self.died = []
        #: called once the first conductor is dead (e.g. to upgrade the
        #: survivor's code)
        self.after_death = None
        # frozen threads are let go at clean-up (after the survivor ended
        # the flow); they return without acting further
        self.addCleanup(self.frozen.set)

    def _orchestrators(self):
        """This test's orchestrators (those on its ZooKeeper chroot)."""
        return [o for o in orc_fixtures.FlowTracker.orchestrators
                if getattr(o.coordinator, 'base', None) == self.orc.chroot]

    def _die(self, orchestrator, point):
        """The conductor of ``orchestrator`` dies here: session gone, this
        thread frozen until the test ends."""
        self.died.append((orchestrator.owner, point))
        if self.after_death is not None:
            self.after_death()
        orchestrator.coordinator.client.stop()
        self.frozen.wait()

    def _die_around(self, path, after):
        """Die before or after the call of ``path`` (a dotted path the
        conductor calls while running the boot flow)."""
        module, _sep, name = path.rpartition('.')
        original = getattr(importutils.import_class(module), name)
        test = self

        def die():
            test._die(running()[0], name)

        def running():
            # one boot at a time: the orchestrator running a job is ours
            return [o for o in test._orchestrators() if o._runs]

        def hook(*args, **kwargs):
            # calls made outside a run (an RPC handler posting) do not die
            if not test.died and not after and running():
                die()
            result = original(*args, **kwargs)
            if not test.died and after and running():
                die()
            return result
        self.stub_out(path, hook)

    def _fail_first_call(self, path, exc):
        """The first call of ``path`` (a dotted method path) raises
        ``exc``, later ones run it; returns the list of calls' arguments."""
        module, _sep, name = path.rpartition('.')
        original = getattr(importutils.import_class(module), name)
        calls = []

        def fails_once(obj, *args, **kwargs):
            calls.append(args)
            if len(calls) == 1:
                raise exc
            return original(obj, *args, **kwargs)
        self.stub_out(path, fails_once)
        return calls

    def _boot_and_check(self, networks='none'):
        server = self._create_server(networks=networks)
        self.assertEqual('ACTIVE', server['status'])
        self.assertEqual(1, len(self.died), self.died)
        flow, atoms = self._journal(server['id'])
        self.assertEqual('SUCCESS', flow['state'])
        # claimed twice: by the conductor that died, then the survivor
        self.assertEqual(2, flow['meta']['claims'])
        survivor = [o for o in self._orchestrators()
                    if o.owner != self.died[0][0]]
        self.assertTrue(survivor)
        # exactly one guest, on the host the journal names
        host = server['OS-EXT-SRV-ATTR:host']
        guests = {h: c.driver.list_instance_uuids()
                  for h, c in self.computes.items()}
        self.assertEqual({host: [server['id']]},
                         {h: g for h, g in guests.items() if g}, guests)
        # one allocation, on that host
        self.assertEqual({'VCPU': 1, 'MEMORY_MB': 512, 'DISK_GB': 1},
                         self._usages(host))
        other = 'host2' if host == 'host1' else 'host1'
        self.assertEqual({'VCPU': 0, 'MEMORY_MB': 0, 'DISK_GB': 0},
                         self._usages(other))
        # no build request left, one mapping to the cell, locks released
        self.assertRaises(exception.BuildRequestNotFound,
                          objects.BuildRequest.get_by_instance_uuid,
                          self.ctxt, server['id'])
        mapping = objects.InstanceMapping.get_by_instance_uuid(
            self.ctxt, server['id'])
        self.assertIsNotNone(mapping.cell_mapping)
        self.assertEqual([], self.orc.coordinator().list_locks())
        return server


class OrcFailoverTest(OrcFailoverTestBase):

    def test_die_after_scheduling(self):
        self._die_around(MANAGER + '._schedule_instances', after=True)
        self._boot_and_check()

    def test_die_after_mapping_before_build_request_delete(self):
        self._die_around(MANAGER + '._map_instance_to_cell', after=True)
        self._boot_and_check()

    def test_die_after_host_claim(self):
        self._die_around(HOST_API + '.claim_resources', after=True)
        self._boot_and_check()

    def test_die_before_spawn(self):
        self._die_around(HOST_API + '.spawn', after=False)
        self._boot_and_check()

    def test_die_after_spawn(self):
        self._die_around(HOST_API + '.spawn', after=True)
        self._boot_and_check()

    def test_die_after_finish(self):
        self._die_around(HOST_API + '.finish_build', after=True)
        self._boot_and_check()

    # ------------------------------------- a resume on a restarted compute
    def _computes_restart_on_death(self):
        """The computes restart while the job changes hands: what they kept
        in memory (step records, fencing tokens) is gone, so the resumed
        steps must find what the first run did in the real state."""
        def forget():
            for compute in self.computes.values():
                endpoint = compute.manager.orc_endpoint
                endpoint._recorded.clear()
                endpoint._tokens.clear()
        self.after_death = forget

    def _check_one_port(self, server, port_id=None):
        ports = self._nova_ports(server['id'])
        self.assertEqual(1, len(ports), ports)
        self.assertEqual(server['OS-EXT-SRV-ATTR:host'],
                         ports[0]['binding:host_id'])
        if port_id:
            self.assertEqual(port_id, ports[0]['id'])
        # the instance's network info names that port only
        vifs = objects.InstanceInfoCache.get_by_instance_uuid(
            self.ctxt, server['id']).network_info
        self.assertEqual([ports[0]['id']], [vif['id'] for vif in vifs])

    def test_die_after_finish_on_a_restarted_compute(self):
        """finish_build ran (the server is ACTIVE), the conductor died
        before journaling it and the compute restarted (its step records
        gone): the resumed finish_build finds the instance ACTIVE on its
        host with its guest and succeeds; nothing is undone."""
        self._die_around(HOST_API + '.finish_build', after=True)
        self._computes_restart_on_death()
        destroyed = []
        destroy = orc_compute.OrcComputeEndpoint.destroy_guest

        def counted(endpoint, *args, **kwargs):
            destroyed.append(args)
            return destroy(endpoint, *args, **kwargs)
        self.stub_out('nova.orc.compute.manager.OrcComputeEndpoint.'
                      'destroy_guest', counted)
        server = self._boot_and_check()
        self.assertEqual([], destroyed)
        flow, atoms = self._journal(server['id'])
        self.assertEqual('SUCCESS', atoms['finalize'].state)
        self.assertEqual([], [n for n, a in atoms.items()
                              if a.state == 'REVERTED'])

    def test_die_after_networks_on_a_restarted_compute_one_port(self):
        """The port made before the death is replaced, not doubled."""
        self._die_around(HOST_API + '.allocate_networks', after=True)
        self._computes_restart_on_death()
        server = self._boot_and_check(
            networks=[{'uuid': self.neutron.network_1['id']}])
        self._check_one_port(server)

    def test_die_after_networks_on_a_restarted_compute_user_port(self):
        """The user's port bound by the first run is bound again (stock's
        allocation alone would fail with PortInUse)."""
        port_id = self.neutron.port_1['id']
        self._die_around(HOST_API + '.allocate_networks', after=True)
        self._computes_restart_on_death()
        server = self._boot_and_check(networks=[{'port': port_id}])
        self._check_one_port(server, port_id=port_id)

    # ------------------------------- writes no fencing token can guard
    def test_lost_conductor_does_not_delete_the_new_owners_allocation(self):
        """Conductor A pauses right before undoing claim_allocation (the
        first host's claim failed) until its session is gone and B has
        resumed the flow and finished the boot on the alternate. When A goes
        on, its placement delete (which no fencing token guards) is refused
        with ClaimLost: the ACTIVE server keeps its allocation."""
        self._prefer_host1()
        self.flags(max_attempts=2, group='scheduler')
        claim_resources = orc_rpcapi.OrcComputeAPI.claim_resources

        def claim_fails_on_host1(api, ctxt, host, *args, **kwargs):
            if host == 'host1':
                raise exception.ComputeResourcesUnavailable(reason='test')
            return claim_resources(api, ctxt, host, *args, **kwargs)
        self.stub_out(HOST_API + '.claim_resources', claim_fails_on_host1)
        release = threading.Event()
        self.addCleanup(release.set)
        paused = []
        pre_revert = task_base.OrcTask.pre_revert
        test = self

        def pause_before_undo(task, *args, **kwargs):
            if task.name == 'claim_allocation' and not paused:
                orchestrator = [o for o in test._orchestrators()
                                if o._runs][0]
                paused.append(orchestrator)
                test.died.append((orchestrator.owner, 'paused'))
                # its session ends: the other conductor takes the job over
                orchestrator.coordinator.client.stop()
                release.wait(60)
            return pre_revert(task, *args, **kwargs)
        self.stub_out('nova.orc.tasks.base.OrcTask.pre_revert',
                      pause_before_undo)
        deletes = []
        delete = task_base.OrcTask.delete_allocations

        def counted_delete(task, *args, **kwargs):
            try:
                return delete(task, *args, **kwargs)
            except orc_exc.ClaimLost as e:
                deletes.append(e)
                raise
        self.stub_out('nova.orc.tasks.base.OrcTask.delete_allocations',
                      counted_delete)
        server = self._create_server(networks='none')
        self.assertEqual('ACTIVE', server['status'])
        self.assertEqual('host2', server['OS-EXT-SRV-ATTR:host'])
        release.set()   # A goes on with its undo
        deadline = time.monotonic() + 20
        while paused[0]._runs and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual({}, paused[0]._runs)
        self.assertEqual(1, len(deletes), deletes)
        self.assertEqual({'VCPU': 1, 'MEMORY_MB': 512, 'DISK_GB': 1},
                         self._usages('host2'))
        self.assertIn(self._get_provider_uuid_by_host('host2'),
                      self._allocations(server['id']))

    # ------------------------------------ journaled, but its job never posted
    def test_flow_journaled_whose_job_was_never_posted_is_adopted(self):
        """The conductor handling the create request dies between
        journaling the boot flow and posting its job: no job names the
        flow, so no claim would ever run it. The other conductor adopts it
        (posts its job) and the server goes ACTIVE."""
        self.stub_out('nova.orc.engine.ORPHAN_SCAN_INTERVAL', 0.5)
        self.stub_out('nova.orc.engine.ORPHAN_MIN_AGE', 0)
        original = jobboard.ZooKeeperJobBoard.post
        test = self

        def post(board, flow_id, book, details, ended=None):
            if not test.died:
                # the poster dies here: its session ends, no job is posted
                test.died.append((board.owner, 'post'))
                board.coordinator.client.stop()
                return
            return original(board, flow_id, book, details, ended=ended)
        self.stub_out('nova.orc.jobboard.ZooKeeperJobBoard.post', post)
        server = self._create_server(networks='none')
        self.assertEqual('ACTIVE', server['status'])
        flow, _atoms = self._journal(server['id'])
        self.assertEqual('SUCCESS', flow['state'])
        # journaled by the conductor that died, claimed once: by the other
        self.assertEqual(self.died[0][0], flow['meta']['posted_by'])
        self.assertEqual(1, flow['meta']['claims'])
        guests = [u for c in self.computes.values()
                  for u in c.driver.list_instance_uuids()]
        self.assertEqual([server['id']], guests)
        self.assertEqual([], self.orc.coordinator().list_locks())

    def test_locks_an_ended_flow_could_not_release_are_released_later(self):
        """ZooKeeper does not answer when the boot's flow ends: its locks
        stay (the flow's result stands, its job is consumed). The periodic
        scan of a conductor releases them once ZooKeeper answers."""
        self.stub_out('nova.orc.engine.ORPHAN_SCAN_INTERVAL', 0.5)
        release = coordination.ZooKeeperCoordinator.release
        outage = []

        def release_in_outage(coordinator, owner, resources):
            if not outage:
                outage.append(owner)
                raise orc_exc.CoordinationUnavailable(reason='test outage')
            return release(coordinator, owner, resources)
        self.stub_out('nova.orc.coordination.ZooKeeperCoordinator.release',
                      release_in_outage)
        server = self._create_server(networks='none')
        self.assertEqual('ACTIVE', server['status'])
        flow = self._wait_for_flow_end(server['id'])
        self.assertEqual('SUCCESS', flow['state'])
        self.assertEqual([flow['uuid']], outage)
        deadline = time.monotonic() + 20
        while (self.orc.coordinator().list_locks() and
               time.monotonic() < deadline):
            time.sleep(0.2)
        self.assertEqual([], self.orc.coordinator().list_locks())

    # -------------------------------------------------- what a resume refuses
    def _boot_to_error(self):
        server = self._create_server(networks='none', expected_state='ERROR')
        self.assertEqual(1, len(self.died), self.died)
        flow = self._wait_for_flow_end(server['id'])
        self.assertEqual('REVERTED', flow['state'])
        self.assertEqual(2, flow['meta']['claims'])
        # nothing held: no guest, no allocation, no lock
        self._assert_nothing_held(server)
        return server

    def _assert_nothing_held(self, server):
        """No guest on any host, no allocation, no lock."""
        for compute in self.computes.values():
            self.assertEqual([], compute.driver.list_instance_uuids())
        self.assertEqual({}, self._allocations(server['id']))
        self.assertEqual([], self.orc.coordinator().list_locks())

    def test_poison_job_past_max_resumes_reverts_with_fault(self):
        self.flags(max_resumes=0, group='orc')
        self._die_around(HOST_API + '.claim_resources', after=True)
        server = self._boot_to_error()
        self.assertIn('resumed 1 times, more than [orc] max_resumes = 0',
                      server['fault']['message'])
        # the task the abort stopped is an instance-action event in error
        events = self._events(server['id'])
        failed = [name for name, event in events.items()
                  if name.startswith('orc_') and event['result'] == 'Error']
        self.assertTrue(failed, events)

    def test_resumed_flow_acts_as_the_user(self):
        """The conductor dies before the networks step; the one resuming
        the flow sends the host steps the user's token (unsealed from the
        journal), not service credentials: ports, volumes and the image
        download stay the user's."""
        seen = {}
        claim_resources = orc_rpcapi.OrcComputeAPI.claim_resources
        spawn = orc_rpcapi.OrcComputeAPI.spawn

        def claim_first(api, ctxt, *args, **kwargs):
            seen.setdefault('claim', (ctxt.auth_token, ctxt.is_admin,
                                      ctxt.user_id, ctxt.project_id))
            return claim_resources(api, ctxt, *args, **kwargs)

        def spawn_resumed(api, ctxt, *args, **kwargs):
            seen['spawn'] = (ctxt.auth_token, ctxt.is_admin, ctxt.user_id,
                             ctxt.project_id)
            return spawn(api, ctxt, *args, **kwargs)
        # the harness's API sends no token: the request gets one here, as
        # keystonemiddleware gives it in a deployment
        handler = orc_manager.OrcComputeTaskManager.\
            schedule_and_build_instances

        def with_token(manager, context, *args, **kwargs):
            context.auth_token = 'the-users-token'
            context.service_catalog = [{'type': 'image', 'name': 'glance'}]
            return handler(manager, context, *args, **kwargs)
        self.stub_out('nova.orc.manager.OrcComputeTaskManager.'
                      'schedule_and_build_instances', with_token)
        self.stub_out(HOST_API + '.claim_resources', claim_first)
        self.stub_out(HOST_API + '.spawn', spawn_resumed)
        self._die_around(HOST_API + '.allocate_networks', after=False)
        self._boot_and_check()
        self.assertEqual('the-users-token', seen['claim'][0])
        self.assertEqual(seen['claim'], seen['spawn'])

    def test_revert_that_kills_its_conductor_is_quarantined(self):
        """Spawn fails on the only host; the conductor dies while undoing
        it. Past [orc] max_resumes (0 here) the conductor that claims the
        job next does not try the revert again: the flow is quarantined,
        its locks kept, and the server goes to ERROR with a fault that
        says so (not left in BUILD with no owner and no fault)."""
        self.flags(max_resumes=0, group='orc')
        self.flags(max_attempts=1, group='scheduler')
        self._fail_spawn_on(['host1', 'host2'])
        self._die_around(HOST_API + '.destroy_guest', after=False)
        # its flow never ends: the stock helper, without waiting for it
        server = self._wait_for_state_change(self.api.post_server(
            {'server': self._build_server(networks='none')}), 'ERROR')
        self.assertEqual(1, len(self.died), self.died)
        self.assertIn('could not be reverted and is quarantined',
                      server['fault']['message'])
        conn = journal.JournalBackend().get_connection()
        deadline = time.monotonic() + 20
        while True:
            flow = conn.list_flows(instance_uuid=server['id'])[0]
            if flow['meta'].get('quarantined') or \
                    time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertIn('max_resumes', flow['meta']['quarantined'])
        self.assertNotIn(flow['state'], ('SUCCESS', 'REVERTED'))
        board = jobboard.ZooKeeperJobBoard('test', self.orc.coordinator())
        board.connect(as_conductor=False)
        self.addCleanup(board.close)
        self.assertEqual([], board.list_jobs())
        self.assertEqual([server['id']], [
            lock['id'] for lock in self.orc.coordinator().list_locks()
            if lock['kind'] == 'instance'])

    def test_resume_without_the_secret_key_reverts_with_fault(self):
        self.flags(secret_key=None, group='orc')
        self._die_around(HOST_API + '.claim_resources', after=True)
        server = self._boot_to_error()
        self.assertIn('cannot be recovered by the conductor resuming the '
                      'flow', server['fault']['message'])

    def test_flow_of_a_version_it_cannot_resume_reverts(self):
        self._die_around(HOST_API + '.claim_resources', after=True)
        # the survivor runs a newer boot flow that cannot resume version 2
        self.after_death = lambda: self._upgrade_boot_flow(3, (3,))
        server = self._boot_to_error()
        self.assertIn('journaled by boot flow version 2',
                      server['fault']['message'])

    def test_journal_of_boot_flow_version_1_resumes_on_version_2(self):
        """A conductor running boot flow version 1 (host steps in a linear
        subflow, finalize after it) dies after the host claim; the survivor
        runs today's factory (version 2: a graph of host steps with a stock
        compute branch) and finishes the flow from that journal."""
        journaled = self._version_1_dies_version_2_resumes(
            HOST_API + '.claim_resources')
        server = self._boot_and_check()
        self.assertIn('spawn', journaled)
        self.assertNotIn('build_on_stock_compute', journaled)
        flow, atoms = self._journal(server['id'])
        self.assertEqual(1, flow['meta']['version'])
        for name in ('claim_host', 'networks', 'block_devices', 'spawn',
                     'finalize'):
            self.assertEqual('SUCCESS', atoms[name].state, name)
        # the atom version 1 did not have: added on resume, not taken
        self.assertEqual('IGNORE', atoms['build_on_stock_compute'].state)

    def test_journal_of_version_1_after_spawn_needs_no_secrets(self):
        """Version 1 knew one consumer of the request's secrets (spawn):
        once it succeeded, a survivor that cannot unseal them (no
        ``[orc] secret_key``) still finishes the flow."""
        self.flags(secret_key=None, group='orc')
        self._version_1_dies_version_2_resumes(HOST_API + '.finish_build',
                                               after=False)
        self._boot_and_check()

    def _version_1_dies_version_2_resumes(self, path, after=True):
        """The first conductor runs boot flow version 1 and dies after (or
        before) ``path``; the survivor runs today's. Returns the atom names the
        dead conductor journaled (filled at its death)."""
        current = boot_flow.get_flow
        self.stub_out('nova.orc.flows.boot.get_flow', _boot_flow_version_1)
        self._upgrade_boot_flow(1, (1,))

        journaled = []

        def upgrade():
            # what the dead conductor journaled: version 1's atoms only
            conn = journal.JournalBackend().get_connection()
            for flow in conn.list_flows():
                journaled.extend(r['detail'].name
                                 for r in conn.atom_rows(flow['uuid']))
            self.stub_out('nova.orc.flows.boot.get_flow', current)
            self._upgrade_boot_flow(2, (1, 2))
        self.after_death = upgrade
        self._die_around(path, after=after)
        return journaled

    def _upgrade_boot_flow(self, version, resumable):
        self.stub_out('nova.orc.flows.boot.VERSION', version)
        self.stub_out('nova.orc.flows.boot.RESUMABLE_VERSIONS', resumable)

    def test_failed_revert_is_resumed_and_finished(self):
        """A revert that fails (the host unreachable while destroying the
        failed guest) leaves the flow FAILURE with its locks; the job comes
        back after the backoff and the revert is finished."""
        self.stub_out('nova.orc.engine.FAILED_JOB_BACKOFF', 0.5)
        self.flags(max_attempts=1, group='scheduler')
        self._fail_spawn_on(['host1', 'host2'])
        calls = self._fail_first_call(
            HOST_API + '.destroy_guest',
            exception.HostNotFound(host='unreachable'))
        server = self._create_server(networks='none', expected_state='ERROR')
        flow = self._wait_for_flow_end(server['id'])
        self.assertEqual('REVERTED', flow['state'])
        self.assertEqual(2, len(calls))
        self.assertEqual(2, flow['meta']['claims'])
        self._assert_nothing_held(server)

    def test_burial_in_cell0_stopped_halfway_is_finished_on_resume(self):
        """Scheduling fails; stock's burial in cell0 stops after the record
        and its mapping (the action fails once): the flow ends FAILURE, its
        job comes back after the backoff, and the resumed revert finishes
        the burial instead of failing on a second cell0 record: ERROR with
        the scheduling fault, one failed create action, no build
        request."""
        self.stub_out('nova.orc.engine.FAILED_JOB_BACKOFF', 0.5)

        def no_host(*args, **kwargs):
            raise exception.NoValidHost(reason='test: no host')
        self.stub_out(MANAGER + '._schedule_instances', no_host)
        calls = self._fail_first_call(
            MANAGER + '._create_instance_action_for_cell0',
            exception.DBNotAllowed(binary='test: database gone'))
        server = self._create_server(networks='none', expected_state='ERROR')
        flow = self._wait_for_flow_end(server['id'])
        self.assertEqual('REVERTED', flow['state'])
        self.assertEqual(2, flow['meta']['claims'])
        self.assertEqual(2, len(calls))
        self.assertIn('No valid host', server['fault']['message'])
        actions = self.api.get_instance_actions(server['id'])
        self.assertEqual(['create'], [a['action'] for a in actions])
        self.assertRaises(exception.BuildRequestNotFound,
                          objects.BuildRequest.get_by_instance_uuid,
                          self.ctxt, server['id'])
        mapping = objects.InstanceMapping.get_by_instance_uuid(
            self.ctxt, server['id'])
        self.assertEqual(objects.CellMapping.CELL0_UUID,
                         mapping.cell_mapping.uuid)
        self.assertEqual([], self.orc.coordinator().list_locks())

    def _create_action_events(self, server):
        """``[(event, result)]`` of the server's ``create`` action."""
        [action] = self.api.get_instance_actions(server['id'])
        details = self.api.get_instance_action_details(
            server['id'], action['request_id'])
        return action['message'], sorted(
            (e['event'], e['result']) for e in details['events'])

    def test_burial_stopped_between_action_and_event_is_finished(self):
        """Scheduling fails; stock's burial in cell0 stops after the create
        action, before its event (the event's start fails once): the
        resumed revert finds the action and adds the failed event, so the
        action reads as a plain burial's does (stock's, for another
        server), not as an action without events."""
        self.stub_out('nova.orc.engine.FAILED_JOB_BACKOFF', 0.5)

        def no_host(*args, **kwargs):
            raise exception.NoValidHost(reason='test: no host')
        self.stub_out(MANAGER + '._schedule_instances', no_host)
        plain = self._create_server(networks='none', expected_state='ERROR')
        self._wait_for_flow_end(plain['id'])
        event_start = main_db_api.action_event_start
        failed = []

        def fails_once(context, values):
            if values['event'] == instance_tasks.CELL0_CREATE_EVENT and \
                    not failed:
                failed.append(values['instance_uuid'])
                raise exception.DBNotAllowed(binary='test: database gone')
            return event_start(context, values)
        self.stub_out('nova.db.main.api.action_event_start', fails_once)
        server = self._create_server(networks='none', expected_state='ERROR')
        flow = self._wait_for_flow_end(server['id'])
        self.assertEqual([server['id']], failed)
        self.assertEqual('REVERTED', flow['state'])
        self.assertEqual(2, flow['meta']['claims'])
        expected = self._create_action_events(plain)
        self.assertEqual(('Error', [(instance_tasks.CELL0_CREATE_EVENT,
                                     'Error')]), expected)
        self.assertEqual(expected, self._create_action_events(server))

    def test_revert_failing_in_a_database_outage_is_waited_out(self):
        """Scheduling fails and the burial in cell0 cannot reach the
        database three times in a row (DBConnectionError), with [orc]
        max_resumes = 0: each failed revert is an outage, tried again after
        the backoff and not counted, so the flow is not quarantined; once
        the database answers the burial finishes: ERROR with the
        scheduling fault, nothing held. (A revert failing for another
        reason is counted: test_revert_that_kills_its_conductor_is_...)"""
        self.stub_out('nova.orc.engine.FAILED_JOB_BACKOFF', 0.5)
        self.flags(max_resumes=0, group='orc')

        def no_host(*args, **kwargs):
            raise exception.NoValidHost(reason='test: no host')
        self.stub_out(MANAGER + '._schedule_instances', no_host)
        original = orc_manager.OrcComputeTaskManager.\
            _create_instance_action_for_cell0
        calls = []

        def database_down_three_times(manager, *args, **kwargs):
            calls.append(args)
            if len(calls) <= 3:
                raise db_exc.DBConnectionError('test: database unreachable')
            return original(manager, *args, **kwargs)
        self.stub_out(MANAGER + '._create_instance_action_for_cell0',
                      database_down_three_times)
        server = self._create_server(networks='none', expected_state='ERROR')
        flow = self._wait_for_flow_end(server['id'])
        self.assertEqual('REVERTED', flow['state'])
        self.assertEqual(4, len(calls))
        self.assertEqual(4, flow['meta']['claims'])
        self.assertEqual(3, flow['meta']['outages'])
        self.assertNotIn('quarantined', flow['meta'])
        self.assertIn('No valid host', server['fault']['message'])
        self.assertEqual([], self.orc.coordinator().list_locks())

    def test_failed_revert_whose_claim_cannot_be_checked_is_not_stranded(
            self):
        """A revert fails and, right after it, ZooKeeper does not answer
        when the conductor checks its claim: the conductor waits the outage
        out instead of dropping the job (which would stay claimed by its
        live session, never run again), then the revert is finished."""
        self.stub_out('nova.orc.engine.FAILED_JOB_BACKOFF', 0.5)
        self.stub_out('nova.orc.engine.CLAIM_RECHECK_INTERVAL', 0.2)
        self.flags(max_attempts=1, group='scheduler')
        self._fail_spawn_on(['host1', 'host2'])
        original = orc_rpcapi.OrcComputeAPI.destroy_guest
        calls, outage = [], []

        def destroy_guest(api, *args, **kwargs):
            calls.append(args)
            if len(calls) == 1:
                outage.append('pending')
                raise exception.HostNotFound(host='unreachable')
            return original(api, *args, **kwargs)
        self.stub_out(HOST_API + '.destroy_guest', destroy_guest)
        claim_token = coordination.ZooKeeperCoordinator.claim_token

        def claim_token_in_outage(coordinator, *args, **kwargs):
            if outage == ['pending']:
                outage[0] = 'raised'
                raise orc_exc.CoordinationUnavailable(reason='test outage')
            return claim_token(coordinator, *args, **kwargs)
        self.stub_out('nova.orc.coordination.ZooKeeperCoordinator.'
                      'claim_token', claim_token_in_outage)
        server = self._create_server(networks='none', expected_state='ERROR')
        flow = self._wait_for_flow_end(server['id'])
        self.assertEqual(['raised'], outage)
        self.assertEqual('REVERTED', flow['state'])
        self.assertEqual(2, len(calls))
        self.assertEqual(2, flow['meta']['claims'])
        self._assert_nothing_held(server)

    def _woken(self, server):
        """Let the conductor that lost the job go on (it wakes up in the
        task it was in), wait until its run is over; returns its
        orchestrator."""
        dead = [o for o in orc_fixtures.FlowTracker.orchestrators
                if o.owner == self.died[0][0]][0]
        self.frozen.set()
        deadline = time.monotonic() + 20
        while dead._runs and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual({}, dead._runs)
        return dead

    def _count_fenced(self):
        """Record every side effect the lease refused (ClaimLost)."""
        fenced = []
        original = fencing.check

        def check():
            try:
                return original()
            except orc_exc.ClaimLost as e:
                fenced.append(e)
                raise
        self.stub_out('nova.orc.fencing.check', check)
        return fenced

    def test_paused_conductor_wakes_up_fenced(self):
        """The conductor that lost its job (paused past its session) wakes
        up after another finished the boot, right before its spawn call:
        the lease refuses the call before it leaves the conductor (the
        compute never sees it) and the journal refuses its writes; nothing
        it does lands."""
        self._die_around(HOST_API + '.spawn', after=False)
        refused = []
        original_check = orc_compute.OrcComputeEndpoint._check_token

        def check_token(endpoint, instance, job):
            try:
                return original_check(endpoint, instance, job)
            except orc_exc.StaleFencingToken as e:
                refused.append(e)
                raise
        self.stub_out('nova.orc.compute.manager.OrcComputeEndpoint.'
                      '_check_token', check_token)
        fenced = self._count_fenced()
        server = self._boot_and_check()
        flow, atoms = self._journal(server['id'])
        before = {name: (a.state, a.results) for name, a in atoms.items()}

        self._woken(server)
        self.assertEqual(1, len(fenced), fenced)
        self.assertEqual([], refused)
        flow_after, atoms_after = self._journal(server['id'])
        self.assertEqual('SUCCESS', flow_after['state'])
        self.assertEqual(before, {name: (a.state, a.results)
                                  for name, a in atoms_after.items()})
        guests = [u for c in self.computes.values()
                  for u in c.driver.list_instance_uuids()]
        self.assertEqual([server['id']], guests)
        self.assertEqual('ACTIVE', self.api.get_server(server['id'])['status'])

    def test_paused_inside_create_record_wakes_up_after_the_takeover(self):
        """Paused in create_record between its first write (the instance
        record, then the quota recheck) and the rest (action, BDMs, tags,
        mapping, build request delete), woken after the other conductor
        built the server: its next write is refused. Without the lease it
        wrote a second ``create`` action and BDMs, then stock's
        ``_delete_build_request`` found the build request gone and
        destroyed the user's ACTIVE server."""
        self._die_around(MANAGER + '._recheck_quota', after=True)
        fenced = self._count_fenced()
        server = self._boot_and_check()
        bdms = objects.BlockDeviceMappingList.get_by_instance_uuid(
            self.ctxt, server['id'])
        self.assertEqual(1, len(bdms))

        self._woken(server)
        self.assertEqual(1, len(fenced), fenced)
        server = self.api.get_server(server['id'])
        self.assertEqual('ACTIVE', server['status'])
        actions = self.api.get_instance_actions(server['id'])
        self.assertEqual(['create'], [a['action'] for a in actions])
        self.assertEqual(1, len(objects.BlockDeviceMappingList
                                .get_by_instance_uuid(self.ctxt,
                                                      server['id'])))
        flow, _atoms = self._journal(server['id'])
        self.assertEqual('SUCCESS', flow['state'])
        guests = [u for c in self.computes.values()
                  for u in c.driver.list_instance_uuids()]
        self.assertEqual([server['id']], guests)
        self.assertEqual({'VCPU': 1, 'MEMORY_MB': 512, 'DISK_GB': 1},
                         self._usages(server['OS-EXT-SRV-ATTR:host']))

    # --------------------------------------------- a session lost, not a job
    def test_post_waits_for_the_next_session(self):
        """The conductor handling the create request loses its ZooKeeper
        session right before posting the job (it woke from a pause): the
        post waits for the next session and goes on; the boot is not
        failed, and the flow has one job."""
        original = jobboard.ZooKeeperJobBoard._post_once
        lost = []
        posts = []

        def post_once(board, flow_id, data, ended=None, job_uuid=None,
                      **kwargs):
            if not lost:
                lost.append(board.coordinator.session_id())
                test_coordination._expire_session(board.coordinator)
            posts.append(flow_id)
            return original(board, flow_id, data, ended, job_uuid, **kwargs)
        self.stub_out('nova.orc.jobboard.ZooKeeperJobBoard._post_once',
                      post_once)
        server = self._create_server(networks='none')
        self.assertEqual('ACTIVE', server['status'])
        flow, _atoms = self._journal(server['id'])
        self.assertEqual('SUCCESS', flow['state'])
        self.assertEqual(1, flow['meta']['claims'])
        # asked again on the new session
        self.assertGreater(len(posts), 1)
        poster = [o for o in self._orchestrators()
                  if o.owner == flow['meta']['posted_by']][0]
        self.assertNotEqual(lost[0], poster.coordinator.session_id())

    # ------------------------------------------------ multi-create requests
    def _boot_group(self, count=2):
        server = self._build_server(networks='none')
        server['min_count'] = count
        server['return_reservation_id'] = True
        reservation = self.api.post_server(
            {'server': server})['reservation_id']
        return self.api.get_servers(
            detail=True, search_opts={'reservation_id': reservation})

    def _group_flow(self):
        conn = journal.JournalBackend().get_connection()
        deadline = time.monotonic() + 30
        while True:
            flows = [f for f in conn.list_flows() if f['name'] == 'boot_group']
            if flows and flows[0]['state'] in ('SUCCESS', 'REVERTED'):
                return flows[0]
            if time.monotonic() > deadline:
                self.fail('boot_group flow did not end: %s' % flows)
            time.sleep(0.1)

    def _check_group_active(self, servers):
        for server in servers:
            server = self._wait_for_state_change(server, 'ACTIVE')
            flow, _atoms = self._journal(server['id'])
            self.assertEqual('SUCCESS', flow['state'])
        self.assertEqual(1, len(self.died), self.died)
        group = self._group_flow()
        self.assertEqual('SUCCESS', group['state'])
        self.assertEqual(2, group['meta']['claims'])
        # one allocation and one guest per server, nothing else
        usage = sum(self._usages(h)['VCPU'] for h in ('host1', 'host2'))
        self.assertEqual(len(servers), usage)
        guests = sorted(u for c in self.computes.values()
                        for u in c.driver.list_instance_uuids())
        self.assertEqual(sorted(s['id'] for s in servers), guests)
        self.assertEqual([], self.orc.coordinator().list_locks())

    def test_multi_create_die_after_scheduling_the_group(self):
        self._die_around(MANAGER + '._schedule_instances', after=True)
        self._check_group_active(self._boot_group())

    def test_multi_create_die_after_posting_the_first_boot(self):
        self._die_around('nova.orc.engine.Orchestrator.post', after=True)
        servers = self._boot_group()
        self._check_group_active(servers)
        # each instance got exactly one boot flow
        conn = journal.JournalBackend().get_connection()
        for server in servers:
            self.assertEqual(1, len(conn.list_flows(
                instance_uuid=server['id'])))

    def test_multi_create_group_revert_leaves_posted_boots_alone(self):
        """The group flow dies after posting the first instance's boot flow
        and its resume is aborted (past [orc] max_resumes): the group
        reverts. The instance whose boot flow was posted belongs to that
        flow (it goes ACTIVE with its allocation); only the other is
        buried in cell0, its allocation deleted."""
        self.flags(max_resumes=0, group='orc')
        self._die_around('nova.orc.engine.Orchestrator.post', after=True)
        servers = self._boot_group()
        self.assertEqual('REVERTED', self._group_flow()['state'])
        conn = journal.JournalBackend().get_connection()
        posted = [s for s in servers
                  if conn.list_flows(instance_uuid=s['id'])]
        self.assertEqual(1, len(posted), posted)
        others = [s for s in servers if s is not posted[0]]
        active = self._wait_for_state_change(posted[0], 'ACTIVE')
        flow, _atoms = self._journal(active['id'])
        self.assertEqual('SUCCESS', flow['state'])
        host = active['OS-EXT-SRV-ATTR:host']
        self.assertIn(self._get_provider_uuid_by_host(host),
                      self._allocations(active['id']))
        buried = self._wait_for_state_change(others[0], 'ERROR')
        self.assertIn('resumed 1 times', buried['fault']['message'])
        mapping = objects.InstanceMapping.get_by_instance_uuid(
            self.ctxt, buried['id'])
        self.assertEqual(objects.CellMapping.CELL0_UUID,
                         mapping.cell_mapping.uuid)
        self.assertEqual({}, self._allocations(buried['id']))
        self.assertEqual(1, sum(self._usages(h)['VCPU']
                                for h in ('host1', 'host2')))
        self.assertEqual([], self.orc.coordinator().list_locks())

    def test_multi_create_scheduling_failure_buries_all_in_cell0(self):
        self.stub_out(
            'nova.scheduler.client.query.SchedulerQueryClient.'
            'select_destinations',
            lambda *a, **k: (_ for _ in ()).throw(
                exception.NoValidHost(reason='test')))
        servers = self._boot_group()
        for server in servers:
            server = self._wait_for_state_change(server, 'ERROR')
            self.assertIn('No valid host', server['fault']['message'])
            mapping = objects.InstanceMapping.get_by_instance_uuid(
                self.ctxt, server['id'])
            self.assertEqual(objects.CellMapping.CELL0_UUID,
                             mapping.cell_mapping.uuid)
            self.assertEqual({}, self._allocations(server['id']))
        self.assertEqual('REVERTED', self._group_flow()['state'])
