"""The model roles on a GPU against their CPU references: icp, grad_ip, ekfac and one_step's
per-anchor scores, full_finetune's weight change and the loss evaluator's losses, computed on
CUDA in float32 and in bfloat16 and compared with the same computation on the CPU in float64
(which the exactness tests of each role check against naive references).

Marker ``gpu``; on a machine with a GPU: ``python -m pytest -m gpu``. Without CUDA the ``cuda``
cases are skipped, saying so; the ``cpu`` cases run anywhere, with the same tolerances, so that
each tolerance is known to hold for the CPU's rounding of the same dtype.

Tolerances are relative, ``‖got − reference‖ / ‖reference‖`` over the whole array, set at
about ten times the error the CPU itself makes in that dtype (``ROLES`` lists both): a GPU's
kernels round differently, not worse. float32 is within ``1e-5`` to ``2e-3``; bfloat16 (8 bits of
mantissa; log-softmax and gradient products in float32) within a few percent, except where an
error is divided by a small quantity: icp's score is the difference of two log-probabilities,
and the fine-tune's weight change is small beside the bfloat16 weights it is rounded into, each
AdamW step rescaling that rounding. one_step steps in float64 whatever the model's dtype (its
default ``precision``). The tiny model's predictions are near uniform, so its losses sit close
to ``log V`` and their relative errors are small.

The ``cpu`` cases take about half a minute, so they are also marked ``slow`` (out of the default
suite); ``-m gpu`` runs both.
"""

import numpy as np
import pytest
import torch

from dvbench.harness.data.generated import generate
from dvbench.harness.records import EvalTask, ModelRef, TrainingTask, ValuationTask
from dvbench.harness.template import Template
from dvbench.plugins.evaluators.loss import LossEvaluator
from dvbench.plugins.trainers.full_finetune import FullFinetune
from dvbench.plugins.valuators.ekfac import EkfacValuator
from dvbench.plugins.valuators.grad_ip import GradIpValuator
from dvbench.plugins.valuators.icp import IcpValuator
from dvbench.plugins.valuators.one_step import OneStepValuator

pytestmark = pytest.mark.gpu

CUDA = pytest.mark.skipif(not torch.cuda.is_available(),
                          reason="needs a CUDA device and torch sees none; on a GPU machine: python -m pytest -m gpu")
DEVICES = [pytest.param("cpu", id="cpu", marks=pytest.mark.slow), pytest.param("cuda", id="cuda", marks=CUDA)]
DATA = generate(6, 3, 3, seed=2)
TEMPLATE = Template(name="plain")


def _valuator(cls, **config):
    def run(ref, tmp_path):
        task = ValuationTask(DATA["candidates"], DATA["anchors"], ref, seed=1, template=TEMPLATE)
        return cls(cls.Config(**config)).score(task).per_anchor
    return run


def _fine_tune(ref, tmp_path):
    """The change of every weight after three AdamW steps."""
    from dvbench.harness.lm.models import load_model

    trainer = FullFinetune(FullFinetune.Config(learning_rate=1e-2, batch_size=2, epochs=1, warmup_ratio=0.0))
    out = tmp_path / f"{ref.dtype}-{ref.device}"
    trainer.train(TrainingTask(ref, DATA["candidates"], out, seed=3, template=TEMPLATE))
    float64 = dict(dtype="float64", device="cpu")
    tuned = load_model(ModelRef(str(out), **float64))[0].state_dict()
    base = load_model(ModelRef(ref.source, **float64))[0].state_dict()
    return torch.cat([(tuned[k] - base[k]).flatten() for k in sorted(base)]).numpy()


def _losses(ref, tmp_path):
    task = EvalTask(ref, ref, DATA["eval"], template=TEMPLATE)
    return LossEvaluator().losses(ref, list(DATA["eval"]), task)


ROLES = {  # name: (computation, relative tolerance in float32, in bfloat16); the CPU's own errors in brackets
    "icp": (_valuator(IcpValuator, aggregate="mean_difference"), 2e-3, 0.2),  # (2.6e-4, 3.3e-2)
    "grad_ip": (_valuator(GradIpValuator, per_anchor=True), 1e-5, 3e-2),  # (1.3e-7, 2.7e-3)
    "ekfac": (_valuator(EkfacValuator, per_anchor=True, labels="true"), 1e-5, 5e-2),  # (3.6e-7, 4.9e-3)
    "one_step": (_valuator(OneStepValuator, aggregate="mean_difference", learning_rate=0.01), 1e-6, 1e-6),  # (0, 0)
    "full_finetune": (_fine_tune, 1e-4, 0.25),  # (3.3e-6, 7.0e-2)
    "loss": (_losses, 1e-6, 1e-4),  # (5.1e-8, 7.0e-6)
}


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    """Each role's result on the CPU in float64, computed once."""
    found = {}

    def get(role):
        if role not in found:
            ref = ModelRef(str(tiny_model_dir), dtype="float64", device="cpu")
            found[role] = ROLES[role][0](ref, tmp_path_factory.mktemp("reference"))
        return found[role]
    return get


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("role", list(ROLES))
def test_a_role_on_the_device_matches_its_float64_cpu_reference(tiny_model_dir, tmp_path, reference, role, dtype,
                                                                device):
    compute, float32, bfloat16 = ROLES[role]
    expected = reference(role)
    got = compute(ModelRef(str(tiny_model_dir), dtype=dtype, device=device), tmp_path)
    assert got.shape == expected.shape and np.isfinite(got).all()
    error = np.linalg.norm(got - expected) / np.linalg.norm(expected)
    assert error <= (float32 if dtype == "float32" else bfloat16), f"{role} {dtype} on {device}: relative error {error:.2e}"


@CUDA
def test_auto_finds_a_batch_that_fits_a_real_cuda_device(tiny_model_dir):
    """On CUDA, ``auto`` starts at the unit's ceiling; a real out-of-memory error (an allocation
    larger than the device) is recognised and backed off from, and icp's scores equal those at a
    fixed small batch."""
    from dvbench.harness.lm.batching import Sizes, out_of_memory

    free, _ = torch.cuda.mem_get_info()
    with pytest.raises(torch.OutOfMemoryError) as caught:
        torch.empty(2 * free, dtype=torch.uint8, device="cuda")
    assert out_of_memory(caught.value)
    sizes = Sizes({"batch_size": ("auto", 8, 1024)}, device="cuda:0", what="test")
    tries = []

    def unit(advance):  # needs 2 * free bytes for each row above 64: runs out of memory on the device
        tries.append(sizes["batch_size"])
        if sizes["batch_size"] > 64:
            torch.empty(2 * free, dtype=torch.uint8, device="cuda")
        return sizes["batch_size"]

    assert sizes.run(unit) == 64 and tries == [1024, 512, 256, 128, 64]
    ref = ModelRef(str(tiny_model_dir), dtype="float32", device="cuda:0")
    task = ValuationTask(DATA["candidates"], DATA["anchors"], ref, seed=1, template=TEMPLATE)
    auto = IcpValuator(IcpValuator.Config(batch_size="auto", max_batch_tokens="auto")).score(task)
    fixed = IcpValuator(IcpValuator.Config(batch_size=2)).score(task)
    assert auto.stats["batch_size"] == 64 * len(DATA["anchors"])  # a shard's pairs: it fits
    np.testing.assert_allclose(auto.per_anchor, fixed.per_anchor, rtol=0, atol=1e-5)
