"""The orchestrator's resume of a flow: as the user, or not at all; a
revert failed in an outage is not counted; a busy conductor's new jobs go
to its idle peers."""

from unittest import mock

import fixtures

from keystoneauth1 import exceptions as ks_exc
from oslo_db import exception as db_exc
import oslo_messaging as messaging
from oslo_utils.fixture import uuidsentinel as uuids
from oslo_utils import uuidutils
from taskflow.persistence import models
from taskflow import states
from taskflow.types import failure as tf_failure

from nova import context as nova_context
from nova.orc import engine
from nova.orc import events
from nova.orc import exception as orc_exc
from nova.orc import fencing
from nova.orc.flows import boot
from nova.orc.flows import names
from nova.orc import jobboard
from nova.orc.persistence import secrets
from nova import test


class PeerClaimTest(test.NoDBTestCase):
    """A job posted by a live conductor that does not run it (every worker
    busy) is taken by an idle peer after ``[orc] peer_claim_delay``, and
    the poster's RPC handler stops waiting for it; without ``[orc]
    secret_key`` (the peer could not unseal the request's secrets) it
    stays with its poster. Two orchestrators on one in-memory board, their
    conductor loops not started: each step is called here."""

    def setUp(self):
        super().setUp()
        self.flags(coordination_url='memory://peer-claim-%s' %
                   uuidutils.generate_uuid(), group='orc')
        self.flags(secret_key='peer-claim-test', peer_claim_delay=2.0,
                   max_workers=1, group='orc')
        self.poster = self._orchestrator()
        self.peer = self._orchestrator()
        self.now = 1000.0
        self.useFixture(fixtures.MockPatchObject(
            engine.time, 'monotonic', side_effect=lambda: self.now))

    def _orchestrator(self):
        orchestrator = engine.Orchestrator(manager=None)
        orchestrator.board.connect()
        self.addCleanup(orchestrator.board.close)
        # runs are submitted, not run
        orchestrator._job_executor = mock.Mock()
        return orchestrator

    def _post(self, **details):
        # as post_job posts a boot whose secrets are sealed
        self.poster.board.post(uuids.flow, None, dict({
            'posted_by': self.poster.owner, 'operation': boot.NAME,
            'version': boot.VERSION, 'needs_secrets': True,
            'key_check': secrets.key_check()}, **details))

    def _claimed_by_the_peer_after_the_delay(self):
        self._busy(self.poster)
        self.peer._claim_jobs()
        self.now += 60
        self.peer._claim_jobs()
        return self._claimed(self.peer) == [uuids.flow]

    def _busy(self, orchestrator):
        orchestrator._runs[uuids.other_flow] = mock.sentinel.run

    def _claimed(self, orchestrator):
        return [call.args[1].claim.flow_id for call in
                orchestrator._job_executor.submit.call_args_list]

    def test_a_busy_posters_job_goes_to_an_idle_peer_after_the_delay(self):
        self._busy(self.poster)
        self._post()
        self.poster._claim_jobs()
        self.peer._claim_jobs()
        self.assertEqual([], self._claimed(self.poster) +
                         self._claimed(self.peer))
        self.now += 1.9
        self.peer._claim_jobs()
        self.assertEqual([], self._claimed(self.peer))
        self.now += 0.1
        self.peer._claim_jobs()
        self.assertEqual([uuids.flow], self._claimed(self.peer))

    def test_a_free_poster_runs_its_job_at_once(self):
        self._post()
        self.peer._claim_jobs()
        self.poster._claim_jobs()
        self.assertEqual([uuids.flow], self._claimed(self.poster))
        self.now += 10
        self.peer._claim_jobs()
        self.assertEqual([], self._claimed(self.peer))

    def test_without_the_secret_key_the_job_waits_for_its_poster(self):
        self.flags(secret_key=None, group='orc')
        self._busy(self.poster)
        self._post()
        self.peer._claim_jobs()
        self.now += 60
        self.peer._claim_jobs()
        self.assertEqual([], self._claimed(self.peer))

    def test_a_peer_with_another_key_leaves_the_job_to_its_poster(self):
        self._post(key_check=secrets.key_check())
        self.flags(secret_key='another key', group='orc')
        self.assertFalse(self._claimed_by_the_peer_after_the_delay())

    def test_a_job_without_secrets_needs_no_common_key(self):
        self._post(needs_secrets=False, key_check=None)
        self.flags(secret_key='another key', group='orc')
        self.assertTrue(self._claimed_by_the_peer_after_the_delay())

    def test_a_flow_version_the_peer_cannot_resume_stays_with_its_poster(
            self):
        # a rolling upgrade: the poster runs a newer boot flow
        self._post(version=max(boot.RESUMABLE_VERSIONS) + 1)
        self.assertFalse(self._claimed_by_the_peer_after_the_delay())

    def test_a_job_of_a_conductor_that_did_not_say_stays_with_it(self):
        self.poster.board.post(uuids.flow, None,
                               {'posted_by': self.poster.owner})
        self.assertFalse(self._claimed_by_the_peer_after_the_delay())

    def test_a_handler_that_times_out_drops_the_secrets_of_a_job_not_here(
            self):
        self._handoff_pending()
        self.flags(peer_claim_delay=3600.0, group='orc')
        self.assertFalse(self.poster.wait_for_handoff(uuids.flow, 0))
        self.assertNotIn(uuids.flow, self.poster._transient)

    def _handoff_pending(self):
        self.poster._handoffs[uuids.flow] = engine.threading.Event()
        self.poster._transient[uuids.flow] = {'secret': 'in memory'}

    def test_the_posters_rpc_handler_does_not_wait_for_a_job_run_elsewhere(
            self):
        self._handoff_pending()
        self.assertFalse(self.poster._run_elsewhere(uuids.flow, self.now))
        self.assertIn(uuids.flow, self.poster._transient)
        self.now += 2.0
        self.assertTrue(self.poster._run_elsewhere(uuids.flow, 1000.0))
        # whoever runs it unseals the secrets from the journal
        self.assertNotIn(uuids.flow, self.poster._transient)

    def test_a_job_running_here_keeps_its_handler_and_secrets(self):
        self._handoff_pending()
        self.poster._runs[uuids.flow] = mock.sentinel.run
        self.now += 30
        self.assertFalse(self.poster._run_elsewhere(uuids.flow, 1000.0))
        self.flags(secret_key=None, group='orc')
        del self.poster._runs[uuids.flow]
        self.assertFalse(self.poster._run_elsewhere(uuids.flow, 1000.0))
        self.assertIn(uuids.flow, self.poster._transient)

    def test_wait_for_handoff_returns_once_the_job_runs_elsewhere(self):
        self._handoff_pending()
        self.flags(peer_claim_delay=0.0, group='orc')
        self.useFixture(fixtures.MockPatchObject(
            engine, 'HANDOFF_POLL_INTERVAL', 0.01))
        self.assertFalse(self.poster.wait_for_handoff(uuids.flow, 3600))
        self.assertEqual({}, self.poster._handoffs)


