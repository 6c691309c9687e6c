"""Release tools: the compatibility matrix, cell runs, the report schema, known torch bugs and the gate.

Imports no torch and, from the rest of this package, only the vocabulary in :mod:`..core.names`, so
``layername matrix``/``gate`` and the noxfile run in an environment without torch. The pytest plugin
writes reports through :mod:`.report` and reads :mod:`.known_bugs`.
"""
