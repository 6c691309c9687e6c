"""Deliberately broken pieces for negative controls; never imported by the library or the plugin.

:mod:`.broken` registers an op that takes a plain ``str`` layer name (on import) and a model that uses it.
"""
