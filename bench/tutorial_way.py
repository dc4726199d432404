"""The baseline that fastrec is measured against: the tutorial's per-sample pipeline.

Each step is written the plain way that the MovieLens transformer tutorial works.
pandas parses the ``::``-separated files with its Python engine. A Python loop per
user sorts the ratings by time and unfolds windows of 5 over
``[start] + movies + [end]``. A per-sample ``Dataset`` feeds a ``DataLoader`` with
default collation, and an eager fp32 model trains with a plain full-softmax
cross-entropy. Evaluation scores a batch, blocks each row's seen items in a Python
loop over the rows, then takes ``torch.topk``.

The model is written the plain GPT-2 way (``TutorialModel``): a joint query, key
and value projection, the scores q @ k^T masked by a lower-triangular buffer and
softmaxed, ``nn.Dropout`` and ``nn.GELU``, then the interaction MLP. Its parameter
names are fastrec's, so ``load_state_dict`` moves weights between the two.

The ids match fastrec's, so the same model weights run on both pipelines: users
are 0..U-1 in order of their raw ids, the rated movies 1..n in order of theirs (0 is
padding), the start token is n + 1 and the end token n + 2. The tutorial numbers
every movie of movies.dat instead, which gives 177 more never-rated rows on ML-1M.
Ties in timestamp keep the file order (a stable sort), as in fastrec.

Shapes: N samples, T window length (5), B batch, V item rows, K top-k.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from fastrec.data.store import PartView
from fastrec.model import ModelConfig

WINDOW = 5
# Ratings that the tutorial gives its start and end tokens.
START_RATING = 0
END_RATING = 3
ENCODING = "iso-8859-1"
RATING_COLUMNS = ["user", "movie", "rating", "timestamp"]
MOVIE_COLUMNS = ["movie", "title", "genres"]
USER_COLUMNS = ["user", "gender", "age", "occupation", "zip"]
SAMPLE_COLUMNS = ("items", "ratings", "user", "target", "target_rating")


@dataclass
class TutorialFrames:
    """The three MovieLens files as pandas DataFrames."""

    ratings: pd.DataFrame
    movies: pd.DataFrame
    users: pd.DataFrame


@dataclass
class TutorialSamples:
    """Stacked sample columns: items and ratings [N, T], the others [N]."""

    items: torch.Tensor
    ratings: torch.Tensor
    user: torch.Tensor
    target: torch.Tensor
    target_rating: torch.Tensor

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def select(self, rows: torch.Tensor) -> TutorialSamples:
        """Return the samples at ``rows`` [M] as a new TutorialSamples."""
        return TutorialSamples(*(getattr(self, name)[rows] for name in SAMPLE_COLUMNS))


@dataclass
class TutorialData:
    """The unfolded samples of every user and the sizes of the id spaces."""

    samples: TutorialSamples
    n_users: int
    n_items: int
    """Number of rated movies; the vocabulary has n_items + 3 rows."""

    @property
    def vocab_size(self) -> int:
        """Number of item rows: padding, the movies, the start and end tokens."""
        return self.n_items + 3


def read_dat_pandas(path: str | Path, names: list[str]) -> pd.DataFrame:
    """Parse one ``::`` file with pandas' Python engine.

    The C engine takes only one-character separators, so ``::`` needs the Python
    engine (the separator is then a regular expression).
    """
    return pd.read_csv(path, sep="::", engine="python", names=names, encoding=ENCODING)


def read_movielens_pandas(data_dir: str | Path) -> TutorialFrames:
    """Parse ratings.dat, movies.dat and users.dat of an ml-1m folder with pandas."""
    folder = Path(data_dir)
    return TutorialFrames(
        ratings=read_dat_pandas(folder / "ratings.dat", RATING_COLUMNS),
        movies=read_dat_pandas(folder / "movies.dat", MOVIE_COLUMNS),
        users=read_dat_pandas(folder / "users.dat", USER_COLUMNS),
    )


def unfold_user(
    sequence: list[int], ratings: list[int], window: int
) -> tuple[torch.Tensor, ...]:
    """Unfold one user's sequence into (items, ratings, target, target_rating).

    ``sequence`` is ``[start] + movies + [end]`` and ``ratings`` its ratings. Window
    i is ``sequence[i : i + window]`` and its target is the last item of window
    i + 1, so a sequence of length L gives L - window samples.
    """
    items = torch.tensor(sequence).unfold(0, window, 1)  # [L - T + 1, T]
    stars = torch.tensor(ratings).unfold(0, window, 1)  # [L - T + 1, T]
    return items[:-1], stars[:-1], items[1:, -1], stars[1:, -1]


def build_samples(ratings: pd.DataFrame, window: int = WINDOW) -> TutorialData:
    """Assign dense ids, then unfold every user's windows in a Python loop over users.

    A user with n ratings gives n + 2 - window samples (n - 3 for windows of 5).
    """
    users = sorted(ratings["user"].unique())
    movies = sorted(ratings["movie"].unique())
    user_ids = {raw: index for index, raw in enumerate(users)}
    movie_ids = {raw: index + 1 for index, raw in enumerate(movies)}
    frame = ratings.assign(
        user_id=ratings["user"].map(user_ids), movie_id=ratings["movie"].map(movie_ids)
    )
    start, end = len(movies) + 1, len(movies) + 2

    columns: dict[str, list[torch.Tensor]] = {name: [] for name in SAMPLE_COLUMNS}
    ordered = frame.sort_values("timestamp", kind="stable")
    for user_id, group in ordered.groupby("user_id", sort=True):
        sequence = [start] + group["movie_id"].tolist() + [end]
        stars = [START_RATING] + group["rating"].tolist() + [END_RATING]
        if len(sequence) <= window:
            continue
        items, item_ratings, target, target_rating = unfold_user(
            sequence, stars, window
        )
        columns["items"].append(items)
        columns["ratings"].append(item_ratings)
        columns["user"].append(torch.full((len(target),), int(user_id)))
        columns["target"].append(target)
        columns["target_rating"].append(target_rating)
    samples = TutorialSamples(*(torch.cat(columns[name]) for name in SAMPLE_COLUMNS))
    return TutorialData(samples=samples, n_users=len(users), n_items=len(movies))


def random_split(
    samples: TutorialSamples, holdout_fraction: float = 0.1, seed: int = 0
) -> tuple[TutorialSamples, TutorialSamples]:
    """Split the samples at random into (training, held-out) samples."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(samples), generator=generator)
    n_holdout = int(round(holdout_fraction * len(samples)))
    return samples.select(order[n_holdout:]), samples.select(order[:n_holdout])


