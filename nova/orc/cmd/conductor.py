"""``nova-orc-conductor``: stock nova-conductor with OrcConductorManager.

Runs stock ``nova.cmd.conductor.main`` (same options, workers, logging,
guru meditation reports) with the conductor service's manager class set to
:class:`nova.orc.manager.OrcConductorManager` through
``nova.service.SERVICE_MANAGERS`` - the plug-in point
``Service.create(binary='nova-conductor')`` reads.
"""

from nova.cmd import conductor as stock_conductor  # noqa: monkey-patches

from nova.orc.compute import rpcapi as orc_rpcapi
from nova.orc import conf  # noqa: F401 - registers [orc]
from nova import rpc
from nova import service

MANAGER = 'nova.orc.manager.OrcConductorManager'


def main():
    rpc.add_extra_exmods(orc_rpcapi.EXCEPTION_MODULE)
    service.SERVICE_MANAGERS['nova-conductor'] = MANAGER
    stock_conductor.main()
