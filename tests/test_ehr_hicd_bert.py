"""HICD-BERT (issue 22): the masked-code objective masks medical codes only (never padding,
markers or sex), hides a masked code's whole input (its level rows too), leaves the plain
encoder unchanged, its loss falls on a fixture, and its pretraining is cached."""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse

from ehr.benchmark.features import SequenceData
from ehr.benchmark.hierarchy import Hierarchy
from ehr.benchmark.models.behrt import BEHRT
from ehr.benchmark.models.encoder import ModelConfig
from ehr.benchmark.models.hicd_bert import (MLMConfig, cached_pretrain, encode_states, mask_codes, maskable_codes,
                                            pretrain_mlm)
from ehr.benchmark.tokenizers import CodeSpace, Resources, make_tokenizer
from ehr.benchmark.train import to_batch
from medtok.toy import toy_vocabulary

CFG = ModelConfig(d_model=16, heads=2, ff=32, layers=1, dropout=0.0)


def fixture(n=64, seed=0):
    """Visits of paired codes: code 2k and 2k+1 of the toy leaves always occur together, plus a
    sex marker and an admission marker per visit (never maskable)."""
    vocab, _ = toy_vocabulary()
    leaves = vocab.codes.loc[vocab.codes["kind"] == "code", "code_id"].tolist()[:20]
    markers = ["GENDER//F", "HOSPITAL_ADMISSION//EMERGENCY"]
    space = CodeSpace(leaves + markers)
    rng = np.random.default_rng(seed)
    L = 16
    codes, vpos = np.zeros((n, L), np.int64), np.zeros((n, L), np.int64)
    length = np.zeros(n, np.int64)
    for r in range(n):
        seq, vis = [space.index["GENDER//F"]], [0]
        for v in range(int(rng.integers(1, 4))):
            k = int(rng.integers(0, 10))
            seq += [space.index["HOSPITAL_ADMISSION//EMERGENCY"], space.index[leaves[2 * k]],
                    space.index[leaves[2 * k + 1]]]
            vis += [v, v, v]
        seq, vis = seq[:L], vis[:L]
        codes[r, :len(seq)], vpos[r, :len(vis)], length[r] = seq, vis, len(seq)
    z = np.zeros((n, L), np.float32)
    data = SequenceData(sample_id=np.arange(n), subject_id=np.arange(n), prediction_time=np.arange(n),
                        split=np.where(np.arange(n) < n - 8, "train", "tuning"), codes=codes, visit_pos=vpos,
                        visit_seg=vpos, days=z, age=z + 60, length=length, truncated=np.zeros(n, np.int64),
                        bag=sparse.csr_matrix((n, len(space))), y=np.arange(n) % 2, kind="binary", classes=["n", "p"])
    res = Resources(levels=Hierarchy(vocab).levels(space.codes))
    res.levels[0] = (None, None, None)
    seen = np.ones(len(space), bool)
    seen[0] = False
    return space, data, res, seen


def test_masks_codes_only():
    space, data, res, seen = fixture()
    maskable = torch.from_numpy(maskable_codes(space.codes))
    assert not maskable[space.index["GENDER//F"]] and not maskable[space.index["HOSPITAL_ADMISSION//EMERGENCY"]]
    assert not maskable[0]
    codes = torch.from_numpy(data.codes)
    g = torch.Generator().manual_seed(0)
    allm, labels = mask_codes(codes, maskable, 1.0, g)
    assert torch.equal(allm, maskable[codes] & (codes > 0))             # prob 1: exactly the medical codes
    assert torch.equal(labels[allm], codes[allm]) and (labels[~allm] == -100).all()
    for _ in range(20):
        m, _ = mask_codes(codes, maskable, 0.15, g)
        assert not (m & ~maskable[codes]).any() and not (m & (codes == 0)).any()
        assert m.any(1).all()                                           # every sample has one masked code
    rate = np.mean([mask_codes(codes, maskable, 0.15, g)[0].sum().item() / allm.sum().item() for _ in range(20)])
    assert 0.12 < rate < 0.35             # 15% + the at-least-one rule on short fixture samples (2-6 codes)


def test_masked_code_input_is_hidden_and_plain_encoder_unchanged():
    space, data, res, seen = fixture()
    torch.manual_seed(0)
    net = BEHRT(make_tokenizer("hier-111-tok", 16, space, seen, res), 1, CFG).eval()
    b = to_batch(data, np.arange(4))
    with torch.no_grad():
        cls, _ = encode_states(net, b)
        torch.testing.assert_close(cls, net.encode(b))
        mask = torch.zeros_like(b["codes"], dtype=torch.bool)
        mask[0, 2] = True
        vec = torch.randn(16)
        b2 = {k: v.clone() for k, v in b.items()}
        b2["codes"][0, 2] = b["codes"][0, 2] + 1 if b["codes"][0, 2] < len(space) - 3 else b["codes"][0, 2] - 1
        s1 = encode_states(net, b, mask, vec)[1]
        s2 = encode_states(net, b2, mask, vec)[1]
    # the masked code's identity (and its level tokens) cannot reach any state
    torch.testing.assert_close(s1, s2)


def test_mlm_loss_falls_and_pretraining_is_cached(tmp_path):
    space, data, res, seen = fixture()
    torch.manual_seed(0)
    net = BEHRT(make_tokenizer("hier-111", 16, space, seen, res), 1, CFG)
    hist = pretrain_mlm(net, data, space.codes, 0, MLMConfig(epochs=12, lr=3e-3, batch_size=16))
    assert hist["loss"][-1] < 0.7 * hist["loss"][0], hist["loss"]
    assert hist["masked_tokens"] > 0
    torch.manual_seed(0)
    a = BEHRT(make_tokenizer("flat", 16, space, seen, res), 1, CFG)
    m1 = cached_pretrain(a, data, space.codes, "flat", 0, MLMConfig(epochs=1), tmp_path, "fp")
    torch.manual_seed(0)
    b = BEHRT(make_tokenizer("flat", 16, space, seen, res), 1, CFG)
    m2 = cached_pretrain(b, data, space.codes, "flat", 0, MLMConfig(epochs=1), tmp_path, "fp")
    assert not m1["cached"] and m2["cached"]
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), k
