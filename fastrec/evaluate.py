"""Full-catalog evaluation of a checkpoint against popularity baselines.

    python -m fastrec.evaluate --checkpoint PATH [--data-dir DIR]
                               [--split test|valid] [--k 10,50] [--json FILE]

Every evaluation row ranks the whole catalog with its seen items excluded
(``fastrec.kernels.masked_topk``), and padding and special tokens are never
ranked. The training job's end-of-run report uses this same code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import distributed
from .baselines import baseline_scores
from .config import EvalConfig
from .data.loader import EVAL_COLUMNS, BatchLoader
from .data.prepare import PreparedData
from .data.sequences import build_user_sequences, item_genre_matrix
from .devices import parse_device
from .errors import FastrecError, exit_on_user_error
from .files import temporary_sibling
from .kernels import masked_topk, masked_topk_scores
from .metrics import (
    BehaviourAccumulator,
    MetricAccumulator,
    build_item_statistics,
    count_item_users,
    target_ranks,
)
from .model import SequentialRecommender
from .profiling import stage

log = logging.getLogger("fastrec.evaluate")


@dataclass(frozen=True)
class TrainingInteractions:
    """The training part of the data as dense-id columns, for baselines and statistics."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray


def training_interactions(prepared: PreparedData) -> TrainingInteractions:
    """Return the interactions a baseline may learn from.

    ``loo``: every rating except each evaluated user's last two (validation and
    test). ``windows``: the targets of the training windows, since a held-out
    window's target must not count.
    """
    params = prepared.store.metadata["params"]
    if params["split"] == "windows":
        train = prepared.store.part("train")
        real = train.target <= prepared.vocab.n_items
        return TrainingInteractions(
            users=np.asarray(train.user[real]),
            items=np.asarray(train.target[real]),
            ratings=np.asarray(train.target_rating[real]),
            timestamps=np.asarray(train.target_time[real]),
        )
    seqs = build_user_sequences(prepared.movielens, prepared.vocab)
    lengths = seqs.lengths
    evaluated = lengths >= max(1, params["min_history"]) + 2
    owner = np.repeat(np.arange(len(lengths)), lengths)
    position = np.arange(len(owner)) - seqs.offsets[owner]
    keep = ~evaluated[owner] | (position < lengths[owner] - 2)
    return TrainingInteractions(
        users=owner[keep].astype(np.int64),
        items=seqs.items[keep].astype(np.int64),
        ratings=seqs.ratings[keep],
        timestamps=seqs.timestamps[keep],
    )


