"""What every stage works with: the spec, the artifact store of the output folder, progress,
the log of one-line notices, and the executor of independent units of work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from dvbench.harness.artifacts import ArtifactStore
from dvbench.harness.executor import Executor, LocalExecutor
from dvbench.harness.progress import Progress
from dvbench.harness.spec import Spec


@dataclass(frozen=True)
class RunContext:
    spec: Spec
    store: ArtifactStore
    progress: Progress = field(default_factory=Progress)
    log: Callable[[str], None] = print
    executor: Executor = field(default_factory=LocalExecutor)

    @property
    def seed(self) -> int:
        return self.spec.settings.seed
