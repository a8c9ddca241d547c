"""nova-orc on the compute host: OrcComputeManager and its orc RPC API."""
