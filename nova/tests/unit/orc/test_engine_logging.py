"""How the orchestrator logs task failures (``FlowLoggingListener``)."""

import logging

import fixtures
import taskflow.engines
from taskflow.patterns import linear_flow
from taskflow import task

from nova import exception
from nova.orc import engine
from nova.orc import exception as orc_exc
from nova import test


class _Fails(task.Task):
    def __init__(self, exc):
        super().__init__(name='spawn')
        self.exc = exc

    def execute(self):
        raise self.exc


class FlowLoggingListenerTest(test.NoDBTestCase):

    def _run(self, exc):
        logs = self.useFixture(fixtures.FakeLogger(
            name='nova.orc.engine', level=logging.INFO,
            format='%(levelname)s %(message)s'))
        flow = linear_flow.Flow('boot').add(_Fails(exc))
        eng = taskflow.engines.load(flow, engine='serial')
        with engine.FlowLoggingListener(eng, log=engine.LOG):
            self.assertRaises(type(exc), eng.run)
        return logs.output

    def test_deleted_server_is_info_without_traceback(self):
        out = self._run(exception.InstanceNotFound(instance_id='x'))
        self.assertIn("INFO Task 'spawn' stopped: the server was deleted "
                      "during its build", out)
        self.assertNotIn("transitioned into state 'FAILURE'", out)
        self.assertNotIn('Traceback', out)

    def test_other_failures_keep_their_warning_and_traceback(self):
        out = self._run(RuntimeError('boom'))
        self.assertIn("WARNING Task 'spawn'", out)
        self.assertIn("transitioned into state 'FAILURE'", out)
        self.assertIn('Traceback', out)

    def test_lost_claim_is_a_warning_without_traceback(self):
        out = self._run(orc_exc.ClaimLost(flow_id='f1'))
        self.assertIn("WARNING Task 'spawn' stopped before its next side "
                      "effect: Flow f1: the job claim of this conductor is "
                      "lost", out)
        self.assertNotIn("transitioned into state 'FAILURE'", out)
        self.assertNotIn('Traceback', out)
