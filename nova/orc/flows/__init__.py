"""Flows, one module per operation, built by module-level factories.

``FACTORIES`` maps a flow name to its module (``NAME``, ``VERSION``,
``RESUMABLE_VERSIONS``, ``SECRETS``, ``SECRET_CONSUMERS``,
``USER_AUTH_CONSUMERS``, ``get_flow``) so
that a conductor resuming a journaled flow finds what it needs by the name
recorded in the journal.
"""

from nova.orc.flows import boot
from nova.orc.flows import boot_group

FACTORIES = {boot.NAME: boot, boot_group.NAME: boot_group}
