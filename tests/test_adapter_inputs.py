"""Prefix / mask / label / position construction of llm_adapter.inputs.build_inputs."""

import pytest
import torch

from llm_adapter.inputs import IGNORE_INDEX, answer_loss, build_inputs, serving_prompt_embeds
from tests.conftest import tiny_llama

PAD = 0


@pytest.fixture(scope="module")
def lm():
    return tiny_llama(vocab_size=64, hidden_size=16, num_layers=1)


def test_layout_mask_positions_labels(lm):
    E = lm.get_input_embeddings().weight
    prefix0 = torch.randn(2, 16)
    batch = build_inputs(lm, [prefix0, None], [[5, 6, 7], [8, 9]], [[10, 11], [12]], pad_token_id=PAD)
    # row 0: 2 prefix + 3 prompt + 2 answer = 7 = T; row 1: 2 prompt + 1 answer = 3 -> 4 pads on the left
    assert batch["inputs_embeds"].shape == (2, 7, 16)
    assert batch["attention_mask"].tolist() == [[1] * 7, [0, 0, 0, 0, 1, 1, 1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 1, 2]]
    assert batch["labels"].tolist() == [[-100] * 5 + [10, 11], [-100] * 6 + [12]]
    emb = batch["inputs_embeds"]
    assert torch.equal(emb[0, :2], prefix0)
    assert torch.equal(emb[0, 2:], E[[5, 6, 7, 10, 11]])
    assert torch.equal(emb[1, 4:], E[[8, 9, 12]])
    assert torch.equal(emb[1, 0], E[PAD])


def test_no_answers_gives_no_labels_and_prompt_ends_last(lm):
    batch = build_inputs(lm, [None, torch.zeros(3, 16)], [[1, 2, 3, 4], [5]], None, PAD)
    assert "labels" not in batch
    assert batch["inputs_embeds"].shape[1] == 4
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 1]


def test_gradient_reaches_prefix(lm):
    prefix = torch.randn(3, 16, requires_grad=True)
    batch = build_inputs(lm, [prefix, None], [[1, 2], [3, 4, 5]], [[6], [7]], PAD)
    labels = batch.pop("labels")
    out = lm(**batch)
    answer_loss(out.logits, labels).backward()
    assert prefix.grad is not None and prefix.grad.abs().sum() > 0


def test_answer_loss_matches_full_logits_and_hf_loss(lm):
    batch = build_inputs(lm, [torch.randn(2, 16), None], [[1, 2, 3], [4, 5]], [[6, 7], [8]], PAD)
    labels = batch.pop("labels")
    with torch.no_grad():
        full = lm(**batch).logits
        kept = lm(**batch, logits_to_keep=3).logits
        hf = lm(**batch, labels=labels).loss
    assert torch.allclose(answer_loss(full, labels), hf, atol=1e-5)
    assert torch.allclose(answer_loss(kept, labels), hf, atol=1e-5)


def test_left_padding_does_not_change_a_row(lm):
    """A row's last-position logits are the same alone and in a padded batch."""
    p = torch.randn(2, 16)
    alone = build_inputs(lm, [p], [[1, 2, 3]], None, PAD)
    batch = build_inputs(lm, [p, None], [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10]], None, PAD)
    with torch.no_grad():
        a = lm(**alone).logits[0, -1]
        b = lm(**batch).logits[0, -1]
    assert torch.allclose(a, b, atol=1e-4)


def test_serving_row_equals_training_row(lm):
    p = torch.randn(2, 16)
    row = serving_prompt_embeds(lm, p, [1, 2, 3])
    assert row.shape == (5, 16)
    train = build_inputs(lm, [p, None], [[1, 2, 3], [4, 5, 6, 7, 8, 9]], [[1], [1]], PAD)
    T = train["inputs_embeds"].shape[1]
    assert torch.equal(train["inputs_embeds"][0, T - 6:T - 1], row)


def test_rejects_bad_shapes(lm):
    with pytest.raises(ValueError, match="prefix must be"):
        build_inputs(lm, [torch.zeros(2, 8)], [[1]], None, PAD)
    with pytest.raises(ValueError, match="batch sizes"):
        build_inputs(lm, [None], [[1], [2]], None, PAD)
    assert IGNORE_INDEX == -100


def test_answer_loss_by_hand():
    """Two labelled positions: p(1 | pos 1) = 2/4 and p(2 | pos 2) = 1/3, so the summed loss is
    ln 2 + ln 3 = ln 6 and the mean ln 6 / 2 (pos 0 predicts an unlabelled token, pos 3 nothing)."""
    import math

    logits = torch.tensor([[[9.0, 0.0, 0.0], [0.0, math.log(2.0), 0.0], [0.0, 0.0, 0.0], [5.0, -5.0, 1.0]]])
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 1, 2]])
    assert float(answer_loss(logits, labels, reduction="sum")) == pytest.approx(math.log(6.0), abs=1e-6)
    assert float(answer_loss(logits, labels)) == pytest.approx(math.log(6.0) / 2, abs=1e-6)
    # the LM head may run on the last K = answer length + 1 positions only
    assert float(answer_loss(logits[:, 1:], labels, reduction="sum")) == pytest.approx(math.log(6.0), abs=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        answer_loss(logits, labels, reduction="none")