def prepare_tutorial(
    data_dir: str | Path, holdout_fraction: float = 0.1, seed: int = 0
) -> tuple[TutorialData, TutorialSamples, TutorialSamples]:
    """Run the tutorial's data preparation: parse the three files, unfold, split."""
    frames = read_movielens_pandas(data_dir)
    data = build_samples(frames.ratings)
    train, holdout = random_split(data.samples, holdout_fraction, seed)
    return data, train, holdout


class TutorialDataset(Dataset):
    """Per-sample dataset over stacked sample columns, one dict of tensors per item."""

    def __init__(self, samples: TutorialSamples) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: getattr(self.samples, name)[index] for name in SAMPLE_COLUMNS}


class StoreWindowDataset(Dataset):
    """Per-sample dataset over one part of a fastrec window store.

    ``__getitem__`` copies one window's columns into tensors, so a ``DataLoader``
    with default collation serves the same rows as ``BatchLoader`` does.
    """

    def __init__(self, part: PartView) -> None:
        self.part = part

    def __len__(self) -> int:
        return len(self.part)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        # torch.tensor copies, because the mapped store arrays are read-only.
        return {
            name: torch.tensor(getattr(self.part, name)[index])
            for name in SAMPLE_COLUMNS
        }


def make_loader(
    dataset: Dataset, batch_size: int, seed: int = 0, shuffle: bool = True
) -> DataLoader:
    """Return a ``DataLoader`` with default collation and no worker processes."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=generator
    )


class TutorialAttention(nn.Module):
    """Causal multi-head self-attention with explicit scores and a triangular mask."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.attn_dropout = nn.Dropout(config.attention_dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        causal = torch.tril(
            torch.ones(config.max_len, config.max_len, dtype=torch.bool)
        )
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Attend over x [B, T, D] and return [B, T, D]."""
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)  # 3 x [B, T, D]
        q = q.view(B, T, self.n_heads, -1).transpose(1, 2)  # [B, H, T, E]
        k = k.view(B, T, self.n_heads, -1).transpose(1, 2)  # [B, H, T, E]
        v = v.view(B, T, self.n_heads, -1).transpose(1, 2)  # [B, H, T, E]
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [B, H, T, T]
        scores = scores.masked_fill(~self.causal[:T, :T], float("-inf"))
        weights = self.attn_dropout(F.softmax(scores, dim=-1))
        y = (weights @ v).transpose(1, 2).reshape(B, T, D)  # [B, T, D]
        return self.resid_dropout(self.proj(y))


class TutorialBlock(nn.Module):
    """Pre-LayerNorm block: attention, then a GELU MLP, each on the residual."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(config.d_model)
        self.attn = TutorialAttention(config)
        self.ln_mlp = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(config.d_model, config.d_ff),
            nn.GELU(),
            nn.Linear(config.d_ff, config.d_model),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block to x [B, T, D]."""
        x = x + self.attn(self.ln_attn(x))
        return x + self.mlp(self.ln_mlp(x))


class TutorialModel(nn.Module):
    """The tutorial's transformer over full windows of T items, with the user
    embedding joined at every position and the interaction MLP on top.

    Built from a fastrec ModelConfig with the interaction head; the parameter
    names follow fastrec.model.SequentialRecommender.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.head != "interaction":
            raise ValueError("the tutorial's model has the interaction head only")
        D, T = config.d_model, config.max_len
        self.item_embedding = nn.Embedding(config.vocab_size, D)
        self.position_embedding = nn.Embedding(T, D)
        self.user_embedding = nn.Embedding(config.n_users, D)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TutorialBlock(config) for _ in range(config.n_layers)
        )
        self.ln_final = nn.LayerNorm(D)
        self.interaction = nn.Sequential(
            nn.Linear(2 * T * D, config.interaction_hidden),
            nn.ReLU(),
            nn.Linear(config.interaction_hidden, config.vocab_size, bias=False),
        )
        self.register_buffer("positions", torch.arange(T), persistent=False)

    def forward(self, items: Tensor, users: Tensor) -> Tensor:
        """Return the logits [B, V] of the item after each window items [B, T]."""
        B, T = items.shape
        x = self.item_embedding(items) + self.position_embedding(self.positions[:T])
        x = self.embedding_dropout(x)  # [B, T, D]
        for block in self.blocks:
            x = block(x)
        x = self.ln_final(x)  # [B, T, D]
        user = self.user_embedding(users)[:, None, :].expand(B, T, -1)  # [B, T, D]
        joined = torch.cat([x, user], dim=2).reshape(B, -1)  # [B, 2TD]
        return self.interaction(joined)


