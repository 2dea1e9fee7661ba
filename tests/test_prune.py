"""Students pruned in width and depth by importance (fadkd/models/prune.py), on tiny models built from config."""

import json
import re
import shlex
import subprocess

import pytest
import torch
from conftest import ROOT
from test_readme import readme_commands
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    LlamaConfig,
    LlamaForCausalLM,
    MPNetConfig,
    MPNetForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from fadkd.cli import main
from fadkd.config.checks import ConfigError
from fadkd.config.prune import PruneConfig
from fadkd.config.schema import Config, LossConfig, MappingConfig, ModelConfig, TaskConfig, TrainConfig
from fadkd.losses.projections import select_channels
from fadkd.models.load import ModelError
from fadkd.models.prune import prune
from fadkd.models.prune_shape import target_shape
from fadkd.models.shrink import kept_pairs
from fadkd.run.train import train

SHAPE = dict(vocab_size=60, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)


def encoder(kind: str):
    torch.manual_seed(0)
    if kind == "bert":
        return BertForSequenceClassification(BertConfig(**SHAPE, num_labels=2)).eval()
    if kind == "roberta":
        return RobertaForSequenceClassification(RobertaConfig(**SHAPE, num_labels=2, max_position_embeddings=40)).eval()
    return MPNetForSequenceClassification(MPNetConfig(**SHAPE, num_labels=2)).eval()


def llama(tied: bool = True):
    torch.manual_seed(0)
    config = LlamaConfig(**SHAPE, num_key_value_heads=2, tie_word_embeddings=tied)  # groups of 2 query heads
    return LlamaForCausalLM(config).eval()


def calibration(n: int = 3):
    torch.manual_seed(1)
    out = []
    for _ in range(n):
        mask = torch.ones(4, 9, dtype=torch.long)
        mask[1, 6:] = 0  # padding never counts
        out.append({"input_ids": torch.randint(5, 60, (4, 9)), "attention_mask": mask})
    return out


def outputs(model, batch):
    with torch.no_grad():
        out = model.eval()(**batch, output_hidden_states=True)
    return out.logits, out.hidden_states


@pytest.mark.parametrize("kind", ["bert", "roberta", "mpnet", "llama"])
def test_keeping_everything_is_the_teacher_exactly(kind):
    teacher = llama() if kind == "llama" else encoder(kind)
    student, report = prune(teacher, PruneConfig(), calibration())
    batch = calibration(1)[0]
    (lt, ht), (ls, hs) = outputs(teacher, batch), outputs(student, batch)
    assert torch.equal(lt, ls) and all(torch.equal(a, b) for a, b in zip(ht, hs))
    assert report["parameters"]["student"] == report["parameters"]["teacher"]


@pytest.mark.parametrize("kind", ["bert", "roberta", "mpnet", "llama"])
def test_a_pruned_model_reloads_with_its_new_config(kind, tmp_path):
    teacher = llama() if kind == "llama" else encoder(kind)
    hidden = 16 if kind != "llama" else 20  # encoders: hidden = heads × head_dim (8); Llama keeps head_dim apart
    student, report = prune(teacher, PruneConfig(layers=2, heads=2, ffn=40, hidden=hidden), calibration())
    student.save_pretrained(tmp_path)
    auto = AutoModelForCausalLM if kind == "llama" else AutoModelForSequenceClassification
    again = auto.from_pretrained(tmp_path)
    c = again.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (2, hidden, 2, 40)
    if kind == "llama":
        assert (c.head_dim, c.num_key_value_heads) == (8, 1)
        assert again.lm_head.weight.data_ptr() == again.model.embed_tokens.weight.data_ptr()  # still tied
    batch = calibration(1)[0]
    assert torch.equal(outputs(again, batch)[0], outputs(student, batch)[0])
    params = report["parameters"]
    assert params["student"]["total"] == sum(p.numel() for p in again.parameters()) < params["teacher"]["total"]
    assert c.fadkd_pruned["teacher_layers"] == report["kept"]["layers"]


