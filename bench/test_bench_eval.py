"""Benchmarks of full-catalog evaluation: fastrec's Evaluator against a per-row loop.

fastrec scores a batch of rows at once (bf16 autocast, as the Trainer evaluates)
and ranks them with ``masked_topk``, which blocks the seen items of every row
without a Python loop. The baseline is the tutorial's way: one model call per
row, a Python loop that sets each seen item's score to -inf, then ``torch.topk``.
Both run the same model weights (untrained, from a fixed seed) on the validation
rows. The baseline times only the first rows of the part, because each of its
rows costs a millisecond or more; users/s is ``per_second`` in extra_info.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.conftest import Record
from bench.tutorial_way import evaluate_per_row, seen_lists
from fastrec.config import Config
from fastrec.data.prepare import PreparedData
from fastrec.evaluate import Evaluator
from fastrec.model import SequentialRecommender
from fastrec.train import build_model

# Rows timed by the per-row baseline of each model.
PER_ROW_ROWS = {"tutorial": 2000, "dot": 500}


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


@pytest.mark.parametrize("model", ["tutorial", "dot"])
def test_evaluator(
    benchmark, throughput: Record, request: pytest.FixtureRequest, model: str
):
    """Time fastrec's batched evaluation of every validation row."""
    config, prepared, recommender = case_inputs(request, model)
    evaluator = Evaluator(prepared, config.eval, torch.device("cpu"), torch.bfloat16)

    def evaluate() -> dict:
        return evaluator.evaluate_model(recommender, "valid")

    result = benchmark.pedantic(evaluate, rounds=3, iterations=1, warmup_rounds=1)
    assert result["users"] == len(evaluator.rows("valid"))
    benchmark.extra_info["rows"] = result["users"]
    benchmark.extra_info["HR@10"] = result["HR@10"]
    throughput(f"evaluator_{model}", result["users"] / benchmark.stats.stats.mean)


@pytest.mark.parametrize("model", ["tutorial", "dot"])
def test_per_row_loop(
    benchmark, throughput: Record, request: pytest.FixtureRequest, model: str
):
    """Time the tutorial's per-row evaluation with seen items blocked in Python."""
    config, prepared, recommender = case_inputs(request, model)
    evaluator = Evaluator(prepared, config.eval, torch.device("cpu"))
    rows = evaluator.rows("valid")[: PER_ROW_ROWS[model]]
    part = prepared.store.part("valid")
    items = np.asarray(part.items[rows])
    users = np.asarray(part.user[rows])
    targets = np.asarray(part.target[rows])
    seen = seen_lists(part, rows)

    def evaluate():
        return evaluate_per_row(
            recommender, items, users, targets, seen, config.eval.ks
        )

    result = benchmark.pedantic(evaluate, rounds=1, iterations=1, warmup_rounds=0)
    assert result.rows == len(rows)
    benchmark.extra_info["rows"] = result.rows
    throughput(f"per_row_{model}", result.rows / benchmark.stats.stats.mean)
