"""The stages of a run, one module each, in the order the runner calls them:

    data -> model -> valuation -> selection -> training -> evaluation -> leaderboard

Each stage is a function of the :class:`~dvbench.harness.stages.context.RunContext` (the spec,
the artifact store, progress, log, executor) and the previous stages' outputs, and returns its
own output; the artifacts it writes are listed in its module docstring.
"""
