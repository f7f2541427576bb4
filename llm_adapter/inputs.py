"""The one place where model inputs are built: [soft prefix ; prompt tokens (; answer tokens)].

Training (teacher forcing), the HF scorer (`qa.scoring.InputBuilder`) and served inference
(one unpadded row = the `prompt_embeds` a vLLM server takes) all call `build_inputs`, so the
prefix cannot be laid out differently at training and at inference time.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def _embedding(model_or_embedding):
    if hasattr(model_or_embedding, "get_input_embeddings"):
        return model_or_embedding.get_input_embeddings()
    return model_or_embedding


def build_inputs(model, prefix_embeds: list[torch.Tensor | None], prompt_ids: list[list[int]],
                 answer_ids: list[list[int]] | None = None, pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Left-padded batch of [prefix_i ; prompt_i ; answer_i].

    model          a causal LM (its `get_input_embeddings()` embeds the tokens) or an nn.Embedding
    prefix_embeds  per example a [P_i, H] tensor of soft tokens; P_i = 0 or None = no prefix
                   (a question without codes). Gradients flow back into it.
    prompt_ids     per example the prompt token ids (chat template incl. generation prompt)
    answer_ids     per example the answer token ids (teacher forcing), or None at inference
    Returns, with B examples and T = max_i (P_i + len(prompt_i) + len(answer_i)):
      inputs_embeds  [B, T, H]  padding rows hold the pad token's embedding (masked anyway)
      attention_mask [B, T]     1 on prefix, prompt and answer, 0 on the left padding
      position_ids   [B, T]     0 at each row's first real position (prefix included)
      labels         [B, T]     answer ids at the answer positions, -100 elsewhere (only with answer_ids)
    Every row ends at T-1, so the answers of all rows sit in the last columns (a loss can
    slice `labels[:, -K:]` with K = the longest answer and run the LM head on K positions only).
    """
    embed = _embedding(model)
    B = len(prompt_ids)
    if len(prefix_embeds) != B or (answer_ids is not None and len(answer_ids) != B):
        raise ValueError(f"batch sizes differ: {len(prefix_embeds)} prefixes, {B} prompts, "
                         f"{None if answer_ids is None else len(answer_ids)} answers")
    if B == 0:
        raise ValueError("empty batch")
    H = embed.weight.shape[1]
    device = embed.weight.device
    answers = answer_ids if answer_ids is not None else [[] for _ in range(B)]
    n_prefix = []
    for p in prefix_embeds:
        if p is None or p.numel() == 0:
            n_prefix.append(0)
        elif p.dim() != 2 or p.shape[1] != H:
            raise ValueError(f"a prefix must be [P, {H}], got {list(p.shape)}")
        else:
            n_prefix.append(int(p.shape[0]))
    tokens = [list(map(int, pr)) + list(map(int, an)) for pr, an in zip(prompt_ids, answers)]
    lengths = [n + len(t) for n, t in zip(n_prefix, tokens)]
    if min(lengths) == 0:
        raise ValueError("an example has neither prefix nor tokens")
    T = max(lengths)

    # the index tensors are filled row by row on the CPU, then moved to the model in one copy each
    cpu = torch.device("cpu")
    ids = torch.full((B, T), int(pad_token_id), dtype=torch.long, device=cpu)
    mask = torch.zeros((B, T), dtype=torch.long, device=cpu)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long, device=cpu)
    for i, (t, an, L) in enumerate(zip(tokens, answers, lengths)):
        if t:
            ids[i, T - len(t):] = torch.tensor(t, dtype=torch.long, device=cpu)
        mask[i, T - L:] = 1
        if an:
            labels[i, T - len(an):] = torch.tensor(list(map(int, an)), dtype=torch.long, device=cpu)
    emb = embed(ids.to(device))
    rows = []
    for i, (p, n, L) in enumerate(zip(prefix_embeds, n_prefix, lengths)):
        if n == 0:
            rows.append(emb[i])
        else:  # splice the soft tokens into the positions before the prompt
            start = T - L
            rows.append(torch.cat([emb[i, :start], p.to(device=device, dtype=emb.dtype), emb[i, start + n:]], dim=0))
    mask = mask.to(device)
    out = {"inputs_embeds": torch.stack(rows), "attention_mask": mask,
           "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}
    if answer_ids is not None:
        out["labels"] = labels.to(device)
    return out


def serving_prompt_embeds(model, prefix: torch.Tensor | None, prompt_ids: list[int]) -> torch.Tensor:
    """[P + L, H] embeddings of one prompt with its prefix, unpadded: what a vLLM server
    takes as `prompt_embeds` (built by `build_inputs`, so identical to training/eval)."""
    return build_inputs(model, [prefix], [prompt_ids])["inputs_embeds"][0]


def answer_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy over labelled positions, their mean or (`reduction="sum"`)
    their sum; `logits` may cover only the last K positions (then `labels` is sliced to
    match: predictions for the last K labels come from positions T-K-1 .. T-2).

    The sum is what exact gradient accumulation needs: the training loop divides it by the
    number of answer tokens of the whole optimizer step (all micro-batches, all processes)."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    K = logits.shape[1]
    T = labels.shape[1]
    if K >= T:  # full logits: standard shift
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
    else:
        shift_logits, shift_labels = logits[:, :-1], labels[:, T - K + 1:]
    return torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]).float(),
                                             shift_labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction=reduction)

