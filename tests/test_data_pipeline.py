"""Tokenization, splits, the window store and the loader, on small hand-made files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fastrec.config import DataConfig
from fastrec.data.loader import EVAL_COLUMNS, BatchLoader
from fastrec.data.movielens import load_movielens
from fastrec.data.prepare import prepare
from fastrec.data.sequences import (
    TABLE_MAX_ID,
    add_start_end_tokens,
    build_user_sequences,
    build_vocabulary,
    dense_positions,
    distinct_ids,
    split_leave_one_out,
    split_windows,
)
from fastrec.data.store import WindowStore
from fastrec.data.synthetic import write_synthetic_movielens
from fastrec.errors import DataError

MOVIES = [
    "10::Alpha (1990)::Drama",
    "20::Beta: Part Two (1991)::Comedy|Drama",
    "30::Gamma (1992)::Action",
    "40::Delta (1993)::Comedy",
    "50::Never Rated (1994)::Horror",
]
USERS = ["1::F::25::3::12345", "2::M::35::7::55117-1234", "3::F::1::0::00000"]


def write_files(folder: Path, ratings: list[str]) -> Path:
    """Write a tiny ML-1M folder with the given ratings.dat lines."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "movies.dat").write_bytes(("\n".join(MOVIES) + "\n").encode("latin-1"))
    (folder / "users.dat").write_bytes(("\n".join(USERS) + "\n").encode("latin-1"))
    (folder / "ratings.dat").write_bytes(("\n".join(ratings) + "\n").encode("latin-1"))
    return folder


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    # User 1 rates 5 movies; 20, 30 and 40 share timestamp 100 and must keep file order.
    ratings = [
        "1::10::5::50",
        "1::40::3::100",
        "1::20::4::100",
        "1::30::2::100",
        "1::10::1::200",
        "2::30::4::10",
        "2::20::5::20",
        "2::40::3::30",
        "3::10::2::5",
        "3::20::3::6",
    ]
    return write_files(tmp_path / "ml-1m", ratings)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("synthetic") / "ml-1m"
    write_synthetic_movielens(folder, n_users=60, n_movies=80, seed=3)
    return folder


def sequences_of(folder: Path, n_special: int = 0):
    data = load_movielens(folder)
    vocab = build_vocabulary(data, n_special=n_special)
    return data, vocab, build_user_sequences(data, vocab)


def test_tied_timestamps_keep_file_order(tiny: Path):
    data, vocab, seqs = sequences_of(tiny)
    raw = vocab.item_raw[seqs.items[seqs.offsets[0] : seqs.offsets[1]]]
    assert raw.tolist() == [10, 40, 20, 30, 10]


def test_vocabulary_reserves_padding(tiny: Path):
    data, vocab, seqs = sequences_of(tiny)
    assert vocab.item_raw[0] == 0
    assert vocab.n_items == 4  # movie 50 is never rated
    assert vocab.item_raw[1:].tolist() == [10, 20, 30, 40]
    assert seqs.items.min() >= 1


def test_loo_holds_out_last_two(tiny: Path):
    _, vocab, seqs = sequences_of(tiny)
    split = split_leave_one_out(seqs, max_len=3, stride=1, min_history=1)
    valid = split.part == 1
    test = split.part == 2
    # User 3 has only two ratings, too few for a validation and a test target.
    assert split.skipped_users == 1
    assert split.count("valid") == 2
    assert split.count("test") == 2
    # User 0's sequence is 10 40 20 30 10: validation target 30, test target 10.
    assert vocab.item_raw[split.target[valid][0]] == 30
    assert vocab.item_raw[split.target[test][0]] == 10
    # The test history contains the validation item.
    hist = split.history_values[split.history_offsets[np.flatnonzero(test)[0]] :]
    assert 3 in hist[:4].tolist()


def test_loo_windows_stop_before_validation(synthetic: Path):
    _, _, seqs = sequences_of(synthetic)
    split = split_leave_one_out(seqs, max_len=7, stride=2, min_history=1)
    train = split.part == 0
    lengths = seqs.lengths
    # Every training target sits at most at the user's third-to-last position.
    for user in np.unique(split.user[train]):
        rows = np.flatnonzero(train & (split.user == user))
        run = seqs.items[seqs.offsets[user] : seqs.offsets[user + 1]]
        train_part = run[: lengths[user] - 2]
        for row in rows:
            window = split.items[row][split.items[row] != 0]
            joined = np.concatenate([window, [split.target[row]]])
            # The window plus target is a contiguous slice of the training part.
            found = any(
                np.array_equal(train_part[i : i + len(joined)], joined)
                for i in range(len(train_part) - len(joined) + 1)
            )
            assert found, f"row {row} of user {user} is not inside the training part"


def test_padding_never_maps_to_movie(synthetic: Path):
    _, vocab, seqs = sequences_of(synthetic)
    split = split_leave_one_out(seqs, max_len=50, stride=50, min_history=1)
    assert vocab.item_raw[0] == 0
    assert (split.items == 0).any()
    assert split.target.min() >= 1
    assert (split.ratings[split.items == 0] == 0).all()


