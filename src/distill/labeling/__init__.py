"""The labelling engine over the providers: conversations with re-asks, the response cache, rate
limits, the budget, events and progress, the batch runner, ``distill estimate`` and
``distill oracle-check``. :func:`distill.labeling.build.build_labeler` wires it from the config."""
