"""The boot flow on Nova's functional harness, with a real ZooKeeper.

ZooKeeper comes from ``ORC_TEST_ZOOKEEPER`` (``host:port``, default
``127.0.0.1:2181``; ``run_tests.sh`` starts one with ``tools/zookeeper``).
If none answers the tests fail at conductor start-up: they never skip.
"""

import os
import time

from oslo_utils.fixture import uuidsentinel as uuids

from nova import context as nova_context
from nova import exception
from nova import objects
from nova.orc.persistence import backend as journal
from nova import test
from nova.tests.functional import integrated_helpers
from nova.tests.functional.orc import fixtures as orc_fixtures

ZOOKEEPER = os.environ.get('ORC_TEST_ZOOKEEPER', '127.0.0.1:2181')

BOOT_TASKS = ['bury_on_failure', 'lock', 'schedule', 'create_record',
              'claim_allocation', 'claim_host', 'networks', 'block_devices',
              'spawn', 'finalize']


class OrcBootTestBase(integrated_helpers._IntegratedTestBase):
    """Two computes (host1, host2), our conductor and computes."""

    ADMIN_API = True
    microversion = 'latest'

    def setUp(self):
        self.orc = orc_fixtures.OrcFixture(zookeeper=ZOOKEEPER)
        self.useFixture(self.orc)
        super().setUp()
        self._start_compute('host2')
        self.ctxt = nova_context.get_admin_context()

    def _setup_compute_service(self):
        self._start_compute('host1')

    # ------------------------------------------------------------ helpers
    def _create_server(self, *args, **kwargs):
        """Stock helper, then wait for the server's flow to end: the flow
        runs as a job, and ends just after the server's last state."""
        server = super()._create_server(*args, **kwargs)
        self._wait_for_flow_end(server['id'])
        return server

    def _wait_for_flow_end(self, instance_uuid, timeout=30):
        """The newest flow of the instance once it ended (SUCCESS or
        REVERTED); fails after ``timeout`` seconds."""
        conn = journal.JournalBackend().get_connection()
        deadline = time.monotonic() + timeout
        while True:
            flows = conn.list_flows(instance_uuid=instance_uuid, limit=1)
            if flows and flows[0]['state'] in ('SUCCESS', 'REVERTED'):
                return flows[0]
            if time.monotonic() > deadline:
                self.fail('flow of %s did not end: %s' % (instance_uuid,
                                                         flows))
            time.sleep(0.1)

    def _journal(self, instance_uuid):
        self._wait_for_flow_end(instance_uuid)
        conn = journal.JournalBackend().get_connection()
        flows = conn.list_flows(instance_uuid=instance_uuid)
        self.assertEqual(1, len(flows), flows)
        atoms = {r['detail'].name: r['detail']
                 for r in conn.atom_rows(flows[0]['uuid'])}
        return flows[0], atoms

    def _usages(self, host):
        rp_uuid = self._get_provider_uuid_by_host(host)
        return self._get_provider_usages(rp_uuid)

    def _allocations(self, server_id):
        return self.placement.get(
            '/allocations/%s' % server_id).body['allocations']

    def _events(self, server_id):
        actions = self.api.get_instance_actions(server_id)
        create = [a for a in actions if a['action'] == 'create']
        self.assertEqual(1, len(create), actions)
        action = self.api.api_get(
            '/servers/%s/os-instance-actions/%s' %
            (server_id, create[0]['request_id'])).body['instanceAction']
        return {e['event']: e for e in action['events']}

    def _fail_spawn_on(self, hosts, exc=test.TestingException):
        attempts = []
        original = self.computes['host1'].driver.__class__.spawn

        def spawn(driver, context, instance, *args, **kwargs):
            attempts.append(instance.host)
            if instance.host in hosts:
                raise exc('spawn failed on %s' % instance.host)
            return original(driver, context, instance, *args, **kwargs)
        self.stub_out('nova.virt.fake.FakeDriver.spawn', spawn)
        return attempts

    def _prefer_host1(self):
        # the scheduler tries host1 first
        self.stub_out(
            'nova.scheduler.weights.ram.RAMWeigher._weigh_object',
            lambda self, host_state, spec: 1.0 if host_state.host == 'host1'
            else 0.0)

    def _nova_ports(self, server_id):
        return [p for p in self.neutron._ports.values()
                if p.get('device_id') == server_id]


