"""grad_store on the embedded model: its store's build against grad_ip's candidate phase, a query
of a 10,000-candidate store against rebuilding it, and TRAK (the `traker` package) as a peer.

    python -m pytest benchmarks/test_grad_store.py --benchmark-columns=mean,rounds
    DVBENCH_BENCH_STORE=256 python -m pytest benchmarks/test_grad_store.py   # a quick check, small store

Rows: Alpaca-GPT4 rows of 90-110 tokens (../shared/data; dvbench's generated data when absent).

- build, M = 16 candidates, every block's linear layers tracked (210), `dims: 16`: the store's
  shards built and written (one forward and backward per candidate, projections from the layer
  terms) against grad_ip `mean`'s candidate phase on the same candidates and batches (one
  forward and backward each, its product with the anchors' mean gradient). Bound: 1.2×.
- query: a synthetic store of that shape (53,760 float32 values a candidate) for
  ``DVBENCH_BENCH_STORE`` candidates (10,000), 100 anchors' rows given: the shards verified and
  read back memory-mapped, the product and the mean, against rebuilding the store (the build's
  time per candidate × the store's size). Bound: 1/100. The anchors' own forward and backward
  (100 sequences, 1/100 of rebuilding by count) come on top: recorded beside it.
- peer: TRAK (traker 0.3.2, on the CPU: its `FunctionalGradientComputer` differentiating the
  tracked weights only,
  `BasicProjector` with Gaussian entries, float32, ridge λ = 0.1 × the mean eigenvalue of XᵀX)
  against grad_store `preconditioner: gauss_newton` (`damping_factor: 0.1`) on the same model,
  rows and tracked layer (the last block's MLP down-projection: TRAK's CPU projector draws its
  whole `proj_dim × parameters` matrix for every batch), M = 16, N = 16, at one size (TRAK
  `proj_dim` 1024; grad_store `dims: 32`, 32 × 32 values). TRAK always projects
  (no projection-free setting), with one dense projection of the whole gradient where grad_store
  projects each layer's inputs and output gradients: the two agree in expectation, not value.
  Recorded: both times, and Spearman's ρ of their mean scores and of their per-anchor matrices.
"""

import os

import numpy as np
import pytest
import torch

from dvbench.harness import artifacts
from dvbench.harness.aggregate import mean
from dvbench.harness.lm import products, projection, store
from dvbench.harness.lm.grads import tracked_linears
from dvbench.harness.lm.loglik import collate
from dvbench.harness.lm.tokens import Encoder
from dvbench.harness.lm.batching import Sizes
from dvbench.harness.progress import Progress
from dvbench.harness.records import ModelRef, ValuationTask
from dvbench.harness.template import Template
from dvbench.harness.work import shard_blocks
from dvbench.plugins.valuators.grad_store import SHARD, GradStoreValuator

N, M, QUERY_ANCHORS = 16, 16, 100
STORE = int(os.environ.get("DVBENCH_BENCH_STORE", "10000"))
PEER_TRACKED = r"layers\.29\.mlp\.down_proj"
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def setup(embedded, benchmark_rows):
    model, tokenizer = embedded
    encoder = Encoder(tokenizer, Template())
    pool = benchmark_rows(N + M)
    anchors, candidates = tuple(pool[:N]), tuple(pool[N:N + M])
    return model, encoder, tracked_linears(model), anchors, candidates


def _timed(benchmark, name, fn):
    result = benchmark.pedantic(fn, rounds=1, iterations=1)
    TIMES[name] = benchmark.stats.stats.mean
    return result


def test_grad_ip_candidate_phase(benchmark, setup, record_property, peak_rss_mib):
    model, encoder, linears, anchors, candidates = setup
    sizes = Sizes({"batch_size": (8, 8, 8)}, device="cpu", what="benchmark")
    average = products.anchor_mean(model, linears, [encoder.training(x) for x in anchors], sizes=sizes,
                                   progress=Progress(), label="grad_ip")
    sequences = [encoder.training(z) for z in candidates]
    peak = peak_rss_mib(lambda: _timed(benchmark, "grad_ip_candidates",
                                       lambda: products.candidate_dots(model, linears, average, sequences,
                                                                       batch_size=8)))
    record_property("peak_rss_MiB_grad_ip_candidates", peak)


def test_store_build(benchmark, setup, tmp_path, record_property, peak_rss_mib):
    model, encoder, linears, _, candidates = setup
    matrices = projection.projections(linears, 16, 0, "gaussian")
    sequences = [encoder.training(z) for z in candidates]

    def build():
        return shard_blocks(store.GradientStore(tmp_path), "store", sequences,
                            lambda block: {"rows": projection.project(model, block, linears, matrices).numpy()},
                            size=SHARD)

    peak = peak_rss_mib(lambda: _timed(benchmark, "build", build))
    width = sum(projection.layer_dims(linears, 16).values())
    record_property("peak_rss_MiB_store_build", peak)
    record_property("store_values_per_candidate", width)
    record_property("store_bytes_per_candidate", width * 4)


def test_build_ratio(record_property):
    ratio = TIMES["build"] / TIMES["grad_ip_candidates"]
    record_property("store_build_over_grad_ip_candidates", round(ratio, 3))
    assert ratio <= 1.2, ratio


