"""Past one machine (docs/scaling.md): the prefilter on Ray Data (:mod:`distill.scale.ray_prefilter`) and
the label stage split into shards that DVC runs as separate stage instances (:mod:`distill.scale.shard`).
Both reuse the one-machine code: the rules (:func:`distill.prefilter.apply_rules`), the dedup
(:class:`distill.dedup.Deduper`) and the labelling engine, so the outputs are the same."""
