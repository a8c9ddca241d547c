"""Operator surface and host-side guarantees, on the functional harness:
``nova-orc`` flow/lock commands against a real boot, idempotent and fenced
host-side steps."""

import io
import threading
import time

import oslo_messaging as messaging

from nova import exception
from nova import objects
from nova.orc.compute import manager as orc_compute
from nova.orc.compute import rpcapi as orc_rpcapi
from nova.orc.cmd import orc as orc_cli
from nova.orc import exception as orc_exc
from nova.orc.persistence import backend as journal
from nova.tests.functional.orc import test_boot


class OrcOperatorTest(test_boot.OrcBootTestBase):

    def _cli(self, *argv):
        out = io.StringIO()
        status = orc_cli.main(list(argv), out=out, configure=False)
        return status, out.getvalue()

    def test_flow_list_show_by_uuid_and_name(self):
        server = self._create_server(name='journaled', networks='none')
        status, text = self._cli('flow', 'list')
        self.assertEqual(0, status)
        self.assertIn(server['id'], text)
        self.assertIn('SUCCESS', text)
        for ref in (server['id'], 'journaled'):
            status, text = self._cli('flow', 'show', ref)
            self.assertEqual(0, status)
            lines = text.splitlines()
            self.assertIn('state SUCCESS', lines[0])
            # every task in definition order, with its host and timings
            tasks = [line.split('|')[1].strip() for line in lines
                     if line.startswith('|') and 'task' not in line]
            self.assertEqual(['bury_on_failure', 'lock', 'schedule',
                              'create_record', 'host_retry',
                              'claim_allocation', 'claim_host', 'networks',
                              'build_on_stock_compute', 'block_devices',
                              'spawn', 'finalize'], tasks)
            # the branch for a stock compute, not taken on an orc compute
            stock = [line for line in lines
                     if '| build_on_stock_compute ' in line][0]
            self.assertIn('IGNORE', stock)
            retry = [line for line in lines if '| host_retry ' in line][0]
            self.assertIn('attempts: %s: ok' % server['OS-EXT-SRV-ATTR:host'],
                          retry)
            spawn = [line for line in lines if '| spawn ' in line][0]
            self.assertIn(server['OS-EXT-SRV-ATTR:host'], spawn)
            self.assertRegex(spawn, r'\d+\.\d{3}s')

    def test_flow_show_reports_failed_attempt_and_reverts(self):
        self.flags(max_attempts=2, group='scheduler')
        self._fail_spawn_on(['host1'])
        self._prefer_host1()
        server = self._create_server(networks='none')
        status, text = self._cli('flow', 'show', server['id'])
        self.assertEqual(0, status)
        retry = [line for line in text.splitlines()
                 if '| host_retry ' in line][0]
        self.assertIn('host1: spawn failed on host1', retry)
        self.assertIn('host2: ok', retry)

    def test_flow_show_unknown_fails(self):
        status, _text = self._cli('flow', 'show', 'no-such-server')
        self.assertEqual(1, status)

    def test_flow_graph_is_dot(self):
        status, text = self._cli('flow', 'graph', 'boot')
        self.assertEqual(0, status)
        self.assertTrue(text.startswith('strict digraph "boot"'))
        self.assertIn('"spawn==1.0"', text)
        self.assertEqual(1, self._cli('flow', 'graph', 'nope')[0])

    def test_lock_list_shows_held_locks(self):
        coordinator = self.orc.coordinator(conductor_id='other')
        coordinator.acquire('flow-x', [('port', 'p-1')])
        status, text = self._cli('lock', 'list')
        self.assertEqual(0, status)
        self.assertIn('p-1', text)
        self.assertIn('flow-x', text)


