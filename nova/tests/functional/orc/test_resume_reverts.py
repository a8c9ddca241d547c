"""A resume that cannot go on still undoes what the interrupted atom did.

The conductor running a boot dies inside an atom (after its side effect,
before its result is journaled); the survivor re-runs that atom. When the
resume is aborted (``[orc] max_resumes = 0``: its first task fails with
``JobAborted`` before the atom's own probes run), the atom's revert gets a
failure for a result and must still undo what the dead conductor's run of
it did: the placement allocation of ``schedule``, the cell record of
``create_record``. And a ``create_record`` resumed after the user deleted
the server must leave no orphan record in the cell, as stock's conductor
does in that race. And a boot flow journaled by a conductor that died
before posting its job must still run when the multi-create flow that
posts it resumes.

The death and the survivor as in :mod:`test_failover`; the end state is
checked in placement, in both cell databases, in the API database (build
request, instance mapping) and on the lock service.
"""

import unittest
from unittest import mock

from nova.compute import api as compute_api
from nova.compute import vm_states
from nova import context as nova_context
from nova.db.main import api as main_db_api
from nova.db.main import models
from nova import exception
from nova import objects
from nova.orc.persistence import backend as journal
from nova.tests.functional.api import client
from nova.tests.functional.orc import test_failover

MANAGER = test_failover.MANAGER
SELECT_DESTINATIONS = ('nova.scheduler.client.query.SchedulerQueryClient.'
                       'select_destinations')
#: called by create_record between ``instance.create()`` in the cell and
#: the mapping of the instance to that cell, outside any cell context (the
#: harness's cell databases are behind one lock a frozen thread would hold)
RECHECK_QUOTA = MANAGER + '._recheck_quota'
MAP_TO_CELL = MANAGER + '._map_instance_to_cell'
ABORTED = 'resumed 1 times, more than [orc] max_resumes = 0'


