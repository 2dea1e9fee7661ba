"""Model pairs that differ: padded vocabularies (one tokenizer) and different tokenizers (ULD)."""

import json
from pathlib import Path

import pytest
import torch
from transformers import BertTokenizer, LlamaConfig, LlamaForCausalLM

from fadkd.cli import main
from fadkd.config.schema import ModelConfig
from fadkd.data.lm_text import LmCollator, retokenize
from fadkd.errors import FadkdError
from fadkd.models.lm import prepare_tokenizer
from fadkd.models.load import TINY_TOKENIZER, load_tokenizer

LM = ["task=lm_sst2", "teacher=tiny-llama", "student=tiny-llama-half", "task.max_train_samples=24",
      "task.max_eval_samples=8", "task.eval_samples=4", "task.max_new_tokens=4", "task.block_size=32",
      "train.batch_size=4", "train.max_steps=2", "train.log_every=1"]  # fmt: skip
FEATURES_OFF = ["loss.beta=0", "loss.gamma=0", "loss.delta=0"]


def _tiny_tok():
    return prepare_tokenizer(load_tokenizer(ModelConfig(), "student"), "student")


def _other_tok(tmp: Path) -> Path:
    """A character-level WordPiece tokenizer: another vocabulary (and other positions) than the tiny one."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz.',-0123456789"]
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz.',-0123456789"]
    BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}).save_pretrained(tmp / "other-tok")
    return tmp / "other-tok"


def _padded_teacher(tmp: Path, extra: int) -> Path:
    """A tiny Llama folder with the tiny tokenizer and an output layer `extra` entries longer."""
    tok = _tiny_tok()
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    config = LlamaConfig(vocab_size=len(tok) + extra, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128, tie_word_embeddings=False, **ids)  # fmt: skip
    torch.manual_seed(1)
    LlamaForCausalLM(config).save_pretrained(tmp / "padded")
    tok.save_pretrained(tmp / "padded")
    return tmp / "padded"


def _steps(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "steps.jsonl").read_text().splitlines()]


def test_padded_vocabularies_distil_over_the_shared_real_vocabulary(tmp_path, capsys):
    folder = _padded_teacher(tmp_path, extra=6)
    main(["train", *LM, "teacher=hf", f"teacher.path={folder}", "loss.kd=symmetric_kl",
          f"hydra.run.dir={tmp_path / 'run'}"])  # fmt: skip
    out = " ".join(capsys.readouterr().out.split())
    n = len(_tiny_tok())
    assert f"padded vocabularies: the student's output layer has {n} entries and the teacher's {n + 6}" in out
    assert f"the kd term compares the first {n} logits" in out and "1.0*SKL(τ=2.0)" in out
    steps = _steps(tmp_path / "run")
    assert len(steps) == 2 and all(torch.isfinite(torch.tensor(s["kd"])) and s["kd"] > 0 for s in steps)


def test_different_tokenizers_refused_for_token_level_terms_naming_both(tmp_path, capsys):
    other = _other_tok(tmp_path)
    args = ["train", *LM, f"teacher.tokenizer={other}", *FEATURES_OFF, f"hydra.run.dir={tmp_path / 'run'}"]
    with pytest.raises((SystemExit, FadkdError)):
        main([*args, "loss.kd=jsd"])
    text = " ".join(capsys.readouterr().err.split())
    assert f"the teacher's tokenizer '{other}' (BertTokenizer" in text and str(TINY_TOKENIZER) in text
    assert "loss.kd=uld" in text and not (tmp_path / "run" / "steps.jsonl").exists()


def test_uld_distils_across_tokenizers(tmp_path, capsys):
    other = _other_tok(tmp_path)
    main(["train", *LM, f"teacher.tokenizer={other}", "loss.kd=uld", *FEATURES_OFF,
          f"hydra.run.dir={tmp_path / 'run'}"])  # fmt: skip
    assert "L = 1.0*ULD(τ=2.0) + 1.0*ce" in capsys.readouterr().out
    steps = _steps(tmp_path / "run")
    assert len(steps) == 2 and all(0 < s["kd"] <= 2 for s in steps)


def test_the_teacher_gets_the_same_text_in_its_own_tokens(tmp_path):
    student_tok = _tiny_tok()
    teacher_tok = prepare_tokenizer(BertTokenizer.from_pretrained(_other_tok(tmp_path)), "teacher")
    ids = [student_tok.eos_token_id, *student_tok("a charming film", add_special_tokens=False)["input_ids"],
           student_tok.eos_token_id, *student_tok("it 's good", add_special_tokens=False)["input_ids"]]  # fmt: skip
    theirs = retokenize(ids, student_tok, teacher_tok)
    assert theirs[0] == teacher_tok.eos_token_id and len(theirs) == len(ids)  # cut to the block's length
    assert "[SEP]acharmingfilm[SEP]it'sgood".startswith(teacher_tok.decode(theirs).replace(" ", ""))
    assert len(retokenize(ids[:4], student_tok, teacher_tok)) == 4
    batch = LmCollator(student_tok.pad_token_id, True, retokenize=(student_tok, teacher_tok))(
        [{"input_ids": ids}, {"input_ids": ids[:3]}]
    )
    assert batch.teacher is not batch.student and batch.teacher["attention_mask"].sum(1).tolist() == [len(ids), 3]


def test_glue_tokenizers_that_split_differently_are_refused_before_training(tmp_path, capsys):
    args = ["train", "task.max_train_samples=16", "task.max_eval_samples=8", "train.max_steps=1",
            f"teacher.tokenizer={_other_tok(tmp_path)}", f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    with pytest.raises((SystemExit, FadkdError)):
        main(args)
    text = " ".join(capsys.readouterr().err.split())
    assert (
        "student tokenizer" in text and "and teacher tokenizer" in text and "tokenize this example differently" in text
    )
    assert "teacher dev" not in text and not (tmp_path / "run" / "steps.jsonl").exists()
