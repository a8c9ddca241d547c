"""Deleting a server while each host step of its boot runs leaves nothing.

Stock's compute builds under the instance's lock
(``utils.synchronized(instance.uuid)`` in ``build_and_run_instance``) and
``terminate_instance`` takes the same lock, so a delete sent to the host
waits for the build step in progress and then removes what it made. Each
test here holds one host step inside (a stub of the stock method the step
calls waits on an event; for spawn, the slow fake driver), deletes the
server, lets the step go on, and checks that nothing is left: no server, no
guest on any hypervisor, no placement allocation or usage, no port nova
created, no volume attachment, no build request, no lock, no fault, no
ERROR in the logs.

ZooKeeper as in :mod:`nova.tests.functional.orc.test_boot`. The harness
runs eventlet: ``threading.Event`` and ``time.sleep`` are green here.
"""

import re
import threading
import time

from oslo_utils import importutils
from testtools import matchers

from nova.compute import manager as compute_manager
from nova import context as nova_context
from nova.db.main import api as main_db_api
from nova.db.main import models
from nova import exception
from nova import objects
from nova.orc.persistence import backend as journal
from nova.tests.functional.orc import test_boot
from nova.virt import orc_fake  # noqa: F401 ([orc_fake] options)

#: seconds a test waits for something that should happen
TIMEOUT = 30
#: seconds given to a delete that reached the host to finish on its own:
#: without the host lock it does (in milliseconds here); with it, it waits
#: for the step and this passes
DELETE_GRACE = 1.5
#: seconds the slow fake driver spends in spawn
SPAWN_DELAY = 3
ENDED = ('SUCCESS', 'REVERTED', 'FAILURE')


class Gate:
    """A stub of ``path`` (a stock method) whose first call waits until
    :meth:`open` before calling the original.

    :ivar entered: set when the first call is waiting
    """

    def __init__(self, test, path):
        cls_path, _, name = path.rpartition('.')
        original = getattr(importutils.import_class(cls_path), name)
        self.entered = threading.Event()
        self._opened = threading.Event()
        self._first = True

        def gate(*args, **kwargs):
            if self._first:
                self._first = False
                self.entered.set()
                self._opened.wait(TIMEOUT * 2)
            return original(*args, **kwargs)
        test.stub_out(path, gate)
        test.addCleanup(self.open)

    def open(self):
        self._opened.set()


class TerminateWatch:
    """Wraps stock ``ComputeManager.terminate_instance`` (the delete on the
    host) to tell when it arrived and when it returned."""

    def __init__(self, test):
        self.arrived = threading.Event()
        self.done = threading.Event()
        original = compute_manager.ComputeManager.terminate_instance

        def terminate_instance(manager, *args, **kwargs):
            self.arrived.set()
            try:
                return original(manager, *args, **kwargs)
            finally:
                self.done.set()
        test.stub_out(
            'nova.compute.manager.ComputeManager.terminate_instance',
            terminate_instance)