class FailedInOutageTest(test.NoDBTestCase):
    """Which failed reverts are an outage (waited out, not counted against
    ``[orc] max_resumes``): all of them failed reaching a service."""

    @staticmethod
    def _flow(*errors):
        flow_detail = models.FlowDetail('boot', uuids.flow)
        for i, error in enumerate(errors):
            atom = models.TaskDetail('task%d' % i, 'task%d' % i)
            atom.state = states.REVERTED
            if error is not None:
                atom.state = states.REVERT_FAILURE
                try:
                    raise error
                except Exception:
                    # as the journal gives it back: no exc_info
                    atom.revert_failure = tf_failure.Failure.from_dict(
                        tf_failure.Failure().to_dict())
            flow_detail.add(atom)
        return flow_detail

    def test_reverts_that_could_not_reach_a_service_are_an_outage(self):
        self.assertEqual(
            'ConnectFailure, DBConnectionError',
            engine.Orchestrator._failed_in_outage(self._flow(
                db_exc.DBConnectionError('down'), None,
                ks_exc.ConnectFailure('refused'))))

    def test_zookeeper_unreachable_for_the_fencing_check_is_an_outage(self):
        self.assertEqual(
            'CoordinationUnavailable',
            engine.Orchestrator._failed_in_outage(self._flow(
                orc_exc.CoordinationUnavailable(reason='test'))))

    def test_one_revert_failing_otherwise_is_counted(self):
        self.assertIsNone(engine.Orchestrator._failed_in_outage(self._flow(
            db_exc.DBConnectionError('down'), ValueError('a bug'))))

    def test_a_connect_timeout_is_an_outage(self):
        self.assertEqual('ConnectTimeout', engine.Orchestrator.
                         _failed_in_outage(self._flow(
                             ks_exc.ConnectTimeout('no answer'))))

    def test_outages_are_not_resumes_before_or_after_an_operator_resume(
            self):
        # 3 outages, then 4 failed reverts: 7 claims after the first, 4 of
        # them resumes
        meta = {'claims': 8, 'outages': 3}
        self.assertEqual(4, engine.Orchestrator._resumes(meta, {}))
        # nova-orc job resume then (a fresh budget), 1 outage and 1 failed
        # revert since: 1 resume, whatever came before
        details = {'claims_before_operator_resume': 8,
                   'outages_before_operator_resume': 3}
        meta = {'claims': 11, 'outages': 4}
        self.assertEqual(1, engine.Orchestrator._resumes(meta, details))

    def test_a_compute_that_never_answers_an_undo_is_counted(self):
        """It may be gone for good: the job is quarantined after max_resumes
        instead of holding the boot and its locks forever."""
        self.assertIsNone(engine.Orchestrator._failed_in_outage(self._flow(
            messaging.MessagingTimeout('no answer'))))

    def test_no_failed_revert_is_no_outage(self):
        self.assertIsNone(engine.Orchestrator._failed_in_outage(
            self._flow(None)))