def test_windows_count_is_n_minus_three(synthetic: Path):
    _, vocab, seqs = sequences_of(synthetic, n_special=2)
    tokens = add_start_end_tokens(seqs, vocab)
    split = split_windows(tokens, 5, 1, 5, 0.1, seed=0)
    assert len(split.user) == int((seqs.lengths - 3).sum())


@pytest.mark.parametrize("high", [50, TABLE_MAX_ID, 2**31 - 1])
def test_distinct_ids_and_positions_match_sorting(high: int):
    rng = np.random.default_rng(high % 1000)
    ids = rng.integers(0, high, size=5000, endpoint=True).astype(np.int32)
    ids[:2] = (0, high)
    distinct = distinct_ids(ids)
    np.testing.assert_array_equal(distinct, np.unique(ids))
    assert distinct.dtype == ids.dtype
    positions = dense_positions(distinct, ids)
    np.testing.assert_array_equal(positions, np.searchsorted(np.unique(ids), ids))
    assert positions.dtype == np.int64


def test_distinct_ids_of_nothing():
    assert len(distinct_ids(np.zeros(0, dtype=np.int32))) == 0


def test_windows_parts_follow_the_seeded_permutation(synthetic: Path):
    _, vocab, seqs = sequences_of(synthetic, n_special=2)
    tokens = add_start_end_tokens(seqs, vocab)
    split = split_windows(tokens, 5, 1, 5, 0.1, seed=7)
    n = len(split.part)
    order = np.random.default_rng(7).permutation(n)
    n_holdout = int(round(0.1 * n))
    n_valid = n_holdout // 2
    # Rows are grouped by part, each part in window order.
    expected = [order[n_holdout:], order[:n_valid], order[n_valid:n_holdout]]
    reference = split_windows(tokens, 5, 1, 5, 0.0, seed=7)
    for part, rows in enumerate(expected):
        got = split.target_time[split.part == part]
        np.testing.assert_array_equal(got, reference.target_time[np.sort(rows)])
        got_users = split.user[split.part == part]
        np.testing.assert_array_equal(got_users, reference.user[np.sort(rows)])


def test_windows_have_start_and_end(tiny: Path):
    _, vocab, seqs = sequences_of(tiny, n_special=2)
    tokens = add_start_end_tokens(seqs, vocab)
    run = tokens.items[tokens.offsets[0] : tokens.offsets[1]]
    assert run[0] == vocab.n_items + 1
    assert run[-1] == vocab.n_items + 2
    assert tokens.ratings[tokens.offsets[0]] == 0
    assert tokens.ratings[tokens.offsets[1] - 1] == 3


def test_short_users_are_counted(tmp_path: Path):
    ratings = [
        "1::10::5::1",
        "1::20::4::2",
        "2::10::3::1",
        "2::20::3::2",
        "2::30::3::3",
    ]
    ratings += ["3::10::4::1", "3::20::4::2", "3::30::4::3", "3::40::2::4"]
    _, _, seqs = sequences_of(write_files(tmp_path / "ml-1m", ratings))
    split = split_leave_one_out(seqs, max_len=4, stride=1, min_history=1)
    assert split.skipped_users == 1
    assert split.count("test") == 2


def test_store_round_trip_zero_copy(synthetic: Path, tmp_path: Path):
    config = DataConfig(data_dir=str(synthetic), max_len=8, stride=4, download=False)
    prepared = prepare(config, store=tmp_path / "s.arrow")
    train = prepared.store.part("train")
    assert not train.items.flags.writeable
    assert train.items.dtype == np.int32
    assert train.items.shape[1] == 8
    assert prepared.summary()["valid_rows"] == 60


def test_store_reused_then_rebuilt_when_stale(synthetic: Path, tmp_path: Path):
    path = tmp_path / "s.arrow"
    config = DataConfig(data_dir=str(synthetic), max_len=8, stride=4, download=False)
    assert prepare(config, store=path).built
    assert not prepare(config, store=path).built
    changed = DataConfig(data_dir=str(synthetic), max_len=9, stride=4, download=False)
    rebuilt = prepare(changed, store=path)
    assert rebuilt.built
    assert rebuilt.store.max_len == 9


