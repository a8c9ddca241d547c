"""Flows, one module per operation, built by module-level factories.

``FACTORIES`` maps a flow name to ``(module, version)`` so that a conductor
resuming a journaled flow rebuilds it by the name recorded in its meta.
"""

from nova.orc.flows import boot

FACTORIES = {boot.NAME: boot}