def tutorial_step_function(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> Callable[[dict[str, torch.Tensor]], float]:
    """Return the tutorial's eager fp32 step: full-softmax cross-entropy, then Adam.

    The loss reads the [B, V] logits of the item after the window, and ``.item()``
    reads it back every step, as a training loop that logs each loss does.
    """

    def step(batch: dict[str, torch.Tensor]) -> float:
        logits = model(batch["items"].long(), batch["user"].long())  # [B, V]
        loss = F.cross_entropy(logits, batch["target"].long())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


class EvalDataset(Dataset):
    """Per-sample evaluation rows; ``row`` indexes the seen items kept beside it."""

    def __init__(
        self, items: np.ndarray, users: np.ndarray, targets: np.ndarray
    ) -> None:
        self.items = torch.as_tensor(np.asarray(items), dtype=torch.long)  # [N, T]
        self.users = torch.as_tensor(np.asarray(users), dtype=torch.long)  # [N]
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.long)  # [N]

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "items": self.items[index],
            "user": self.users[index],
            "target": self.targets[index],
            "row": torch.tensor(index),
        }


@dataclass
class EvalResult:
    """Hit counts and time of a tutorial-way evaluation."""

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
def evaluate_tutorial(
    score: Callable[[Tensor, Tensor], Tensor],
    dataset: EvalDataset,
    seen: Sequence[torch.Tensor],
    ks: Sequence[int],
    batch_size: int = 512,
) -> EvalResult:
    """Rank the catalog in batches, blocking each row's seen items in a row loop.

    ``score(items, users)`` returns the [B, V] scores of a batch, for example a
    ``TutorialModel`` in eval mode, run eagerly in fp32 on batches of a
    ``DataLoader``. ``seen[i]`` contains the item ids that dataset row i must not
    return (the tutorial blocks the input window). Every cut-off of ``ks`` comes
    from one ranking pass.
    """
    hits = {k: 0 for k in ks}
    top_k = max(ks)
    loader = make_loader(dataset, batch_size, shuffle=False)
    started = time.perf_counter()
    for batch in loader:
        scores = score(batch["items"], batch["user"])  # [B, V]
        for position, row in enumerate(batch["row"].tolist()):
            scores[position, seen[row]] = float("-inf")
        top = torch.topk(scores, top_k, dim=1).indices  # [B, K]
        found = top == batch["target"][:, None]  # [B, K]
        for k in ks:
            hits[k] += int(found[:, :k].any(dim=1).sum())
    seconds = time.perf_counter() - started
    return EvalResult(rows=len(dataset), seconds=seconds, hits=hits)


def seen_lists(part: PartView, rows: np.ndarray) -> list[torch.Tensor]:
    """Return each row's seen items (its stored history) as int64 tensors."""
    offsets = np.asarray(part.history_offsets, dtype=np.int64)
    values = part.history_values
    return [
        torch.from_numpy(values[offsets[row] : offsets[row + 1]].astype(np.int64))
        for row in rows
    ]