class OrcBootTest(OrcBootTestBase):

    def test_boot_active_journaled_locked_and_evented(self):
        server = self._create_server(networks='none')
        self.assertEqual('ACTIVE', server['status'])
        host = server['OS-EXT-SRV-ATTR:host']
        flavor_usage = {'VCPU': 1, 'MEMORY_MB': 512, 'DISK_GB': 1}
        self.assertEqual(flavor_usage, self._usages(host))
        other = 'host2' if host == 'host1' else 'host1'
        self.assertEqual({'VCPU': 0, 'MEMORY_MB': 0, 'DISK_GB': 0},
                         self._usages(other))

        flow, atoms = self._journal(server['id'])
        self.assertEqual('SUCCESS', flow['state'])
        for name in BOOT_TASKS:
            self.assertEqual('SUCCESS', atoms[name].state, name)
        self.assertEqual({'host': host, 'node': host},
                         atoms['claim_host'].results)
        self.assertEqual(server['id'], flow['meta']['instance_uuid'])
        # secrets are never journaled
        self.assertNotIn('admin_password', str(flow['meta']))
        self.assertNotIn('auth_token', str(flow['meta']))

        events = self._events(server['id'])
        for name in BOOT_TASKS:
            self.assertEqual('Success', events['orc_' + name]['result'],
                             name)
        # the stock event is still recorded, on the compute host
        stock = events['compute__do_build_and_run_instance']
        self.assertEqual('Success', stock['result'])

        # locks are released once the flow ended
        coordinator = self.orc.coordinator()
        self.assertIsNone(coordinator.holder('instance', server['id']))
        self.assertEqual([], coordinator.list_locks())

        self._delete_server(server)
        self.assertEqual({'VCPU': 0, 'MEMORY_MB': 0, 'DISK_GB': 0},
                         self._usages(host))

    def test_min_count_5(self):
        server = self._build_server(networks='none')
        server['min_count'] = 5
        server['return_reservation_id'] = True
        reservation = self.api.post_server(
            {'server': server})['reservation_id']
        servers = self.api.get_servers(
            detail=True, search_opts={'reservation_id': reservation})
        self.assertEqual(5, len(servers))
        for server in servers:
            server = self._wait_for_state_change(server, 'ACTIVE')
            flow, _atoms = self._journal(server['id'])
            self.assertEqual('SUCCESS', flow['state'])
        usage = [self._usages(h)['VCPU'] for h in ('host1', 'host2')]
        self.assertEqual(5, sum(usage))

    def test_boot_with_network_creates_and_binds_port(self):
        server = self._create_server(
            networks=[{'uuid': self.neutron.network_1['id']}])
        self.assertEqual('ACTIVE', server['status'])
        ports = self._nova_ports(server['id'])
        self.assertEqual(1, len(ports))
        self.assertEqual(server['OS-EXT-SRV-ATTR:host'],
                         ports[0]['binding:host_id'])


