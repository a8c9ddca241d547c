"""``nova-orc-compute``: stock nova-compute with OrcComputeManager.

Runs stock ``nova.cmd.compute.main`` with the compute service's manager
class set to :class:`nova.orc.compute.manager.OrcComputeManager` through
``nova.service.SERVICE_MANAGERS``.
"""

from nova.cmd import compute as stock_compute  # noqa: monkey-patches

from nova.orc.compute import rpcapi as orc_rpcapi
from nova.orc import conf  # noqa: F401 - registers [orc]
from nova import rpc
from nova import service

MANAGER = 'nova.orc.compute.manager.OrcComputeManager'


def main():
    rpc.add_extra_exmods(orc_rpcapi.EXCEPTION_MODULE)
    service.SERVICE_MANAGERS['nova-compute'] = MANAGER
    stock_compute.main()
