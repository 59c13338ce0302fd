"""A third-party valuator in one file: longer answers score higher (or shorter, if asked)."""

from pydantic import Field

from dvbench.harness.config import Config
from dvbench.harness.hookspecs import hookimpl
from dvbench.harness.roles import Valuator


class LengthValuator(Valuator):
    name = "length"
    version = "0.2.0"

    class Config(Config):
        shorter_is_better: bool = Field(False, description="Score short answers higher instead.")

    def score(self, task):
        sign = -1.0 if self.config.shorter_is_better else 1.0
        return self.scores(task, [sign * len(c.output) for c in task.candidates])


@hookimpl
def dvbench_register_valuators(register):
    register(LengthValuator)
