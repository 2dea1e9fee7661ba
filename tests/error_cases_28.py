"""The cases of docs/errors.md added by issue 28 (the inputs that still got a traceback, a crash or silence).

Each maps a row id to a function(tmp) returning CLI args, or running the CLI itself; test_errors.py
requires the row's message, a non-zero exit and no traceback.
"""

from pathlib import Path

from error_cases import _raising, _run, _train
from transformers import BertConfig, BertForSequenceClassification, BertModel, LlamaConfig, LlamaForCausalLM

from fadkd.models.load import TINY_TOKENIZER

LM_TEXT = ["task=lm_text", "teacher=tiny-llama", "student=tiny-llama-half"]
TINY_TEACHER = {
    "vocab_size": 4000,
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 128,
}  # fmt: skip  (conf/teacher/tiny.yaml's shape)


def _folder(tmp: Path, name: str, model, tokenizer: bool = False) -> Path:
    model.save_pretrained(tmp / name)
    if tokenizer:
        for file in TINY_TOKENIZER.iterdir():
            (tmp / name / file.name).write_bytes(file.read_bytes())
    return tmp / name


def _bert(**shape) -> BertModel:
    return BertModel(BertConfig(**{**TINY_TEACHER, **shape}))


def _llama() -> LlamaForCausalLM:
    return LlamaForCausalLM(LlamaConfig(**TINY_TEACHER))


def _classifier() -> BertForSequenceClassification:
    return BertForSequenceClassification(BertConfig(**TINY_TEACHER))


def _config_dir(tmp: Path, text: str) -> list[str]:
    (tmp / "mine" / "experiment").mkdir(parents=True)
    (tmp / "mine" / "experiment" / "mine.yaml").write_text(text)
    return ["--config-dir", str(tmp / "mine"), "experiment=mine"]


def _fake_run(tmp: Path) -> Path:
    """A run folder as eval reads it first: config.yaml of an SST-2 run and a saved student's config.json."""
    (tmp / "run" / "student").mkdir(parents=True)
    (tmp / "run" / "config.yaml").write_text("task:\n  name: sst2\n  data_dir: sample\ntrain:\n  device: cpu\n")
    (tmp / "run" / "student" / "config.json").write_text("{}")
    return tmp / "run"


def _empty_metrics(tmp: Path) -> str:
    """A run folder whose metrics.json was left empty (a run cut off while writing it)."""
    (tmp / "cut").mkdir()
    (tmp / "cut" / "config.yaml").write_text("loss: {}\n")
    (tmp / "cut" / "steps.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    (tmp / "cut" / "metrics.json").write_text("")
    return str(tmp / "cut")


def _csv(tmp: Path) -> list[str]:
    (tmp / "train.csv").write_text('id,text\n1,"a first text"\n2,"a second text"\n')
    (tmp / "dev.txt").write_text("a held-out text\n")
    return [*LM_TEXT, f"task.train_file={tmp / 'train.csv'}", f"task.eval_file={tmp / 'dev.txt'}"]


FROM_TEACHER = ["student=from-teacher", "student.keep_layers=[0,3]"]

ISSUE28_CASES = {
    "temperature-huge": lambda t: ["train", "loss.temperature=1e300"],
    "temperature-tiny": lambda t: ["train", "loss.temperature=1e-30"],
    "sweep-range-step-zero": lambda t: ["train", f"hydra.sweep.dir={t / 'sweep'}", "-m", "loss.beta=range(0,1,0)"],
    "sweep-later-job-bad": lambda t: ["train", f"hydra.sweep.dir={t / 'sweep'}", "-m", "train.lr=0.001,-1"],
    "eval-run-dir-empty": lambda t: ["eval", "run_dir="],
    "eval-other-task": lambda t: ["eval", f"run_dir={_fake_run(t)}", "task=mrpc"],
    "eval-unknown-key": lambda t: ["eval", f"run_dir={_fake_run(t)}", "foo=1"],
    "mapping-pairs-not-explicit": lambda t: ["train", "mapping.pairs=[[1,2]]"],
    "run-dir-empty": lambda t: ["train", "hydra.run.dir="],
    "yaml-invalid": lambda t: ["train", *_config_dir(t, "# @package _global_\nloss:\n  beta: value: x\n")],
    "yaml-tab": lambda t: ["train", *_config_dir(t, "# @package _global_\nloss:\n\tbeta: 1\n")],
    "layers-from-other-family": lambda t: ["train", *FROM_TEACHER, f"student.layers_from={_folder(t, 'l', _llama())}"],
    "layers-from-narrower": lambda t: ["train", *FROM_TEACHER,
                                       f"student.layers_from={_folder(t, 'n', _bert(hidden_size=32))}"],
    "layers-from-shallow": lambda t: ["train", *FROM_TEACHER,
                                      f"student.layers_from={_folder(t, 's', _bert(num_hidden_layers=2))}"],
    "teacher-no-tokenizer": lambda t: ["train", "loss=logits_only", f"teacher.path={_folder(t, 'c', _classifier())}"],
    "augment-lm-not-causal": lambda t: ["train", "task.augment=1", "task.augment_method=lm", f"cache.dir={t / 'c'}",
                                        f"task.augment_lm={_folder(t, 'e', _classifier(), tokenizer=True)}"],
    "lm-text-csv": lambda t: ["train", *_csv(t)],
    "resume-force-other-task": lambda t: ["train", _run(t), "train.resume=force", "task=mrpc", "task.data_dir=sample"],
    "plot-metrics-empty": lambda t: ["plot", _empty_metrics(t)],
    "ctrl-c-before-checkpoint": lambda t: _raising(KeyboardInterrupt(), _train(t)),
}  # fmt: skip