class OrcHostStepsTest(test_boot.OrcBootTestBase):

    def test_spawn_is_idempotent_and_fenced(self):
        server = self._create_server(networks='none')
        host = server['OS-EXT-SRV-ATTR:host']
        compute = self.computes[host]
        endpoint = compute.manager.orc_endpoint
        ctxt = self.ctxt
        instance = objects.Instance.get_by_uuid(ctxt, server['id'])
        spawned = []
        self.stub_out('nova.virt.fake.FakeDriver.spawn',
                      lambda *a, **k: spawned.append(1))
        job = [j for j in endpoint._recorded if j[1] == 'spawn'][0]
        token = endpoint._tokens[server['id']]
        # a resumed flow calling spawn again gets the recorded result
        self.assertTrue(endpoint.spawn(
            ctxt, instance, host, {}, [], None, '[]',
            {'flow_id': job[0], 'atom': 'spawn', 'token': token}))
        # an unrecorded repeat finds the guest on the hypervisor
        self.assertTrue(endpoint.spawn(
            ctxt, instance, host, {}, [], None, '[]',
            {'flow_id': 'another-flow', 'atom': 'spawn', 'token': token}))
        self.assertEqual([], spawned)
        # a conductor holding an older claim token is refused (an expected
        # exception for the RPC server: the caller gets StaleFencingToken)
        endpoint._tokens[server['id']] = token + 5
        exc = self.assertRaises(messaging.ExpectedException, endpoint.spawn,
                                ctxt, instance, host, {}, [], None, '[]',
                                {'flow_id': 'x', 'atom': 'spawn',
                                 'token': token})
        self.assertIsInstance(exc.exc_info[1], orc_exc.StaleFencingToken)


class OrcFixtureTest(test_boot.OrcBootTestBase):

    def test_restarted_compute_is_still_ours(self):
        compute = self.restart_compute_service(self.computes['host1'])
        self.assertIsInstance(compute.manager, orc_compute.OrcComputeManager)
        server = self._create_server(networks='none', host='host1')
        self.assertEqual('ACTIVE', server['status'])


