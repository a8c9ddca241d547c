"""A rolling upgrade in Nova's order: orc conductors, some computes stock.

host1 runs nova-orc-compute (``OrcComputeManager``), host2 stock
``nova.compute.manager.ComputeManager`` (no orc endpoint). The boot flow
runs for every boot (flows counted); on host2 its host steps are the one
coarse step ``build_on_stock_compute``, which casts stock
``build_and_run_instance``.
"""

import time

from nova.compute import rpcapi as compute_rpcapi
from nova.orc.compute import manager as orc_compute
from nova.tests.functional.orc import fixtures as orc_fixtures
from nova.tests.functional.orc import test_boot
from nova.tests.functional.orc import test_failover

STOCK_CAST = 'nova.compute.rpcapi.ComputeAPI.build_and_run_instance'
JOURNAL_CAST = 'nova.orc.tasks.compute.BuildOnStockCompute._journal_cast'

STOCK_COMPUTE_MANAGER = 'nova.compute.manager.ComputeManager'
HOST_STEPS = ('claim_host', 'networks', 'block_devices', 'spawn',
              'finalize')


class MixedVersionsTestBase(test_boot.OrcBootTestBase):
    """host1 orc, host2 stock; casts of stock ``build_and_run_instance``
    recorded by host in ``self.casts``."""

    STOCK_HOSTS = ('host2',)

    def setUp(self):
        self.casts = []
        self.cast_retries = []
        original = compute_rpcapi.ComputeAPI.build_and_run_instance
        test = self

        def build_and_run_instance(api, ctxt, instance, host, *args,
                                   **kwargs):
            test.casts.append(host)
            test.cast_retries.append(kwargs['filter_properties'].get('retry'))
            return original(api, ctxt, instance, host, *args, **kwargs)
        self.stub_out(STOCK_CAST, build_and_run_instance)
        self.stub_out('nova.orc.tasks.compute.STOCK_BUILD_POLL_INTERVAL', 0.1)
        super().setUp()

    def _start_compute(self, host, cell_name=None):
        if host not in self.STOCK_HOSTS:
            return super()._start_compute(host, cell_name=cell_name)
        compute = self.start_service('compute', host=host,
                                     cell_name=cell_name,
                                     manager=STOCK_COMPUTE_MANAGER)
        self.computes[host] = compute
        return compute

    def _prefer(self, host):
        self.stub_out(
            'nova.scheduler.weights.ram.RAMWeigher._weigh_object',
            lambda self, host_state, spec: 1.0 if host_state.host == host
            else 0.0)

    def _boot_flows(self, state='SUCCESS'):
        return orc_fixtures.FlowTracker.finished[('boot', state)]

    def _boot_active_on(self, host):
        """Boot a server; it ends ACTIVE on ``host`` through one boot flow
        (counted). Returns ``(server, {atom name: atom detail})``."""
        before = self._boot_flows()
        server = self._create_server(networks='none')
        self.assertEqual('ACTIVE', server['status'])
        self.assertEqual(host, server['OS-EXT-SRV-ATTR:host'])
        # on a stock compute the server can be ACTIVE a moment before its
        # flow's end is journaled and counted
        deadline = time.monotonic() + 20
        while self._boot_flows() == before and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(before + 1, self._boot_flows())
        _flow, atoms = self._journal(server['id'])
        return server, atoms


