"""``OrcComputeManager``: the stock compute manager plus the orc endpoint.

The stock ``ComputeManager`` keeps serving every stock RPC (a stock
conductor, or ours for operations not yet orchestrated, works unchanged).
:class:`OrcComputeEndpoint` adds, in RPC namespace ``orc`` version 1.0, the
fine-grained host-side steps of the boot flow. Each step is the piece of
stock ``ComputeManager._do_build_and_run_instance`` /
``_build_and_run_instance`` / ``_build_resources`` it names, called through
the stock manager's own methods, so the instance, notifications, resource
tracker and instance-action records are what stock produces.

Steps are idempotent, keyed by ``job = {'flow_id', 'atom', 'token'}``: a
repeated forward call (a resumed flow) returns the recorded result, and
``spawn`` also probes the hypervisor so that a guest is never created twice.
``token`` fences conductors that lost their job: a call with a token lower
than the highest seen for the instance is refused.
"""

import collections
import threading

from oslo_log import log as logging
import oslo_messaging as messaging

from nova.compute import manager as compute_manager
from nova.compute import task_states
from nova.compute import utils as compute_utils
from nova.compute import vm_states
from nova import exception
from nova.i18n import _
from nova.network import model as network_model
from nova import objects
from nova.objects import fields
from nova.orc.compute import rpcapi as orc_rpcapi
from nova.orc import exception as orc_exc
from nova.virt import driver as virt_driver

LOG = logging.getLogger(__name__)

#: the instance-action event stock records around a build on the host
BUILD_EVENT = 'compute__do_build_and_run_instance'

#: spawn failures stock turns into BuildAbortException (no reschedule)
SPAWN_ABORTS = (exception.FlavorDiskTooSmall, exception.FlavorMemoryTooSmall,
                exception.ImageNotActive, exception.ImageUnacceptable,
                exception.InvalidDiskInfo, exception.InvalidDiskFormat,
                exception.CertificateValidationFailed,
                exception.VolumeEncryptionNotSupported,
                exception.InvalidInput, exception.RequestedVRamTooHigh)

#: recorded step results (and fencing tokens) kept per compute host
MAX_RECORDED_STEPS = 4096


