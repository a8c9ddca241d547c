"""Console scripts: ``nova-orc-conductor``, ``nova-orc-compute``, ``nova-orc``."""