def test_truncated_store_is_reported(synthetic: Path, tmp_path: Path):
    path = tmp_path / "s.arrow"
    config = DataConfig(data_dir=str(synthetic), max_len=8, stride=4, download=False)
    prepare(config, store=path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        WindowStore(path)


def test_malformed_input_leaves_no_store(tmp_path: Path):
    folder = write_files(tmp_path / "ml-1m", ["1::10::5::1", "1::20::9::2"])
    config = DataConfig(data_dir=str(folder), download=False)
    with pytest.raises(DataError, match="line 2"):
        prepare(config)
    assert not (folder / "stores").exists() or not list((folder / "stores").iterdir())


def loader_rows(loader: BatchLoader) -> list[int]:
    """Return the target-and-user fingerprints of every row a loader yields."""
    out = []
    for batch in loader:
        out.extend((batch["user"].long() * 100_000 + batch["target"].long()).tolist())
    return out


def test_loader_yields_each_window_once(synthetic: Path, tmp_path: Path):
    config = DataConfig(data_dir=str(synthetic), max_len=6, stride=1, download=False)
    part = prepare(config, store=tmp_path / "s.arrow").store.part("train")
    loader = BatchLoader(part, 37, seed=1, prefetch=2)
    expected = sorted((part.user.astype(np.int64) * 100_000 + part.target).tolist())
    assert sorted(loader_rows(loader)) == expected
    loader.set_epoch(1)
    assert sorted(loader_rows(loader)) == expected


def test_loader_shards_cover_each_window_once(synthetic: Path, tmp_path: Path):
    config = DataConfig(data_dir=str(synthetic), max_len=6, stride=1, download=False)
    part = prepare(config, store=tmp_path / "s.arrow").store.part("train")
    expected = sorted((part.user.astype(np.int64) * 100_000 + part.target).tolist())
    seen = []
    for rank in range(3):
        seen += loader_rows(BatchLoader(part, 50, seed=2, rank=rank, world_size=3))
    assert sorted(seen) == expected


def test_loader_shuffle_depends_on_epoch(synthetic: Path, tmp_path: Path):
    config = DataConfig(data_dir=str(synthetic), max_len=6, stride=1, download=False)
    part = prepare(config, store=tmp_path / "s.arrow").store.part("train")
    loader = BatchLoader(part, 64, seed=5)
    first = loader.indices().copy()
    assert np.array_equal(first, BatchLoader(part, 64, seed=5).indices())
    loader.set_epoch(1)
    assert not np.array_equal(first, loader.indices())


def test_loader_drop_last_and_equal_shards(synthetic: Path, tmp_path: Path):
    config = DataConfig(data_dir=str(synthetic), max_len=6, stride=1, download=False)
    part = prepare(config, store=tmp_path / "s.arrow").store.part("train")
    n = len(part)
    loader = BatchLoader(part, 64, drop_last=True)
    assert len(loader) == n // 64
    assert all(b["user"].shape[0] == 64 for b in loader)
    lengths = {
        len(
            BatchLoader(
                part, 16, rank=r, world_size=4, equal_shards=True, drop_last=True
            )
        )
        for r in range(4)
    }
    assert len(lengths) == 1


def test_loader_resumes_mid_epoch(synthetic: Path, tmp_path: Path):
    config = DataConfig(data_dir=str(synthetic), max_len=6, stride=1, download=False)
    part = prepare(config, store=tmp_path / "s.arrow").store.part("train")
    loader = BatchLoader(part, 40, seed=3)
    full = [b["target"] for b in loader]
    rest = [b["target"] for b in loader.iterate(start_batch=2)]
    assert len(rest) == len(full) - 2
    assert all(torch.equal(a, b) for a, b in zip(full[2:], rest))


def test_eval_loader_builds_seen_matrix(tiny: Path, tmp_path: Path):
    config = DataConfig(data_dir=str(tiny), max_len=3, stride=1, download=False)
    part = prepare(config, store=tmp_path / "s.arrow").store.part("test")
    batch = next(iter(BatchLoader(part, 8, shuffle=False, columns=EVAL_COLUMNS)))
    seen = batch["seen"]
    # User 1's test history: 10 40 20 30 (dense 1 4 2 3); user 2's: 30 20 (3 2).
    assert seen.shape == (2, 4)
    assert seen[0].tolist() == [1, 4, 2, 3]
    assert seen[1].tolist() == [3, 2, -1, -1]
    assert batch["items"][0].tolist() == [4, 2, 3]


def test_mapped_pages_stay_read_only(synthetic: Path, tmp_path: Path):
    config = DataConfig(data_dir=str(synthetic), max_len=6, stride=1, download=False)
    part = prepare(config, store=tmp_path / "s.arrow").store.part("train")
    with pytest.raises(ValueError):
        part.items[0, 0] = 1


def test_partial_folder_is_not_downloaded_into(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import fastrec.data.prepare as prepare_module

    def no_download(folder):
        raise AssertionError(f"download into {folder}")

    monkeypatch.setattr(prepare_module, "ensure_movielens", no_download)
    (tiny / "ratings.dat").unlink()
    movies_before = (tiny / "movies.dat").read_bytes()
    config = DataConfig(data_dir=str(tiny), download=True, store=str(tmp_path / "s"))
    with pytest.raises(DataError, match="ratings.dat"):
        prepare(config)
    assert (tiny / "movies.dat").read_bytes() == movies_before


def test_damaged_store_values_are_rebuilt(synthetic: Path, tmp_path: Path):
    from fastrec.data.prepare import out_of_range_ids

    config = DataConfig(data_dir=str(synthetic), store=str(tmp_path / "s.arrow"))
    assert prepare(config).built
    # Overwrite data pages in the middle of the file: the Arrow layout stays
    # valid, but the ids there become -1.
    size = (tmp_path / "s.arrow").stat().st_size
    with open(tmp_path / "s.arrow", "r+b") as handle:
        handle.seek(size // 2)
        handle.write(b"\xff" * 512)
    rebuilt = prepare(config)
    assert rebuilt.built
    assert out_of_range_ids(rebuilt.store, rebuilt.vocab) is None
