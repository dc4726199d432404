"""Tests of the tutorial's plain model in bench.tutorial_way against fastrec's."""

from __future__ import annotations

import pytest
import torch

from bench.tutorial_way import TutorialModel
from fastrec.model import ModelConfig, SequentialRecommender


def tutorial_config(**overrides) -> ModelConfig:
    values = {
        "vocab_size": 40,
        "n_users": 9,
        "max_len": 5,
        "d_model": 16,
        "n_heads": 4,
        "d_ff": 24,
    }
    values.update(overrides)
    return ModelConfig(**values)


@pytest.mark.parametrize("layers", [1, 4])
def test_same_weights_give_the_same_logits(layers: int):
    config = tutorial_config(n_layers=layers)
    torch.manual_seed(0)
    fastrec_model = SequentialRecommender(config).eval()
    plain = TutorialModel(config).eval()
    plain.load_state_dict(fastrec_model.state_dict(), strict=True)

    # Full windows of real items and start/end tokens, as the tutorial unfolds.
    items = torch.randint(1, config.vocab_size, (11, config.max_len))
    users = torch.randint(0, config.n_users, (11,))
    with torch.no_grad():
        expected = fastrec_model(items, users)
        got = plain(items, users)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_rejects_the_dot_head():
    with pytest.raises(ValueError, match="interaction head"):
        TutorialModel(tutorial_config(head="dot"))