class MixedVersionsBootTest(MixedVersionsTestBase):

    def test_computes_are_what_the_test_says(self):
        self.assertEqual('ComputeManager',
                         type(self.computes['host2'].manager).__name__)
        self.assertEqual('OrcComputeManager',
                         type(self.computes['host1'].manager).__name__)

    def test_stock_compute_selected_builds_the_stock_way(self):
        self._prefer('host2')
        server, atoms = self._boot_active_on('host2')
        self.assertEqual(['host2'], self.casts)
        flow, _atoms = self._journal(server['id'])
        self.assertEqual(2, flow['meta']['version'])
        self.assertEqual('stock', atoms['claim_host'].results['endpoint'])
        self.assertEqual('SUCCESS', atoms['build_on_stock_compute'].state)
        self.assertEqual('active',
                         atoms['build_on_stock_compute'].results['vm_state'])
        for name in ('networks', 'block_devices', 'spawn', 'finalize'):
            self.assertEqual('IGNORE', atoms[name].state, name)
        # stock's compute built it: its event, one guest there, placement
        events = self._events(server['id'])
        self.assertEqual('Success',
                         events[orc_compute.BUILD_EVENT]['result'])
        self.assertEqual('host2',
                         events[orc_compute.BUILD_EVENT]['host'])
        self.assertNotIn('orc_spawn', events)
        self.assertEqual(
            [server['id']],
            self.computes['host2'].driver.list_instance_uuids())
        self.assertEqual(1, self._usages('host2')['VCPU'])
        self.assertEqual(0, self._usages('host1')['VCPU'])
        self.assertEqual([], self.orc.coordinator().list_locks())

    def test_orc_compute_selected_runs_the_host_steps(self):
        self._prefer('host1')
        _server, atoms = self._boot_active_on('host1')
        self.assertEqual([], self.casts)
        self.assertNotIn('endpoint', atoms['claim_host'].results)
        for name in HOST_STEPS:
            self.assertEqual('SUCCESS', atoms[name].state, name)
        self.assertEqual('IGNORE', atoms['build_on_stock_compute'].state)

    def test_reschedule_from_orc_compute_to_stock_compute(self):
        self.flags(max_attempts=2, group='scheduler')
        self._prefer('host1')
        attempts = self._fail_spawn_on(['host1'])
        _server, atoms = self._boot_active_on('host2')
        self.assertEqual(['host1', 'host2'], attempts)
        self.assertEqual(['host2'], self.casts)
        self.assertEqual(2, len(atoms['host_retry'].results))
        self.assertEqual('SUCCESS', atoms['build_on_stock_compute'].state)
        # the stock compute is told this is the second attempt, after host1
        self.assertEqual({'num_attempts': 2,
                          'hosts': [['host1', 'host1'], ['host2', 'host2']]},
                         self.cast_retries[0])
        self.assertEqual(0, self._usages('host1')['VCPU'])
        self.assertEqual(1, self._usages('host2')['VCPU'])
        self.assertEqual([], self.computes['host1'].driver.list_instance_uuids())
        self.assertEqual([], self.orc.coordinator().list_locks())

    def test_reschedule_from_stock_compute_to_orc_compute(self):
        """The stock compute's build fails: it reschedules through the
        conductor's stock ``build_instances`` to the alternate, the orc
        compute (which serves stock ``build_and_run_instance`` too); the
        flow's coarse step waits through it and ends SUCCESS."""
        self.flags(max_attempts=2, group='scheduler')
        self._prefer('host2')
        attempts = self._fail_spawn_on(['host2'])
        server, atoms = self._boot_active_on('host1')
        self.assertEqual(['host2', 'host1'], attempts)
        # the flow's cast to host2, then stock build_instances' to host1
        self.assertEqual(['host2', 'host1'], self.casts)
        flow, _atoms = self._journal(server['id'])
        self.assertEqual('SUCCESS', flow['state'])
        self.assertEqual('SUCCESS', atoms['build_on_stock_compute'].state)
        self.assertEqual(1, len(atoms['host_retry'].results))
        self.assertEqual(1, self._usages('host1')['VCPU'])
        self.assertEqual(0, self._usages('host2')['VCPU'])

    def test_stock_compute_build_fails_everywhere_ends_in_error(self):
        self.flags(max_attempts=1, group='scheduler')
        self._prefer('host2')
        self._fail_spawn_on(['host2'])
        server = self._create_server(networks='none', expected_state='ERROR')
        self.assertEqual(['host2'], self.casts)
        flow, atoms = self._journal(server['id'])
        # the stock compute ended the build (ERROR, fault, allocation
        # gone); the flow took nothing back
        self.assertEqual('SUCCESS', flow['state'])
        self.assertEqual('error',
                         atoms['build_on_stock_compute'].results['vm_state'])
        self.assertIn('spawn failed on host2', server['fault']['message'])
        self.assertEqual({}, self._allocations(server['id']))
        self.assertEqual([], self.orc.coordinator().list_locks())