class Evaluator:
    """Rank the catalog for every row of a split, for the model and the baselines."""

    def __init__(
        self,
        prepared: PreparedData,
        config: EvalConfig,
        device: torch.device,
        amp_dtype: torch.dtype | None = None,
        dist: distributed.DistInfo | None = None,
        prefetch: int = 2,
        compile_model: bool = False,
    ):
        self.prepared = prepared
        self.config = config
        self.device = device
        # On the CPU, bf16 autocast made evaluation about 2x slower: its scores tie
        # often, which sends rows to the exact sort path of the top-K selection.
        self.amp_dtype = amp_dtype if device.type == "cuda" else None
        self.dist = dist or distributed.DistInfo()
        self.prefetch = prefetch
        self.compile_model = compile_model
        vocab = prepared.vocab
        self.n_items = vocab.n_items
        self.vocab_size = vocab.vocab_size
        # Padding and special tokens are never ranked.
        excluded = [0, *range(vocab.n_items + 1, vocab.vocab_size)]
        self.exclude = torch.tensor(excluded, dtype=torch.long, device=device)
        self._compiled: dict[int, Any] = {}
        self._interactions: TrainingInteractions | None = None
        self._stats = None

    # Rows and batches ---------------------------------------------------------------

    def rows(self, part: str) -> np.ndarray:
        """Return the evaluated rows of ``part``: those whose target is a real item.

        In the ``windows`` split a window can end in the end token, which is never
        ranked, so such rows are left out (their count is in ``skipped_rows``).
        """
        view = self.prepared.store.part(part)
        rows = np.flatnonzero(np.asarray(view.target) <= self.n_items)
        if self.config.max_users:
            rows = rows[: self.config.max_users]
        return rows

    def batches(self, part: str):
        """Yield padded evaluation batches of this rank's share of ``part``'s rows."""
        loader = BatchLoader(
            self.prepared.store.part(part),
            self.config.batch_size,
            shuffle=False,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            device=self.device,
            prefetch=self.prefetch,
            columns=EVAL_COLUMNS,
            rows=self.rows(part),
        )
        yield from loader

    # Model -------------------------------------------------------------------------

    def _scorer(self, model: SequentialRecommender):
        """Return the (optionally compiled) function that maps a batch to the top-K input."""
        fn = (
            model.query_and_item_weights
            if model.config.head == "dot"
            else model.score_next
        )
        if not self.compile_model:
            return fn
        key = id(model)
        if key not in self._compiled:
            self._compiled[key] = torch.compile(fn)
        return self._compiled[key]

    @torch.no_grad()
    def model_topk(
        self, model: SequentialRecommender, batch: dict[str, torch.Tensor], k: int
    ) -> torch.Tensor:
        """Return the model's top-k unseen items [B, k] for one batch (-1 = none)."""
        items, users = batch["items"], batch["user"]
        n = items.shape[0]
        size = self.config.batch_size
        if n < size:
            # A fixed batch shape keeps torch.compile from compiling a second graph.
            items = torch.cat([items, items.new_zeros(size - n, items.shape[1])])
            users = torch.cat([users, users.new_zeros(size - n)])
        scorer = self._scorer(model)
        with (
            stage("eval_score"),
            torch.autocast(
                self.device.type,
                dtype=self.amp_dtype,
                enabled=self.amp_dtype is not None,
            ),
        ):
            output = scorer(items, users)
        with stage("eval_topk"):
            if model.config.head == "dot":
                query, weights = output
                # Ranking runs in fp32: bf16 scores would tie far too often.
                _, top = masked_topk_scores(
                    query[:n].float(),
                    weights.float(),
                    batch["seen"],
                    k,
                    exclude=self.exclude,
                    backend=self.config.backend,
                )
            else:
                _, top = masked_topk(
                    output[:n].float(),
                    batch["seen"],
                    k,
                    exclude=self.exclude,
                    backend=self.config.backend,
                )
        return top

    def evaluate_model(
        self,
        model: SequentialRecommender,
        part: str,
        ks: list[int] | None = None,
        behaviour: bool = False,
    ) -> dict[str, Any]:
        """Return the model's ranking metrics (and optionally behavioural ones) on ``part``."""
        ks = ks or self.config.ks
        was_training = model.training
        model.eval()
        metrics = MetricAccumulator(ks, self.device)
        behaviour_acc = (
            BehaviourAccumulator(self.item_statistics(), self.device)
            if behaviour
            else None
        )
        for batch in self.batches(part):
            top = self.model_topk(model, batch, max(ks))
            with stage("eval_metrics"):
                metrics.update(target_ranks(top, batch["target"].long()))
                if behaviour_acc is not None:
                    behaviour_acc.update(top[:, : self.behaviour_k(ks)])
        model.train(was_training)
        return self._finish(metrics, behaviour_acc, ks)

    # Baselines ---------------------------------------------------------------------

    def interactions(self) -> TrainingInteractions:
        """Return (and cache) the training interactions."""
        if self._interactions is None:
            self._interactions = training_interactions(self.prepared)
        return self._interactions

    def item_statistics(self):
        """Return (and cache) the per-item tables of the behavioural metrics."""
        if self._stats is None:
            train = self.interactions()
            counts = count_item_users(
                torch.from_numpy(train.users),
                torch.from_numpy(train.items),
                self.vocab_size,
            )
            genres, _ = item_genre_matrix(self.prepared.movielens, self.prepared.vocab)
            self._stats = build_item_statistics(
                counts,
                n_train_users=len(np.unique(train.users)),
                n_items=self.n_items,
                item_genres=torch.from_numpy(genres),
            ).to(self.device)
        return self._stats

    def baseline_vectors(self) -> dict[str, torch.Tensor]:
        """Return each configured baseline's [V] score vector on the device."""
        train = self.interactions()
        return {
            name: baseline_scores(
                name,
                self.vocab_size,
                train_items=torch.from_numpy(train.items.astype(np.int64)),
                train_ratings=torch.from_numpy(train.ratings.astype(np.int64)),
                train_timestamps=torch.from_numpy(train.timestamps.astype(np.int64)),
                n_items=self.n_items,
            ).to(self.device)
            for name in self.config.baselines
        }

    def evaluate_baselines(
        self, part: str, ks: list[int] | None = None
    ) -> dict[str, Any]:
        """Return ranking and behavioural metrics of every baseline on ``part``."""
        ks = ks or self.config.ks
        vectors = self.baseline_vectors()
        stats = self.item_statistics()
        metrics = {name: MetricAccumulator(ks, self.device) for name in vectors}
        behaviour = {name: BehaviourAccumulator(stats, self.device) for name in vectors}
        for batch in self.batches(part):
            n = batch["items"].shape[0]
            with stage("eval_baselines"):
                for name, vector in vectors.items():
                    scores = vector[None, :].expand(n, -1)
                    _, top = masked_topk(
                        scores,
                        batch["seen"],
                        max(ks),
                        exclude=self.exclude,
                        backend=self.config.backend,
                    )
                    metrics[name].update(target_ranks(top, batch["target"].long()))
                    behaviour[name].update(top[:, : self.behaviour_k(ks)])
        return {
            name: self._finish(metrics[name], behaviour[name], ks) for name in vectors
        }

    # Reports -----------------------------------------------------------------------

    @staticmethod
    def behaviour_k(ks: list[int]) -> int:
        """Return the list length of the behavioural metrics: 10 if evaluated, else max K."""
        return 10 if 10 in ks else max(ks)

    def _finish(self, metrics, behaviour, ks) -> dict[str, Any]:
        # Only an evaluator that shards the rows sums over ranks. One that evaluates
        # every row inside a process group would otherwise count each row per rank.
        sharded = self.dist.world_size > 1
        if sharded:
            metrics.all_reduce()
        result: dict[str, Any] = metrics.compute()
        if behaviour is not None:
            if sharded:
                behaviour.all_reduce()
            k = self.behaviour_k(ks)
            for name, value in behaviour.compute().items():
                result[f"{name}@{k}"] = value
        return result

    def evaluate_all(
        self, model: SequentialRecommender, part: str = "test"
    ) -> dict[str, Any]:
        """Return model and baseline metrics on ``part``, shaped like metrics.json."""
        ks = self.config.ks
        results: dict[str, Any] = {
            "split": self.prepared.store.metadata["params"]["split"],
            "part": part,
            "ks": ks,
        }
        results["model"] = self.evaluate_model(model, part, ks, behaviour=True)
        results.update(self.evaluate_baselines(part, ks))
        results["users"] = results["model"]["users"]
        targets = np.asarray(self.prepared.store.part(part).target)
        results["skipped_rows"] = int(np.count_nonzero(targets > self.n_items))
        return results


