"""Causal language models: a local HF folder or Hub id, a tiny Llama preset, or a student made
from the teacher by keeping some of its layers.

- Tiny presets (`arch: llama`, path null): random-init Llama configs built here, with the
  shipped tiny WordPiece tokenizer; its [CLS] / [SEP] / [PAD] serve as bos / eos / pad.
- `init: from_teacher`: a deep copy of the teacher with only `keep_layers` (0-based indices
  into the decoder's layer list; `every_k=k` keeps 0, k, 2k, ...) - DistilBERT's layer-by-layer
  initialisation. Embeddings, final norm and LM head are the teacher's. Attention modules are
  renumbered (`layer_idx`, used by the KV cache and by fadkd.models.attention), config.num_hidden_layers
  (and layer_types, where a model has them) set to match, so `save_pretrained` writes a normal
  HF folder that `AutoModelForCausalLM.from_pretrained` reloads. Keeping every layer gives the
  teacher itself, logit for logit (tests/test_lm.py).
"""

import os

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from fadkd.config.schema import ModelConfig, TaskConfig
from fadkd.models.load import ModelError, _check_folder, _looks_local
from fadkd.models.shrink import from_teacher, layers_to_keep  # noqa: F401 - re-exported for callers of the causal-LM builders


def prepare_tokenizer(tok: PreTrainedTokenizerBase, role: str) -> PreTrainedTokenizerBase:
    """Make sure the tokenizer has eos (ends each text) and pad (its value never counts)."""
    if tok.eos_token is None:
        if tok.sep_token is None:
            raise ModelError(
                f"{role}: the tokenizer has no end-of-text token (eos_token) and no [SEP] to use as one; "
                "causal-LM tasks end every text with it: give a tokenizer with an eos_token"
            )
        tok.eos_token = tok.sep_token
    if tok.bos_token is None and tok.cls_token is not None:
        tok.bos_token = tok.cls_token
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def tiny_llama(cfg: ModelConfig, tok: PreTrainedTokenizerBase, attn: str | None) -> LlamaForCausalLM:
    """A random-init Llama from the preset's shape, seeded by init_seed."""
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads or cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
        attn_implementation=attn,
    )
    torch.manual_seed(cfg.init_seed)
    return LlamaForCausalLM(config)


def _is_causal(config) -> bool:
    arch = config.architectures or []
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in arch) or bool(getattr(config, "is_decoder", False))


def load_causal_lm(cfg: ModelConfig, role: str, tok: PreTrainedTokenizerBase, attn: str | None) -> PreTrainedModel:
    """A causal LM from cfg: a tiny Llama preset, or an HF folder / Hub id (float32)."""
    if cfg.path is None:
        if cfg.arch != "llama":
            raise ModelError(
                f"{role} '{cfg.name}' is a tiny BERT, not a causal language model; causal-LM tasks need one: "
                f"use {role}=tiny-llama{'-half' if role == 'student' else ''}, {role}.path=<causal LM folder>, "
                "or (student) student.init=from_teacher"
            )
        return tiny_llama(cfg, tok, attn)
    if _looks_local(cfg.path):
        _check_folder(cfg.path, "path", role)
    path = os.path.expanduser(cfg.path)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
        if not _is_causal(config):
            raise ModelError(
                f"{role}.path={cfg.path} is not a causal language model (architectures: {config.architectures}); "
                "causal-LM tasks need a decoder such as Llama (AutoModelForCausalLM)"
            )
        model_class = AutoModelForCausalLM._model_mapping.get(type(config), None)
        if attn not in (None, "eager") and not getattr(model_class, "_supports_attention_backend", False):
            attn = "eager"  # no attention interface: maps come from eager attention
        return AutoModelForCausalLM.from_pretrained(
            path, attn_implementation=attn, dtype=torch.float32, trust_remote_code=cfg.trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise ModelError(f"{role}: cannot load a causal language model from {cfg.path}: {err}") from None


def check_lm_lengths(model: PreTrainedModel, task: TaskConfig, role: str) -> None:
    """Blocks, and prompts plus their continuation, must fit the model's positions."""
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is None:
        return
    if task.block_size > positions:
        raise ModelError(
            f"task.block_size={task.block_size} is longer than the {role} can read ({positions} positions); "
            f"set task.block_size={positions} or less"
        )
    longest = task.max_length + 1 + task.max_new_tokens  # eos + prompt (< max_length) + continuation
    if longest > positions:
        raise ModelError(
            f"task.max_length={task.max_length} + task.max_new_tokens={task.max_new_tokens} (+1 for eos) is longer "
            f"than the {role} can read ({positions} positions); lower one of them"
        )
