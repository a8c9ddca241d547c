"""``nova-orc-compute``: stock nova-compute with OrcComputeManager.

Runs stock ``nova.cmd.compute.main`` with the compute service's manager
class set to :class:`nova.orc.compute.manager.OrcComputeManager` through
``nova.service.SERVICE_MANAGERS``.
"""

from nova.cmd import compute as stock_compute  # noqa: monkey-patches

from nova.orc import conf  # noqa: F401 - registers [orc]
from nova import service

MANAGER = 'nova.orc.compute.manager.OrcComputeManager'


def main():
    service.SERVICE_MANAGERS['nova-compute'] = MANAGER
    stock_compute.main()
