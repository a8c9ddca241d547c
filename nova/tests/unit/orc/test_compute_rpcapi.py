"""The client of the orc compute endpoint: calls asked again on the same
host when they time out."""

from unittest import mock

import oslo_messaging as messaging
from oslo_utils.fixture import uuidsentinel as uuids

from nova import context as nova_context
from nova.orc.compute import rpcapi as orc_rpcapi
from nova import test

JOB = {'flow_id': uuids.flow, 'atom': 'claim_host', 'token': 7}


class OrcComputeAPITest(test.NoDBTestCase):

    def setUp(self):
        super().setUp()
        self.api = orc_rpcapi.OrcComputeAPI()
        patcher = mock.patch.object(self.api, 'client')
        self.client = patcher.start()
        self.addCleanup(patcher.stop)
        self.call = self.client.prepare.return_value.call
        self.ctxt = nova_context.RequestContext('user', 'project')

    def _claim(self):
        return self.api.claim_resources(self.ctxt, 'host1', None, 'node1',
                                        None, None, JOB)

    def test_every_step_and_undo_has_heartbeats(self):
        """A step waiting on the compute (the claim behind the resource
        tracker's lock in a burst) is kept alive, not timed out: each call
        runs up to long_rpc_timeout with rpc_response_timeout heartbeats,
        as stock's long calls."""
        self.flags(long_rpc_timeout=1800, rpc_response_timeout=60)
        calls = {
            'claim_resources': lambda: self._claim(),
            'abort_claim': lambda: self.api.abort_claim(
                self.ctxt, 'host1', None, 'node1', 'why', JOB),
            'allocate_networks': lambda: self.api.allocate_networks(
                self.ctxt, 'host1', None, None, [], None, JOB),
            'deallocate_networks': lambda: self.api.deallocate_networks(
                self.ctxt, 'host1', None, None, JOB),
            'prep_block_devices': lambda: self.api.prep_block_devices(
                self.ctxt, 'host1', None, {}, JOB),
            'cleanup_block_devices': lambda: self.api.cleanup_block_devices(
                self.ctxt, 'host1', None, JOB),
            'spawn': lambda: self.api.spawn(
                self.ctxt, 'host1', None, 'node1', {}, [], None, '[]', JOB),
            'destroy_guest': lambda: self.api.destroy_guest(
                self.ctxt, 'host1', None, '[]', JOB),
            'finish_build': lambda: self.api.finish_build(
                self.ctxt, 'host1', None, 'node1', '[]', JOB),
        }
        for method, call in calls.items():
            self.client.prepare.reset_mock()
            call()
            options = self.client.prepare.call_args.kwargs
            self.assertEqual(1800, options['timeout'], method)
            self.assertEqual(60, options['call_monitor_timeout'], method)
            self.assertEqual(method, self.call.call_args.args[1])
            # the claim starts new work: topic compute, as stock's build;
            # every later step and undo goes to compute-alt
            self.assertEqual(None if method == 'claim_resources'
                             else 'compute-alt', options.get('topic'),
                             method)

    def test_lost_message_is_asked_again_on_the_same_host(self):
        self.call.side_effect = [messaging.MessagingTimeout(),
                                 messaging.MessagingTimeout(),
                                 {'host': 'host1'}]
        self.assertEqual({'host': 'host1'}, self._claim())
        self.assertEqual(3, self.call.call_count)
        # the same step, the same idempotency key and token each time
        for call in self.call.call_args_list:
            self.assertEqual('claim_resources', call.args[1])
            self.assertEqual(JOB, call.kwargs['job'])
        self.assertEqual(1, self.client.prepare.call_count)
        self.assertEqual('host1',
                         self.client.prepare.call_args.kwargs['server'])

    def test_gives_up_after_host_call_attempts(self):
        self.flags(host_call_attempts=2, group='orc')
        self.call.side_effect = messaging.MessagingTimeout()
        self.assertRaises(messaging.MessagingTimeout, self._claim)
        self.assertEqual(2, self.call.call_count)

    def test_other_errors_are_not_asked_again(self):
        self.call.side_effect = messaging.RemoteError('Boom', 'failed')
        self.assertRaises(messaging.RemoteError, self._claim)
        self.assertEqual(1, self.call.call_count)
