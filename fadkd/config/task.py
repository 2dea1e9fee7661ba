"""The task section of the typed config (fadkd/config/schema.py), with its checks."""

from dataclasses import dataclass

from fadkd.config.checks import ConfigError, check_positive, choose
from fadkd.config.choices import AugmentMethod


@dataclass
class TaskConfig:
    """Which GLUE task, and where its data comes from."""

    name: str = "sst2"  # cola sst2 mrpc stsb qqp mnli mnli_mm qnli rte wnli
    # Folder in the GLUE layout (<data_dir>/SST-2/train.tsv ...), "hub" to load glue/<task>
    # from the Hugging Face Hub, or "sample" for the SST-2 sample shipped with fadkd.
    data_dir: str | None = None
    max_length: int = 128  # tokens per example (pairs included), longer ones are truncated
    max_train_samples: int | None = None  # first N training rows (null = all)
    max_eval_samples: int | None = None  # first N dev rows (null = all)
    # Teacher-labelled augmentation (fadkd/data/augment.py, TinyBERT-style): N perturbed copies of every
    # training row, without hard labels; the teacher's terms use them, the task loss skips them.
    augment: int = 0  # copies per training row (0 = off); an epoch covers the rows and the copies
    augment_p: float = 0.1  # per word: probability of dropping it; also the share of words swapped
    augment_seed: int = 0  # the copies' own seed: every train.seed sees the same rows (one teacher cache)
    augment_method: AugmentMethod = AugmentMethod.eda  # eda (word drop + swap) | lm (words proposed by task.augment_lm)
    augment_lm: str | None = None  # augment_method=lm: a causal LM folder (e.g. the smollm2-135m of `make models`)
    # The unlabelled pool (fadkd/data/pool.py): texts the teacher labels and the task loss never sees.
    unlabelled_rows: int = 0  # N training rows after the first max_train_samples, their labels hidden
    unlabelled_file: str | None = None  # .tsv (header with the task's text columns), .jsonl or .txt texts
    # Causal-LM tasks (lm_<GLUE task>, lm_text; fadkd/data/lm_text.py). max_length cuts held-out texts.
    train_file: str | None = None  # lm_text: .txt (one text per line), .jsonl, or a datasets folder
    eval_file: str | None = None  # lm_text: the held-out texts, same formats
    text_column: str = "text"  # lm_text: the field holding the text in .jsonl / datasets folders
    block_size: int = 128  # tokens per packed block (training and perplexity)
    prompt_fraction: float = 0.5  # generation: share of a held-out text's tokens given as the prompt
    max_new_tokens: int = 32  # generation: greedy continuation length (the reference is cut to it)
    eval_samples: int | None = 200  # generation: the first N held-out texts (null = all)

    def __post_init__(self) -> None:
        check_positive("task.max_length", self.max_length)
        _check_lm_task(self)
        _check_augment(self)
        if self.data_dir is None and self.name != "lm_text":
            raise ConfigError(
                f"task.data_dir is not set for task '{self.name}': pass task.data_dir=<folder in "
                "the GLUE layout, e.g. ../shared/data/glue>, or task.data_dir=hub to load it from "
                "the Hugging Face Hub"
            )

    @property
    def is_lm(self) -> bool:
        """A causal-LM task (lm_sst2, lm_text, ...): packed text, no labels."""
        return self.name.strip().lower().startswith("lm_")


def _check_augment(cfg: TaskConfig) -> None:
    """task.augment, task.augment_p, task.augment_method and the unlabelled rows (fadkd/data/augment.py)."""
    if isinstance(cfg.augment, bool) or cfg.augment < 0:
        raise ConfigError(f"task.augment={cfg.augment} must be a whole number >= 0 (perturbed copies per training row)")
    if not 0 < cfg.augment_p < 1:
        raise ConfigError(f"task.augment_p={cfg.augment_p} must be between 0 and 1: the chance each word is dropped")
    cfg.augment_method = choose(AugmentMethod, "task.augment_method", cfg.augment_method)
    if isinstance(cfg.unlabelled_rows, bool) or cfg.unlabelled_rows < 0:
        raise ConfigError(f"task.unlabelled_rows={cfg.unlabelled_rows} must be a whole number >= 0")
    if cfg.unlabelled_rows and cfg.max_train_samples is None:
        raise ConfigError(
            f"task.unlabelled_rows={cfg.unlabelled_rows} hides the labels of the training rows after the first "
            "task.max_train_samples, which is unset (every row is labelled); set task.max_train_samples=N"
        )
    if (cfg.unlabelled_rows or cfg.unlabelled_file) and cfg.is_lm:
        raise ConfigError(
            f"task.unlabelled_rows / task.unlabelled_file add unlabelled GLUE rows; causal-LM task '{cfg.name}' "
            "has no labels to hide: leave them unset"
        )
    if cfg.augment and cfg.is_lm:
        raise ConfigError(
            f"task.augment={cfg.augment} perturbs GLUE rows; causal-LM task '{cfg.name}' trains on packed text: "
            "set task.augment=0"
        )


def _check_lm_task(cfg: TaskConfig) -> None:
    """The causal-LM fields: lengths, prompt share, and lm_text's files."""
    check_positive("task.max_new_tokens", cfg.max_new_tokens)
    if cfg.block_size < 2:
        raise ConfigError(f"task.block_size={cfg.block_size} must be >= 2 (a token and the one it predicts)")
    if not 0 < cfg.prompt_fraction < 1:
        raise ConfigError(
            f"task.prompt_fraction={cfg.prompt_fraction} must be between 0 and 1 (exclusive): the share of "
            "each held-out text given as the prompt, the rest being the reference continuation"
        )
    if cfg.eval_samples is not None:
        check_positive("task.eval_samples", cfg.eval_samples)
    if cfg.name == "lm_text":
        for key in ("train_file", "eval_file"):
            if getattr(cfg, key) is None:
                raise ConfigError(
                    f"task.{key} is not set for task 'lm_text': pass task.train_file=<texts> "
                    "task.eval_file=<held-out texts> (.txt one text per line, .jsonl, or a datasets folder)"
                )
