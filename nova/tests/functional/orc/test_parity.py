"""Boot-path results that must be stock's, word for word, with our services.

Each test here reproduces a case where an upstream functional test found
our conductor and compute different from stock's (the upstream test named
in its docstring, run by ``tools/compat``), on Nova's harness with our
managers and ZooKeeper (:class:`nova.tests.functional.orc.test_boot.
OrcBootTestBase`), and asserts what stock records.
"""

from nova.compute import instance_actions
from nova import context as nova_context
from nova import objects
from nova.tests.functional.orc import test_boot


class BuriedInCell0Test(test_boot.OrcBootTestBase):
    """A boot that no host fits, buried in cell0 (upstream
    ``regressions.test_bug_1852458``)."""

    def test_create_action_failed_as_stock(self):
        # a flavor that no host fits: NoValidHost
        flavor_id = self._create_flavor(disk=10 ** 6)
        server = self._create_server(flavor_id=flavor_id, networks='none',
                                     expected_state='ERROR')
        self.assertIn('No valid host', server['fault']['message'])
        actions = self.api.get_instance_actions(server['id'])
        self.assertEqual(1, len(actions), actions)
        self.assertEqual(instance_actions.CREATE, actions[0]['action'])
        # stock: 'Error' once its one event failed with a traceback
        self.assertEqual('Error', actions[0]['message'])
        action = self.api.api_get(
            '/servers/%s/os-instance-actions/%s' % (
                server['id'], actions[0]['request_id'])
        ).body['instanceAction']
        # stock's one event, and no other (_create_instance_action_for_cell0)
        self.assertEqual(['conductor_schedule_and_build_instances'],
                         [e['event'] for e in action['events']])
        event = action['events'][0]
        self.assertEqual('Error', event['result'])
        self.assertIn('select_destinations', event['traceback'])
        # the fault's details carry the traceback, as stock's from its
        # except block (not "NoneType: None")
        cctxt = nova_context.get_admin_context()
        cell0 = objects.CellMapping.get_by_uuid(
            cctxt, objects.CellMapping.CELL0_UUID)
        with nova_context.target_cell(cctxt, cell0) as c0:
            fault = objects.InstanceFault.get_latest_for_instance(
                c0, server['id'])
        self.assertIn('select_destinations', fault.details)