class DeleteDuringBuildTest(test_boot.OrcBootTestBase):
    """host1 and host2 with the slow fake driver; casts stay casts, so the
    create returns at once and the boot runs while the test deletes."""

    CAST_AS_CALL = False

    def _setup_compute_service(self):
        self.flags(compute_driver='orc_fake.SlowSpawnDriver')
        super()._setup_compute_service()

    def setUp(self):
        super().setUp()
        self.terminate = TerminateWatch(self)

    # ------------------------------------------------------------ helpers
    def _wait(self, event, what):
        self.assertTrue(event.wait(TIMEOUT), 'timed out waiting: %s' % what)

    def _post(self, networks='none', volume_id=None):
        server = self._build_server(networks=networks)
        if volume_id:
            server.pop('imageRef')
            server['block_device_mapping_v2'] = [{
                'boot_index': 0, 'uuid': volume_id, 'source_type': 'volume',
                'destination_type': 'volume'}]
        return self.api.post_server({'server': server})

    def _delete_during(self, server, gate=None, through_host=True):
        """Delete ``server`` while its step is held by ``gate``, then let
        the step go on and wait for the delete and the flow to end."""
        self.api.delete_server(server['id'])
        if through_host:
            # the instance has a host: the API cast terminate_instance
            self._wait(self.terminate.arrived, 'terminate_instance')
            self.terminate.done.wait(DELETE_GRACE)
            if gate is not None:
                # as in stock, the delete waits for the step on the host
                self.expectThat(self.terminate.done.is_set(),
                                matchers.Is(False),
                                'the delete ran during the step')
        if gate is not None:
            gate.open()
        self._wait_until_deleted(server)
        self._wait_for_flow_end(server['id'])

    def _flow_state(self, instance_uuid):
        conn = journal.JournalBackend().get_connection()
        flows = conn.list_flows(instance_uuid=instance_uuid)
        return flows[0]['state'] if flows else None

    def _wait_for_flow_end(self, instance_uuid):
        coordinator = self.orc.coordinator()
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if (self._flow_state(instance_uuid) in ENDED and
                    not coordinator.list_locks()):
                return
            time.sleep(0.1)
        self.fail('flow of %s did not end (state %s, locks %s)' % (
            instance_uuid, self._flow_state(instance_uuid),
            coordinator.list_locks()))

    def _faults(self, instance_uuid):
        """Faults of the instance, soft-deleted ones included."""
        cell = self.cell_mappings['cell1']
        with nova_context.target_cell(self.ctxt, cell) as cctxt:
            with main_db_api.get_context_manager(cctxt).reader.using(cctxt):
                return main_db_api.model_query(
                    cctxt, models.InstanceFault, read_deleted='yes',
                ).filter_by(instance_uuid=instance_uuid).all()

    def _error_logs(self):
        """ERROR lines of Nova, oslo.messaging and TaskFlow (the harness
        logs unrelated ones, e.g. stevedore's missing memcache)."""
        return [line for line in self.stdlog.logger.output.splitlines()
                if re.search(r' ERROR \[(nova|oslo_messaging|taskflow)\b',
                             line)]

    def _assert_nothing_left(self, server, volume_id=None):
        """Every check runs (``expectThat``), so a failure lists all that
        was left."""
        uuid = server['id']

        def expect(expected, actual, what):
            self.expectThat(actual, matchers.Equals(expected), what)
        expect('REVERTED', self._flow_state(uuid), 'flow state')
        for host, compute in self.computes.items():
            expect([], compute.driver.list_instances(), 'guests on ' + host)
            expect({'VCPU': 0, 'MEMORY_MB': 0, 'DISK_GB': 0},
                   self._usages(host), 'usage of ' + host)
        expect({}, self._allocations(uuid), 'allocations')
        expect([], self._nova_ports(uuid), 'ports')
        if volume_id:
            expect([], [a for a in self.cinder.volume_to_attachment[
                volume_id].values() if a['instance_uuid'] == uuid],
                'volume attachments')
        self.assertRaises(exception.BuildRequestNotFound,
                          objects.BuildRequest.get_by_instance_uuid,
                          self.ctxt, uuid)
        expect([], self.orc.coordinator().list_locks(), 'locks')
        expect([], self._faults(uuid), 'faults')
        expect([], self._error_logs(), 'ERROR logs')

    def _assert_step_said_so(self, step):
        self.assertRegex(
            self.stdlog.logger.output,
            r'INFO \[nova\.orc\.compute\.manager\] .*%s.* deleted' % step)

    # -------------------------------------------------------------- tests
    def test_delete_during_claim_before_the_host_is_set(self):
        # held before the resource tracker claim: the instance has no host
        # yet, so the API deletes it itself; the claim then finds it gone
        gate = Gate(self, 'nova.compute.manager.ComputeManager.'
                    '_check_trusted_certs')
        server = self._post()
        self._wait(gate.entered, 'claim')
        self._delete_during(server, gate, through_host=False)
        self.assertFalse(self.terminate.arrived.is_set())
        self._assert_nothing_left(server)
        self._assert_step_said_so('claim_resources')

    def test_delete_during_claim(self):
        # held after the resource tracker claim set the host: the delete
        # goes to the host and waits for the claim step
        gate = Gate(self, 'nova.compute.manager.ComputeManager.'
                    '_validate_instance_group_policy')
        server = self._post()
        self._wait(gate.entered, 'claim')
        self._delete_during(server, gate)
        self._assert_nothing_left(server)
        self._assert_step_said_so('claim_resources')

    def test_delete_during_networks(self):
        gate = Gate(self, 'nova.network.neutron.API.allocate_for_instance')
        server = self._post(
            networks=[{'uuid': self.neutron.network_1['id']}])
        self._wait(gate.entered, 'networks')
        self._delete_during(server, gate)
        self._assert_nothing_left(server)
        self._assert_step_said_so('allocate_networks')

    def test_delete_during_block_devices(self):
        volume_id = self.cinder.IMAGE_BACKED_VOL
        gate = Gate(self, 'nova.compute.manager.ComputeManager.'
                    '_prep_block_device')
        server = self._post(volume_id=volume_id)
        self._wait(gate.entered, 'block devices')
        self._delete_during(server, gate)
        self._assert_nothing_left(server, volume_id=volume_id)
        self._assert_step_said_so('prep_block_devices')

    def test_delete_during_spawn(self):
        self.flags(spawn_delay=SPAWN_DELAY, group='orc_fake')
        server = self._post(
            networks=[{'uuid': self.neutron.network_1['id']}])
        self._wait_for_state_change(server, 'BUILD')
        deadline = time.monotonic() + TIMEOUT
        while (self.api.get_server(server['id'])['OS-EXT-STS:task_state'] !=
               'spawning'):
            self.assertLess(time.monotonic(), deadline, 'never spawned')
            time.sleep(0.05)
        self._delete_during(server)
        self._assert_nothing_left(server)
        self._assert_step_said_so('spawn')

    def test_delete_during_finish(self):
        gate = Gate(self, 'nova.compute.manager.ComputeManager.'
                    '_update_instance_after_spawn')
        server = self._post(
            networks=[{'uuid': self.neutron.network_1['id']}])
        self._wait(gate.entered, 'finish')
        self._delete_during(server, gate)
        self._assert_nothing_left(server)
        self._assert_step_said_so('finish_build')