class OrcJobCommandsTest(test_boot.OrcBootTestBase):
    """``nova-orc job ...`` against a boot held in its spawn."""

    def setUp(self):
        super().setUp()
        self.release = threading.Event()
        self.addCleanup(self.release.set)
        original = orc_rpcapi.OrcComputeAPI.spawn
        test = self

        def spawn(api, *args, **kwargs):
            test.release.wait()
            return original(api, *args, **kwargs)
        self.stub_out('nova.orc.compute.rpcapi.OrcComputeAPI.spawn', spawn)

    def _cli(self, *argv):
        out = io.StringIO()
        status = orc_cli.main(list(argv), out=out, configure=False)
        return status, out.getvalue()

    def _held_boot(self):
        server = self.api.post_server(
            {'server': self._build_server(networks='none')})
        server = self._wait_for_state_change(server, 'BUILD')
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status, text = self._cli('job', 'list')
            if server['id'] in text and 'claimed by' in text:
                return server, text
            time.sleep(0.1)
        self.fail('no claimed job for %s: %s' % (server['id'], text))

    def test_job_list_show_and_lock_list_name_the_live_owner(self):
        server, text = self._held_boot()
        self.assertIn('(alive)', text)
        self.assertIn('boot', text)
        status, text = self._cli('job', 'show', server['id'])
        self.assertEqual(0, status)
        self.assertIn('claimed by', text.splitlines()[0])
        self.assertIn('state RUNNING', text)
        status, text = self._cli('lock', 'list')
        self.assertEqual(0, status)
        self.assertIn(server['id'], text)
        self.assertIn('RUNNING', text)
        self.assertIn('(alive)', text)
        self.release.set()
        self._wait_for_state_change(server, 'ACTIVE')
        self._wait_for_flow_end(server['id'])
        status, text = self._cli('job', 'list')
        self.assertNotIn(server['id'], text)

    def test_job_abort_reverts_at_the_next_task(self):
        server, _text = self._held_boot()
        status, text = self._cli('job', 'abort', server['id'],
                                 '--reason', 'operator test')
        self.assertEqual(0, status, text)
        self.release.set()
        server = self._wait_for_state_change(server, 'ERROR')
        self.assertIn('aborted by an operator: operator test',
                      server['fault']['message'])
        flow = self._wait_for_flow_end(server['id'])
        self.assertEqual('REVERTED', flow['state'])
        for compute in self.computes.values():
            self.assertEqual([], compute.driver.list_instance_uuids())
        self.assertEqual({}, self._allocations(server['id']))
        self.assertEqual([], self.orc.coordinator().list_locks())
        status, text = self._cli('job', 'list')
        self.assertNotIn(server['id'], text)

    def _boot_whose_revert_fails(self):
        """A boot whose spawn fails on every host and whose revert then
        fails too (the host unreachable while the guest is destroyed),
        until ``host_down[0]`` is set False. Returns (server, host_down,
        flow): ``flow()`` reads the flow's journal row."""
        self.release.set()   # spawns are not held here: they fail
        self.stub_out('nova.orc.engine.FAILED_JOB_BACKOFF', 0.5)
        self.flags(max_attempts=1, group='scheduler')
        self._fail_spawn_on(['host1', 'host2'])
        host_down = [True]
        destroy_guest = orc_rpcapi.OrcComputeAPI.destroy_guest

        def unreachable_host(api, *args, **kwargs):
            if host_down[0]:
                raise exception.HostNotFound(host='unreachable')
            return destroy_guest(api, *args, **kwargs)
        self.stub_out('nova.orc.compute.rpcapi.OrcComputeAPI.destroy_guest',
                      unreachable_host)
        # no end state yet: the instance stays in BUILD while its revert
        # cannot finish
        server = self.api.post_server(
            {'server': self._build_server(networks='none')})
        conn = journal.JournalBackend().get_connection()

        def flow():
            return conn.list_flows(instance_uuid=server['id'])[0]
        return server, host_down, flow

    def _wait_for(self, predicate, flow, timeout=30):
        deadline = time.monotonic() + timeout
        while not predicate():
            self.assertLess(time.monotonic(), deadline, flow())
            time.sleep(0.1)

    def _check_reverted_and_released(self, server):
        ended = self._wait_for_flow_end(server['id'])
        self.assertEqual('REVERTED', ended['state'])
        self.assertNotIn('quarantined', ended['meta'])
        self._wait_for_state_change(server, 'ERROR')
        for compute in self.computes.values():
            self.assertEqual([], compute.driver.list_instance_uuids())
        self.assertEqual({}, self._allocations(server['id']))
        self.assertEqual([], self.orc.coordinator().list_locks())

    def test_job_resume_reverts_a_quarantined_flow(self):
        """A flow whose revert kept failing past [orc] max_resumes is
        quarantined (job removed, locks kept); once the cause is fixed,
        ``nova-orc job resume`` gives it a fresh budget: its revert is
        tried again and finished, and what it held is released."""
        self.flags(max_resumes=0, group='orc')
        server, host_down, flow = self._boot_whose_revert_fails()
        self._wait_for(lambda: flow()['meta'].get('quarantined'), flow)
        self.assertEqual('FAILURE', flow()['state'])
        self.assertNotEqual([], self.orc.coordinator().list_locks())
        host_down[0] = False
        status, text = self._cli('job', 'resume', server['id'])
        self.assertEqual(0, status, text)
        self._check_reverted_and_released(server)

    def test_job_abort_of_a_failed_revert_reverts_again(self):
        """``nova-orc job abort`` of a flow whose revert failed means
        "revert it now": the revert is tried again, not quarantined."""
        server, host_down, flow = self._boot_whose_revert_fails()
        self._wait_for(lambda: flow()['state'] == 'FAILURE', flow)
        status, text = self._cli('job', 'abort', server['id'],
                                 '--reason', 'operator test')
        self.assertEqual(0, status, text)
        claims = flow()['meta']['claims']
        # claimed with the abort at least once while the host is down
        self._wait_for(lambda: flow()['meta']['claims'] > claims + 1, flow)
        self.assertNotIn('quarantined', flow()['meta'])
        host_down[0] = False
        self._check_reverted_and_released(server)

    def test_job_resume_refuses_a_flow_that_has_a_job_or_ended(self):
        server, _text = self._held_boot()
        status, _text = self._cli('job', 'resume', server['id'])
        self.assertEqual(1, status)
        self.release.set()
        self._wait_for_state_change(server, 'ACTIVE')
        self._wait_for_flow_end(server['id'])
        status, _text = self._cli('job', 'resume', server['id'])
        self.assertEqual(1, status)
