"""Every row of docs/errors.md: trigger it, expect its message, a non-zero exit, no traceback.

The table is the specification: its excerpt column is what the test matches, and a row
without a case here (or a case without a row) fails.
"""

import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, ROOT
from error_cases import MORE_CASES, end_live, prepare
from error_cases_28 import ISSUE28_CASES
from prune_cases import PRUNE_CASES
from transformers import BertConfig, BertForSequenceClassification

from fadkd.cli import main
from fadkd.models.capture import Layers, run_model
from fadkd.models.load import TINY_TOKENIZER

FAST = ["task.max_train_samples=16", "task.max_eval_samples=8", "train.max_steps=1", "train.batch_size=8"]


def _table() -> dict[str, str]:
    rows = {}
    for line in (ROOT / "docs" / "errors.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"[a-z]+(-[a-z]+)*", cells[0]) and cells[0] != "id":
            rows[cells[0]] = cells[2]
    return rows


def _glue(tmp: Path, folder: str, train: str | None = None, dev: str | None = None) -> Path:
    """A GLUE folder with one task, copied from the fixtures, with files replaced as given."""
    root = tmp / "glue"
    shutil.copytree(FIXTURES / folder, root / folder)
    for name, text in (("train.tsv", train), ("dev.tsv", dev)):
        if text is not None:
            (root / folder / name).write_text(text)
    return root


def _tokenizer_other(tmp: Path) -> Path:
    """A tokenizer whose vocabulary lacks most words: splits text into other pieces."""
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz.',", "the"]
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    tok = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)})
    tok.save_pretrained(tmp / "other-tok")
    return tmp / "other-tok"


def _three_label_teacher(tmp: Path) -> Path:
    model = BertForSequenceClassification(
        BertConfig(vocab_size=4000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=64, num_labels=3)
    )  # fmt: skip
    model.save_pretrained(tmp / "teacher3")
    return tmp / "teacher3"


def _attention_missing(tmp: Path) -> None:
    config = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, attn_implementation="sdpa")  # fmt: skip
    inputs = {"input_ids": torch.tensor([[1, 2, 3]]), "attention_mask": torch.ones(1, 3, dtype=torch.long)}
    run_model(BertForSequenceClassification(config), inputs, Layers(attentions=frozenset({1})))


def _qkv_missing(tmp: Path) -> None:
    """Relations on a model with neither fadkd's attention function nor BERT-like q/k/v layers to hook."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, attn_implementation="sdpa")  # fmt: skip
    inputs = {"input_ids": torch.tensor([[1, 2, 3]]), "attention_mask": torch.ones(1, 3, dtype=torch.long)}
    run_model(LlamaForCausalLM(config), inputs, Layers(qkv=frozenset({1})))


def _short_vocab_teacher(tmp: Path) -> Path:
    """A tiny Llama folder with the tiny tokenizer but an output layer 3 entries short of it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from fadkd.config.schema import ModelConfig
    from fadkd.models.lm import prepare_tokenizer
    from fadkd.models.load import load_tokenizer

    tok = prepare_tokenizer(load_tokenizer(ModelConfig(), "teacher"), "teacher")
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok) - 3, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=32)).save_pretrained(tmp / "short")  # fmt: skip
    tok.save_pretrained(tmp / "short")
    return tmp / "short"


def _finished_run(tmp: Path) -> list[str]:
    main(["train", *FAST, f"hydra.run.dir={tmp / 'run'}"])
    return ["train", *FAST, f"hydra.run.dir={tmp / 'run'}"]


SST2_HEADER = "sentence\tlabel\n"
STSB = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
SHORT_ROW = "good\t1\nbad\n"
STSB_BAD = STSB + "0\tg\tf\ty\t0\tn\tn\ta\tb\thigh\n"


def _data_dir(tmp: Path, folder: str, **files) -> str:
    return f"task.data_dir={_glue(tmp, folder, **files)}"


LM = ["task=lm_sst2", "teacher=tiny-llama", "student=tiny-llama-half"]


def _lm_text(tmp: Path, name: str, text: str) -> list[str]:
    """lm_text args whose training file `name` holds `text` (the held-out file is fine)."""
    (tmp / name).write_text(text)
    (tmp / "dev.txt").write_text("a held-out text\n")
    return [*LM_TEXT, f"task.train_file={tmp / name}", f"task.eval_file={tmp / 'dev.txt'}"]


def _glue_run(tmp: Path) -> str:
    (tmp / "glue-run").mkdir()
    (tmp / "glue-run" / "metrics.json").write_text('{"task": "sst2", "student": {"accuracy": 0.5}}')
    return str(tmp)


