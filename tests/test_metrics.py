from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.metrics import ndcg_score

from fastrec.errors import ConfigError, DataError
from fastrec.metrics import (
    BehaviourAccumulator,
    MetricAccumulator,
    behaviour_metric_sums,
    build_item_statistics,
    count_item_users,
    finalize_behaviour_metrics,
    finalize_metrics,
    ranking_metric_sums,
    target_ranks,
)


def metrics_for(ranks: list[int], ks: list[int]) -> dict[str, float]:
    return finalize_metrics(ranking_metric_sums(torch.tensor(ranks), ks))


# target_ranks


def test_target_ranks_found_and_absent():
    topk = torch.tensor([[5, 3, 9], [1, 2, 4], [7, 8, 6]])
    targets = torch.tensor([9, 1, 3])
    assert target_ranks(topk, targets).tolist() == [3, 1, 0]


def test_target_ranks_first_duplicate_counts():
    topk = torch.tensor([[4, 2, 2]])
    assert target_ranks(topk, torch.tensor([2])).tolist() == [2]


def test_target_ranks_empty_slot_never_matches():
    topk = torch.tensor([[3, -1, -1], [0, 5, 6]])
    targets = torch.tensor([-1, 0])
    assert target_ranks(topk, targets).tolist() == [0, 0]


def test_target_ranks_zero_width_list():
    topk = torch.zeros(2, 0, dtype=torch.long)
    assert target_ranks(topk, torch.tensor([1, 2])).tolist() == [0, 0]


def test_target_ranks_shape_mismatch_raises():
    with pytest.raises(ValueError, match="targets must be"):
        target_ranks(
            torch.ones(3, 4, dtype=torch.long), torch.ones(2, dtype=torch.long)
        )


# ranking_metric_sums and finalize_metrics

HAND_CASES = [
    # rank, HR@10, NDCG@10, MRR@10
    (1, 1.0, 1.0, 1.0),
    (2, 1.0, 1.0 / math.log2(3), 0.5),
    (3, 1.0, 0.5, 1.0 / 3),
    (10, 1.0, 1.0 / math.log2(11), 0.1),
    (11, 0.0, 0.0, 0.0),
    (0, 0.0, 0.0, 0.0),
]


@pytest.mark.parametrize(("rank", "hr", "ndcg", "mrr"), HAND_CASES)
def test_ranking_metrics_hand_values(rank, hr, ndcg, mrr):
    result = metrics_for([rank], [10])
    assert result["HR@10"] == pytest.approx(hr)
    assert result["Recall@10"] == pytest.approx(hr)
    assert result["NDCG@10"] == pytest.approx(ndcg)
    assert result["MRR@10"] == pytest.approx(mrr)
    assert result["MAP@10"] == pytest.approx(mrr)
    assert result["Precision@10"] == pytest.approx(hr / 10)
    assert result["users"] == 1


def test_ranking_metrics_batch_mean():
    ranks = [case[0] for case in HAND_CASES]
    result = metrics_for(ranks, [10])
    expected_ndcg = sum(case[2] for case in HAND_CASES) / len(HAND_CASES)
    assert result["NDCG@10"] == pytest.approx(expected_ndcg)
    assert result["HR@10"] == pytest.approx(4 / 6)


def test_ranking_metrics_several_ks():
    result = metrics_for([1, 5, 20, 0], [1, 5, 10, 20])
    assert result["HR@1"] == pytest.approx(0.25)
    assert result["HR@5"] == pytest.approx(0.5)
    assert result["HR@10"] == pytest.approx(0.5)
    assert result["HR@20"] == pytest.approx(0.75)
    assert result["MRR@20"] == pytest.approx((1 + 1 / 5 + 1 / 20) / 4)
    assert result["Precision@5"] == pytest.approx(0.5 / 5)


def test_ranking_metrics_key_set():
    sums = ranking_metric_sums(torch.tensor([1]), [5, 10])
    names = ["HR", "NDCG", "MRR", "MAP", "Precision", "Recall"]
    expected = {f"{name}@{k}" for k in (5, 10) for name in names} | {"users"}
    assert set(sums) == expected


