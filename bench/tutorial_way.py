"""The baseline that fastrec is measured against: the tutorial's per-sample pipeline.

Each step is written the plain way that the MovieLens transformer tutorial works:
pandas parses ``ratings.dat`` with the Python engine, a Python loop per user sorts
the ratings by time and unfolds windows of 5 over ``[start] + movies + [end]``, a
per-sample ``Dataset`` feeds a ``DataLoader`` with default collation, and
evaluation scores one row at a time and blocks its seen items in a Python loop.

The ids match fastrec's, so the same model weights run on both pipelines: users
are 0..U-1 in order of their raw ids, movies 1..n in order of theirs (0 is
padding), the start token is n + 1 and the end token n + 2. Ties in timestamp keep
the file order (a stable sort), as in fastrec.

Shapes: N samples, T window length (5), B batch, V item rows, K top-k.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from fastrec.data.store import PartView
from fastrec.model import SequentialRecommender

WINDOW = 5
# Ratings that the tutorial gives its start and end tokens.
START_RATING = 0
END_RATING = 3
RATING_COLUMNS = ["user", "movie", "rating", "timestamp"]


@dataclass(slots=True)
class TutorialSample:
    """One training or evaluation sample: a window and the item after it."""

    user: int
    items: list[int]
    """[T] the window's item ids."""
    ratings: list[int]
    """[T] the window's ratings."""
    target: int
    target_rating: int


@dataclass
class TutorialData:
    """The samples of every user and the sizes of the id spaces."""

    samples: list[TutorialSample]
    n_users: int
    n_items: int
    """Number of rated movies; the vocabulary has n_items + 3 rows."""

    @property
    def vocab_size(self) -> int:
        """Number of item rows: padding, the movies, the start and end tokens."""
        return self.n_items + 3


def read_ratings_pandas(path: str | Path) -> pd.DataFrame:
    """Parse ``ratings.dat`` with pandas' Python engine (``::`` is a regex separator)."""
    return pd.read_csv(
        path,
        sep="::",
        engine="python",
        names=RATING_COLUMNS,
        encoding="iso-8859-1",
    )


def build_samples(ratings: pd.DataFrame, window: int = WINDOW) -> TutorialData:
    """Assign dense ids and unfold every user's windows in a Python loop.

    The sequence of a user is ``[start] + movies by timestamp + [end]``. Window i is
    ``sequence[i : i + window]``, and its target is the last item of window i + 1,
    so a user with n ratings gives n + 2 - window samples (n - 3 for windows of 5).
    """
    users = sorted(ratings["user"].unique())
    movies = sorted(ratings["movie"].unique())
    user_ids = {raw: index for index, raw in enumerate(users)}
    movie_ids = {raw: index + 1 for index, raw in enumerate(movies)}
    frame = ratings.assign(
        user_id=ratings["user"].map(user_ids), movie_id=ratings["movie"].map(movie_ids)
    )
    start, end = len(movies) + 1, len(movies) + 2

    samples: list[TutorialSample] = []
    for user_id, group in frame.groupby("user_id"):
        group = group.sort_values("timestamp", kind="stable")
        sequence = [start] + group["movie_id"].tolist() + [end]
        sequence_ratings = [START_RATING] + group["rating"].tolist() + [END_RATING]
        windows = [sequence[i : i + window] for i in range(len(sequence) - window + 1)]
        window_ratings = [
            sequence_ratings[i : i + window] for i in range(len(sequence) - window + 1)
        ]
        for i in range(len(windows) - 1):
            samples.append(
                TutorialSample(
                    user=int(user_id),
                    items=windows[i],
                    ratings=window_ratings[i],
                    target=windows[i + 1][-1],
                    target_rating=window_ratings[i + 1][-1],
                )
            )
    return TutorialData(samples=samples, n_users=len(users), n_items=len(movies))


def random_split(
    samples: list[TutorialSample], holdout_fraction: float = 0.1, seed: int = 0
) -> tuple[list[TutorialSample], list[TutorialSample]]:
    """Split the samples at random into (training, held-out) lists."""
    order = np.random.default_rng(seed).permutation(len(samples))
    n_holdout = int(round(holdout_fraction * len(samples)))
    train = [samples[i] for i in order[n_holdout:]]
    holdout = [samples[i] for i in order[:n_holdout]]
    return train, holdout


def prepare_tutorial(
    ratings_path: str | Path, holdout_fraction: float = 0.1, seed: int = 0
) -> tuple[TutorialData, list[TutorialSample], list[TutorialSample]]:
    """Run the tutorial's data preparation: parse, unfold and split."""
    data = build_samples(read_ratings_pandas(ratings_path))
    train, holdout = random_split(data.samples, holdout_fraction, seed)
    return data, train, holdout


def samples_as_arrays(samples: Sequence[TutorialSample]) -> dict[str, np.ndarray]:
    """Stack samples into int64 columns: items and ratings [N, T], the rest [N]."""
    return {
        "user": np.array([s.user for s in samples], dtype=np.int64),
        "items": np.array([s.items for s in samples], dtype=np.int64),
        "ratings": np.array([s.ratings for s in samples], dtype=np.int64),
        "target": np.array([s.target for s in samples], dtype=np.int64),
        "target_rating": np.array([s.target_rating for s in samples], dtype=np.int64),
    }


