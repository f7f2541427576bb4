"""Issue 22 integration arms: `X+flat` gives exactly X's vectors at initialisation and moves seen
codes only; `X-init`'s first-step rows are the fixed PCA map of X; unseen codes get the
projection / the fixed map. On the toy vocabulary with fixture vectors (seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ehr.benchmark.prepare import build_resources
from ehr.benchmark.tokenizers import (DEFAULT_TOKENIZERS, INTEGRATION_TOKENIZERS, CodeSpace, full_vocab_footprint,
                                      make_tokenizer, parse_spec, pca_map)
from medtok.toy import toy_vocabulary
from tests.ehr_bench_fixtures import fixture_vectors

SEEN = ["ICD10CM:A00.0", "ICD10CM:A00.1", "ICD10CM:B01.0", "ICD10CM:A01.0", "ICD10CM:A01.1", "MEDICATION//aspirin"]
UNSEEN = ["ICD10CM:A00.2", "ICD10CM:B01.1", "MEDICATION//new"]


@pytest.fixture(scope="module")
def setup():
    vocab, _ = toy_vocabulary()
    space = CodeSpace(SEEN + UNSEEN)
    seen = np.isin(np.array(space.codes), SEEN)
    specs = ["text", "medtok", "medtok-text"] + INTEGRATION_TOKENIZERS + ["medtok-text-init", "medtok-graph+flat"]
    res, _ = build_resources(space, specs, vectors=fixture_vectors(vocab))
    return space, seen, res


def _codes(space, codes):
    return torch.from_numpy(space.encode(codes)).view(1, -1)


def test_specs():
    assert INTEGRATION_TOKENIZERS == ["medtok+flat", "medtok-init", "text+flat", "text-init"]
    assert parse_spec("medtok+flat") == {"family": "medtok", "variant": "both-n12000", "integration": "plus-flat"}
    assert parse_spec("text-init") == {"family": "text", "integration": "init"}
    assert parse_spec("medtok-text-init")["variant"] == "text-n12000"
    for t in DEFAULT_TOKENIZERS:          # today's arms parse as before (no integration key)
        assert "integration" not in parse_spec(t)
    with pytest.raises(KeyError):
        parse_spec("medtok-ids+flat")
    assert full_vocab_footprint("medtok-init", 64, 100)["trainable_params"] == 6400


@pytest.mark.parametrize("x", ["medtok", "text", "medtok-graph"])
def test_plus_flat_equals_x_at_init_and_moves_seen_codes_only(setup, x):
    space, seen, res = setup
    torch.manual_seed(0)
    frozen = make_tokenizer(x, 16, space, seen, res)
    torch.manual_seed(0)
    plus = make_tokenizer(f"{x}+flat", 16, space, seen, res)
    plus.load_state_dict(frozen.state_dict(), strict=False)          # same projection / flat weights
    codes = _codes(space, SEEN + UNSEEN)
    with torch.no_grad():
        assert torch.equal(frozen(codes)[0], plus(codes)[0])
    # one training step on every code: the zero rows move for seen vocabulary codes only
    opt = torch.optim.AdamW([plus.delta.weight], lr=0.1, weight_decay=0.01)
    plus(codes)[0].pow(2).sum().backward()
    opt.step()
    moved = plus.delta.weight.detach().abs().sum(1) > 0
    assert not moved[0] and moved[1:].all()
    with torch.no_grad():
        after = plus(codes)[0][0, :, 0]
        before = frozen(codes)[0][0, :, 0]
    idx = {c: i for i, c in enumerate(SEEN + UNSEEN)}
    for c in ("ICD10CM:A00.2", "ICD10CM:B01.1"):           # unseen: projected vector alone
        assert torch.equal(after[idx[c]], before[idx[c]])
    assert not torch.equal(after[idx["ICD10CM:A00.0"]], before[idx["ICD10CM:A00.0"]])


@pytest.mark.parametrize("x", ["medtok", "text", "medtok-text"])
def test_init_first_step_rows_equal_fixed_map(setup, x):
    space, seen, res = setup
    tok = make_tokenizer(f"{x}-init", 8, space, seen, res)
    if x == "text":
        vec, found = res.text, res.text_found.copy()
    else:
        vec, _, _, found = res.medtok[parse_spec(x)["variant"]]
        found = found.copy()
    found[0] = False
    fit = np.flatnonzero(found & seen)
    # the fixed map, recomputed here from numpy's SVD on the fit rows
    X = vec.reshape(len(vec), -1).astype(np.float64)
    mean, comp, scale = pca_map(vec, fit, 8)
    F = X[fit] - X[fit].mean(0)
    _, sv, vt = np.linalg.svd(F, full_matrices=False)
    k = min(8, len(fit) - 1)
    np.testing.assert_allclose(np.abs(comp[:, :k]), np.abs(vt[:k].T), atol=1e-9)      # PCA axes (up to sign)
    z = F @ comp
    assert z.std() * scale == pytest.approx(0.02)
    expected = (scale * (X - mean) @ comp).astype(np.float32)
    codes = SEEN + UNSEEN
    with torch.no_grad():
        x0 = tok(_codes(space, codes))[0][0, :, 0].numpy()
    for i, c in enumerate(codes):
        j = space.index[c]
        if found[j]:
            np.testing.assert_allclose(x0[i], expected[j], rtol=1e-5, atol=1e-7)
    # a training step moves the seen rows; the unseen codes keep the fixed map
    opt = torch.optim.AdamW(tok.parameters(), lr=0.1)
    tok(_codes(space, codes))[0].pow(2).sum().backward()
    opt.step()
    with torch.no_grad():
        x1 = tok(_codes(space, codes))[0][0, :, 0].numpy()
    for i, c in enumerate(codes):
        j = space.index[c]
        if found[j] and not seen[j]:
            np.testing.assert_allclose(x1[i], expected[j], rtol=1e-5, atol=1e-7)
        elif found[j]:
            assert not np.allclose(x1[i], expected[j])
    assert tok.describe()["pca_fit_codes"] == len(fit)