def test_ranking_sums_stay_tensors():
    sums = ranking_metric_sums(torch.tensor([1, 3]), [10])
    assert all(isinstance(value, torch.Tensor) for value in sums.values())
    assert sums["users"].dtype == torch.long
    assert sums["NDCG@10"].dtype == torch.float64


def test_ranking_ndcg_matches_sklearn():
    generator = torch.Generator().manual_seed(0)
    n_users, n_items, k_max = 64, 30, 20
    # A random permutation per row gives distinct scores, so every rank is known.
    scores = torch.stack(
        [torch.randperm(n_items, generator=generator) for _ in range(n_users)]
    ).to(torch.float64)
    scores[:, 0] = -1.0  # column 0 is padding: last in every row, never a target
    targets = torch.randint(1, n_items, (n_users,), generator=generator)
    topk = scores.topk(k_max, dim=1).indices
    ranks = target_ranks(topk, targets)
    relevance = np.zeros((n_users, n_items))
    relevance[np.arange(n_users), targets.numpy()] = 1.0

    for k in (1, 5, 10, 20):
        result = metrics_for(ranks.tolist(), [k])
        expected = ndcg_score(relevance, scores.numpy(), k=k)
        assert result[f"NDCG@{k}"] == pytest.approx(expected, abs=1e-12)


def test_ranking_metric_relations():
    generator = torch.Generator().manual_seed(1)
    ranks = torch.randint(0, 40, (200,), generator=generator)
    for k in (1, 5, 10, 30):
        result = finalize_metrics(ranking_metric_sums(ranks, [k]))
        assert result[f"MAP@{k}"] == pytest.approx(result[f"MRR@{k}"])
        assert result[f"Recall@{k}"] == pytest.approx(result[f"HR@{k}"])
        assert result[f"Precision@{k}"] == pytest.approx(result[f"HR@{k}"] / k)
        assert result[f"MRR@{k}"] <= result[f"NDCG@{k}"] + 1e-12
        assert result[f"NDCG@{k}"] <= result[f"HR@{k}"] + 1e-12


def test_ranking_empty_batch_sums_zero():
    sums = ranking_metric_sums(torch.zeros(0, dtype=torch.long), [10])
    assert int(sums["users"]) == 0
    assert float(sums["NDCG@10"]) == 0.0


def test_finalize_empty_batch_nan():
    result = finalize_metrics(
        ranking_metric_sums(torch.zeros(0, dtype=torch.long), [10])
    )
    assert result["users"] == 0
    assert math.isnan(result["HR@10"])


@pytest.mark.parametrize("ks", [[], [0], [10, -1], [True], 10, [2.5]])
def test_ranking_invalid_ks_raise(ks):
    with pytest.raises(ConfigError, match="cut-off"):
        ranking_metric_sums(torch.tensor([1]), ks)


def test_ranking_float_ranks_raise():
    with pytest.raises(ValueError, match="integer"):
        ranking_metric_sums(torch.tensor([1.0]), [10])


def test_finalize_without_users_raises():
    with pytest.raises(ValueError, match="users"):
        finalize_metrics({"HR@10": torch.tensor(1.0)})


# MetricAccumulator


def test_accumulator_batches_equal_one_batch():
    generator = torch.Generator().manual_seed(2)
    ranks = torch.randint(0, 25, (103,), generator=generator)
    accumulator = MetricAccumulator([5, 10, 20])
    for chunk in ranks.split(17):
        accumulator.update(chunk)
    accumulator.update(torch.zeros(0, dtype=torch.long))
    accumulator.all_reduce()  # no process group, so the sums stay local
    batched = accumulator.compute()
    whole = finalize_metrics(ranking_metric_sums(ranks, [5, 10, 20]))
    assert batched.keys() == whole.keys()
    for name, value in whole.items():
        assert batched[name] == pytest.approx(value), name


