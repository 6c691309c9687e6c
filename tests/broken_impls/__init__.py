"""Deliberately broken layer-name implementations: each passes an older suite and must fail this one.

Each module is a whole implementation (``LayerName``, ``_encode_layer_name``, ``_resolve_layer_name``, the
``_USE_LAYERNAME`` switch) with one bug an engine could plausibly ship, named in its docstring.
``tests/test_broken_impls.py`` runs the shipped suite against each and checks the failure names the layer,
the name or the stage.
"""