class OrcBootFailureTest(OrcBootTestBase):

    def test_spawn_fails_on_one_host_reschedules_to_the_other(self):
        self.flags(max_attempts=2, group='scheduler')
        attempts = self._fail_spawn_on(['host1'])
        self._prefer_host1()
        server = self._create_server(networks='none')
        self.assertEqual('ACTIVE', server['status'])
        self.assertEqual('host2', server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual(['host1', 'host2'], attempts)
        self.assertEqual({'VCPU': 0, 'MEMORY_MB': 0, 'DISK_GB': 0},
                         self._usages('host1'))
        self.assertEqual(1, self._usages('host2')['VCPU'])
        self.assertEqual([self._get_provider_uuid_by_host('host2')],
                         list(self._allocations(server['id'])))
        flow, atoms = self._journal(server['id'])
        self.assertEqual('SUCCESS', flow['state'])
        # the retry remembers the failed attempt on host1
        history = atoms['host_retry'].results
        self.assertEqual(2, len(history))
        self.assertTrue(history[0][1])
        events = self._events(server['id'])
        self.assertEqual('Error', events['orc_spawn']['result'])
        self.assertEqual('Success', events['orc_spawn_revert']['result'])
        self.assertEqual('Success', events['orc_spawn_retry2']['result'])

    def test_spawn_fails_everywhere_leaves_nothing(self):
        self.flags(max_attempts=2, group='scheduler')
        attempts = self._fail_spawn_on(['host1', 'host2'])
        server = self._create_server(
            networks=[{'uuid': self.neutron.network_1['id']}],
            expected_state='ERROR')
        self.assertEqual(2, len(attempts))
        self.assertIsNone(server['OS-EXT-SRV-ATTR:host'])
        # stock's message, word for word
        self.assertEqual(
            'Exceeded maximum number of retries. Exhausted all hosts '
            'available for retrying build failures for instance %s.' %
            server['id'], server['fault']['message'])
        for host in ('host1', 'host2'):
            self.assertEqual({'VCPU': 0, 'MEMORY_MB': 0, 'DISK_GB': 0},
                             self._usages(host))
        self.assertEqual({}, self._allocations(server['id']))
        self.assertEqual([], self._nova_ports(server['id']))
        flow, atoms = self._journal(server['id'])
        self.assertEqual('REVERTED', flow['state'])
        self.assertEqual([], self.orc.coordinator().list_locks())

    def test_network_failure_reverts_without_reschedule(self):
        attempts = self._fail_spawn_on([])

        def allocate(*args, **kwargs):
            raise exception.PortLimitExceeded()
        self.stub_out('nova.network.neutron.API.allocate_for_instance',
                      allocate)
        server = self._create_server(
            networks=[{'uuid': self.neutron.network_1['id']}],
            expected_state='ERROR')
        self.assertEqual([], attempts)
        # stock _build_resources' fault, word for word
        self.assertEqual('Build of instance %s aborted: Failed to allocate '
                         'the network(s), not rescheduling.' % server['id'],
                         server['fault']['message'])
        self.assertEqual({}, self._allocations(server['id']))
        for host in ('host1', 'host2'):
            self.assertEqual(0, self._usages(host)['VCPU'])
        _flow, atoms = self._journal(server['id'])
        self.assertEqual('REVERTED', atoms['networks'].state)
        # block devices come after networks (stock's order): never started
        self.assertEqual('PENDING', atoms['block_devices'].state)
        self.assertNotEqual('SUCCESS', atoms['spawn'].state)

    def test_block_device_failure_reverts_attachments(self):
        attempts = self._fail_spawn_on([])

        def prep(*args, **kwargs):
            raise exception.InvalidBDM('prep failed')
        self.stub_out(
            'nova.compute.manager.ComputeManager._prep_block_device', prep)
        volume_id = self.cinder.IMAGE_BACKED_VOL
        server = self._build_server(networks='none')
        server.pop('imageRef')
        server['block_device_mapping_v2'] = [{
            'boot_index': 0, 'uuid': volume_id, 'source_type': 'volume',
            'destination_type': 'volume'}]
        server = self.api.post_server({'server': server})
        server = self._wait_for_state_change(server, 'ERROR')
        self.assertEqual([], attempts)
        self.assertIn('prep failed', server['fault']['message'])
        # the attachment the API made was deleted by the revert
        self.assertEqual(
            [], [a for a in self.cinder.volume_to_attachment[volume_id]
                 .values() if a['instance_uuid'] == server['id']])
        self.assertEqual({}, self._allocations(server['id']))

    def test_locked_port_fails_fast_with_clear_error(self):
        port = self.neutron.port_1
        coordinator = self.orc.coordinator(conductor_id='other-conductor')
        coordinator.acquire(uuids.other_flow, [('port', port['id'])])
        server = self._create_server(networks=[{'port': port['id']}],
                                     expected_state='ERROR')
        message = server['fault']['message']
        self.assertIn(port['id'], message)
        self.assertIn(uuids.other_flow, message)
        self.assertIn('locked', message)
        # buried in cell0 as stock does for failures before a host
        self.assertEqual('', server['OS-EXT-SRV-ATTR:host'] or '')
        ctxt = nova_context.get_admin_context()
        mapping = objects.InstanceMapping.get_by_instance_uuid(
            ctxt, server['id'])
        self.assertEqual(objects.CellMapping.CELL0_UUID,
                         mapping.cell_mapping.uuid)
        # the other flow keeps its lock; ours released the instance lock
        self.assertEqual(uuids.other_flow,
                         coordinator.holder('port', port['id'])['owner'])
        self.assertIsNone(coordinator.holder('instance', server['id']))
