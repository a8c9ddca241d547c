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

    def test_long_steps_have_heartbeats_short_ones_expire(self):
        self.flags(long_rpc_timeout=1800, rpc_response_timeout=60)
        self.api.spawn(self.ctxt, 'host1', None, 'node1', {}, [], None,
                       '[]', JOB)
        self.client.prepare.assert_called_once_with(
            server='host1', version='1.0', timeout=1800,
            call_monitor_timeout=60, topic='compute-alt')
        # a short step's message expires with its call (rpc_response_
        # timeout): no late copy reaches the compute long after
        self.client.prepare.reset_mock()
        self.api.abort_claim(self.ctxt, 'host1', None, 'node1', 'why', JOB)
        self.client.prepare.assert_called_once_with(
            server='host1', version='1.0', topic='compute-alt')
        # the claim starts new work: topic compute, as stock's build
        self.client.prepare.reset_mock()
        self._claim()
        self.assertNotIn('topic', self.client.prepare.call_args.kwargs)

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