class BootFlowTest(test.NoDBTestCase):

    def test_networks_then_block_devices(self):
        """Stock's _build_resources order (NETWORKING, then
        BLOCK_DEVICE_MAPPING: clients see it in instance.update
        notifications), with either engine."""
        [host_steps] = [node for node, _ in boot.get_flow().iter_nodes()
                        if node.name == 'host']
        self.assertIn((names.NETWORKS, names.BLOCK_DEVICES_TASK),
                      [(u.name, v.name) for u, v, _ in
                       host_steps.iter_links()])


class ResumedContextTest(test.NoDBTestCase):

    def setUp(self):
        super().setUp()
        self.ctxt = nova_context.RequestContext(
            'user', 'project', roles=['member', 'reader'],
            auth_token='user-token',
            service_catalog=[{'type': 'network', 'name': 'neutron'}])
        self.fields = engine.journal_context(self.ctxt)

    def test_journal_keeps_no_token(self):
        self.assertNotIn('auth_token', self.fields)
        self.assertNotIn('service_catalog', self.fields)

    def test_resumed_with_the_users_token_acts_as_the_user(self):
        context = engine.resumed_context(self.fields,
                                         engine.user_auth(self.ctxt))
        self.assertEqual('user-token', context.auth_token)
        self.assertEqual([{'type': 'network', 'name': 'neutron'}],
                         context.service_catalog)
        self.assertFalse(context.is_admin)
        self.assertEqual(['member', 'reader'], context.roles)
        self.assertEqual(('user', 'project'),
                         (context.user_id, context.project_id))

    def test_resumed_without_it_acts_with_service_credentials(self):
        context = engine.resumed_context(self.fields)
        self.assertIsNone(context.auth_token)
        self.assertTrue(context.is_admin)
        self.assertEqual('project', context.project_id)

    def test_a_request_without_token_has_no_user_auth(self):
        self.assertIsNone(engine.user_auth(
            nova_context.RequestContext('user', 'project')))