class MixedVersionsFailoverTest(MixedVersionsTestBase,
                                test_failover.OrcFailoverTestBase):
    """The conductor running ``build_on_stock_compute`` dies; conductor2
    resumes it. A stock compute builds twice on a second cast, so the
    survivor casts only when the journal shows the first run never
    journaled its cast."""

    def setUp(self):
        super().setUp()
        self._prefer('host2')

    def _create_server(self, **kwargs):
        """The stock helper waits about 10 s for ACTIVE: too short for a
        death, a session expiry and the resumed build on a loaded machine.
        Wait for the flow's end instead (60 s)."""
        server = super(test_boot.OrcBootTestBase, self)._create_server(
            expected_state='BUILD', **kwargs)
        self._wait_for_flow_end(server['id'], timeout=60)
        return self.api.get_server(server['id'])

    def _check_built_once_on_host2(self, server):
        self.assertEqual('ACTIVE', server['status'])
        self.assertEqual('host2', server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual(1, len(self.died), self.died)
        flow, atoms = self._journal(server['id'])
        self.assertEqual('SUCCESS', flow['state'])
        self.assertEqual(2, flow['meta']['claims'])
        self.assertEqual('SUCCESS', atoms['build_on_stock_compute'].state)
        self.assertEqual(['host2'], self.casts)
        self.assertEqual(
            [server['id']],
            self.computes['host2'].driver.list_instance_uuids())
        # the stock compute ran its build once
        events = self._events(server['id'])
        self.assertEqual('Success',
                         events[orc_compute.BUILD_EVENT]['result'])
        self.assertEqual(1, self._usages('host2')['VCPU'])
        self.assertEqual([], self.orc.coordinator().list_locks())

    def test_die_after_the_cast_resume_does_not_cast_again(self):
        self._die_around(STOCK_CAST, after=True)
        server = self._create_server(networks='none')
        self._check_built_once_on_host2(server)

    def test_die_before_journaling_the_cast_resume_casts(self):
        self._die_around(JOURNAL_CAST, after=False)
        server = self._create_server(networks='none')
        self._check_built_once_on_host2(server)

    def test_die_between_journaling_and_the_cast_never_casts_twice(self):
        """The cast may or may not have left: the survivor never sends a
        second one (a stock compute would build again). Here none left:
        the survivor waits ``long_rpc_timeout`` and leaves the server
        BUILD, as a stock conductor dying before its cast does; the flow
        ends and its lock goes."""
        self.flags(long_rpc_timeout=3)
        self._die_around(JOURNAL_CAST, after=True)
        server = self._create_server(networks='none')
        self.assertEqual('BUILD', server['status'])
        self.assertEqual(1, len(self.died), self.died)
        self.assertEqual([], self.casts)
        flow, atoms = self._journal(server['id'])
        self.assertEqual('SUCCESS', flow['state'])
        self.assertEqual(2, flow['meta']['claims'])
        self.assertIsNone(atoms['build_on_stock_compute'].results['vm_state'])
        self.assertEqual([], self.orc.coordinator().list_locks())

    def test_die_before_probing_the_compute(self):
        self._die_around(
            'nova.orc.compute.rpcapi.OrcComputeAPI.claim_resources',
            after=False)
        server = self._create_server(networks='none')
        self._check_built_once_on_host2(server)