def _silence_llama(model):
    """Layer 1 group 0 (query heads 0, 1) and neurons 0-9 output nothing; channels 3, 7 are zero in every norm;
    layer 2 adds nothing to its input (1 − cos = 0): each is the least important of its kind."""
    layers, d = model.model.layers, 8
    with torch.no_grad():
        layers[1].self_attn.v_proj.weight[0:d] = 0  # the group's value head: its query heads output 0
        for layer in layers:
            layer.mlp.up_proj.weight[0:10] = 0
        for name, module in model.named_modules():
            if name.endswith("norm"):
                module.weight[[3, 7]] = 0
        layers[2].self_attn.o_proj.weight.zero_()
        layers[2].mlp.down_proj.weight.zero_()


def test_the_least_important_units_go_first():
    model = llama()
    _silence_llama(model)
    _, report = prune(model, PruneConfig(layers=2, heads=2, ffn=54, hidden=30), calibration())
    kept = report["kept"]
    assert kept["layers"] == [0, 1]  # layer 2 changes nothing
    assert kept["kv_heads"][1] == [1] and kept["heads"][1] == [2, 3]  # a whole group goes
    assert all(neurons == list(range(10, 64)) for neurons in kept["ffn"].values())
    assert kept["hidden"] == [c for c in range(32) if c not in (3, 7)]
    assert report["importance"]["layers"][2] == pytest.approx(0, abs=1e-6)


def test_an_encoders_heads_are_ranked_by_their_output():
    model = encoder("bert")
    with torch.no_grad():
        model.bert.encoder.layer[0].attention.self.value.weight[8:16] = 0  # head 1
        model.bert.encoder.layer[0].attention.self.value.bias[8:16] = 0
    _, report = prune(model, PruneConfig(heads=3, hidden=24), calibration())
    assert report["kept"]["heads"][0] == [0, 2, 3]
    assert report["importance"]["heads"][0][1] == pytest.approx(0, abs=1e-6)


def test_mpnet_keeps_one_head_set_for_every_layer():
    _, report = prune(encoder("mpnet"), PruneConfig(heads=2, hidden=16), calibration())
    heads = list(report["kept"]["heads"].values())
    assert all(h == heads[0] for h in heads)


@pytest.mark.parametrize(
    "model, prune_cfg, message",
    [
        (llama(), PruneConfig(heads=5), "the teacher has only 4 attention heads"),
        (llama(), PruneConfig(hidden=64), "only 32 hidden channels"),
        (llama(), PruneConfig(ffn=65), "only 64 feed-forward neurons"),
        (llama(), PruneConfig(heads=3), "would split a key/value group"),
        (llama(), PruneConfig(layers=[0, 3]), "the teacher has 3 layers"),
        (llama(), PruneConfig(layers=4), "keep at most 3"),
        (encoder("bert"), PruneConfig(heads=2), "would change the head size from 8 to 16"),
        (encoder("bert"), PruneConfig(hidden=30), "does not divide the width"),
    ],
)
def test_a_shape_the_teacher_cannot_take_is_refused(model, prune_cfg, message):
    with pytest.raises(ModelError, match=message):
        target_shape(model.config, prune_cfg)


