"""Benchmarks of the data path: data preparation and loader throughput.

The preparation cases time fastrec's parse plus window-store build, and the
tutorial's pandas Python-engine parse of the three files plus per-user unfolding.

The loader cases serve the tutorial's ``windows`` training rows (T=5, stride 1) in
batches of 4,096, one full epoch through fastrec's ``BatchLoader`` and the first 54
batches through a ``torch.utils.data.DataLoader`` over a per-sample ``Dataset``
with default collation. Compare the two ``per_second`` values in extra_info.
"""

from __future__ import annotations

from pathlib import Path

from bench.conftest import Record
from bench.tutorial_way import StoreWindowDataset, make_loader, prepare_tutorial
from fastrec.config import Config
from fastrec.data.loader import BatchLoader
from fastrec.data.prepare import PreparedData, prepare

LOADER_BATCH = 4096
# Batches the DataLoader case serves: a quarter of the ML-1M epoch (216 batches).
# Every batch costs the same 4,096 per-sample calls, so samples/s matches an epoch.
DATALOADER_BATCHES = 54


def test_store_build(
    benchmark, throughput: Record, tutorial_config: Config, tmp_path: Path
):
    """Time parse plus window-store build of the tutorial split, rebuilt every round."""
    store = tmp_path / "windows.arrow"

    def remove_store() -> None:
        store.unlink(missing_ok=True)

    def build() -> PreparedData:
        return prepare(tutorial_config.data, store=store)

    prepared = benchmark.pedantic(build, setup=remove_store, rounds=3, iterations=1)
    assert prepared.built
    rows = len(prepared.store)
    benchmark.extra_info["rows"] = rows
    throughput("store_build_rows", rows / benchmark.stats.stats.mean)


def test_tutorial_prepare(
    benchmark,
    throughput: Record,
    tutorial_config: Config,
    ml1m_dir: Path,
    windows_prepared: PreparedData,
):
    """Time the tutorial's preparation: pandas parse, per-user unfolding, split."""
    data = tutorial_config.data

    def run():
        return prepare_tutorial(ml1m_dir, data.holdout_fraction, data.seed)

    # One round: the pandas Python engine alone takes several seconds.
    tutorial, train, holdout = benchmark.pedantic(run, rounds=1, iterations=1)
    assert len(train) + len(holdout) == len(tutorial.samples)
    # The same windows as fastrec's store, so both preparations do the same work.
    assert len(tutorial.samples) == len(windows_prepared.store)
    benchmark.extra_info["rows"] = len(tutorial.samples)
    throughput(
        "tutorial_prepare_rows", len(tutorial.samples) / benchmark.stats.stats.mean
    )


def count_samples(batches, max_batches: int | None = None) -> int:
    """Iterate up to ``max_batches`` batches (None: all) and count their samples."""
    samples = 0
    for index, batch in enumerate(batches):
        if max_batches is not None and index >= max_batches:
            break
        samples += int(batch["user"].shape[0])
    return samples


def test_batch_loader_epoch(
    benchmark, throughput: Record, windows_prepared: PreparedData
):
    """Time one epoch of BatchLoader over the training windows, batch 4,096."""
    part = windows_prepared.store.part("train")
    loader = BatchLoader(part, LOADER_BATCH, shuffle=True, seed=0)

    def epoch() -> int:
        return count_samples(loader)

    samples = benchmark.pedantic(epoch, rounds=5, iterations=1, warmup_rounds=1)
    assert samples == len(part)
    benchmark.extra_info["samples"] = samples
    throughput("batch_loader", samples / benchmark.stats.stats.mean)


def test_torch_dataloader_batches(
    benchmark, throughput: Record, windows_prepared: PreparedData
):
    """Time DATALOADER_BATCHES batches of a per-sample Dataset through DataLoader."""
    part = windows_prepared.store.part("train")
    loader = make_loader(StoreWindowDataset(part), LOADER_BATCH)

    def run() -> int:
        return count_samples(loader, DATALOADER_BATCHES)

    # One round: the per-sample calls take several seconds per 100,000 samples.
    samples = benchmark.pedantic(run, rounds=1, iterations=1)
    assert samples == min(len(part), DATALOADER_BATCHES * LOADER_BATCH)
    benchmark.extra_info["samples"] = samples
    throughput("torch_dataloader", samples / benchmark.stats.stats.mean)


def test_store_build_loo(
    benchmark, throughput: Record, dot_config: Config, tmp_path: Path
):
    """Time parse plus window-store build of the leave-one-out split (T=50)."""
    store = tmp_path / "loo.arrow"

    def remove_store() -> None:
        store.unlink(missing_ok=True)

    def build() -> PreparedData:
        return prepare(dot_config.data, store=store)

    prepared = benchmark.pedantic(build, setup=remove_store, rounds=3, iterations=1)
    assert prepared.built
    rows = len(prepared.store)
    benchmark.extra_info["rows"] = rows
    throughput("store_build_loo_rows", rows / benchmark.stats.stats.mean)
