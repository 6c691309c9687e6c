"""Rotary embedding on query/key + KV-cache update -> one ``rope_kv_cache_update`` op.

Pattern: ``rotary_embedding(query, key, cos, sin)`` whose rotated key feeds
``kv_cache_update(key, value, layer_name)``; the rotated query, rotated key and the dependency token
are the pattern's outputs (attention still reads them). The replacement computes all three in one op.
A KV update on an unrotated key (a layer without rope) is left alone.
"""

from __future__ import annotations

from .passes import LayerNameFusionPass, PatternSpec, example_tensors, wildcard_layer_name


class RopeKVFusionPass(LayerNameFusionPass):
    """Fuse ``rotary_embedding`` + ``kv_cache_update`` into ``rope_kv_cache_update``."""

    name = "rope_kv_fusion"
    fused_role = "rope_kv_cache_update"
    removed_role = "rotary_embedding"

    def pattern(self, layer_name: str | None) -> PatternSpec:
        rotary = self.ops.rotary_embedding.default
        update = self.ops.base.kv_cache_update.default
        fused = self.ops.rope_kv_cache_update.default

        def search(query, key, value, cos, sin, layer_name):
            rotated = rotary(query, key, cos, sin)
            dep = update(rotated[1], value, layer_name)
            return rotated[0], rotated[1], dep

        def replace(query, key, value, cos, sin, layer_name):
            out = fused(query, key, value, cos, sin, layer_name)
            return out[0], out[1], out[2]

        tensors = example_tensors((8, 2, 16), (8, 2, 16), (8, 2, 16), (8, 8), (8, 8))
        if layer_name is None:  # opaque: layer_name is a pattern input, traced with a real LayerName
            return PatternSpec(search, replace, [*tensors, wildcard_layer_name(self.impl)])

        def search_named(query, key, value, cos, sin):
            return search(query, key, value, cos, sin, layer_name)

        def replace_named(query, key, value, cos, sin):
            return replace(query, key, value, cos, sin, layer_name)

        return PatternSpec(search_named, replace_named, tensors)