def test_accumulator_without_updates_nan():
    result = MetricAccumulator([10]).compute()
    assert result["users"] == 0
    assert math.isnan(result["NDCG@10"])


def test_accumulator_update_after_reduce_raises():
    accumulator = MetricAccumulator([10])
    accumulator.all_reduce()
    with pytest.raises(RuntimeError, match="reset"):
        accumulator.update(torch.tensor([1]))


def test_accumulator_double_reduce_raises():
    accumulator = MetricAccumulator([10])
    accumulator.all_reduce()
    with pytest.raises(RuntimeError, match="already"):
        accumulator.all_reduce()


def test_accumulator_reset_clears_sums():
    accumulator = MetricAccumulator([10])
    accumulator.update(torch.tensor([1, 2]))
    accumulator.all_reduce()
    accumulator.reset()
    accumulator.update(torch.tensor([3]))
    assert accumulator.compute()["users"] == 1


def test_accumulator_device_mismatch_raises():
    accumulator = MetricAccumulator([10], device="meta")
    with pytest.raises(ValueError, match="device"):
        accumulator.update(torch.tensor([1]))


# behavioural metrics

# Rows: 0 padding, 1..4 real items, 5 a special token.
COUNTS = torch.tensor([0, 4, 2, 1, 0, 0])
GENRES = torch.tensor(
    [[0, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 1, 1]],
    dtype=torch.float32,
)


def tiny_stats(genres: torch.Tensor | None = GENRES):
    return build_item_statistics(COUNTS, n_train_users=4, n_items=4, item_genres=genres)


def behaviour_of(lists: list[list[int]], stats=None) -> dict[str, float]:
    stats = tiny_stats() if stats is None else stats
    topk = torch.tensor(lists, dtype=torch.long)
    return finalize_behaviour_metrics(behaviour_metric_sums(topk, stats), stats)


def test_coverage_counts_distinct_real_items():
    result = behaviour_of([[1, 2], [2, -1]])
    assert result["coverage"] == pytest.approx(2 / 4)
    assert result["covered_items"] == 2


def test_coverage_skips_padding_and_special_rows():
    result = behaviour_of([[0, 5], [-1, 3]])
    assert result["covered_items"] == 1
    assert result["slots"] == 1


def test_diversity_identical_genres_zero():
    assert behaviour_of([[1, 2]])["diversity"] == pytest.approx(0.0)


def test_diversity_disjoint_genres_one():
    assert behaviour_of([[1, 3]])["diversity"] == pytest.approx(1.0)


def test_diversity_item_without_genres_distance_one():
    assert behaviour_of([[1, 4]])["diversity"] == pytest.approx(1.0)


def test_diversity_mean_over_pairs_and_lists():
    # List 1 pairs: (1,2) 0, (1,3) 1, (2,3) 1. List 2 has one item, so it is skipped.
    result = behaviour_of([[1, 2, 3], [2, -1, -1]])
    assert result["diversity"] == pytest.approx(2 / 3)


def test_diversity_matches_pairwise_loop():
    generator = torch.Generator().manual_seed(3)
    genres = (torch.rand(21, 6, generator=generator) < 0.4).to(torch.float32)
    counts = torch.randint(0, 9, (21,), generator=generator)
    stats = build_item_statistics(counts, n_train_users=8, item_genres=genres)
    topk = torch.stack(
        [torch.randperm(20, generator=generator)[:5] + 1 for _ in range(7)]
    )
    topk[0, 3:] = -1
    result = finalize_behaviour_metrics(behaviour_metric_sums(topk, stats), stats)

    list_means = []
    for row in topk.tolist():
        items = [item for item in row if item >= 1]
        distances = []
        for a in range(len(items)):
            for b in range(a + 1, len(items)):
                first, second = genres[items[a]], genres[items[b]]
                norms = first.norm() * second.norm()
                cosine = float(first @ second / norms) if norms > 0 else 0.0
                distances.append(1.0 - cosine)
        list_means.append(sum(distances) / len(distances))
    assert result["diversity"] == pytest.approx(sum(list_means) / len(list_means))


