"""Option-likelihood scoring: batched, padded scores equal a per-option hand computation."""

import numpy as np
import torch

from llm_adapter.config import AdapterConfig, LoraSettings, ProjectorConfig
from llm_adapter.model import PrefixLM
from llm_adapter.option_scoring import cloze_prompt_ids, option_ids, score_by_option_likelihood
from llm_adapter.vectors import RandomVectors
from tests.conftest import char_tokenizer, tiny_llama
from qa.types import MCQuestion


def test_option_scores_match_hand_computation():
    tok = char_tokenizer()
    cfg = AdapterConfig(base_model="tiny", hidden_size=32, vector_source="random",
                        projector=ProjectorConfig(hidden_size=32, tokens_per_code=2, mlp_hidden=16),
                        lora=LoraSettings(r=2, target_modules=("q_proj",)))
    m = PrefixLM.build(cfg, lm=tiny_llama(vocab_size=256, hidden_size=32, num_layers=2), tokenizer=tok,
                       vector_source=RandomVectors(4, 64))
    qs = [MCQuestion("q0", "What is X1?", ["red", "a long green thing", "b"], 1, codes=["X1"]),
          MCQuestion("q1", "And this?", ["yes", "no"], 0, codes=[])]
    res = score_by_option_likelihood(m, tok, qs, batch_size=3, progress=False)
    m.eval()
    for i, q in enumerate(qs):
        for j, opt in enumerate(q.options):
            prompt, ans = cloze_prompt_ids(tok, q.question), option_ids(tok, opt)
            with torch.no_grad():
                batch = m.inputs([q.codes], [prompt], None)
                full = m.inputs([q.codes], [prompt + ans], None)
                logits = m(**full).logits[0]
            T = full["inputs_embeds"].shape[1]
            lp = torch.log_softmax(logits, -1)
            # the option's tokens sit at the last len(ans) positions; each is predicted one position earlier
            want = np.mean([float(lp[T - len(ans) - 1 + k, ans[k]]) for k in range(len(ans))])
            assert abs(res.letter_logprobs[i, j] - want) < 1e-4
            assert batch["inputs_embeds"].shape[1] == T - len(ans)
    assert res.letter_logprobs[1, 2] == -np.inf
    assert res.pred.tolist() == res.letter_logprobs.argmax(1).tolist()
