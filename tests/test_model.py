"""Tests of fastrec.model on the CPU with small, seeded models."""

from __future__ import annotations

import pytest
import torch

from fastrec.errors import ConfigError
from fastrec.model import (
    ModelConfig,
    SequentialRecommender,
    causal_padding_mask,
    estimate_flops_per_sample,
    sequence_loss,
    strip_state_dict_prefixes,
)

# 20 real items 1..20, start 21 and end 22.
N_ITEMS = 20
VOCAB = N_ITEMS + 1 + 2
N_USERS = 6


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Run this file's tiny models on one intra-op thread.

    Threads do not speed up models this small, and on a busy 2-core machine their
    spin-waiting made the training test several times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_config(**overrides) -> ModelConfig:
    """Build a small config without dropout, so train-mode steps are exact."""
    values = {
        "vocab_size": VOCAB,
        "n_users": N_USERS,
        "max_len": 6,
        "d_model": 16,
        "n_layers": 2,
        "n_heads": 2,
        "d_ff": 32,
        "dropout": 0.0,
        "head": "dot",
    }
    values.update(overrides)
    return ModelConfig(**values)


def make_model(seed: int = 0, **overrides) -> SequentialRecommender:
    """Build a seeded model in eval mode."""
    torch.manual_seed(seed)
    return SequentialRecommender(make_config(**overrides)).eval()


def left_pad(sequence: list[int], length: int) -> list[int]:
    """Left-pad sequence with 0 to length."""
    return [0] * (length - len(sequence)) + sequence


def make_genres(seed: int = 0, n_genres: int = 4) -> torch.Tensor:
    """Build a random multi-hot [VOCAB, n_genres] with no genres on padding."""
    generator = torch.Generator().manual_seed(seed)
    genres = (torch.rand(VOCAB, n_genres, generator=generator) < 0.5).float()
    genres[0] = 0.0
    return genres


