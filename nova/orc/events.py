"""Instance-action events for every task of a flow.

See doc/source/architecture.rst, section 3.

:class:`InstanceActionListener` is a TaskFlow listener: each task start,
success, failure, revert and failed revert becomes an event of the request's
instance action, so stock clients show the structured progress
(``openstack server event show <server> <request-id>``):

* ``orc_<atom>``: started when the task runs, finished ``Success`` or
  ``Error`` (with the failure message and traceback);
* ``orc_<atom>_revert``: the revert of that task;
* ``_retry<N>`` appended for the N-th host attempt (N >= 2) of a reschedule.

Events need the instance action, which exists once the instance record is
in a cell (``create_record``). A boot buried in cell0 gets none: its action
there has stock's one failed event. The listener keeps events
in memory with their real times and writes them in batches: when the record
reaches its cell, before ``spawn`` starts (the long step shows as running)
and when the flow ends; a start and finish written together are one row.
Writing events never fails the flow: errors are logged.
"""

import threading

from oslo_log import log as logging
from oslo_utils import timeutils
from taskflow.listeners import base as tf_listeners
from taskflow import states
from taskflow.types import failure as tf_failure

from nova import context as nova_context
from nova.db.main import api as main_db_api
from nova import objects
from nova.orc import exception as orc_exc
from nova.orc import fencing
from nova.orc.flows import names
from nova.orc.tasks import base as task_base

LOG = logging.getLogger(__name__)

_START_STATES = {states.RUNNING: '', states.REVERTING: '_revert'}
_END_STATES = {states.SUCCESS: '', states.FAILURE: '',
               states.REVERTED: '_revert', states.REVERT_FAILURE: '_revert'}
#: tasks before which buffered events are written, so that a long step
#: shows as started
FLUSH_BEFORE = (names.SPAWN,)
_RETRIED_ATOMS = (names.CLAIM_ALLOCATION, names.CLAIM_HOST, names.NETWORKS,
                  names.BLOCK_DEVICES_TASK, names.SPAWN)