def test_diversity_absent_without_genres():
    assert "diversity" not in behaviour_of([[1, 3]], stats=tiny_stats(genres=None))


def test_novelty_self_information_with_floor():
    # p = 4/4, 2/4, 1/4 and, for the never-seen item 4, the floor 1/4.
    result = behaviour_of([[1, 2], [3, 4]])
    assert result["novelty"] == pytest.approx((0 + 1 + 2 + 2) / 4)


def test_popularity_bias_ratio_and_mean():
    # Catalog mean over items 1..4: (4 + 2 + 1 + 0) / 4 = 1.75.
    result = behaviour_of([[1, 2, -1]])
    assert result["popularity_mean"] == pytest.approx(3.0)
    assert result["popularity_bias"] == pytest.approx(3.0 / 1.75)


def test_behaviour_empty_lists_nan():
    result = behaviour_of([[-1, -1]])
    assert result["slots"] == 0
    assert result["coverage"] == 0.0
    assert math.isnan(result["novelty"])
    assert math.isnan(result["diversity"])


def test_behaviour_accumulator_batches_equal_one_batch():
    generator = torch.Generator().manual_seed(4)
    topk = torch.randint(-1, 6, (23, 3), generator=generator)
    stats = tiny_stats()
    accumulator = BehaviourAccumulator(stats)
    for chunk in topk.split(5):
        accumulator.update(chunk)
    accumulator.all_reduce()
    batched = accumulator.compute()
    whole = finalize_behaviour_metrics(behaviour_metric_sums(topk, stats), stats)
    assert batched.keys() == whole.keys()
    for name, value in whole.items():
        assert batched[name] == pytest.approx(value, nan_ok=True), name


def test_behaviour_accumulator_device_mismatch_raises():
    accumulator = BehaviourAccumulator(tiny_stats(), device="meta")
    with pytest.raises(ValueError, match="device"):
        accumulator.update(torch.tensor([[1, 2]]))


def test_count_item_users_deduplicates():
    users = torch.tensor([0, 0, 1, 2, 2, 2])
    items = torch.tensor([1, 1, 1, 3, 2, 3])
    assert count_item_users(users, items, n_rows=5).tolist() == [0, 2, 1, 1, 0]


def test_count_item_users_out_of_range_raises():
    with pytest.raises(DataError, match="rows 0..4"):
        count_item_users(torch.tensor([0]), torch.tensor([5]), n_rows=5)


def test_item_statistics_count_above_users_raises():
    with pytest.raises(DataError, match="n_train_users"):
        build_item_statistics(torch.tensor([0, 5, 1]), n_train_users=4)


def test_item_statistics_genre_shape_raises():
    with pytest.raises(DataError, match="genres"):
        build_item_statistics(COUNTS, n_train_users=4, item_genres=torch.ones(3, 2))


# all-reduce over two gloo ranks


def _reduce_worker(rank: int, world_size: int, init_file: str, results) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        ranking = MetricAccumulator([10])
        behaviour = BehaviourAccumulator(tiny_stats())
        if rank == 0:
            ranking.update(torch.tensor([1, 11]))
            behaviour.update(torch.tensor([[1, 2]]))
        else:  # rank 1 sees one batch less, as the last rank of a sharded set can
            ranking.update(torch.tensor([3]))
        ranking.all_reduce()
        behaviour.all_reduce()
        results[rank] = (ranking.compute(), behaviour.compute())
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_all_reduce_sums_over_ranks(tmp_path):
    manager = mp.Manager()
    results = manager.dict()
    init_file = str(tmp_path / "rendezvous")
    mp.spawn(_reduce_worker, args=(2, init_file, results), nprocs=2, join=True)
    for rank in (0, 1):
        ranking, behaviour = results[rank]
        assert ranking["users"] == 3
        assert ranking["HR@10"] == pytest.approx(2 / 3)
        assert behaviour["covered_items"] == 2