def make_codes(seed: int = 0) -> torch.Tensor:
    """Build random [N_USERS, 3] gender, age-group and occupation codes."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack(
        [
            torch.randint(0, 2, (N_USERS,), generator=generator),
            torch.randint(0, 7, (N_USERS,), generator=generator),
            torch.randint(0, 21, (N_USERS,), generator=generator),
        ],
        dim=1,
    )


# ---------------------------------------------------------------- masks and positions


def test_mask_row_of_padding_sees_itself():
    mask = causal_padding_mask(torch.zeros(1, 4, dtype=torch.long))
    assert torch.equal(mask[0, 0], torch.eye(4, dtype=torch.bool))


def test_mask_hides_padding_and_future_keys():
    mask = causal_padding_mask(torch.tensor([[0, 0, 5, 6]]))[0, 0]
    expected = torch.tensor(
        [
            [True, False, False, False],
            [False, True, False, False],
            [False, False, True, False],
            [False, False, True, True],
        ]
    )
    assert torch.equal(mask, expected)


# ---------------------------------------------------------------- causality, padding


def test_dot_head_is_causal():
    model = make_model()
    items = torch.tensor([[3, 5, 7, 9, 11, 13]])
    users = torch.tensor([1])
    with torch.no_grad():
        before = model(items, users)
        for changed in range(items.shape[1]):
            edited = items.clone()
            edited[0, changed] = 17
            after = model(edited, users)
            torch.testing.assert_close(after[:, :changed], before[:, :changed])
            assert not torch.allclose(after[:, changed], before[:, changed])


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_outputs_ignore_left_padding_amount(dtype):
    model = make_model(use_user=True)
    # Rows of one T = 6 batch: items 3, 5, 7 after 3, 2, 1 and 0 padding slots, then
    # later items that causality keeps out of the compared outputs.
    rows = [[0] * pad + [3, 5, 7] + [9, 11, 13][: 3 - pad] for pad in (3, 2, 1, 0)]
    items = torch.tensor(rows, dtype=dtype)
    users = torch.full((4,), 2, dtype=dtype)
    with torch.no_grad():
        logits = model(items, users)
    reference = logits[0, 3:6]
    for row, pad in enumerate((3, 2, 1, 0)):
        torch.testing.assert_close(logits[row, pad : pad + 3], reference)


def test_outputs_ignore_shorter_window():
    model = make_model(use_user=True)
    sequence = [3, 5, 7]
    users = torch.tensor([2])
    with torch.no_grad():
        reference = model(torch.tensor([left_pad(sequence, 6)]), users)[:, -3:]
        for length in (3, 4, 5):
            window = torch.tensor([left_pad(sequence, length)])
            torch.testing.assert_close(model(window, users)[:, -3:], reference)


def test_outputs_ignore_longer_window():
    model = make_model(max_len=9)
    sequence = [4, 8, 15, 16]
    users = torch.tensor([0, 3])
    with torch.no_grad():
        at_six = model(torch.tensor([left_pad(sequence, 6)] * 2), users)
        at_nine = model(torch.tensor([left_pad(sequence, 9)] * 2), users)
    torch.testing.assert_close(at_nine[:, -4:], at_six[:, -4:])


def test_score_next_ignores_left_padding():
    model = make_model(use_user=True)
    users = torch.tensor([5])
    with torch.no_grad():
        short = model.score_next(torch.tensor([left_pad([2, 9], 2)]), users)
        long = model.score_next(torch.tensor([left_pad([2, 9], 6)]), users)
    torch.testing.assert_close(long, short)


@pytest.mark.parametrize("head", ["dot", "interaction"])
def test_padding_row_finite_zero_loss(head):
    model = make_model(head=head).train()
    items = torch.tensor([left_pad([3, 5, 7, 9], 6), [0] * 6])
    users = torch.tensor([1, 4])
    logits = model(items, users)
    assert torch.isfinite(logits).all()

    targets = torch.zeros(logits.shape[:-1], dtype=torch.long)
    targets[0, ...] = 11  # only the real row has targets
    if head == "dot":
        targets[0, :2] = 0  # no targets on the real row's padding slots
    both = sequence_loss(logits, targets)
    alone = sequence_loss(logits[:1], targets[:1])
    torch.testing.assert_close(both, alone)

    padding_only = sequence_loss(logits[1:], targets[1:])
    assert padding_only.item() == 0.0
    padding_only.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(torch.isfinite(grad).all() for grad in grads)


# ---------------------------------------------------------------- loss


def test_loss_matches_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, VOCAB)
    targets = torch.tensor([[0, 1, 2, 3], [4, 5, 0, 6], [7, 8, 9, 10]])
    expected = torch.nn.functional.cross_entropy(
        logits.reshape(-1, VOCAB), targets.reshape(-1), ignore_index=0
    )
    torch.testing.assert_close(sequence_loss(logits, targets), expected)


def test_loss_applies_weights():
    torch.manual_seed(0)
    logits = torch.randn(4, VOCAB)
    targets = torch.tensor([1, 2, 0, 3])
    weights = torch.tensor([1.0, 3.0, 5.0, 0.0])
    per_target = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    expected = (per_target[0] * 1.0 + per_target[1] * 3.0) / 4.0
    torch.testing.assert_close(sequence_loss(logits, targets, weights), expected)


def test_loss_upcasts_bf16_logits():
    logits = torch.randn(2, 3, VOCAB).to(torch.bfloat16)
    loss = sequence_loss(logits, torch.ones(2, 3, dtype=torch.long))
    assert loss.dtype == torch.float32


def test_loss_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="targets shape"):
        sequence_loss(torch.randn(2, 3, VOCAB), torch.ones(2, dtype=torch.long))


@pytest.mark.parametrize("head", ["dot", "interaction"])
def test_bf16_autocast_loss_close(head):
    # Wide initial weights give logits far from uniform, so rounding shows in the loss.
    model = make_model(seed=3, head=head, use_user=True, init_range=1.0)
    generator = torch.Generator().manual_seed(3)
    items = torch.randint(1, N_ITEMS + 1, (8, 6), generator=generator)
    users = torch.randint(0, N_USERS, (8,), generator=generator)
    targets_shape = (8, 6) if head == "dot" else (8,)
    targets = torch.randint(1, N_ITEMS + 1, targets_shape, generator=generator)
    with torch.no_grad():
        full = sequence_loss(model(items, users), targets)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(items, users)
            half = sequence_loss(logits, targets)
    assert logits.dtype == torch.bfloat16
    # Tolerance: relative 5e-3, above bf16's relative step of 2**-8 (3.9e-3). The
    # loss averages many rounding errors: on torch 2.13 (CPU) the measured gap
    # is 1e-4 to 3e-4 here.
    torch.testing.assert_close(half, full, rtol=5e-3, atol=0.0)


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("head", ["dot", "interaction"])
def test_tiny_batch_overfits(head):
    model = make_model(seed=1, head=head, use_user=True).train()
    generator = torch.Generator().manual_seed(1)
    # Each row has its own user, and the user embedding tells apart rows that share
    # a prefix, so every target is predictable.
    items = torch.stack(
        [torch.randperm(N_ITEMS, generator=generator)[:7] + 1 for _ in range(N_USERS)]
    )  # [U, 7]
    users = torch.arange(N_USERS)
    inputs = items[:, :6]
    targets = items[:, 1:] if head == "dot" else items[:, 6]

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        optimizer.zero_grad()
        loss = sequence_loss(model(inputs, users), targets)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


# ---------------------------------------------------------------- heads and scores


@pytest.mark.parametrize("head", ["dot", "interaction"])
def test_score_next_blocks_padding_specials(head):
    model = make_model(head=head)
    with torch.no_grad():
        # Large values on the blocked embeddings would make them win if unmasked.
        model.item_embedding.weight[N_ITEMS + 1 :] *= 50.0
        items = torch.tensor([left_pad([1, 2, 21], 6), [21] * 6, [0] * 6])
        scores = model.score_next(items, torch.tensor([0, 1, 2]))
    blocked = [0, N_ITEMS + 1, N_ITEMS + 2]
    assert torch.isneginf(scores[:, blocked]).all()
    assert torch.isfinite(scores[:, 1 : N_ITEMS + 1]).all()
    ranked = scores.topk(N_ITEMS, dim=1).indices
    assert not torch.isin(ranked, torch.tensor(blocked)).any()


def test_forward_shapes_per_head():
    items = torch.tensor([left_pad([1, 2, 3], 6)] * 2)
    users = torch.tensor([0, 1])
    with torch.no_grad():
        dot = make_model(head="dot")(items, users)
        interaction = make_model(head="interaction")(items, users)
    assert dot.shape == (2, 6, VOCAB)
    assert interaction.shape == (2, VOCAB)


def test_interaction_rejects_short_window():
    model = make_model(head="interaction")
    with pytest.raises(ConfigError, match="max_len"):
        model(torch.ones(1, 4, dtype=torch.long), torch.zeros(1, dtype=torch.long))


def test_query_weights_match_scores():
    torch.manual_seed(0)
    model = SequentialRecommender(
        make_config(use_user=True, n_genres=4), item_genres=make_genres()
    ).eval()
    items = torch.tensor([left_pad([5, 6, 7], 6), left_pad([1], 6)])
    users = torch.tensor([3, 4])
    with torch.no_grad():
        query, weights = model.query_and_item_weights(items, users)
        scores = model.score_next(items, users)
    assert query.shape == (2, 16)
    assert weights.shape == (VOCAB, 16)
    open_columns = ~model.blocked_items
    torch.testing.assert_close(
        (query @ weights.T)[:, open_columns], scores[:, open_columns]
    )


def test_query_weights_reject_interaction():
    model = make_model(head="interaction")
    with pytest.raises(ValueError, match="interaction head"):
        model.query_and_item_weights(
            torch.ones(1, 6, dtype=torch.long), torch.zeros(1, dtype=torch.long)
        )


def test_num_parameters_counts_tied_once():
    model = make_model()
    unique = {id(p): p.numel() for p in model.parameters()}
    assert model.num_parameters() == sum(unique.values())


def test_flops_counts_matmuls():
    config = make_config(head="interaction", interaction_hidden=16)
    T, D, F, V = 6, 16, 32, VOCAB
    per_block = 2 * T * D * 4 * D + 4 * T * T * D + 4 * T * D * F
    head = 2 * 2 * T * D * 16 + 2 * 16 * V
    assert estimate_flops_per_sample(config) == 3 * (2 * per_block + head)


def test_flops_dot_head_scales_with_vocab():
    small = estimate_flops_per_sample(make_config(vocab_size=VOCAB))
    large = estimate_flops_per_sample(make_config(vocab_size=VOCAB + 10))
    assert large - small == 3 * 2 * 6 * 16 * 10


# ---------------------------------------------------------------- side features


def test_genres_change_outputs():
    torch.manual_seed(0)
    model = SequentialRecommender(
        make_config(n_genres=4), item_genres=make_genres()
    ).eval()
    items = torch.tensor([left_pad([1, 2, 3, 4], 6)])
    users = torch.tensor([0])
    with torch.no_grad():
        before = model(items, users)
        model.item_genres[1:5] = 1.0 - model.item_genres[1:5]
        after = model(items, users)
    assert not torch.allclose(after, before)


def test_demographics_change_outputs():
    torch.manual_seed(0)
    codes = make_codes()
    model = SequentialRecommender(
        make_config(head="interaction", demographics=True), user_codes=codes
    ).eval()
    items = torch.tensor([left_pad([1, 2, 3, 4], 6)])
    users = torch.tensor([2])
    with torch.no_grad():
        before = model(items, users)
        model.user_codes[2] = (model.user_codes[2] + 1) % torch.tensor([2, 7, 21])
        after = model(items, users)
    assert not torch.allclose(after, before)


def test_feature_buffers_in_state_dict():
    model = SequentialRecommender(
        make_config(n_genres=4, demographics=True, use_user=True),
        item_genres=make_genres(),
        user_codes=make_codes(),
    )
    keys = model.state_dict().keys()
    assert "item_genres" in keys
    assert "user_codes" in keys
    assert "blocked_items" not in keys


def test_features_off_no_buffers():
    keys = make_model().state_dict().keys()
    assert "item_genres" not in keys
    assert "user_codes" not in keys


def test_missing_genres_raises():
    with pytest.raises(ConfigError, match="item_genres"):
        SequentialRecommender(make_config(n_genres=4))


def test_wrong_genre_shape_raises():
    with pytest.raises(ConfigError, match=r"\(23, 4\)"):
        SequentialRecommender(make_config(n_genres=4), item_genres=torch.zeros(23, 3))


def test_out_of_range_codes_raise():
    codes = make_codes()
    codes[0, 1] = 7
    with pytest.raises(ConfigError, match="age-group"):
        SequentialRecommender(
            make_config(demographics=True, use_user=True), user_codes=codes
        )


def test_unused_genres_raise():
    with pytest.raises(ConfigError, match="n_genres"):
        SequentialRecommender(make_config(), item_genres=make_genres())


# ---------------------------------------------------------------- config validation


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("vocab_size", 2),
        ("n_users", 0),
        ("max_len", 0),
        ("d_model", -4),
        ("n_layers", 0),
        ("n_heads", 3),
        ("d_ff", 0),
        ("dropout", 1.0),
        ("dropout", -0.1),
        ("head", "mlp"),
        ("interaction_hidden", 0),
        ("use_user", "yes"),
        ("n_genres", -1),
        ("demographic_sizes", (2, 7)),
        ("n_special", -1),
        ("init_range", -0.1),
        ("d_model", 32.0),
    ],
)
def test_config_error_names_field(field, value):
    with pytest.raises(ConfigError) as error:
        make_config(**{field: value})
    assert f"model.{field}" in str(error.value)
    assert repr(value) in str(error.value)


def test_config_demographics_need_user():
    with pytest.raises(ConfigError, match="use_user"):
        make_config(head="dot", use_user=False, demographics=True)


def test_config_defaults_match_tutorial():
    config = ModelConfig(vocab_size=3886, n_users=6040)
    sizes = (config.d_model, config.n_layers, config.n_heads, config.d_ff)
    assert sizes == (32, 4, 4, 128)
    assert (config.max_len, config.head, config.dropout) == (5, "interaction", 0.1)


# ---------------------------------------------------------------- checkpoints


def test_strip_prefixes_any_order():
    state = {"module._orig_mod.a.weight": 1, "_orig_mod.module.b": 2, "c": 3}
    assert list(strip_state_dict_prefixes(state)) == ["a.weight", "b", "c"]


def test_compiled_state_dict_loads():
    # The only test that calls torch.compile, which takes about 10 s on 2 CPU cores.
    torch.manual_seed(0)
    config = make_config(head="dot", use_user=True, n_genres=4)
    model = SequentialRecommender(config, item_genres=make_genres()).eval()
    # fullgraph=True fails on any graph break, such as a host sync in the mask.
    compiled = torch.compile(model, fullgraph=True)
    items = torch.tensor([left_pad([1, 2, 3], 6), [0] * 6], dtype=torch.int32)
    users = torch.tensor([0, 1], dtype=torch.int32)
    with torch.no_grad():
        compiled_logits = compiled(items, users)
        eager_logits = model(items, users)
    torch.testing.assert_close(compiled_logits, eager_logits)

    state = compiled.state_dict()
    assert all(key.startswith("_orig_mod.") for key in state)

    torch.manual_seed(1)
    fresh = SequentialRecommender(config, item_genres=torch.zeros(VOCAB, 4)).eval()
    fresh.load_state_dict(strip_state_dict_prefixes(state), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh(items, users), eager_logits)
