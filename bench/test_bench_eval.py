"""Benchmarks of full-catalog evaluation: fastrec's Evaluator against the tutorial's.

fastrec scores a batch of rows at once (bf16 autocast on CUDA, fp32 on the CPU,
as the Trainer evaluates; eager or compiled) and ranks them with ``masked_topk``,
which blocks the seen items of every row without a Python loop. The baseline is the tutorial's way: batches of a per-sample
``DataLoader``, an eager fp32 forward, a Python loop over the rows of each batch
that sets the row's seen items to -inf, then ``torch.topk``. Both rank the same
first rows of the validation part with the same model weights (untrained, from a
fixed seed); users/s is ``per_second`` in extra_info.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bench.conftest import Record
from bench.tutorial_way import (
    EvalDataset,
    TutorialModel,
    evaluate_tutorial,
    seen_lists,
)
from fastrec.config import Config
from fastrec.data.prepare import PreparedData
from fastrec.evaluate import Evaluator
from fastrec.model import SequentialRecommender
from fastrec.train import build_model

# Validation rows ranked per model on the CPU; a CUDA case ranks the whole part.
CPU_ROWS = {"tutorial": 8192, "dot": 2048}
needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"
)


def case_inputs(
    request: pytest.FixtureRequest, model: str
) -> tuple[Config, PreparedData, SequentialRecommender]:
    """Return the config, prepared data and a seeded untrained model of a case."""
    if model == "tutorial":
        config = request.getfixturevalue("tutorial_config")
        prepared = request.getfixturevalue("windows_prepared")
    else:
        config = request.getfixturevalue("dot_config")
        prepared = request.getfixturevalue("loo_prepared")
    torch.manual_seed(0)
    return config, prepared, build_model(config, prepared).eval()


@pytest.mark.parametrize(
    ("model", "device", "compiled"),
    [
        pytest.param("tutorial", "cpu", False, id="tutorial-cpu"),
        pytest.param("tutorial", "cpu", True, id="tutorial-cpu-compiled"),
        pytest.param("dot", "cpu", False, id="dot-cpu"),
        pytest.param("tutorial", "cuda", True, id="tutorial-cuda", marks=needs_cuda),
        pytest.param("dot", "cuda", True, id="dot-cuda", marks=needs_cuda),
    ],
)
def test_evaluator(
    benchmark,
    throughput: Record,
    request: pytest.FixtureRequest,
    model: str,
    device: str,
    compiled: bool,
):
    """Time fastrec's batched evaluation of the first validation rows.

    The untimed warm-up round compiles the scorer of a compiled case.
    """
    config, prepared, recommender = case_inputs(request, model)
    rows = CPU_ROWS[model] if device == "cpu" else 0
    eval_config = dataclasses.replace(config.eval, max_users=rows)
    evaluator = Evaluator(
        prepared,
        eval_config,
        torch.device(device),
        torch.bfloat16,
        compile_model=compiled,
    )
    recommender = recommender.to(device)

    def evaluate() -> dict:
        result = evaluator.evaluate_model(recommender, "valid")
        if device == "cuda":
            torch.cuda.synchronize()
        return result

    result = benchmark.pedantic(evaluate, rounds=3, iterations=1, warmup_rounds=1)
    assert result["users"] == len(evaluator.rows("valid"))
    benchmark.extra_info["rows"] = result["users"]
    benchmark.extra_info["HR@10"] = result["HR@10"]
    suffix = "_compiled" if compiled else ""
    suffix += "" if device == "cpu" else "_cuda"
    throughput(
        f"evaluator_{model}{suffix}", result["users"] / benchmark.stats.stats.mean
    )


@pytest.mark.parametrize("model", ["tutorial", "dot"])
def test_tutorial_evaluation(
    benchmark, throughput: Record, request: pytest.FixtureRequest, model: str
):
    """Time the tutorial's evaluation: batched forward, seen items blocked per row."""
    config, prepared, recommender = case_inputs(request, model)
    evaluator = Evaluator(prepared, config.eval, torch.device("cpu"))
    rows = evaluator.rows("valid")[: CPU_ROWS[model]]
    part = prepared.store.part("valid")
    dataset = EvalDataset(
        np.asarray(part.items[rows]),
        np.asarray(part.user[rows]),
        np.asarray(part.target[rows]),
    )
    seen = seen_lists(part, rows)

    if model == "tutorial":
        plain = TutorialModel(recommender.config).eval()
        plain.load_state_dict(recommender.state_dict())
        score = plain
    else:
        # The tutorial's model has only the interaction head; the dot head ranks
        # with fastrec's own scores.
        score = recommender.score_next

    def evaluate():
        return evaluate_tutorial(
            score, dataset, seen, config.eval.ks, config.eval.batch_size
        )

    result = benchmark.pedantic(evaluate, rounds=1, iterations=1, warmup_rounds=1)
    assert result.rows == len(rows)
    benchmark.extra_info["rows"] = result.rows
    benchmark.extra_info["HR@10"] = result.hit_rate(10) if 10 in result.hits else None
    throughput(f"tutorial_eval_{model}", result.rows / benchmark.stats.stats.mean)