class ResumeRevertTest(test_failover.OrcFailoverTest):

    # ------------------------------------------------------------ helpers
    def _records(self, instance_uuid):
        """``{cell name: [(vm_state, deleted)]}`` of the instance's rows in
        each cell database, soft-deleted ones included."""
        records = {}
        for name, cell in self.cell_mappings.items():
            with nova_context.target_cell(self.ctxt, cell) as cctxt:
                with main_db_api.get_context_manager(
                        cctxt).reader.using(cctxt):
                    rows = main_db_api.model_query(
                        cctxt, models.Instance, read_deleted='yes',
                    ).filter_by(uuid=instance_uuid).all()
                    records[name] = [(r.vm_state, bool(r.deleted))
                                     for r in rows]
        return records

    def _faults(self, instance_uuid, cell_name):
        cell = self.cell_mappings[cell_name]
        with nova_context.target_cell(self.ctxt, cell) as cctxt:
            return objects.InstanceFaultList.get_by_instance_uuids(
                cctxt, [instance_uuid])

    def _check_build_request_gone(self, instance_uuid):
        self.assertRaises(exception.BuildRequestNotFound,
                          objects.BuildRequest.get_by_instance_uuid,
                          self.ctxt, instance_uuid)

    def _check_error_in_cell1(self, server):
        """The record the dead conductor created in cell1 is the server's
        only record: ERROR there with the abort's fault, mapped there."""
        uuid = server['id']
        self.assertEqual({'cell0': [], 'cell1': [(vm_states.ERROR, False)]},
                         self._records(uuid))
        self.assertIn(ABORTED, server['fault']['message'])
        faults = self._faults(uuid, 'cell1')
        self.assertEqual(1, len(faults), faults)
        self.assertIn(ABORTED, faults[0].message)
        mapping = objects.InstanceMapping.get_by_instance_uuid(self.ctxt,
                                                               uuid)
        self.assertEqual(self.cell_mappings['cell1'].uuid,
                         mapping.cell_mapping.uuid)
        self._check_build_request_gone(uuid)
        # one create action, kept with the record
        self._events(uuid)
        with nova_context.target_cell(
                self.ctxt, self.cell_mappings['cell1']) as cctxt:
            bdms = objects.BlockDeviceMappingList.get_by_instance_uuid(
                cctxt, uuid)
        self.assertEqual(1, len(bdms), bdms)

    # --------------------------------------------------- aborted resumes
    def test_abort_after_the_scheduler_claimed_deletes_the_allocation(self):
        self.flags(max_resumes=0, group='orc')
        self._die_around(SELECT_DESTINATIONS, after=True)
        # no allocation, no lock, flow reverted (checked by the helper)
        server = self._boot_to_error()
        self.assertEqual('select_destinations', self.died[0][1])
        self.assertIn(ABORTED, server['fault']['message'])
        # buried in cell0, as stock buries a request that got no host
        self.assertEqual({'cell0': [(vm_states.ERROR, False)], 'cell1': []},
                         self._records(server['id']))
        mapping = objects.InstanceMapping.get_by_instance_uuid(
            self.ctxt, server['id'])
        self.assertEqual(objects.CellMapping.CELL0_UUID,
                         mapping.cell_mapping.uuid)
        self._check_build_request_gone(server['id'])

    def test_abort_after_the_bare_cell_record_errors_it(self):
        """Died with the record in cell1 and nothing else: no action, no
        BDMs, no mapping."""
        self.flags(max_resumes=0, group='orc')
        self._die_around(RECHECK_QUOTA, after=True)
        server = self._boot_to_error()
        self.assertEqual('_recheck_quota', self.died[0][1])
        self._check_error_in_cell1(server)

    def test_abort_before_mapping_errors_the_record(self):
        """Died with the record, its action and BDMs in cell1, unmapped."""
        self.flags(max_resumes=0, group='orc')
        self._die_around(MAP_TO_CELL, after=False)
        server = self._boot_to_error()
        self._check_error_in_cell1(server)

    def test_abort_after_mapping_errors_the_record(self):
        self.flags(max_resumes=0, group='orc')
        self._die_around(MAP_TO_CELL, after=True)
        server = self._boot_to_error()
        self._check_error_in_cell1(server)

    # ------------------------------------- deleted before the resume
    def test_resume_after_the_user_deleted_the_server_leaves_no_record(self):
        """The dead conductor created the cell1 record but did not map it;
        the user deletes the server (the API deletes the build request; it
        cannot see the record); the resumed ``create_record`` destroys the
        record, as stock does when the build request is gone."""
        deleted = []

        def delete_the_server():
            servers = self.api.get_servers(detail=False)
            self.assertEqual(1, len(servers), servers)
            # the API looks for an unmapped instance in its own [database]:
            # cell1 in this harness, where it would find and destroy the
            # record itself; elsewhere (devstack's API: cell0) it does not
            with mock.patch.object(compute_api.API, '_lookup_instance',
                                   return_value=(None, None)):
                self.api.delete_server(servers[0]['id'])
            deleted.append(servers[0]['id'])
        self.after_death = delete_the_server
        self._die_around(MAP_TO_CELL, after=False)
        post = self.api.post_server({'server': self._build_server(
            networks='none')})
        uuid = post['id']
        flow = self._wait_for_flow_end(uuid)
        self.assertEqual([uuid], deleted)
        self.assertEqual(1, len(self.died), self.died)
        self.assertEqual('REVERTED', flow['state'])
        self.assertEqual(2, flow['meta']['claims'])
        # gone for the user: not listed, 404
        self.assertEqual([], self.api.get_servers(detail=False))
        e = self.assertRaises(client.OpenStackApiNotFoundException,
                              self.api.get_server, uuid)
        self.assertEqual(404, e.response.status_code)
        # no record left in a cell (destroyed in cell1, none in cell0)
        self.assertEqual({'cell0': [], 'cell1': [(vm_states.BUILDING, True)]},
                         self._records(uuid))
        self.assertRaises(exception.InstanceMappingNotFound,
                          objects.InstanceMapping.get_by_instance_uuid,
                          self.ctxt, uuid)
        self._check_build_request_gone(uuid)
        self.assertEqual({}, self._allocations(uuid))
        self.assertEqual([], self.orc.coordinator().list_locks())
        for compute in self.computes.values():
            self.assertEqual([], compute.driver.list_instance_uuids())

    # ------------------------------------- journaled, never posted
    def test_boot_flow_journaled_but_never_posted_is_posted_on_resume(self):
        """The conductor running a multi-create request dies after
        journaling the first boot flow and before posting its job: the
        resumed post_boots posts that job (the flow was not "posted"
        because it is in the journal), and both servers boot."""
        self._die_around('nova.orc.jobboard.ZooKeeperJobBoard.post',
                         after=False)
        servers = self._boot_group()
        self.assertEqual(1, len(self.died), self.died)
        self.assertEqual('post', self.died[0][1])
        self._check_group_active(servers)
        conn = journal.JournalBackend().get_connection()
        for server in servers:
            flows = conn.list_flows(instance_uuid=server['id'])
            self.assertEqual(1, len(flows), flows)
            self.assertEqual(self.cell_mappings['cell1'].uuid,
                             objects.InstanceMapping.get_by_instance_uuid(
                                 self.ctxt, server['id']).cell_mapping.uuid)
            self._check_build_request_gone(server['id'])


def load_tests(loader, standard_tests, pattern):
    """This module's tests only: those inherited from
    :class:`test_failover.OrcFailoverTest` run in their own module."""
    return unittest.TestSuite(
        ResumeRevertTest(name)
        for name in loader.getTestCaseNames(ResumeRevertTest)
        if name in vars(ResumeRevertTest))
