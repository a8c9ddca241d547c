"""Fake virt drivers whose spawn takes a while: for tests and the all-in-one.

Not for production. They are Nova's own fake drivers (``nova.virt.fake``)
with a ``spawn`` that first sleeps ``[orc_fake] spawn_delay`` seconds, so
that a delete (or anything else) can land while a guest is being created,
as it does on a real hypervisor.

Nova loads a driver from ``[DEFAULT] compute_driver`` relative to
``nova.virt``, which is why this module lives in ``nova/virt/`` (installed
into Nova's package like ``nova/orc/``, the pattern out-of-tree drivers such
as nova-lxd use) rather than under ``nova/orc/`` or ``nova/tests/``. It only
imports what ``nova.virt.fake`` imports, so any compute that can run
``fake.FakeDriver`` can run these. Enable in ``nova.conf``::

    [DEFAULT]
    compute_driver = orc_fake.SlowSpawnDriverWithoutFakeNodes
    [orc_fake]
    spawn_delay = 10

``SlowSpawnDriverWithoutFakeNodes`` (``fake.FakeDriverWithoutFakeNodes``:
stable node identity, the all-in-one's driver) suits a real deployment;
``SlowSpawnDriver`` (``fake.FakeDriver``: node named after the host) suits
Nova's functional harness. ``spawn_delay`` is read at each spawn, so a test
can change it with ``self.flags(spawn_delay=..., group='orc_fake')``.
"""

import os
import tempfile
import time

from oslo_config import cfg
from oslo_log import log as logging

import nova.conf
from nova import exception
from nova.virt import fake
from nova.virt import images

CONF = nova.conf.CONF
LOG = logging.getLogger(__name__)

orc_fake_opts = [
    cfg.FloatOpt(
        'spawn_delay',
        default=0.0,
        min=0.0,
        help='Seconds the orc_fake drivers sleep at the start of each spawn '
             '(before the guest exists on the fake hypervisor). 0: spawn at '
             'once, like fake.FakeDriver.'),
    cfg.StrOpt(
        'guests_dir',
        default=None,
        help='Folder where the orc_fake drivers keep one empty file per '
             'guest, ``<guests_dir>/<host>/<instance uuid>``, created when '
             'spawn made the guest and removed when destroy removed it, so '
             'that a test outside the compute process can count the guests '
             'of every fake hypervisor. Unset: none kept.'),
    cfg.StrOpt(
        'fail_spawn_file',
        default=None,
        help='A file naming hosts (whitespace separated) on which spawn '
             'fails (a reschedulable error), read at each spawn; a missing '
             'file fails nothing. Lets a test make builds fail and revert '
             'without restarting the computes.'),
    cfg.BoolOpt(
        'fetch_image',
        default=False,
        help='Download the server\'s image from Glance at each spawn, with '
             'the context the spawn was given (``nova.virt.images.fetch``, '
             'as a real driver does for an image not in its cache), into a '
             'temporary file removed afterwards; a failed download fails '
             'the spawn. The guest\'s file (``guests_dir``) then holds '
             '``<user id> <project id> <bytes>`` of that context. Lets a '
             'test see whose credentials a resumed build used.'),
]
CONF.register_opts(orc_fake_opts, group='orc_fake')


def _guest_file(instance):
    """``<guests_dir>/<host>/<uuid>``, or None when not kept."""
    if not CONF.orc_fake.guests_dir:
        return None
    folder = os.path.join(CONF.orc_fake.guests_dir, CONF.host)
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, instance.uuid)


def _fails_here():
    path = CONF.orc_fake.fail_spawn_file
    try:
        with open(path or '') as f:
            return CONF.host in f.read().split()
    except OSError:
        return False


def _fetch_image(context, instance):
    """Download the instance's image with ``context`` into a temporary
    file (``nova.virt.images.fetch``, Nova's download path for real
    drivers: Glance sees the context's token); returns the size in bytes.

    :raises nova.exception.ImageNotAuthorized, ImageNotFound: Glance's
        answer (a context without a usable token fails here)
    """
    with tempfile.TemporaryDirectory(prefix='orc-fake-image-') as folder:
        path = os.path.join(folder, 'image')
        images.fetch(context, instance.image_ref, path)
        size = os.path.getsize(path)
    LOG.info('Fetched image %s (%d bytes) as user %s of project %s',
             instance.image_ref, size, context.user_id, context.project_id,
             instance=instance)
    return size


class _SlowSpawnMixin:
    def spawn(self, context, instance, *args, **kwargs):
        """Sleep ``[orc_fake] spawn_delay`` seconds (green under eventlet),
        download the image when ``[orc_fake] fetch_image`` is set, then
        ``FakeDriver.spawn`` (the guest appears at the end).

        :raises nova.exception.HypervisorUnavailable: this host is named in
            ``[orc_fake] fail_spawn_file`` (stock reschedules it)
        :raises nova.exception.ImageNotAuthorized: the image download was
            refused (``fetch_image``)
        """
        delay = CONF.orc_fake.spawn_delay
        if delay:
            LOG.info('Spawning slowly: %.1f s', delay, instance=instance)
            time.sleep(delay)
        if _fails_here():
            raise exception.HypervisorUnavailable(host=CONF.host)
        fetched = (_fetch_image(context, instance)
                   if CONF.orc_fake.fetch_image else None)
        result = super().spawn(context, instance, *args, **kwargs)
        path = _guest_file(instance)
        if path:
            with open(path, 'w') as f:
                if fetched is not None:
                    f.write('%s %s %d\n' % (context.user_id,
                                            context.project_id, fetched))
        return result

    def destroy(self, context, instance, *args, **kwargs):
        """``FakeDriver.destroy``, and the guest's file goes."""
        result = super().destroy(context, instance, *args, **kwargs)
        path = _guest_file(instance)
        if path and os.path.exists(path):
            os.unlink(path)
        return result


class SlowSpawnDriver(_SlowSpawnMixin, fake.FakeDriver):
    """``fake.FakeDriver`` whose spawn takes ``[orc_fake] spawn_delay``
    seconds (functional harness: one fake node named after the host)."""


class SlowSpawnDriverWithoutFakeNodes(_SlowSpawnMixin,
                                      fake.FakeDriverWithoutFakeNodes):
    """``fake.FakeDriverWithoutFakeNodes`` whose spawn takes
    ``[orc_fake] spawn_delay`` seconds (all-in-one: stable node identity,
    so the compute can restart)."""