class TutorialDataset(Dataset):
    """Per-sample dataset over TutorialSample objects, one dict of tensors per item."""

    def __init__(self, samples: Sequence[TutorialSample]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.samples[index]
        return {
            "items": torch.tensor(sample.items),
            "ratings": torch.tensor(sample.ratings),
            "user": torch.tensor(sample.user),
            "target": torch.tensor(sample.target),
            "target_rating": torch.tensor(sample.target_rating),
        }


class StoreWindowDataset(Dataset):
    """Per-sample dataset over one part of a fastrec window store.

    ``__getitem__`` copies one window's columns into tensors, so a ``DataLoader``
    with default collation serves the same rows as ``BatchLoader`` does.
    """

    COLUMNS = ("items", "ratings", "user", "target", "target_rating")

    def __init__(self, part: PartView) -> None:
        self.part = part

    def __len__(self) -> int:
        return len(self.part)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        # torch.tensor copies, because the mapped store arrays are read-only.
        return {
            name: torch.tensor(getattr(self.part, name)[index]) for name in self.COLUMNS
        }


def make_loader(dataset: Dataset, batch_size: int, seed: int = 0) -> DataLoader:
    """Return a shuffling ``DataLoader`` with default collation and no workers."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)


@dataclass
class StepTiming:
    """Throughput of a training loop after its warm-up steps."""

    steps: int
    samples: int
    seconds: float
    warmup_seconds: float
    mean_loss: float

    @property
    def samples_per_s(self) -> float:
        """Timed samples per second."""
        return self.samples / max(self.seconds, 1e-9)


def time_training(
    batches: Callable[[], Iterator[dict[str, torch.Tensor]]],
    step: Callable[[dict[str, torch.Tensor]], float | torch.Tensor],
    warmup_steps: int,
    steps_per_epoch: int,
    epochs: int = 1,
) -> StepTiming:
    """Time ``epochs`` epochs of at most ``steps_per_epoch`` steps after a warm-up.

    ``batches()`` starts one epoch's iterator, and loading its batches is part of the
    timed work. The warm-up steps run first on a separate iterator, untimed.
    """
    warmup_started = time.perf_counter()
    warmup = batches()
    for _ in range(warmup_steps):
        step(next(warmup))
    del warmup
    warmup_seconds = time.perf_counter() - warmup_started

    steps = samples = 0
    loss_sum = 0.0
    started = time.perf_counter()
    for _ in range(epochs):
        for index, batch in enumerate(batches()):
            if index >= steps_per_epoch:
                break
            loss_sum += float(step(batch))
            steps += 1
            samples += int(batch["user"].shape[0])
    seconds = time.perf_counter() - started
    return StepTiming(steps, samples, seconds, warmup_seconds, loss_sum / max(1, steps))


def tutorial_step_function(
    model: SequentialRecommender, optimizer: torch.optim.Optimizer
) -> Callable[[dict[str, torch.Tensor]], float]:
    """Return the tutorial's eager fp32 step: last-item cross-entropy, AdamW update."""

    def step(batch: dict[str, torch.Tensor]) -> float:
        logits = model(batch["items"], batch["user"])  # [B, V]
        loss = F.cross_entropy(logits, batch["target"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


@dataclass
class PerRowResult:
    """Hit counts and time of a per-row evaluation."""

    rows: int
    seconds: float
    hits: dict[int, int]

    @property
    def rows_per_s(self) -> float:
        """Evaluated rows (users) per second."""
        return self.rows / max(self.seconds, 1e-9)

    def hit_rate(self, k: int) -> float:
        """Return HR@k, the fraction of rows whose target is in the top k."""
        return self.hits[k] / max(1, self.rows)


@torch.no_grad()
def evaluate_per_row(
    model: SequentialRecommender,
    items: np.ndarray,
    users: np.ndarray,
    targets: np.ndarray,
    seen: Sequence[Sequence[int]],
    ks: Sequence[int],
) -> PerRowResult:
    """Rank the catalog one row at a time, blocking seen items in a Python loop.

    ``items`` is [N, T], ``users`` and ``targets`` [N], and ``seen[i]`` the item ids
    row i must not return. The model runs eagerly in fp32 on one row per call.
    """
    was_training = model.training
    model.eval()
    hits = {k: 0 for k in ks}
    top_k = max(ks)
    started = time.perf_counter()
    for row in range(len(targets)):
        window = torch.as_tensor(items[row : row + 1], dtype=torch.long)  # [1, T]
        user = torch.as_tensor(users[row : row + 1], dtype=torch.long)  # [1]
        scores = model.score_next(window, user)[0]  # [V]
        for item in seen[row]:
            scores[item] = float("-inf")
        top = torch.topk(scores, top_k).indices.tolist()  # [K]
        target = int(targets[row])
        for k in ks:
            if target in top[:k]:
                hits[k] += 1
    seconds = time.perf_counter() - started
    model.train(was_training)
    return PerRowResult(rows=len(targets), seconds=seconds, hits=hits)


def seen_lists(part: PartView, rows: np.ndarray) -> list[list[int]]:
    """Return each row's seen items (its stored history) as Python lists."""
    offsets = np.asarray(part.history_offsets, dtype=np.int64)
    values = part.history_values
    return [values[offsets[row] : offsets[row + 1]].tolist() for row in rows]
