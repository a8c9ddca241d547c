"""Operator surface and host-side guarantees, on the functional harness:
``nova-orc`` flow/lock commands against a real boot, idempotent and fenced
host-side steps."""

import io

import oslo_messaging as messaging

from nova import objects
from nova.orc.compute import manager as orc_compute
from nova.orc.cmd import orc as orc_cli
from nova.orc import exception as orc_exc
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
                              'block_devices', 'spawn', 'finalize'], tasks)
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
