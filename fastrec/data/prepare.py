"""Build (or reuse) the window store of a config.

python -m fastrec.data.prepare --data-dir DIR --config CONFIG --store PATH [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import DataConfig, load_config
from ..errors import DataError, exit_on_user_error
from .download import ensure_movielens
from .movielens import MovieLens, load_movielens
from .sequences import (
    Vocabulary,
    add_start_end_tokens,
    build_user_sequences,
    build_vocabulary,
    split_leave_one_out,
    split_windows,
)
from .store import WindowStore, read_store_metadata, store_key, write_store

# Files of ML-1M and ML-100K. A folder that contains any of them is never downloaded
# into.
MOVIELENS_FILES = ("ratings.dat", "movies.dat", "users.dat", "u.data", "u.item")

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """The parsed MovieLens files, their dense ids and the opened window store."""

    movielens: MovieLens
    vocab: Vocabulary
    store: WindowStore
    built: bool
    """Whether the store was built now (False: an up-to-date store was reused)."""

    def summary(self) -> dict[str, Any]:
        """Return the counts that ``prepare --json`` prints."""
        meta = self.store.metadata
        return {
            "dataset": self.movielens.name,
            "split": meta["params"]["split"],
            "ratings": int(len(self.movielens.ratings.item)),
            "users": self.vocab.n_users,
            "items": self.vocab.n_items,
            "train_windows": meta["parts"]["train"],
            "valid_rows": meta["parts"]["valid"],
            "test_rows": meta["parts"]["test"],
            "skipped_users": meta["skipped_users"],
            "store": str(self.store.path),
            "built": self.built,
        }


def vocabulary_for(data: MovieLens, config: DataConfig) -> Vocabulary:
    """Return the dense ids of a split (``windows`` adds the start and end tokens)."""
    return build_vocabulary(data, n_special=2 if config.split == "windows" else 0)


def default_store_path(config: DataConfig, key: str) -> Path:
    """Return ``<data_dir>/stores/<split>-<key>.arrow``."""
    return Path(config.data_dir) / "stores" / f"{config.split}-{key}.arrow"


def out_of_range_ids(store: WindowStore, vocab: Vocabulary) -> str | None:
    """Describe the first store column with an id or rating out of range, if any.

    The Arrow format checks the layout but not the values, so damage inside the
    data pages would otherwise surface as an index error in the middle of training.
    """
    parts = [store.part(name) for name in ("train", "valid", "test")]
    columns = {
        "items": ([p.items for p in parts], vocab.vocab_size),
        "target": ([p.target for p in parts], vocab.vocab_size),
        "user": ([p.user for p in parts], vocab.n_users),
        "ratings": ([p.ratings for p in parts], 6),
        "target_rating": ([p.target_rating for p in parts], 6),
        "history": ([parts[0].history_values], vocab.vocab_size),
    }
    for name, (arrays, limit) in columns.items():
        for array in arrays:
            if array.size and (array.min() < 0 or array.max() >= limit):
                return f"column {name} has values outside [0, {limit})"
    return None


def prepare(config: DataConfig, store: str | Path | None = None) -> PreparedData:
    """Parse the data, then open the store, rebuilding it when missing or stale.

    A store is stale when its key (schema version, split parameters and the
    source files' sha256) differs from the one this config and data give.
    """
    data_dir = Path(config.data_dir)
    # Only a missing or empty folder is filled. A folder that has some of the files
    # is the user's own copy, and loading it names whatever file is missing.
    if config.download and not any(
        (data_dir / name).exists() for name in MOVIELENS_FILES
    ):
        ensure_movielens(data_dir)
    data = load_movielens(data_dir)
    vocab = vocabulary_for(data, config)
    params = config.split_params()
    key = store_key(params, data.sha256)
    path = Path(store or config.store or default_store_path(config, key))

    existing = read_store_metadata(path)
    if existing is not None and existing.get("key") == key:
        store = WindowStore(path)
        problem = out_of_range_ids(store, vocab)
        if problem is None:
            return PreparedData(data, vocab, store, built=False)
        del store
        log.warning("window store %s is corrupt (%s); rebuilding it", path, problem)
    elif existing is not None:
        log.info("window store %s is stale; rebuilding it", path)

    started = time.perf_counter()
    seqs = build_user_sequences(data, vocab)
    if config.split == "windows":
        seqs = add_start_end_tokens(seqs, vocab)
        split = split_windows(
            seqs,
            config.max_len,
            config.stride,
            config.min_history,
            config.holdout_fraction,
            config.seed,
        )
    else:
        split = split_leave_one_out(
            seqs, config.max_len, config.stride, config.min_history
        )
    if split.skipped_users:
        log.warning(
            "%d of %d users have too few ratings for the %s split and were skipped",
            split.skipped_users,
            vocab.n_users,
            config.split,
        )
    if split.count("train") == 0:
        raise DataError(
            f"the {config.split} split of {data_dir} has no training windows; "
            "lower data.min_history or check the ratings file"
        )
    metadata = {
        "key": key,
        "dataset": data.name,
        "params": params,
        "sha256": data.sha256,
        "n_items": vocab.n_items,
        "n_special": vocab.n_special,
        "vocab_size": vocab.vocab_size,
        "n_users": vocab.n_users,
        "skipped_users": split.skipped_users,
        "item_raw": vocab.item_raw.tolist(),
        "user_raw": vocab.user_raw.tolist(),
    }
    write_store(path, split, metadata)
    log.info("built %s in %.2f s", path, time.perf_counter() - started)
    return PreparedData(data, vocab, WindowStore(path), built=True)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    """Run the ``fastrec.data.prepare`` command line."""
    parser = argparse.ArgumentParser(
        prog="python -m fastrec.data.prepare", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data-dir", help="folder with the MovieLens files")
    parser.add_argument("--config", help="YAML run config (its data section is used)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. data.split=windows",
    )
    parser.add_argument("--store", help="path of the store file to build or reuse")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    config = load_config(args.config, args.overrides)
    if args.data_dir:
        config.data = dataclasses.replace(config.data, data_dir=args.data_dir)
    prepared = prepare(config.data, store=args.store)
    summary = prepared.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        for name, value in summary.items():
            print(f"{name:>14}: {value}")


if __name__ == "__main__":
    main()