def _under_torchrun(world_size: int, args: list[str]) -> None:
    """Run the CLI as rank 0 of `world_size` would, up to the check (no process group is joined)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WORLD_SIZE", str(world_size))
        env.setenv("RANK", "0")
        main([args[0], *FAST, *args[1:]])


def _fsdp_bf16_without_bf16(t: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("fadkd.run.strategy.cpu_has_bf16", lambda: False)
        _under_torchrun(2, ["train", "train.strategy=fsdp", "train.precision=bf16"])


def _resume_other_strategy(t: Path) -> list[str]:
    """A run with ddp checkpoints, resumed (force: past the settings check) with train.strategy=fsdp."""
    try:
        main(["train", *FAST, f"hydra.run.dir={t / 'out'}"])
    except SystemExit as done:
        assert done.code in (0, None)
    return ["train", "train.resume=force", "train.strategy=fsdp"]


LM_TEXT = ["task=lm_text", "teacher=tiny-llama", "student=tiny-llama-half"]
LM_CASES = {
    "lm-unknown-task": lambda t: ["train", *LM, "task.name=lm_nope"],
    "lm-text-files-unset": lambda t: ["train", *LM_TEXT],
    "lm-text-file-missing": lambda t: ["train", *LM_TEXT, "task.train_file=/no/such.txt", "task.eval_file=/x.txt"],
    "lm-text-empty": lambda t: ["train", *_lm_text(t, "empty.txt", "\n\n  \n")],
    "lm-text-column": lambda t: ["train", *_lm_text(t, "texts.jsonl", '{"body": "a text"}\n')],
    "lm-not-causal": lambda t: ["train", "task=lm_sst2"],
    "lm-not-causal-folder": lambda t: ["train", *LM, f"teacher.path={_three_label_teacher(t)}",
                                       f"teacher.tokenizer={TINY_TOKENIZER}"],
    "lm-prompt-fraction": lambda t: ["train", *LM, "task.prompt_fraction=1.5"],
    "lm-block-size": lambda t: ["train", *LM, "task.block_size=1000"],
    "lm-generation-length": lambda t: ["train", *LM, "task.max_new_tokens=500"],
    "lm-keep-layers": lambda t: ["train", *LM, "student.init=from_teacher", "student.keep_layers=[0,9]"],
    "lm-from-teacher-choice": lambda t: ["train", *LM, "student.init=from_teacher"],
    "from-teacher-glue-range": lambda t: ["train", "student=from-teacher"],
    "lm-llama-on-glue": lambda t: ["train", "teacher=tiny-llama"],
    "lm-tokenizers-differ": lambda t: ["train", *LM, f"student.tokenizer={_tokenizer_other(t)}"],
    "lm-cache-uld": lambda t: ["train", *LM, "cache.enabled=true", "loss.kd=uld", f"cache.dir={t / 'cache'}"],
    "lm-cache-too-large": lambda t: ["train", *LM, "cache.enabled=true", "cache.max_gb=1e-6",
                                     f"cache.dir={t / 'cache'}"],
    "lm-uld-with-features": lambda t: ["train", *LM, f"student.tokenizer={_tokenizer_other(t)}", "loss.kd=uld"],
    "lm-vocab-too-small": lambda t: ["train", *LM, "teacher=hf", f"teacher.path={_short_vocab_teacher(t)}"],
    "paper-layout-not-lm": lambda t: ["table", _glue_run(t), "--layout", "paper"],
}  # fmt: skip

# id -> function(tmp) returning CLI args (or raising the error itself).
CASES = {
    "unknown-task-group": lambda t: ["train", "task=nope"],
    "unknown-task-name": lambda t: ["train", "task.name=nope"],
    "data-dir-unset": lambda t: ["train", "task=mrpc"],
    "data-dir-missing": lambda t: ["train", "task=mrpc", "task.data_dir=/does/not/exist"],
    "split-missing": lambda t: ["train", "task=mrpc", f"task.data_dir={_glue(t, 'MRPC')}", "--no-dev"],
    "tsv-columns": lambda t: ["train", _data_dir(t, "SST-2", train=SST2_HEADER + SHORT_ROW)],
    "label-outside-set": lambda t: ["train", _data_dir(t, "SST-2", train=SST2_HEADER + "x\t7\n")],
    "empty-split": lambda t: ["train", _data_dir(t, "SST-2", dev=SST2_HEADER)],
    "stsb-score": lambda t: ["train", "task=stsb", _data_dir(t, "STS-B", train=STSB_BAD)],
    "model-missing": lambda t: ["train", "teacher.path=/no/such/model"],
    "model-not-hf": lambda t: ["train", f"teacher.path={t}"],
    "real-model-not-fetched": lambda t: ["train", "teacher=mpnet-base", f"teacher.path={t}/assets/mpnet-base"],
    "tokenizer-missing": lambda t: ["train", "student.tokenizer=/no/such/tokenizer"],
    "tokens-misaligned": lambda t: ["train", f"teacher.tokenizer={_tokenizer_other(t)}", "teacher.path=null"],
    "mapping-out-of-range": lambda t: ["train", "mapping=explicit", "mapping.pairs=[[1,9]]"],
    "mapping-duplicates": lambda t: ["train", "mapping=explicit", "mapping.pairs=[[1,2],[1,2]]"],
    "mapping-no-pairs": lambda t: ["train", "mapping=explicit", "mapping.pairs=[]"],
    "mapping-weights-count": lambda t: ["train", "mapping.layer_weights=[1,2,3]"],
    "mapping-strategy": lambda t: ["train", "mapping.strategy=diagonal"],
    "negative-weight": lambda t: ["train", "loss.beta=-1"],
    "all-weights-zero": lambda t: ["train", "loss.alpha=0", "loss.beta=0", "loss.gamma=0", "loss.delta=0", "loss.ce=0"],
    "temperature": lambda t: ["train", "loss.temperature=0"],
    "attention-maps-missing": _attention_missing,
    "label-count-mismatch": lambda t: [
        "train",
        f"teacher.path={_three_label_teacher(t)}",
        f"teacher.tokenizer={TINY_TOKENIZER}",
    ],  # fmt: skip
    "max-length": lambda t: ["train", "task.max_length=1000"],
    "heads": lambda t: ["train", "student.hidden_size=33"],
    "learning-rate": lambda t: ["train", "train.lr=0"],
    "batch-size": lambda t: ["train", "train.batch_size=0"],
    "ddp-batch-indivisible": lambda t: _under_torchrun(2, ["train", "train.batch_size=9"]),
    "ddp-multirun": lambda t: _under_torchrun(2, ["train", "-m", "loss.alpha=0,1"]),
    "strategy-unknown": lambda t: ["train", "train.strategy=deepspeed"],
    "fsdp-bfloat-cpu": _fsdp_bf16_without_bf16,
    "fsdp-resume-other-strategy": _resume_other_strategy,
    "unknown-key": lambda t: ["train", "train.foo=1"],
    "wrong-type": lambda t: ["train", "train.batch_size=many"],
    "device": lambda t: ["train", "train.device=cuda"],
    "loss-kd-unknown": lambda t: ["train", "loss.kd=wasserstein"],
    "jsd-beta": lambda t: ["train", "loss.kd=jsd", "loss.jsd_beta=1.5"],
    "balance-unknown": lambda t: ["train", "loss.balance=gradients"],
    "gradnorm-fsdp": lambda t: _under_torchrun(2, ["train", "train.strategy=fsdp", "loss.balance=gradnorm"]),
    "balance-no-reference": lambda t: ["train", "loss.balance=magnitude", "loss.alpha=0", "loss.ce=0"],
    "contrast-temperature": lambda t: ["train", "loss.contrast=1", "loss.contrast_temperature=0"],
    "loss-attn-unknown": lambda t: ["train", "loss.attn=heads"],
    "relations-list": lambda t: ["train", "loss.relations=[qk]"],
    "relation-heads": lambda t: ["train", "loss.attn=relations", "loss.relation_heads=3"],
    "relations-cache": lambda t: ["train", "loss.attn=relations", "cache.enabled=true", f"cache.dir={t / 'cache'}"],
    "relations-no-qkv": _qkv_missing,
    "logger": lambda t: ["train", "train.logger=wandb"],
    "nonfinite-policy": lambda t: ["train", "train.on_nonfinite=ignore"],
    "run-dir-occupied": _finished_run,
    "resume-nothing": lambda t: ["train", "train.resume=true"],
    "eval-not-a-run": lambda t: ["eval", f"run_dir={t}"],
    "eval-no-run-dir": lambda t: ["eval", "task.data_dir=x"],
    "table-no-runs": lambda t: ["table", str(t)],
    "unknown-verb": lambda t: ["frobnicate"],
    **LM_CASES,
    **PRUNE_CASES,  # issue 27: student.init=pruned (tests/prune_cases.py)
    **MORE_CASES,  # issue 20: ranges, paths, files, verbs, signals, live runs, resume (tests/error_cases.py)
    **ISSUE28_CASES,  # issue 28: tracebacks, crashes and silence a new user still met (tests/error_cases_28.py)
}


def test_table_and_cases_match():
    assert len(_table()) >= 120
    assert set(_table()) == set(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_its_message(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FADKD_ASSETS", str(tmp_path / "assets"))
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises((SystemExit, Exception)) as err:
        args = CASES[case](tmp_path)
        args = prepare(args) if args else args
        if "--no-dev" in args:
            args.remove("--no-dev")
            (Path(args[2].split("=", 1)[1]) / "MRPC" / "dev.tsv").unlink()
        if args and args[0] == "train":
            args = ["train", *FAST, f"hydra.run.dir={tmp_path / 'out'}", *args[1:]]  # the case's own last
        try:
            main(args)
        finally:
            end_live()
    out = capsys.readouterr()
    text = " ".join((out.out + out.err + (str(err.value) if not isinstance(err.value, SystemExit) else "")).split())
    if isinstance(err.value, SystemExit):
        assert err.value.code not in (0, None)
        assert "Traceback" not in out.err
    else:
        from fadkd.errors import FadkdError

        assert isinstance(err.value, FadkdError)  # raised in-process: the CLI prints it plainly
    assert " ".join(_table()[case].split()) in text
