"""Train a sequential recommender on MovieLens and report it against baselines.

    python -m fastrec.train [--config FILE] [--data-dir DIR] [--out-dir DIR]
                            [--set key=value ...] [--resume] [--profile]

With no arguments it trains the default config on data/ml-1m, downloading the
data first when it is missing.

Under ``torchrun`` every process trains a DDP replica on its own shard of the
training windows, so one optimizer step covers ``train.batch_size`` x world size
windows. ``train.lr`` applies to that global batch as given: it is not rescaled with
the world size. Validation and test rows are split across the ranks and the metric
totals are summed, so every row counts once. Only rank 0 logs, writes TensorBoard,
metrics and checkpoints.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from . import distributed
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import Config, load_config
from .data.loader import BatchLoader
from .data.prepare import PreparedData, prepare
from .data.sequences import item_genre_matrix, user_code_matrix
from .devices import parse_device
from .errors import FastrecError, exit_on_user_error
from .evaluate import Evaluator, format_table, write_metrics
from .losses import linear_cross_entropy
from .model import SequentialRecommender, strip_state_dict_prefixes
from .plots import plot_loss_curve
from .profiling import stage

log = logging.getLogger("fastrec.train")


class TrainingDiverged(FastrecError):
    """The training loss became NaN or infinite."""


class TrainingStep(nn.Module):
    """Forward pass and loss of one batch, the unit that DDP and torch.compile wrap."""

    def __init__(
        self, model: SequentialRecommender, objective: str, rating_weight: float
    ):
        super().__init__()
        self.model = model
        self.objective = objective
        self.rating_weight = rating_weight

    def forward(
        self,
        items: torch.Tensor,
        users: torch.Tensor,
        target: torch.Tensor,
        ratings: torch.Tensor,
        target_rating: torch.Tensor,
    ) -> torch.Tensor:
        features, weight = self.model.head_inputs(items, users)
        if self.objective == "all":
            # Targets at every position: the next input, then the window's target.
            # A padded input predicts nothing, so its target becomes padding (0).
            targets = torch.cat([items[:, 1:], target[:, None]], dim=1)  # [B, T]
            targets = torch.where(items != 0, targets, 0)
            target_ratings = torch.cat([ratings[:, 1:], target_rating[:, None]], dim=1)
        else:
            targets = target
            target_ratings = target_rating
            if features.dim() == 3:
                features = features[:, -1]  # the dot head trained on the last position
        weights = None
        if self.rating_weight:
            weights = 1.0 + self.rating_weight * (target_ratings.float() - 3.0)
            weights = weights.clamp_min(0.0)
        return linear_cross_entropy(features, weight, targets.long(), weights)


def resolve_device(name: str, local_rank: int) -> torch.device:
    """Return the training device for ``train.device`` (``auto`` picks CUDA when present).

    ``cuda`` without an index means the GPU of the local rank, one GPU per process.
    """
    device = parse_device(name, "train.device")
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise FastrecError(
                f"this process needs GPU {device.index} but only "
                f"{torch.cuda.device_count()} are visible; start at most one process "
                "per GPU (torchrun --nproc_per_node)"
            )
        torch.cuda.set_device(device)
    return device


def rank_seed(seed: int, rank: int) -> int:
    """Return the dropout seed of ``rank``: ``seed`` itself on rank 0.

    The other ranks draw their own dropout masks from a seed derived from
    (seed, rank), because identical masks on every rank would add no noise between
    the replicas.
    """
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed % 2**64, rank]).generate_state(1)[0])


def amp_dtype(config: Config, device: torch.device) -> torch.dtype | None:
    """Return the autocast dtype: bf16 where supported, fp16 on older GPUs, or None."""
    if not config.train.amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def build_model(config: Config, prepared: PreparedData) -> SequentialRecommender:
    """Create the model with the sizes of the prepared data."""
    meta = prepared.store.metadata
    genres = codes = None
    changes: dict[str, Any] = dict(
        vocab_size=meta["vocab_size"],
        n_users=meta["n_users"],
        max_len=meta["max_len"],
        n_special=meta["n_special"],
    )
    if config.model.n_genres > 0:
        matrix, _ = item_genre_matrix(prepared.movielens, prepared.vocab)
        genres = torch.from_numpy(matrix)
        changes["n_genres"] = matrix.shape[1]
    if config.model.demographics:
        codes = torch.from_numpy(user_code_matrix(prepared.movielens, prepared.vocab))
        sizes = tuple(int(codes[:, i].max()) + 1 for i in range(3))
        changes["demographic_sizes"] = tuple(
            max(a, b) for a, b in zip(sizes, config.model.demographic_sizes)
        )
    model_config = dataclasses.replace(config.model, **changes)
    return SequentialRecommender(model_config, item_genres=genres, user_codes=codes)


def lr_lambda(warmup: int, total: int, floor: float):
    """Return the LR multiplier of a linear warm-up followed by cosine decay to ``floor``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split parameters into decayed matrices and undecayed embeddings, norms, biases."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.dim() < 2 or "embedding" in name or "norm" in name or "ln" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def peak_memory_mb(device: torch.device) -> float:
    """Return the peak memory in MiB: CUDA allocations, or the process's max RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StopRequested(Exception):
    """SIGINT or SIGTERM arrived; training saves ``last.pt`` and exits."""


# Running statistics of an epoch that a stop interrupted, carried into --resume.
EMPTY_PARTIAL = {
    "loss_sum": 0.0,
    "norm_sum": 0.0,
    "steps": 0,
    "samples": 0,
    "seconds": 0.0,
}


class Trainer:
    """Training loop with validation, checkpoints, early stopping and logging."""

    def __init__(
        self,
        config: Config,
        prepared: PreparedData,
        out_dir: Path,
        dist: distributed.DistInfo,
        profile_steps: int = 0,
    ):
        self.config = config
        self.prepared = prepared
        self.out_dir = out_dir
        self.dist = dist
        self.profile_steps = profile_steps
        self.device = resolve_device(config.train.device, dist.local_rank)
        self.amp_dtype = amp_dtype(config, self.device)
        tc = config.train

        # The same seed on every rank gives identical initial weights; DDP also
        # broadcasts rank 0's weights when it wraps the model.
        torch.manual_seed(tc.seed)
        self.model = build_model(config, prepared).to(self.device)
        if dist.rank:
            torch.manual_seed(rank_seed(tc.seed, dist.rank))
        objective = tc.objective
        if objective == "auto":
            objective = "last" if self.model.config.head == "interaction" else "all"
        if objective == "all" and self.model.config.head == "interaction":
            raise FastrecError(
                "train.objective=all needs the dot head; the interaction head predicts "
                "only the item after the window"
            )
        self.objective = objective
        step_module: nn.Module = TrainingStep(self.model, objective, tc.rating_weight)
        if dist.world_size > 1:
            step_module = distributed.wrap_ddp(step_module, self.device)
        use_compile = tc.compile == "true" or (
            tc.compile == "auto" and self.device.type == "cuda"
        )
        self.compiled = use_compile
        # Compiling the DDP wrapper (not the inner module) lets dynamo split the graph
        # at DDP's gradient buckets, so communication overlaps the backward pass.
        self.step_module = torch.compile(step_module) if use_compile else step_module
        self.stop_vote = distributed.StopVote()

        self.loader = BatchLoader(
            prepared.store.part("train"),
            tc.batch_size,
            shuffle=True,
            seed=tc.seed,
            drop_last=dist.world_size > 1,
            rank=dist.rank,
            world_size=dist.world_size,
            equal_shards=dist.world_size > 1,
            device=self.device,
            prefetch=tc.prefetch,
        )
        self.steps_per_epoch = len(self.loader)
        if tc.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, tc.max_steps_per_epoch)
        if self.steps_per_epoch == 0:
            raise FastrecError(
                f"train.batch_size={tc.batch_size} leaves no full batch per process; "
                "lower it"
            )
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.model, tc.weight_decay),
            lr=tc.lr,
            betas=tc.betas,
            # The fused kernel updates all tensors in one pass, on the CPU too, where
            # it ran the tutorial model's update 8x faster than the per-tensor loop.
            fused=self.device.type in ("cuda", "cpu"),
        )
        total = tc.epochs * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(tc.warmup_steps, total, tc.min_lr / tc.lr)
        )
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self.evaluator = Evaluator(
            prepared,
            config.eval,
            self.device,
            self.amp_dtype,
            dist,
            tc.prefetch,
            compile_model=use_compile,
        )
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.best_score = -math.inf
        self.best_epoch = -1
        self.bad_epochs = 0
        self.history: list[dict[str, Any]] = []
        self._partial = dict(EMPTY_PARTIAL)
        self._stop_signal: int | None = None
        self.flops_per_sample = self.model.flops_per_sample()

    # Checkpoints -------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Return everything needed to continue this run exactly.

        Under DDP every rank must call it, because it gathers the RNG states of all
        ranks.
        """
        rng = rng_state()
        state = {
            "model": self.model.state_dict(),
            "model_config": dataclasses.asdict(self.model.config),
            "config": self.config.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "partial": dict(self._partial),
            "world_size": self.dist.world_size,
            "rng": rng,
            "store": {k: v for k, v in self.prepared.store.metadata.items()},
        }
        if self.dist.world_size > 1:
            state["rng_ranks"] = distributed.all_gather_object(rng)
        return state

    def save(self, name: str) -> Path:
        """Write ``name`` (``last.pt`` or ``best.pt``) into the out-dir.

        Every rank calls it and only rank 0 writes. The weights are those of the
        unwrapped model, without DDP's ``module.`` or torch.compile's
        ``_orig_mod.`` prefixes, so a single process can load them.
        """
        path = self.out_dir / name
        state = self.state()
        if self.dist.is_main:
            save_checkpoint(path, state)
        return path

    def restore(self, path: Path) -> None:
        """Continue from a checkpoint written by ``save``, with any world size.

        Rank 0 reads the file and sends it to the other ranks, so on several
        machines only rank 0's machine needs the out-dir.
        """
        state = load_on_main(path, self.dist)
        if state["store"].get("key") != self.prepared.store.metadata.get("key"):
            raise FastrecError(
                f"{path} was trained on another window store; resume with the same "
                "config and data, or start a new --out-dir"
            )
        self.model.load_state_dict(
            strip_state_dict_prefixes(state["model"]), strict=True
        )
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = state["epoch"]
        self.step_in_epoch = state["step_in_epoch"]
        self.global_step = state["global_step"]
        self.best_score = state["best_score"]
        self.best_epoch = state["best_epoch"]
        self.bad_epochs = state["bad_epochs"]
        self.history = state["history"]
        self._partial = dict(EMPTY_PARTIAL, **state["partial"])
        saved_world_size = state.get("world_size", 1)
        rng_ranks = state.get("rng_ranks") or [state["rng"]]
        if saved_world_size == self.dist.world_size:
            set_rng_state(rng_ranks[self.dist.rank])
        else:
            self._adapt_to_world_size(saved_world_size, path)
            set_rng_state(state["rng"])
            if self.dist.rank:
                torch.manual_seed(rank_seed(self.config.train.seed, self.dist.rank))
        if self.dist.is_main:
            log.info(
                "resumed from %s at epoch %d, step %d",
                path,
                self.epoch + 1,
                self.step_in_epoch,
            )

    def _adapt_to_world_size(self, saved_world_size: int, path: Path) -> None:
        """Continue a run that was saved under another world size.

        The number of steps per epoch differs, so the step count and the LR
        schedule restart at the beginning of the current epoch as if this world
        size had trained from the start. An epoch interrupted in the middle is
        trained again from its first batch, because the new shards mix the rows it
        trained on with those it did not.
        """
        if self.dist.is_main:
            log.warning(
                "%s was saved with world size %d and this run has %d; the LR "
                "schedule is laid out again for %d steps per epoch%s",
                path,
                saved_world_size,
                self.dist.world_size,
                self.steps_per_epoch,
                f" and epoch {self.epoch + 1} restarts from its first batch"
                if self.step_in_epoch
                else "",
            )
        self.step_in_epoch = 0
        self._partial = dict(EMPTY_PARTIAL)
        self.global_step = self.epoch * self.steps_per_epoch
        # LambdaLR sets lr = base_lr * factor(last_epoch) after each step, so these
        # are the values it would hold after global_step steps.
        factor = self.scheduler.lr_lambdas[0](self.global_step)
        lrs = [base * factor for base in self.scheduler.base_lrs]
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self.scheduler.last_epoch = self.global_step
        self.scheduler._last_lr = lrs  # what get_last_lr() returns

    # Training ----------------------------------------------------------------------

    def _request_stop(self, signum: int, frame: Any) -> None:
        self._stop_signal = signum

    def train_step(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run forward, backward and the optimizer step; return (loss, grad norm) on device."""
        with stage("forward"):
            with torch.autocast(
                self.device.type,
                dtype=self.amp_dtype,
                enabled=self.amp_dtype is not None,
            ):
                loss = self.step_module(
                    batch["items"],
                    batch["user"],
                    batch["target"],
                    batch["ratings"],
                    batch["target_rating"],
                )
        with stage("backward"):
            self.scaler.scale(loss).backward()
        with stage("optimizer_step"):
            self.scaler.unscale_(self.optimizer)
            clip = self.config.train.grad_clip
            if clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            else:
                norm = torch.zeros((), device=self.device)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
        return loss.detach(), norm.detach()

    def _profiler(self):
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        trace = self.out_dir / "profile" / f"trace_rank{self.dist.rank}.json"
        trace.parent.mkdir(parents=True, exist_ok=True)

        def write(prof: torch.profiler.profile) -> None:
            prof.export_chrome_trace(str(trace))
            log.info("wrote profiler trace to %s", trace)

        return torch.profiler.profile(
            activities=activities,
            schedule=torch.profiler.schedule(
                wait=0, warmup=1, active=self.profile_steps, repeat=1
            ),
            on_trace_ready=write,
        )

    def train_epoch(self, bar: tqdm | None) -> dict[str, float]:
        """Train one epoch (or its rest after a resume) and return its statistics."""
        self.model.train()
        self.loader.set_epoch(self.epoch)
        skip = self.step_in_epoch
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        norm_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        steps = self._partial["steps"]
        samples = self._partial["samples"]
        seconds = self._partial["seconds"]
        loss_sum += self._partial["loss_sum"]
        norm_sum += self._partial["norm_sum"]
        profiler = None
        if self.profile_steps and self.epoch == 0 and skip == 0:
            profiler = self._profiler()
            profiler.start()

        started = time.perf_counter()
        # A resumed epoch skips the batches it already trained on; the order is the
        # same because the shuffle depends only on (seed, epoch).
        iterator = self.loader.iterate(start_batch=skip)
        pending_loss = None
        for index in range(skip, self.steps_per_epoch):
            with stage("data_wait"):
                batch = next(iterator)
            loss, norm = self.train_step(batch)
            loss_sum += loss
            norm_sum += norm
            steps += 1
            samples += batch["user"].shape[0]
            self.global_step += 1
            self.step_in_epoch = index + 1
            if profiler is not None:
                profiler.step()
                if index + 1 >= self.profile_steps + 1:
                    profiler.stop()
                    profiler = None
            if bar is not None:
                bar.update(1)
                # Show the loss of an earlier step once its value has arrived, so the
                # bar never makes the host wait for the device.
                if index % 20 == 0:
                    if pending_loss is not None:
                        bar.set_postfix(
                            loss=f"{pending_loss.item():.4f}", refresh=False
                        )
                    pending_loss = loss
            # Under DDP the ranks agree on the stop, one step after the first signal.
            agreed = self.stop_vote.poll(self._stop_signal)
            if agreed is not None:
                self._stop_signal = agreed
                # Every rank resumes from rank 0's checkpoint, so the partial sums
                # are averaged over ranks here, as at the end of an epoch.
                partial = torch.stack([loss_sum, norm_sum])
                distributed.all_reduce_mean(partial)
                loss_total, norm_total = partial.tolist()
                self._partial = {
                    "loss_sum": loss_total,
                    "norm_sum": norm_total,
                    "steps": steps,
                    "samples": samples,
                    "seconds": seconds + time.perf_counter() - started,
                }
                raise StopRequested
        iterator.close()
        if profiler is not None:
            profiler.stop()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds += time.perf_counter() - started
        totals = torch.stack([loss_sum, norm_sum]).to(torch.float64)
        distributed.all_reduce_mean(totals)
        train_loss, grad_norm = (float(x) / max(1, steps) for x in totals.tolist())
        self._partial = dict(EMPTY_PARTIAL)
        samples_per_s = samples * self.dist.world_size / max(seconds, 1e-9)
        return {
            "train_loss": train_loss,
            "grad_norm": grad_norm,
            "samples_per_s": samples_per_s,
            "epoch_seconds": seconds,
        }

    def fit(self) -> None:
        """Train until ``train.epochs``, early stopping or a stop signal."""
        tc = self.config.train
        writer = None
        if self.dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        previous = {
            sig: signal.signal(sig, self._request_stop)
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            while self.epoch < tc.epochs:
                bar = None
                if self.dist.is_main:
                    bar = tqdm(
                        total=self.steps_per_epoch,
                        initial=self.step_in_epoch,
                        desc=f"epoch {self.epoch + 1}/{tc.epochs}",
                        unit="step",
                        leave=False,
                        dynamic_ncols=True,
                        disable=None,
                    )
                stats = self.train_epoch(bar)
                if bar is not None:
                    bar.close()
                if not math.isfinite(stats["train_loss"]):
                    last = self.out_dir / "last.pt"
                    checkpoint_note = (
                        f"The last good checkpoint is {last}."
                        if last.exists()
                        else "No checkpoint was saved before it."
                    )
                    raise TrainingDiverged(
                        f"training loss became {stats['train_loss']} in epoch "
                        f"{self.epoch + 1}; stopped without saving this epoch. "
                        f"{checkpoint_note} Try a lower train.lr or train.amp=false"
                    )
                row = self._end_epoch(stats, writer)
                agreed = self.stop_vote.settle(self._stop_signal)
                if agreed is not None:
                    self._stop_signal = agreed
                    raise StopRequested
                if row.get("stopped_early"):
                    break
        except StopRequested:
            self.save("last.pt")
            name = signal.Signals(self._stop_signal).name
            log.info(
                "%s received: saved %s at epoch %d, step %d; continue with --resume",
                name,
                self.out_dir / "last.pt",
                self.epoch + 1,
                self.step_in_epoch,
            )
            raise SystemExit(128 + self._stop_signal)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if writer is not None:
                writer.close()

    def _end_epoch(self, stats: dict[str, float], writer: Any) -> dict[str, Any]:
        """Validate, log, checkpoint and decide on early stopping."""
        tc = self.config.train
        epoch = self.epoch + 1
        row: dict[str, Any] = {"epoch": epoch, "lr": self.scheduler.get_last_lr()[0]}
        row.update(stats)
        if epoch % tc.eval_every == 0 or epoch == tc.epochs:
            valid = self.evaluator.evaluate_model(self.model, "valid", ks=[10])
            row["valid"] = valid
        row["peak_memory_mb"] = peak_memory_mb(self.device)
        row["tflops"] = self.flops_per_sample * stats["samples_per_s"] / 1e12
        self.epoch = epoch
        self.step_in_epoch = 0

        score = row.get("valid", {}).get("NDCG@10")
        improved = score is not None and score > self.best_score
        if improved:
            self.best_score, self.best_epoch, self.bad_epochs = score, epoch, 0
        elif score is not None:
            self.bad_epochs += 1
        if tc.patience and self.bad_epochs >= tc.patience:
            row["stopped_early"] = True
        self.history.append(row)

        if self.dist.is_main:
            valid = row.get("valid", {})
            log.info(
                "epoch %d | loss %.4f | valid HR@10 %s NDCG@10 %s | lr %.2e | "
                "%.0f samples/s | %.3f TFLOP/s | peak mem %.0f MiB | %.1f s",
                epoch,
                row["train_loss"],
                _fmt(valid.get("HR@10")),
                _fmt(valid.get("NDCG@10")),
                row["lr"],
                row["samples_per_s"],
                row["tflops"],
                row["peak_memory_mb"],
                row["epoch_seconds"],
            )
            if writer is not None:
                for key in ("train_loss", "grad_norm", "lr", "samples_per_s"):
                    writer.add_scalar(f"train/{key}", row[key], epoch)
                for key, value in valid.items():
                    if key != "users":
                        writer.add_scalar(f"valid/{key}", value, epoch)
            with open(self.out_dir / "metrics.jsonl", "a") as sink:
                sink.write(json.dumps(row) + "\n")
        self.save("last.pt")
        if improved:
            self.save("best.pt")
        if row.get("stopped_early") and self.dist.is_main:
            log.info(
                "no better validation NDCG@10 for %d epochs; stopping (best epoch %d)",
                tc.patience,
                self.best_epoch,
            )
        return row


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def raise_on_every_rank(message: str | None, dist: distributed.DistInfo) -> None:
    """Stop every rank for a user error that the ranks agreed on (None: no error).

    Rank 0 raises the FastrecError, whose one line the command prints; the other
    ranks exit with the same status 2 without printing it again.
    """
    if message is None:
        return
    if dist.is_main:
        raise FastrecError(message)
    raise SystemExit(2)


def load_on_main(path: Path, dist: distributed.DistInfo) -> dict[str, Any]:
    """Read a checkpoint on rank 0 and return it on every rank.

    Only rank 0 writes checkpoints, so on several machines without a shared
    filesystem the other ranks cannot read the file themselves.
    """
    state = error = None
    if dist.is_main:
        try:
            # The CPU copy is sent to the other ranks, which may use other devices.
            state = load_checkpoint(path, map_location="cpu")
        except FastrecError as failure:
            error = str(failure)
    state, error = distributed.broadcast_object((state, error))
    raise_on_every_rank(error, dist)
    return state


def final_report(trainer: Trainer) -> dict[str, Any]:
    """Evaluate ``best.pt`` on the test rows next to the baselines; write metrics.json."""
    best = trainer.out_dir / "best.pt"
    source = None
    if trainer.dist.is_main:
        source = best if best.exists() else trainer.out_dir / "last.pt"
    source = distributed.broadcast_object(source)
    state = load_on_main(source, trainer.dist)
    trainer.model.load_state_dict(
        strip_state_dict_prefixes(state["model"]), strict=True
    )
    results = trainer.evaluator.evaluate_all(trainer.model, "test")
    results["checkpoint"] = str(source)
    results["best_epoch"] = state["best_epoch"]
    if trainer.dist.is_main:
        write_metrics(trainer.out_dir / "metrics.json", results)
        print(format_table(results))
        plot_loss_curve(trainer.history, trainer.out_dir / "loss_curve.png")
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fastrec.train", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", help="YAML config (default: built-in defaults)")
    parser.add_argument("--data-dir", help="MovieLens folder (default: data/ml-1m)")
    parser.add_argument("--out-dir", help="output folder (default: runs/<name>)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config values, e.g. train.epochs=2 (repeatable)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from last.pt")
    parser.add_argument(
        "--profile", action="store_true", help="write a PyTorch profiler trace"
    )
    parser.add_argument(
        "--profile-steps", type=int, default=5, help="steps in the trace (default 5)"
    )
    return parser.parse_args(argv)


def check_out_dir(out_dir: Path) -> None:
    """Raise FastrecError if ``out_dir`` or one of its parents is a file."""
    for path in (out_dir, *out_dir.parents):
        if path.exists() and not path.is_dir():
            raise FastrecError(
                f"--out-dir {out_dir} is invalid because {path} is a file, not a "
                "folder; choose another --out-dir"
            )


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the ``fastrec.train`` command line."""
    args = parse_args(argv)
    dist = distributed.env_info()
    logging.basicConfig(
        level=logging.INFO if dist.is_main else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.profile_steps < 1:
        raise FastrecError(
            f"--profile-steps {args.profile_steps} is invalid; use an integer >= 1"
        )
    config = load_config(args.config, args.overrides)
    check_out_dir(Path(args.out_dir or Path("runs") / config.name))
    if args.data_dir:
        config.data = dataclasses.replace(config.data, data_dir=args.data_dir)
    # Checkpoints record an absolute folder, so evaluate and recommend find the same
    # files from any working directory.
    config.data = dataclasses.replace(
        config.data, data_dir=str(Path(config.data.data_dir).resolve())
    )
    device = resolve_device(config.train.device, dist.local_rank)
    owns_group = distributed.init_process_group(dist, device)
    try:
        return run(args, config, dist)
    finally:
        if owns_group:
            distributed.shutdown()


def prepare_in_turn(config: Config, dist: distributed.DistInfo) -> PreparedData:
    """Download and build the window store with no two processes writing it at once.

    Rank 0 goes first and downloads and builds what is missing. Next the first
    process of every other machine builds its own copy where the data folder is
    local to the machine (on a shared filesystem it finds rank 0's store). Last,
    the remaining processes open the store. Store and download files are written
    to temporary names and renamed, so a reader never sees a partial file. A user
    error on any rank stops every rank with that rank's message.
    """
    turns = (
        dist.rank == 0,
        dist.rank != 0 and dist.local_rank == 0,
        dist.local_rank != 0,
    )
    prepared = None
    for my_turn in turns:
        error = None
        if my_turn:
            try:
                prepared = prepare(config.data)
            except FastrecError as failure:
                error = f"rank {dist.rank}: {failure}" if dist.rank else str(failure)
        errors = [e for e in distributed.all_gather_object(error) if e is not None]
        raise_on_every_rank(errors[0] if errors else None, dist)
    assert prepared is not None
    return prepared


def run(
    args: argparse.Namespace, config: Config, dist: distributed.DistInfo
) -> dict[str, Any]:
    """Train and report, in a process group that is already set up."""
    out_dir = Path(args.out_dir or Path("runs") / config.name)
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not args.resume and (out_dir / "metrics.jsonl").exists():
            (out_dir / "metrics.jsonl").unlink()

    prepared = prepare_in_turn(config, dist)
    trainer = Trainer(
        config,
        prepared,
        out_dir,
        dist,
        profile_steps=args.profile_steps if args.profile else 0,
    )
    if dist.is_main:
        log.info(
            "model: %s head, %.2fM parameters; %d training windows, %d steps per epoch, "
            "device %s, amp %s, compile %s, world size %d, %d windows per step "
            "(%d per process)",
            trainer.model.config.head,
            trainer.model.num_parameters() / 1e6,
            len(prepared.store.part("train")),
            trainer.steps_per_epoch,
            trainer.device,
            trainer.amp_dtype,
            trainer.compiled,
            dist.world_size,
            config.train.batch_size * dist.world_size,
            config.train.batch_size,
        )
    if args.resume:
        last = out_dir / "last.pt"
        missing = None
        if dist.is_main and not last.exists():
            missing = f"--resume needs {last}, which does not exist"
        raise_on_every_rank(distributed.broadcast_object(missing), dist)
        trainer.restore(last)
    if dist.is_main:
        # Written once the run is known to start, with the model fields that the
        # window store sets (vocabulary, users, window length) filled in.
        resolved = config.to_dict()
        resolved["model"] = dataclasses.asdict(trainer.model.config)
        write_metrics(out_dir / "config.json", resolved)
    started = time.perf_counter()
    trainer.fit()
    results = final_report(trainer)
    if dist.is_main:
        log.info(
            "finished in %.1f s; outputs in %s", time.perf_counter() - started, out_dir
        )
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