class InstanceActionListener(tf_listeners.Listener):
    """Records a flow's task transitions as instance-action events.

    :param engine: the TaskFlow engine running the flow
    :param context: the request's ``RequestContext`` (its request id names
        the instance action)
    :param instance_uuid: str
    :param host: str recorded as the events' host (the conductor)
    :param cell_uuid: the instance's cell when already known (a resumed
        flow past ``create_record``), else None
    :param run: the :class:`nova.orc.engine.JobRun` of the flow, or None:
        its writes are fenced as its tasks' are (:mod:`nova.orc.fencing`),
        and a run whose claim is lost records nothing more (its new owner
        records the flow's events; a refused side effect is no event)
    """

    def __init__(self, engine, context, instance_uuid, host,
                 cell_uuid=None, run=None):
        super().__init__(engine,
                         task_listen_for=tf_listeners.DEFAULT_LISTEN_FOR,
                         flow_listen_for=(),
                         retry_listen_for=tf_listeners.DEFAULT_LISTEN_FOR)
        self.context = context
        self.instance_uuid = instance_uuid
        self.host = host
        self.cell_uuid = cell_uuid
        self.run = run
        self.attempt = 1
        self._pending = []
        self._started = set()
        self._lock = threading.Lock()

    # --------------------------------------------------------- receivers
    def _retry_receiver(self, state, details):
        if state == states.RETRYING:
            with self._lock:
                self.attempt += 1

    def _task_receiver(self, state, details):
        name = details.get('task_name')
        if state in _START_STATES:
            self._record('start', self._event(name, _START_STATES[state]),
                         None)
            if state == states.RUNNING and name in FLUSH_BEFORE:
                # a long step: show what happened so far, and that it runs
                self.flush()
        elif state in _END_STATES:
            result = details.get('result')
            failure = result if isinstance(result, tf_failure.Failure) \
                else None
            if failure is not None and failure.check(orc_exc.ClaimLost):
                # not this task's failure: the run lost its claim, and the
                # flow goes on with its new owner
                return
            self._record('finish', self._event(name, _END_STATES[state]),
                         failure)
            if state == states.SUCCESS and name == names.CREATE_RECORD:
                self._set_cell(result)
            elif (state == states.REVERTED and
                  name == names.BURY_ON_FAILURE and self.cell_uuid is None):
                self._drop_pending()

    def _event(self, atom, suffix):
        name = names.EVENT_PREFIX + atom + suffix
        if atom in _RETRIED_ATOMS and self.attempt > 1:
            name += '_retry%d' % self.attempt
        return name

    def __exit__(self, type, value, tb):
        try:
            self.flush()
        finally:
            super().__exit__(type, value, tb)

    # ------------------------------------------------------------ writes
    def _record(self, kind, event, failure):
        with self._lock:
            self._pending.append((kind, event, timeutils.utcnow(), failure))

    def _drop_pending(self):
        """The boot was buried in cell0 (or never got an instance): its
        ``create`` action there has stock's one failed event,
        ``conductor_schedule_and_build_instances``, and nothing else, as
        stock's (``ComputeTaskManager._create_instance_action_for_cell0``);
        the tasks that ran are in the journal (``nova-orc flow show``)."""
        with self._lock:
            self._pending = []
            self.cell_uuid = None

    def _set_cell(self, cell_uuid):
        with self._lock:
            self.cell_uuid = cell_uuid
        self.flush()

    def _lost(self):
        return self.run is not None and self.run.lost

    def flush(self):
        """Write the buffered events (a start and finish of the same event
        become one row). Does nothing until the instance has a cell, and
        nothing once the run's claim is lost; the writes pass the run's
        lease (:func:`nova.orc.fencing.check`) as its tasks' do."""
        with self._lock:
            if self._lost():
                self._pending = []
                return
            if self.cell_uuid is None or not self._pending:
                return
            pending, self._pending = self._pending, []
        # bound for the flush only (the engine's thread; in the serial
        # engine it may be a task's, whose binding comes back after)
        outer = fencing.current()
        fencing.enter(self.run)
        try:
            cell = task_base.cell_mapping(self.context, self.cell_uuid)
            with nova_context.target_cell(self.context, cell) as cctxt:
                # one transaction for the batch (Nova's DB API calls join it)
                with main_db_api.context_manager.writer.using(cctxt):
                    self._write(cctxt, pending)
        except Exception as e:
            LOG.warning('Could not record instance-action events %s: %s',
                        [r[1] for r in pending], e,
                        instance_uuid=self.instance_uuid)
        finally:
            fencing.enter(outer)

    def _write(self, cctxt, records):
        started = {e: when for k, e, when, _f in records if k == 'start'}
        finished = {e for k, e, _w, _f in records if k == 'finish'}
        for kind, event, when, failure in records:
            if kind == 'start':
                if event in finished:
                    continue  # written with its finish below
                values = objects.InstanceActionEvent.pack_action_event_start(
                    cctxt, self.instance_uuid, event, host=self.host)
                values['start_time'] = when
                main_db_api.action_event_start(cctxt, values)
                self._started.add(event)
            elif event in self._started:
                main_db_api.action_event_finish(
                    cctxt, self._finish_values(cctxt, event, when, failure))
            else:
                values = self._finish_values(cctxt, event, when, failure)
                values.update(
                    objects.InstanceActionEvent.pack_action_event_start(
                        cctxt, self.instance_uuid, event, host=self.host))
                values['start_time'] = started.get(event, when)
                values['finish_time'] = when
                main_db_api.action_event_start(cctxt, values)

    def _finish_values(self, cctxt, event, when, failure):
        exc = failure.exception if failure is not None else None
        tb = None
        if failure is not None:
            tb = failure.traceback_str or failure.exception_str
            if exc is None:
                exc = failure.exception_str
        values = objects.InstanceActionEvent.pack_action_event_finish(
            cctxt, self.instance_uuid, event, exc_val=exc, exc_tb=tb)
        values['finish_time'] = when
        return values