def test_query(benchmark, setup, tmp_path, record_property, peak_rss_mib):
    _, _, linears, _, _ = setup
    spans = store.offsets(projection.layer_dims(linears, 16))
    width = max(span.stop for span in spans.values())
    rng = np.random.default_rng(0)
    shards = store.GradientStore(tmp_path)
    for start in range(0, STORE, SHARD):  # synthetic rows, written as a build writes them
        rows = rng.standard_normal((min(SHARD, STORE - start), width), dtype=np.float32)
        shards.put(f"store-{start:08d}", {"rows": rows})
    anchors = rng.standard_normal((QUERY_ANCHORS, width), dtype=np.float32)
    artifacts._HASHES.clear()  # verified as a fresh process verifies them: every shard hashed

    def query():
        blocks = shard_blocks(store.GradientStore(tmp_path), "store", range(STORE), _never, size=SHARD)
        matrix = store.pair_products(anchors, [b["rows"] for b in blocks], spans, normalize=False,
                                     damping_factor=None)
        return mean(matrix)

    peak = peak_rss_mib(lambda: _timed(benchmark, "query", query))
    rebuild = TIMES["build"] / M * STORE
    ratio = TIMES["query"] / rebuild
    record_property("store_GB", round(STORE * width * 4 / 1e9, 2))
    record_property("peak_rss_MiB_query", peak)
    record_property("query_over_rebuild", round(ratio, 5))
    record_property("query_with_anchor_passes_over_rebuild",
                    round((TIMES["query"] + TIMES["build"] / M * QUERY_ANCHORS) / rebuild, 5))
    assert ratio <= 0.01, ratio


def _never(block):
    raise AssertionError("the synthetic store is complete: no shard is built")


def test_peer_trak(setup, tmp_path, record_property):
    pytest.importorskip("trak", reason="the peer is traker (pip install traker==0.3.2)")
    import time

    from scipy.stats import spearmanr

    model, encoder, _, anchors, candidates = setup
    start = time.perf_counter()
    ours = GradStoreValuator(GradStoreValuator.Config(dims=32, preconditioner="gauss_newton")).score(
        ValuationTask(candidates, anchors, ModelRef("embedded"), tracked=PEER_TRACKED))
    TIMES["peer_grad_store"] = time.perf_counter() - start
    start = time.perf_counter()
    theirs = _trak(model, encoder, tracked_linears(model, PEER_TRACKED), anchors, candidates, tmp_path)
    TIMES["peer_trak"] = time.perf_counter() - start
    record_property("trak_seconds", round(TIMES["peer_trak"], 1))
    record_property("grad_store_seconds", round(TIMES["peer_grad_store"], 1))
    record_property("spearman_mean_scores", round(spearmanr(theirs.mean(axis=0), ours.values)[0], 3))
    record_property("spearman_per_anchor", round(spearmanr(theirs.ravel(), ours.per_anchor.ravel())[0], 3))
    assert spearmanr(theirs.ravel(), ours.per_anchor.ravel())[0] > 0


def _trak(model, encoder, linears, anchors, candidates, folder) -> np.ndarray:
    """TRAK's (N, M) scores of the anchors against the candidates, its model output ``−L``, the
    mean answer log-probability (so its gradient is ``−∇L`` on both sides: the same sign as ours)."""
    from trak import TRAKer
    from trak.gradient_computers import FunctionalGradientComputer
    from trak.modelout_functions import AbstractModelOutput
    from trak.projectors import BasicProjector, ProjectionType

    class AnswerLogProb(AbstractModelOutput):
        def __init__(self):
            pass

        def get_output(self, model, weights, buffers, ids, answer):  # one right-padded row (vmapped)
            logits = torch.func.functional_call(model, (weights, buffers), args=(ids.unsqueeze(0),)).logits[0]
            logp = logits[:-1].log_softmax(-1).gather(-1, ids[1:, None])[:, 0]
            mask = answer[1:].to(logp.dtype)
            return (logp * mask).sum() / mask.sum()

        def get_out_to_loss_grad(self, model, weights, buffers, batch):
            return torch.ones(batch[0].shape[0], 1)

    class TrackedGradients(FunctionalGradientComputer):
        """traker 0.3.2 differentiates every parameter and drops those outside ``grad_wrt``
        afterwards (4 GB a batch of 8 here): differentiate the tracked weights only."""

        def load_model_params(self, model):
            super().load_model_params(model)
            self.func_weights = {name: p for name, p in self.func_weights.items() if name in names}

    def tensors(examples):
        batch = collate([encoder.training(e) for e in examples], "right", "cpu")
        answer = torch.zeros_like(batch.ids)
        answer[batch.rows, batch.cols] = 1
        return batch.ids, answer

    names = [f"{name}.weight" for name in linears]
    size = sum(m.weight.numel() for m in linears.values())
    traker = TRAKer(model=model, task=AnswerLogProb(), train_set_size=len(candidates), save_dir=str(folder / "trak"),
                    device="cpu", gradient_computer=TrackedGradients, proj_dim=1024, use_half_precision=False, grad_wrt=names, logging_level=40,
                    projector=BasicProjector(grad_dim=size, proj_dim=1024, seed=0, proj_type=ProjectionType.normal,
                                             device="cpu", dtype=torch.float32))
    traker.load_checkpoint(model.state_dict(), model_id=0)
    for start in range(0, len(candidates), 8):
        traker.featurize(batch=tensors(candidates[start:start + 8]), num_samples=len(candidates[start:start + 8]))
    features = torch.as_tensor(np.asarray(traker.saver.current_store["grads"]), dtype=torch.float64)
    traker.score_computer.lambda_reg = float(0.1 * (features.T @ features).trace() / features.shape[1])
    traker.finalize_features()
    traker.start_scoring_checkpoint(exp_name="anchors", checkpoint=model.state_dict(), model_id=0,
                                    num_targets=len(anchors))
    for start in range(0, len(anchors), 8):
        traker.score(batch=tensors(anchors[start:start + 8]), num_samples=len(anchors[start:start + 8]))
    return np.asarray(traker.finalize_scores(exp_name="anchors")).T  # (candidates, anchors) -> (N, M)