class UnsealTest(test.NoDBTestCase):
    """What a resumed boot needs from the sealed secrets, and the abort
    when it cannot have them."""

    def _flow(self, done, **meta):
        flow_detail = models.FlowDetail(boot.NAME, uuids.flow)
        for name in (names.SCHEDULE, names.NETWORKS, names.SPAWN,
                     names.BUILD_ON_STOCK_COMPUTE):
            atom = models.TaskDetail(name, uuids.__getattr__(name))
            atom.state = done.get(name, states.PENDING)
            flow_detail.add(atom)
        flow_detail.meta.update(meta)
        return flow_detail

    def _run(self):
        return engine.JobRun(mock.Mock(), jobboard.Claim(
            None, uuids.flow, 1, {}))

    def test_the_users_token_comes_back_with_the_key(self):
        self.flags(secret_key='k', group='orc')
        auth = {'auth_token': 't', 'service_catalog': []}
        sealed = secrets.seal({names.ADMIN_PASSWORD: None,
                               names.USER_AUTH: auth})
        run = self._run()
        got = engine.Orchestrator._unseal(run, self._flow(
            {}, user_auth_given=True, sealed_secrets=sealed))
        self.assertEqual(auth, got[names.USER_AUTH])
        self.assertIsNone(run.abort_reason)

    def test_without_the_key_a_flow_before_its_user_calls_reverts(self):
        run = self._run()
        self.assertEqual({}, engine.Orchestrator._unseal(run, self._flow(
            {names.SCHEDULE: states.SUCCESS}, user_auth_given=True,
            sealed_secrets=None)))
        self.assertIn("the user's token, needed by networks, spawn, "
                      "build_on_stock_compute, cannot be recovered",
                      run.abort_reason)
        self.assertIn('[orc] secret_key unset', run.abort_reason)

    def test_without_the_key_a_flow_past_its_user_calls_goes_on(self):
        run = self._run()
        engine.Orchestrator._unseal(run, self._flow(
            {names.NETWORKS: states.SUCCESS, names.SPAWN: states.SUCCESS,
             names.BUILD_ON_STOCK_COMPUTE: states.IGNORE},
            user_auth_given=True, sealed_secrets=None))
        self.assertIsNone(run.abort_reason)

    def test_a_flow_that_never_ran_needs_everything(self):
        # adopted after its poster died (no atom journaled yet): without
        # the key it must not run with service credentials and no password
        run = self._run()
        flow_detail = models.FlowDetail(boot.NAME, uuids.flow)
        flow_detail.meta.update(secrets_given=True, user_auth_given=True,
                                sealed_secrets=None)
        engine.Orchestrator._unseal(run, flow_detail)
        self.assertIn('the secrets of the request (admin_password, '
                      'injected_files), needed by spawn, '
                      'build_on_stock_compute', run.abort_reason)

    def test_a_key_that_did_not_seal_them_says_so(self):
        self.flags(secret_key='one', group='orc')
        sealed = secrets.seal({names.USER_AUTH: {'auth_token': 't'}})
        self.flags(secret_key='other', group='orc')
        run = self._run()
        engine.Orchestrator._unseal(run, self._flow(
            {}, user_auth_given=True, sealed_secrets=sealed))
        self.assertIn('not the key the secrets were sealed with',
                      run.abort_reason)


class InstanceActionListenerTest(test.NoDBTestCase):
    """Events of a run that lost its claim are not written."""

    def _listener(self, lost):
        run = mock.Mock(lost=lost)
        listener = events.InstanceActionListener(
            mock.Mock(), nova_context.RequestContext('user', 'project'),
            uuids.instance, 'conductor1', cell_uuid=uuids.cell, run=run)
        self.useFixture(fixtures.MockPatchObject(listener, '_write'))
        for target in ('nova.orc.tasks.base.cell_mapping',
                       'nova.orc.events.nova_context.target_cell',
                       'nova.orc.events.main_db_api'):
            self.useFixture(fixtures.MockPatch(target))
        return listener

    def _finish(self, listener, exc):
        try:
            raise exc
        except Exception:
            failure = tf_failure.Failure()
        listener._task_receiver(states.FAILURE, {
            'task_name': names.SPAWN, 'result': failure})

    def test_a_lost_claim_is_no_event(self):
        listener = self._listener(lost=False)
        self._finish(listener, orc_exc.ClaimLost(flow_id=uuids.flow))
        self.assertEqual([], listener._pending)

    def test_a_lost_run_writes_nothing(self):
        listener = self._listener(lost=True)
        self._finish(listener, ValueError('boom'))
        listener.flush()
        listener._write.assert_not_called()
        self.assertEqual([], listener._pending)

    def test_a_live_run_writes_its_events_fenced(self):
        listener = self._listener(lost=False)
        self._finish(listener, ValueError('boom'))
        seen = []
        listener._write.side_effect = lambda *a: seen.append(
            fencing.current())
        listener.flush()
        self.assertEqual([listener.run], seen)
        self.assertIsNone(fencing.current())
