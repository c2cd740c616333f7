"""The ``llmfleet`` command line: one entry point above every part (:mod:`.cli`)."""