class OrcComputeEndpoint:
    """RPC endpoint ``orc`` 1.0 of a compute host: boot steps of a flow.

    :param manager: the host's :class:`OrcComputeManager`
    """

    target = messaging.Target(namespace=orc_rpcapi.NAMESPACE,
                              version=orc_rpcapi.VERSION)

    def __init__(self, manager):
        self.manager = manager
        self._lock = threading.Lock()
        self._recorded = collections.OrderedDict()
        self._tokens = collections.OrderedDict()

    # ----------------------------------------------------- idempotency
    def _check(self, instance_uuid, job):
        token = int(job.get('token') or 0)
        with self._lock:
            latest = self._tokens.get(instance_uuid, 0)
            if token < latest:
                raise orc_exc.StaleFencingToken(
                    instance_uuid=instance_uuid, token=token, latest=latest)
            self._tokens[instance_uuid] = token
            self._tokens.move_to_end(instance_uuid)
            while len(self._tokens) > MAX_RECORDED_STEPS:
                self._tokens.popitem(last=False)
            return self._recorded.get((job['flow_id'], job['atom']))

    def _record(self, job, result):
        with self._lock:
            self._recorded[(job['flow_id'], job['atom'])] = result
            while len(self._recorded) > MAX_RECORDED_STEPS:
                self._recorded.popitem(last=False)
        return result

    def _forget(self, job):
        with self._lock:
            self._recorded.pop((job['flow_id'], job['atom']), None)

    # ------------------------------------------------------------ claim
    def claim_resources(self, context, instance, node, limits, request_spec,
                        job):
        """Resource-tracker claim for the build (stock
        ``_do_build_and_run_instance`` and the start of
        ``_build_and_run_instance``).

        :returns: ``{'host', 'node'}``
        :raises ComputeResourcesUnavailable: the node cannot fit it
            (reschedulable); ``BuildAbortException``: request unsupported
        """
        done = self._check(instance.uuid, job)
        if done is not None:
            return done
        mgr = self.manager
        instance.vm_state = vm_states.BUILDING
        instance.task_state = None
        instance.save(expected_task_state=(task_states.SCHEDULING, None))
        objects.InstanceActionEvent.event_start(
            context, instance.uuid, BUILD_EVENT, want_result=False,
            host=mgr.host)
        bdms = objects.BlockDeviceMappingList.get_by_instance_uuid(
            context, instance.uuid)
        image = request_spec.image if 'image' in request_spec else None
        mgr._notify_about_instance_usage(
            context, instance, 'create.start',
            extra_usage_info={'image_name': image.name if image and
                              'name' in image else None})
        compute_utils.notify_about_instance_create(
            context, instance, mgr.host,
            phase=fields.NotificationPhase.START, bdms=bdms)
        instance.system_metadata.update(
            {'boot_roles': ','.join(context.roles)})
        requested_networks = (request_spec.requested_networks
                              if 'requested_networks' in request_spec
                              else None)
        mgr._check_device_tagging(requested_networks, bdms)
        mgr._check_trusted_certs(instance)
        provider_mapping = mgr._get_request_group_mapping(request_spec)
        if provider_mapping:
            try:
                compute_utils.update_pci_request_with_placement_allocations(
                    context, mgr.reportclient,
                    instance.pci_requests.requests, provider_mapping)
            except (exception.AmbiguousResourceProviderForPCIRequest,
                    exception.UnexpectedResourceProviderNameForPCIRequest
                    ) as e:
                raise exception.BuildAbortException(
                    reason=str(e), instance_uuid=instance.uuid)
        allocs = mgr.reportclient.get_allocations_for_consumer(
            context, instance.uuid)
        mgr.rt.instance_claim(context, instance, node, allocs, limits)
        hints = mgr._get_scheduler_hints({}, request_spec)
        mgr._validate_instance_group_policy(context, instance, hints)
        return self._record(job, {'host': mgr.host, 'node': node})

    def abort_claim(self, context, instance, node, reason, job):
        """Undo :meth:`claim_resources` (stock reschedule clean-up):
        drop the claim, count a failed build on the node, ``create.error``
        notifications, finish the build event with the error, clear host
        and node, task state back to SCHEDULING."""
        self._forget(job)
        mgr = self.manager
        if instance.host == mgr.host:
            mgr.rt.abort_instance_claim(context, instance, node)
        fault = orc_exc.with_traceback(exception.RescheduledException(
            instance_uuid=instance.uuid, reason=reason))
        bdms = objects.BlockDeviceMappingList.get_by_instance_uuid(
            context, instance.uuid)
        mgr._notify_about_instance_usage(context, instance, 'create.error',
                                         fault=fault)
        compute_utils.notify_about_instance_create(
            context, instance, mgr.host,
            phase=fields.NotificationPhase.ERROR, exception=fault,
            bdms=bdms)
        try:
            objects.InstanceActionEvent.event_finish_with_failure(
                context, instance.uuid, BUILD_EVENT, exc_val=reason,
                exc_tb=reason, want_result=False)
        except (exception.InstanceActionNotFound,
                exception.InstanceActionEventNotFound):
            pass
        mgr._build_failed(node)
        mgr._nil_out_instance_obj_host_and_node(instance)
        instance.task_state = task_states.SCHEDULING
        try:
            instance.save()
        except exception.InstanceNotFound:
            pass

    # --------------------------------------------------------- networks
    def allocate_networks(self, context, instance, requested_networks,
                          security_groups, provider_mapping, job):
        """Allocate and bind ports (stock ``_allocate_network`` and
        ``_allocate_network_async``, with its retries).

        :returns: network info JSON
        :raises BuildAbortException: allocation failed (stock does not
            reschedule network failures)
        """
        done = self._check(instance.uuid, job)
        if done is not None:
            return done
        mgr = self.manager
        instance.vm_state = vm_states.BUILDING
        instance.task_state = task_states.NETWORKING
        instance.save(expected_task_state=[
            None, task_states.BLOCK_DEVICE_MAPPING])
        try:
            nw_info = mgr._allocate_network_async(
                context, instance, requested_networks, security_groups,
                provider_mapping, None)
        except (exception.InstanceNotFound,
                exception.UnexpectedDeletingTaskStateError):
            raise
        except Exception as e:
            LOG.exception('Failed to allocate network(s)', instance=instance)
            raise exception.BuildAbortException(
                instance_uuid=instance.uuid,
                reason=_('Failed to allocate the network(s), not '
                         'rescheduling: %s') % e)
        # no save here (stock saves the instance at the next task state,
        # so that no extra instance.update notification goes out)
        return self._record(job, nw_info.json())

    def deallocate_networks(self, context, instance, requested_networks,
                            job):
        """Unplug VIFs and deallocate ports (stock
        ``_cleanup_allocated_networks``)."""
        self._forget(job)
        self.manager._cleanup_allocated_networks(
            context, instance, requested_networks)

    # ---------------------------------------------------- block devices
    def prep_block_devices(self, context, instance, image, job):
        """Attach volumes (stock ``_build_resources`` block-device part
        and ``_prep_block_device``).

        :returns: list of attached volume ids
        :raises BuildAbortException: stock's non-reschedulable BDM errors
        """
        done = self._check(instance.uuid, job)
        if done is not None:
            return done
        mgr = self.manager
        bdms = objects.BlockDeviceMappingList.get_by_instance_uuid(
            context, instance.uuid)
        try:
            mgr.driver.prepare_for_spawn(instance)
            mgr._default_block_device_names(
                instance, objects.ImageMeta.from_dict(image), bdms)
            instance.vm_state = vm_states.BUILDING
            instance.task_state = task_states.BLOCK_DEVICE_MAPPING
            instance.save()
            mgr._prep_block_device(context, instance, bdms)
        except (exception.InstanceNotFound,
                exception.UnexpectedDeletingTaskStateError,
                exception.ComputeResourcesUnavailable):
            raise
        except (exception.UnexpectedTaskStateError,
                exception.InstanceUnacceptable,
                exception.OverQuota, exception.InvalidBDM) as e:
            raise exception.BuildAbortException(
                instance_uuid=instance.uuid, reason=e.format_message())
        except Exception:
            LOG.exception('Failure prepping block device', instance=instance)
            raise exception.BuildAbortException(
                instance_uuid=instance.uuid,
                reason=_('Failure prepping block device.'))
        return self._record(job, [bdm.volume_id for bdm in bdms
                                  if bdm.is_volume])

    def cleanup_block_devices(self, context, instance, job):
        """Delete this host's volume attachments (the volume part of stock
        ``_shutdown_instance``); missing ones are ignored."""
        self._forget(job)
        mgr = self.manager
        bdms = objects.BlockDeviceMappingList.get_by_instance_uuid(
            context, instance.uuid)
        for bdm in bdms:
            if not (bdm.is_volume and bdm.attachment_id):
                continue
            try:
                mgr.volume_api.attachment_delete(context, bdm.attachment_id)
            except (exception.VolumeAttachmentNotFound,
                    exception.VolumeNotFound):
                pass
            except Exception as e:
                LOG.warning('Could not delete attachment %s of volume %s: %s',
                            bdm.attachment_id, bdm.volume_id, e,
                            instance=instance)

    # ------------------------------------------------------------ spawn
    def spawn(self, context, instance, node, image, injected_files,
              admin_password, network_info, job):
        """Create the guest (stock ``_build_and_run_instance`` spawn part).

        Idempotent: returns at once when the step is recorded or the
        hypervisor already has the guest.

        :raises BuildAbortException: stock's non-reschedulable failures
            (image, flavor, disk checks); any other error is reschedulable
        """
        done = self._check(instance.uuid, job)
        if done is not None:
            return done
        mgr = self.manager
        if mgr.driver.instance_exists(instance):
            LOG.info('Guest already exists: not spawning again',
                     instance=instance)
            return self._record(job, True)
        image_meta = objects.ImageMeta.from_dict(image)
        nw_info = network_model.NetworkInfo.hydrate(network_info or '[]')
        bdms = objects.BlockDeviceMappingList.get_by_instance_uuid(
            context, instance.uuid)
        block_device_info = virt_driver.get_block_device_info(instance, bdms)
        instance.vm_state = vm_states.BUILDING
        instance.task_state = task_states.SPAWNING
        instance.save(expected_task_state=[task_states.BLOCK_DEVICE_MAPPING,
                                           task_states.NETWORKING])
        allocs = mgr.reportclient.get_allocations_for_consumer(
            context, instance.uuid)
        try:
            mgr.driver.spawn(context, instance, image_meta,
                             mgr._decode_files(injected_files),
                             admin_password, allocs, network_info=nw_info,
                             block_device_info=block_device_info,
                             accel_info=[])
        except SPAWN_ABORTS as e:
            raise exception.BuildAbortException(
                instance_uuid=instance.uuid, reason=e.format_message())
        return self._record(job, True)

    def destroy_guest(self, context, instance, network_info, job):
        """Destroy a failed guest (stock ``_shutdown_instance`` driver
        part and ``failed_spawn_cleanup``)."""
        self._forget(job)
        mgr = self.manager
        nw_info = network_model.NetworkInfo.hydrate(network_info or '[]')
        bdms = objects.BlockDeviceMappingList.get_by_instance_uuid(
            context, instance.uuid)
        block_device_info = virt_driver.get_block_device_info(instance, bdms)
        try:
            mgr.driver.destroy(context, instance, nw_info, block_device_info)
        except exception.InstanceNotFound:
            pass
        mgr.driver.failed_spawn_cleanup(instance)

    # ----------------------------------------------------------- finish
    def finish_build(self, context, instance, node, network_info, job):
        """ACTIVE (stock end of ``_build_and_run_instance`` and of
        ``_locked_do_build_and_run_instance``): power state, launched_at,
        access IPs, scheduler info, ``create.end``, event finished, build
        success counted on the node."""
        done = self._check(instance.uuid, job)
        if done is not None:
            return done
        mgr = self.manager
        nw_info = network_model.NetworkInfo.hydrate(network_info or '[]')
        instance.system_metadata.pop('network_allocated', None)
        self._set_access_ips(instance, nw_info)
        mgr._update_instance_after_spawn(instance)
        instance.save(expected_task_state=task_states.SPAWNING)
        mgr._update_scheduler_instance_info(context, instance)
        bdms = objects.BlockDeviceMappingList.get_by_instance_uuid(
            context, instance.uuid)
        mgr._notify_about_instance_usage(
            context, instance, 'create.end',
            extra_usage_info={'message': _('Success')}, network_info=nw_info)
        compute_utils.notify_about_instance_create(
            context, instance, mgr.host,
            phase=fields.NotificationPhase.END, bdms=bdms)
        objects.InstanceActionEvent.event_finish(
            context, instance.uuid, BUILD_EVENT, want_result=False)
        mgr._build_succeeded(node)
        return self._record(job, True)

    @staticmethod
    def _set_access_ips(instance, nw_info):
        # stock _build_and_run_instance: [DEFAULT]
        # default_access_ip_network_name picks the access IPs
        name = compute_manager.CONF.default_access_ip_network_name
        if not name or instance.access_ip_v4 or instance.access_ip_v6:
            return
        for vif in nw_info:
            if vif['network']['label'] == name:
                for ip in vif.fixed_ips():
                    if not instance.access_ip_v4 and ip['version'] == 4:
                        instance.access_ip_v4 = ip['address']
                    if not instance.access_ip_v6 and ip['version'] == 6:
                        instance.access_ip_v6 = ip['address']
                break


class OrcComputeManager(compute_manager.ComputeManager):
    """Stock ``ComputeManager`` serving also :class:`OrcComputeEndpoint`.

    Started by ``nova-orc-compute`` (or by any harness through
    ``nova.service.Service.create(manager=...)``).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.orc_endpoint = OrcComputeEndpoint(self)
        self.additional_endpoints.append(self.orc_endpoint)
