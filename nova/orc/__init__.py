"""nova-orc: Nova compute operations as persisted, locked TaskFlow flows.

See doc/source/architecture.rst. Entry points: :mod:`nova.orc.manager` (conductor),
:mod:`nova.orc.compute.manager` (compute), :mod:`nova.orc.cmd` (binaries).
"""
