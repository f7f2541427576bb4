"""The multiple-choice scorer on a tiny model: letter positions, left padding, known answers."""

import numpy as np
import pytest
import torch

from tests.conftest import char_tokenizer, tiny_llama
from qa.scoring import (answer_ids, build_prompt_ids, format_question, generate_multiple_choice, left_pad,
                        letter_token_ids, parse_answer_letter, score_multiple_choice, token_input_builder)
from qa.types import MCQuestion


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


def _questions(n=7):
    # different stem lengths and option counts so one batch mixes prompt lengths
    return [MCQuestion(f"q{i}", "Which one?" + " x" * (3 * i), ["a", "bb", "c", "dd", "e"][: 2 + i % 4], answer=i % 2)
            for i in range(n)]


def test_prompt_layout(tok):
    q = MCQuestion("q", "Pick one", ["red", "blue", "green"], answer=2)
    text = tok.decode(build_prompt_ids(tok, q))
    assert text == ("<|im_start|>user\nPick one\nA: red\nB: blue\nC: green\n"
                    "Answer with the letter of the correct option only.<|im_end|>\n<|im_start|>assistant\n")
    assert format_question(q) in text
    # the answer turn is the letter then end-of-turn; the trailing newline is dropped
    assert answer_ids(tok, q) == [tok.convert_tokens_to_ids("C"), tok.eos_token_id]
    assert build_prompt_ids(tok, q, answer=True) == build_prompt_ids(tok, q) + answer_ids(tok, q)
    assert letter_token_ids(tok, 3) == [tok.convert_tokens_to_ids(c) for c in "ABC"]


def test_left_pad_and_positions():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    m = tiny_llama()
    batch = token_input_builder(m, 0)([], [[5, 6, 7], [8]])
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]
    assert batch["inputs_embeds"].shape == (2, 3, 64)


def test_matches_unpadded_reference_and_is_batch_invariant(tok):
    """Letter log-probs equal a plain single-sequence forward (no padding) at the last
    position, for every batch size; any padding, position or mask slip would change them."""
    m = tiny_llama(seed=1)
    qs = _questions()
    letters = [tok.convert_tokens_to_ids(c) for c in "ABCDE"]
    ref = np.full((len(qs), 5), -np.inf, dtype=np.float32)
    with torch.no_grad():
        for i, q in enumerate(qs):
            ids = torch.tensor([build_prompt_ids(tok, q)])
            lp = torch.log_softmax(m(input_ids=ids).logits[0, -1], -1)
            ref[i, : len(q.options)] = lp[letters[: len(q.options)]].numpy()
    for bs in (1, 3, 8):
        r = score_multiple_choice(m, tok, qs, batch_size=bs, progress=False)
        np.testing.assert_allclose(r.letter_logprobs, ref, atol=1e-5)
        assert r.pred.dtype == np.int64 and r.correct.dtype == np.bool_
        assert r.ids == [q.id for q in qs]
        assert (r.pred == np.argmax(ref, axis=1)).all()
    # the reference is sensitive to the context: dropping the mask changes the padded rows
    def no_mask(questions, prompt_ids):
        ids, _ = left_pad(prompt_ids, tok.pad_token_id)
        return {"inputs_embeds": m.get_input_embeddings()(ids), "attention_mask": torch.ones_like(ids)}
    broken = score_multiple_choice(m, tok, qs, batch_size=8, input_builder=no_mask, progress=False)
    assert not np.allclose(broken.letter_logprobs, ref, atol=1e-5)


def test_rigged_head_answers_c(tok):
    """A model whose output bias makes 'C' the top token answers C wherever C exists."""
    m = tiny_llama()
    head = torch.nn.Linear(64, m.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[tok.convert_tokens_to_ids("C")] = 5.0
        head.bias[tok.convert_tokens_to_ids("A")] = 2.0
    m.lm_head = head
    qs = [MCQuestion(f"q{i}", "Q" * (i + 1), ["x", "y", "z", "w"][: 2 + i % 3], answer=2 if i % 3 else 0)
          for i in range(6)]
    r = score_multiple_choice(m, tok, qs, batch_size=4, progress=False)
    # 2-option questions (i % 3 == 0) have no C: A is the best remaining letter
    assert r.pred.tolist() == [0, 2, 2, 0, 2, 2]
    assert r.correct.all()
    assert np.isneginf(r.letter_logprobs[0, 2:]).all()


@pytest.mark.parametrize("text,n,expected", [
    ("C", 4, 2), (" (B) because", 4, 1), ("The answer is D.", 4, 3), ("answer: a", 4, 0),
    ("I think E", 4, -1), ("nothing", 4, -1), ("A: aspirin", 2, 0),
])
def test_parse_answer_letter(text, n, expected):
    assert parse_answer_letter(text, n) == expected


def test_generation_mode_rigged(tok):
    m = tiny_llama()
    head = torch.nn.Linear(64, m.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[tok.convert_tokens_to_ids("B")] = 5.0
    m.lm_head = head
    qs = _questions(5)
    r = generate_multiple_choice(m, tok, qs, batch_size=2, max_new_tokens=1, progress=False)
    assert r.texts == ["B"] * 5
    assert r.pred.tolist() == [1] * 5
    assert r.correct.tolist() == [q.answer == 1 for q in qs]
