"""The scheduling of a multi-create request (``min_count`` > 1)::

    bury_group_on_failure -> schedule_group -> post_boots

Stock schedules all instances of a request at once (all fit or none is
built) before building any. Here that scheduling is a journaled flow of its
own, so a conductor dying between the scheduling and the boots leaks
nothing: another conductor resumes it, the scheduling is redone (its
allocations replaced) if its result was not journaled, and the boot flows
not posted yet are posted (one :mod:`nova.orc.flows.boot` flow per
instance, with that instance's host and alternates).

A scheduling failure buries every instance in cell0, as stock does.
"""

from taskflow.patterns import linear_flow

from nova.orc.flows import names
from nova.orc.tasks import instance
from nova.orc.tasks import jobs
from nova.orc.tasks import scheduler

NAME = names.BOOT_GROUP
VERSION = 1
RESUMABLE_VERSIONS = (1,)
#: the handler returns once the boot flows were posted (each of which
#: post_boots waits for until its record exists, as stock's handler)
HANDOFF_AFTER = names.POST_BOOTS
SECRETS = (names.ADMIN_PASSWORD, names.INJECTED_FILES)
#: the boot flows it posts get the secrets
SECRET_CONSUMERS = (names.POST_BOOTS,)
#: the boot flows it posts seal the user's token in their turn
USER_AUTH_CONSUMERS = (names.POST_BOOTS,)


def get_flow():
    """Build the multi-create scheduling flow (rebuilt by TaskFlow from
    ``nova.orc.flows.boot_group.get_flow``).

    :returns: a TaskFlow linear flow named ``boot_group``; it requires the
        store keys of :func:`nova.orc.flows.boot.get_flow` that are common
        to the request (image, requested networks, BDMs, tags, number of
        instances, secrets, context) and :data:`names.INSTANCE_UUIDS`,
        :data:`names.REQUEST_SPECS`, :data:`names.DISPLAY_NAMES`
    """
    return linear_flow.Flow(NAME).add(
        instance.BuryGroupInCell0OnFailure(name=names.BURY_GROUP_ON_FAILURE),
        scheduler.ScheduleGroup(name=names.SCHEDULE_GROUP,
                                provides=names.HOST_LISTS),
        jobs.PostBootFlows(name=names.POST_BOOTS),
    )