def test_an_unknown_family_is_refused():
    with pytest.raises(ModelError, match="does not know the model family 'gpt2'"):
        target_shape(GPT2Config(n_layer=2, n_embd=32, n_head=2), PruneConfig())


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: ModelConfig("s", prune=PruneConfig(heads=2)), "prune.* is set but init=random"),
        (lambda: ModelConfig("s", init="pruned", keep_layers=[0, 1]), "keep_layers belongs to init=from_teacher"),
        (lambda: ModelConfig("s", init="pruned", path="/some/folder"), "would be ignored"),
        (lambda: PruneConfig(layers=[2, 1]), "in increasing order"),
        (lambda: PruneConfig(layers=0), "keep at least one layer"),
        (lambda: PruneConfig(heads=0), "must be a positive whole number"),
        (lambda: PruneConfig(calibration_rows=0), "calibration_rows=0"),
    ],
)
def test_bad_prune_config(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_channel_projections_start_as_the_selection():
    loss = torch.nn.Module()
    loss.projections = torch.nn.ModuleDict({"s1_t1": torch.nn.Linear(3, 6)})
    assert select_channels(loss, [1, 4, 5]) == 1
    x = torch.randn(2, 3)
    y = loss.projections["s1_t1"](x)
    assert torch.equal(y[:, [1, 4, 5]], x) and not y[:, [0, 2, 3]].any()
    with pytest.raises(ConfigError, match="projection_init=channels"):
        Config(loss=LossConfig(beta=1, projection_init="channels"))


TEACHER = ModelConfig("t", num_layers=4, hidden_size=32, num_heads=4, intermediate_size=64, init_seed=1, dropout=0.0)


def pruned_run(prune_cfg: PruneConfig) -> Config:
    return Config(
        teacher=TEACHER,
        student=ModelConfig("s", init="pruned", prune=prune_cfg, dropout=0.0),
        task=TaskConfig(data_dir="sample", max_train_samples=32, max_eval_samples=8),
        mapping=MappingConfig(strategy="kept", include_embeddings=True),
        loss=LossConfig(alpha=1, beta=1, gamma=0, delta=0, projection_init="channels"),
        train=TrainConfig(max_steps=2, batch_size=8, log_every=1, save_student=False),
    )


def test_a_run_prunes_maps_the_kept_layers_and_reports(tmp_path):
    cfg = pruned_run(PruneConfig(layers=2, heads=2, ffn=32, hidden=16, calibration_rows=16))
    train(cfg, tmp_path)
    report = json.loads((tmp_path / "prune_report.json").read_text())
    kept = report["kept"]["layers"]
    assert cfg.student.prune.layers == kept and len(kept) == 2
    assert kept_pairs(cfg) == [[1, kept[0] + 1], [2, kept[1] + 1]]
    assert report["calibration"]["tokens"] > 0 and report["seconds"] > 0
    assert set(report["dev"]) == {"teacher", "student_after_pruning"}
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "pruned").config.hidden_size == 16
    first = json.loads((tmp_path / "steps.jsonl").open().readline())
    assert f"cos/s2_t{kept[1] + 1}" in first


def test_a_run_that_keeps_everything_starts_at_the_teacher(tmp_path):
    cfg = pruned_run(PruneConfig(calibration_rows=8))
    cfg.loss = LossConfig(alpha=1, beta=1, gamma=1, delta=0)  # no projections: the widths are equal
    train(cfg, tmp_path)
    first = json.loads((tmp_path / "steps.jsonl").open().readline())
    assert first["cos"] < 1e-5 and first["mse"] < 1e-8 and first["kd"] < 1e-7  # student = teacher at step 0


def _docs_commands() -> list[str]:
    text = (ROOT / "docs" / "students-from-the-teacher.md").read_text()
    section = text.split("## A student pruned in width and depth")[1].split("\n## ")[0]
    return [c.removeprefix(".venv/bin/fadkd ") for c in readme_commands(section)]


@pytest.mark.slow
def test_the_docs_commands_run_or_compose(tmp_path, monkeypatch, capsys):
    """The tiny commands run verbatim (the fine-tune reads the folder the first one wrote); the real-model ones,
    their placeholders filled, compose into the schema."""
    monkeypatch.chdir(tmp_path)
    found = _docs_commands()
    commands = [c for c in found if not c.startswith("make ")]
    assert len(commands) == 5
    makes = [shlex.split(c, comments=True) for c in found if c.startswith("make ")]
    assert len(makes) == 2  # make quality-pruned, its default shape and the smaller one: they compose
    for make in makes:
        done = subprocess.run([*make, "-n"], cwd=ROOT, capture_output=True, text=True)
        printed = " ".join(done.stdout.replace("\\\n", " ").split())
        assert done.returncode == 0 and "--student pruned --student-extra student.prune." in printed, done.stderr
    for command in commands:
        args = shlex.split(re.sub(r"<[^>]+>", "/placeholder", command))
        if "<" in command:
            main([args[0], "--cfg", "job", *args[1:]])
            assert "init: pruned" in capsys.readouterr().out
        else:
            main(args)
    assert (tmp_path / "outputs" / "pruned-tiny-finetuned" / "metrics.json").is_file()
    report = json.loads((tmp_path / "outputs" / "pruned-tiny-lm" / "prune_report.json").read_text())
    assert report["shape"]["student"]["kv_heads"] == 1 and "perplexity" in report["dev"]["student_after_pruning"]
