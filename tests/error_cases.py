"""The cases of docs/errors.md added by issue 20 (ranges, paths, files, verbs, signals, runs, resume).

Each maps a row id to a function(tmp) returning CLI args, or running the CLI itself when the case
needs a patch in place (test_errors.py requires the message, a non-zero exit, no traceback).
`LIVE` holds processes a case started (a run holding its folder's lock); the test ends them.
"""

import errno
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT

from fadkd.cli import main

FAST = ["task.max_train_samples=16", "task.max_eval_samples=8", "train.max_steps=1", "train.batch_size=8"]
LM = ["task=lm_sst2", "teacher=tiny-llama", "student=tiny-llama-half"]
LIVE: list[subprocess.Popen] = []


def _file(tmp: Path, name: str = "a-file", text: str = "not a folder\n") -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / name).write_text(text)
    return tmp / name


def _run(tmp: Path, verb: str = "train", name: str = "run") -> str:
    """A finished 1-step run (with its checkpoint) in tmp/name; returns its hydra.run.dir override."""
    main([verb, *FAST, f"hydra.run.dir={tmp / name}"])
    return f"hydra.run.dir={tmp / name}"


def _stopped_early(tmp: Path) -> str:
    """A run folder left by a run stopped before its first checkpoint: config.yaml, steps logged, no checkpoints/."""
    (tmp / "early").mkdir()
    (tmp / "early" / "config.yaml").write_text("train: {}\n")
    (tmp / "early" / "steps.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    return f"hydra.run.dir={tmp / 'early'}"


def _live_run(tmp: Path) -> str:
    """Another process holding the run folder's lock, as a run still training does."""
    folder = tmp / "live"
    folder.mkdir()
    code = f"from pathlib import Path; from fadkd.run.folder import lock_run_dir; lock_run_dir(Path({str(folder)!r}));"
    code += " print('locked', flush=True); import time; time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    LIVE.append(proc)
    assert proc.stdout.readline().strip() == "locked"
    return f"hydra.run.dir={folder}"


def _truncated_model(tmp: Path) -> list[str]:
    from transformers import BertConfig, BertForSequenceClassification

    from fadkd.models.load import TINY_TOKENIZER

    config = BertConfig(vocab_size=4000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64)  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(tmp / "cut")
    weights = tmp / "cut" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    return [f"teacher.path={tmp / 'cut'}", f"teacher.tokenizer={TINY_TOKENIZER}"]


def _non_utf8_line_30(tmp: Path) -> str:
    root = tmp / "glue"
    (root / "SST-2").mkdir(parents=True)
    (root / "SST-2" / "dev.tsv").write_bytes((FIXTURES / "SST-2" / "dev.tsv").read_bytes())
    rows = b"sentence\tlabel\n" + b"".join(b"a fine film %d\t1\n" % i for i in range(28)) + b"caf\xe9 bad\t0\n"
    (root / "SST-2" / "train.tsv").write_bytes(rows + b"".join(b"more rows %d\t0\n" % i for i in range(2000)))
    return f"task.data_dir={root}"


def _raising(exc: BaseException, args: list[str]) -> None:
    """Run the CLI with the training loop replaced by one that raises `exc` (a signal, a full disk)."""

    def fail(*_a, **_k):
        raise exc

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("fadkd.run.train.train", fail)
        main(args)


def _train(tmp: Path, *args: str) -> list[str]:
    return ["train", *FAST, f"hydra.run.dir={tmp / 'out'}", *args]


RANGE_CASES = {
    "log-every-zero": lambda t: ["train", "train.log_every=0"],
    "weight-decay-negative": lambda t: ["train", "train.weight_decay=-5"],
    "seed-negative": lambda t: ["train", "train.seed=-1"],
    "seed-too-large": lambda t: ["train", "train.seed=4294967296"],
    "grad-clip-negative": lambda t: ["train", "train.grad_clip=-1"],
    "max-length-tiny": lambda t: ["train", "task.max_length=1"],
    "eval-every-negative": lambda t: ["train", "train.eval_every=-2"],
    "checkpoint-every-negative": lambda t: ["train", "train.checkpoint_every=-1"],
    "keep-checkpoints-zero": lambda t: ["train", "train.keep_checkpoints=0"],
    "max-steps-below": lambda t: ["train", "train.max_steps=-5"],
    "epochs-negative": lambda t: ["train", "train.epochs=-1"],
    "num-threads-negative": lambda t: ["train", "train.num_threads=-4"],
    "nonfinite-skips-negative": lambda t: ["train", "train.max_nonfinite_skips=-1"],
    "eval-batch-size-zero": lambda t: ["train", "train.eval_batch_size=0"],
    "warmup-ratio": lambda t: ["train", "train.warmup_ratio=1"],
    "epochs-zero": lambda t: ["train", "train.epochs=0", "train.max_steps=-1"],
    "lr-nan": lambda t: ["train", "train.lr=nan"],
    "lr-inf": lambda t: ["train", "train.lr=inf"],
    "weight-inf": lambda t: ["train", "loss.alpha=inf"],
    "weight-nan": lambda t: ["train", "loss.gamma=nan"],
    "temperature-nan": lambda t: ["train", "loss.temperature=nan"],
    "feature-until": lambda t: ["train", "loss.feature_until=0"],
    "projection-lr": lambda t: ["train", "loss.projection_lr=0"],
    "relation-heads-zero": lambda t: ["train", "loss.relation_heads=0"],
    "dropout-one": lambda t: ["train", "student.dropout=1"],
    "dropout-negative": lambda t: ["train", "teacher.dropout=-0.1"],
    "intermediate-size-zero": lambda t: ["train", "student.intermediate_size=0"],
    "max-positions-tiny": lambda t: ["train", "student.max_position_embeddings=4"],
    "init-seed-negative": lambda t: ["train", "student.init_seed=-3"],
    "num-layers-zero": lambda t: ["train", "student.num_layers=0"],
    "num-heads-zero": lambda t: ["train", "teacher.num_heads=0"],
    "max-train-samples-zero": lambda t: ["train", "task.max_train_samples=0"],
    "max-eval-samples-negative": lambda t: ["train", "task.max_eval_samples=-8"],
    "augment-negative": lambda t: ["train", "task.augment=-1"],
    "augment-p": lambda t: ["train", "task.augment=1", "task.augment_p=1"],
    "augment-seed-negative": lambda t: ["train", "task.augment_seed=-1"],
    "augment-without-teacher": lambda t: ["train", "task.augment=1", "loss=student_alone"],
    "augment-lm": lambda t: ["train", *LM, "task.augment=1"],
    "lm-max-new-tokens-zero": lambda t: ["train", *LM, "task.max_new_tokens=0"],
    "lm-eval-samples-zero": lambda t: ["train", *LM, "task.eval_samples=0"],
    "lm-block-size-one": lambda t: ["train", *LM, "task.block_size=1"],
    "lm-kv-heads": lambda t: ["train", *LM, "student.num_kv_heads=3"],
    "lm-every-k-zero": lambda t: ["train", *LM, "student.init=from_teacher", "student.every_k=0"],
    "lm-keep-layers-order": lambda t: ["train", *LM, "student.init=from_teacher", "student.keep_layers=[3,1]"],
    "lm-keep-layers-random": lambda t: ["train", *LM, "student.keep_layers=[0,2]"],
    "cache-max-gb": lambda t: ["train", "cache.max_gb=0"],
    "cache-dtype": lambda t: ["train", "cache.dtype=float64"],
}

CHOICE_CASES = {
    "model-arch-unknown": lambda t: ["train", "student.arch=gpt"],
    "model-init-unknown": lambda t: ["train", "student.init=copy"],
    "feature-schedule-unknown": lambda t: ["train", "loss.feature_schedule=step"],
    "feature-tokens-unknown": lambda t: ["train", "loss.feature_tokens=last"],
    "feature-norm-unknown": lambda t: ["train", "loss.feature_norm=layer"],
    "projection-init-unknown": lambda t: ["train", "loss.projection_init=zeros"],
    "precision-unknown": lambda t: ["train", "train.precision=fp8"],
    "device-unknown": lambda t: ["train", "train.device=tpu"],
    "device-mps": lambda t: ["train", "train.device=mps"],
    "resume-unknown": lambda t: ["train", "train.resume=maybe"],
    "resume-and-overwrite": lambda t: ["train", "train.resume=true", "train.overwrite=true"],
    "relations-duplicate": lambda t: ["train", "loss.relations=[qq,qq]"],
    "layer-weight-negative": lambda t: ["train", "mapping.layer_weights=[-1,1]"],
    "key-typo": lambda t: ["train", "loss.alpah=1"],
    "key-typo-added": lambda t: ["train", "+loss.alpah=1"],
    "section-typo": lambda t: ["train", "lss.alpha=1"],
    "wrong-type-float": lambda t: ["train", "train.lr=fast"],
    "wrong-type-list": lambda t: ["train", "mapping=explicit", "mapping.pairs=5"],
    "unknown-experiment": lambda t: ["train", "experiment=nope"],
    "unknown-loss-preset": lambda t: ["train", "loss=ful"],
}

PATH_CASES = {
    "data-dir-file": lambda t: ["train", f"task.data_dir={_file(t)}"],
    "tsv-bad-bytes-line": lambda t: ["train", _non_utf8_line_30(t)],
    "model-path-file": lambda t: ["train", f"teacher.path={_file(t)}"],
    "model-truncated": lambda t: ["train", *_truncated_model(t)],
    "lm-text-bad-bytes": lambda t: [
        "train",
        *LM[1:],
        "task=lm_text",
        f"task.train_file={_file(t, 'b.txt')}",
        f"task.eval_file={_file(t, 'dev.txt')}",
        "--bad-bytes",
    ],
    "run-dir-file": lambda t: ["train", f"hydra.run.dir={_file(t)}"],
    "run-dir-under-file": lambda t: ["train", f"hydra.run.dir={_file(t)}/run"],
    "run-dir-unwritable": lambda t: ["train", "hydra.run.dir=/sys/fadkd-run"],
    "run-dir-name-too-long": lambda t: ["train", f"hydra.run.dir={t / ('x' * 300)}"],
    "sweep-dir-file": lambda t: ["train", "-m", f"hydra.sweep.dir={_file(t)}", "loss.alpha=0,1"],
    "disk-full": lambda t: _raising(
        OSError(errno.ENOSPC, "No space left on device", str(t / "steps.jsonl")), _train(t)
    ),
    "table-out-file": lambda t: ["table", str(t), "--out", str(_file(t))],
    "table-no-args": lambda t: ["table"],
    "table-layout-unknown": lambda t: ["table", str(t), "--layout", "fancy"],
    "plot-no-runs": lambda t: ["plot", str(t)],
    "report-not-a-run": lambda t: ["report", str(t)],
    "report-unfinished": lambda t: ["report", str(_stopped_early(t).split("=", 1)[1])],
    "eval-no-student": lambda t: ["eval", f"run_dir={_stopped_early(t).split('=', 1)[1]}"],
    "table-missing-path": lambda t: ["table", "/no/such/runs"],
    "table-metrics-damaged": lambda t: ["table", str(_file(t / "cut", "metrics.json", '{"task": "ss').parent)],
}

RUN_CASES = {
    "run-dir-live": lambda t: ["train", _live_run(t)],
    "run-stopped-before-checkpoint": lambda t: ["train", _stopped_early(t)],
    "resume-before-checkpoint": lambda t: ["train", _stopped_early(t), "train.resume=true"],
    "resume-changed-settings": lambda t: ["train", _run(t), "train.resume=true", "train.lr=0.01", "loss.beta=0.5"],
    "resume-finetune-as-train": lambda t: ["train", _run(t, "finetune"), "train.resume=true"],
    "second-ctrl-c": lambda t: _raising(KeyboardInterrupt(), _train(t)),
}

MORE_CASES = {**RANGE_CASES, **CHOICE_CASES, **PATH_CASES, **RUN_CASES}


def prepare(args: list[str]) -> list[str]:
    """Markers a case leaves in its args: --bad-bytes writes non-UTF-8 bytes into the named file."""
    if "--bad-bytes" in args:
        args.remove("--bad-bytes")
        path = Path(next(a for a in args if a.startswith("task.train_file=")).split("=", 1)[1])
        path.write_bytes(b"a text\n" * 3 + b"caf\xe9\n")
    return args


def end_live() -> None:
    for proc in LIVE:
        proc.kill()
        proc.wait(timeout=10)
    LIVE.clear()