RANKING_PREFIXES = ("HR", "NDCG", "MRR", "MAP", "Precision", "Recall")


def format_table(results: dict[str, Any]) -> str:
    """Return a text table of the model against each baseline."""
    names = [
        "model",
        *[n for n in results if isinstance(results[n], dict) and n != "model"],
    ]
    metrics = [
        key
        for key in results["model"]
        if key != "users" and isinstance(results["model"][key], float)
    ]
    width = max(len(m) for m in metrics) + 2
    lines = [
        f"{results['part']} rows: {results['users']} ({results['split']} split)",
        "metric".ljust(width) + "".join(n.rjust(16) for n in names),
    ]
    for metric in metrics:
        cells = []
        for name in names:
            value = results[name].get(metric)
            cells.append(("-" if value is None else f"{value:.4f}").rjust(16))
        lines.append(metric.ljust(width) + "".join(cells))
    return "\n".join(lines)


def write_metrics(path: str | Path, results: dict[str, Any]) -> None:
    """Write ``results`` as JSON atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_sibling(path)
    try:
        with os.fdopen(fd, "w") as sink:
            json.dump(results, sink, indent=2)
        os.replace(tmp, path)
    finally:
        # After a successful rename the temporary name no longer exists.
        Path(tmp).unlink(missing_ok=True)


TRITON_INTERPRET_ON = ("1", "true", "on", "yes")


def check_json_path(path: Path) -> None:
    """Raise FastrecError unless ``path`` can be written as a JSON file."""
    if path.is_dir():
        raise FastrecError(f"--json {path} is a folder; give a file path")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise FastrecError(
                f"--json {path} is invalid because {parent} is a file, not a folder"
            )


def check_cli_args(args: argparse.Namespace) -> torch.device:
    """Check the command-line values before any data is read; return the device."""
    if args.batch_size is not None and args.batch_size < 1:
        raise FastrecError(
            f"--batch-size {args.batch_size} is invalid; use an integer >= 1"
        )
    device = parse_device(args.device, "--device")
    interpreted = os.environ.get("TRITON_INTERPRET", "").lower() in TRITON_INTERPRET_ON
    if args.backend == "triton" and device.type == "cpu" and not interpreted:
        raise FastrecError(
            "--backend triton on CPU needs the Triton interpreter: set "
            "TRITON_INTERPRET=1, or use --backend torch or a CUDA --device"
        )
    if args.json:
        check_json_path(Path(args.json))
    return device


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the ``fastrec.evaluate`` command line."""
    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .config import DataConfig
    from .data.prepare import prepare
    from .plots import plot_metrics_by_k

    parser = argparse.ArgumentParser(
        prog="python -m fastrec.evaluate", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--checkpoint", required=True, help="best.pt or last.pt of a run"
    )
    parser.add_argument("--data-dir", help="MovieLens folder (default: the run's)")
    parser.add_argument("--split", choices=("test", "valid"), default="test")
    parser.add_argument("--k", help="comma-separated cut-offs, e.g. 10,50")
    parser.add_argument("--json", help="write the metrics to this JSON file")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--backend", choices=("auto", "triton", "torch"), default="auto"
    )
    parser.add_argument("--batch-size", type=int, help="rows per batch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    device = check_cli_args(args)

    state = load_checkpoint(args.checkpoint)
    run = state["config"]
    # Evaluation reads the data that training used and never downloads into a folder.
    data = dataclasses.replace(DataConfig(**run["data"]), download=False)
    if args.data_dir:
        data = dataclasses.replace(data, data_dir=args.data_dir)
    eval_config = EvalConfig(**run["eval"])
    changes: dict[str, Any] = {"backend": args.backend}
    if args.k:
        try:
            changes["ks"] = [int(k) for k in args.k.split(",")]
        except ValueError as error:
            raise FastrecError(
                f"--k {args.k!r} must be comma-separated integers"
            ) from error
    if args.batch_size is not None:
        changes["batch_size"] = args.batch_size
    eval_config = dataclasses.replace(eval_config, **changes)

    prepared = prepare(data)
    if prepared.store.metadata["key"] != state["store"]["key"]:
        raise FastrecError(
            f"{args.checkpoint} was trained on another window store than the one "
            f"{data.data_dir} gives; check --data-dir"
        )
    model = model_from_checkpoint(state, device)
    train = run["train"]
    amp = torch.bfloat16 if train.get("amp", True) else None
    compile_model = train.get("compile") == "true" or (
        train.get("compile") == "auto" and device.type == "cuda"
    )
    evaluator = Evaluator(
        prepared, eval_config, device, amp, compile_model=compile_model
    )
    results = evaluator.evaluate_all(model, args.split)
    results["checkpoint"] = str(args.checkpoint)
    print(format_table(results))
    json_path = (
        Path(args.json)
        if args.json
        else Path(args.checkpoint).with_name(f"eval_{args.split}.json")
    )
    write_metrics(json_path, results)
    chart = json_path.with_suffix(".png")
    plot_metrics_by_k(results, chart)
    log.info("wrote %s and %s", json_path, chart)
    return results


if __name__ == "__main__":
    main()
