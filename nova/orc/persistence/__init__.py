"""The flow journal: TaskFlow logbooks persisted through Nova's DB layer.

* :mod:`.backend`: the TaskFlow persistence backend (``JournalBackend``);
* :mod:`.tables`: the schema; :mod:`.migration`: ``nova-orc db sync``.
"""
