"""Students built from the teacher's layers (fadkd/models/shrink.py), the staged recipe and the unlabelled pool."""

import json
import math
import random

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from fadkd.config.checks import ConfigError
from fadkd.config.schema import Config, LossConfig, MappingConfig, ModelConfig, TaskConfig, TrainConfig
from fadkd.data.glue_tasks import TaskError, get_task
from fadkd.data.lm_augment import substitute
from fadkd.data.pool import read_unlabelled, training_rows
from fadkd.losses.spec import feature_scale, prediction_scale
from fadkd.models.load import ModelError, load_classifier
from fadkd.models.shrink import build_classifier_student, kept_pairs
from fadkd.run.step import staged_lr
from fadkd.run.train import train

TEACHER = ModelConfig("t", num_layers=4, hidden_size=32, num_heads=2, intermediate_size=64, init_seed=1, dropout=0.0)


def built(keep, **student) -> Config:
    return Config(
        teacher=TEACHER,
        student=ModelConfig("s", init="from_teacher", keep_layers=keep, **student),
        task=TaskConfig(data_dir="sample", max_train_samples=32, max_eval_samples=8),
        train=TrainConfig(max_steps=2, batch_size=8, save_student=False),
    )


def logits(model, ids):
    return model.eval()(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def test_keeping_every_layer_gives_the_teacher_and_a_subset_saves_as_a_normal_folder(tmp_path):
    teacher = load_classifier(TEACHER, "teacher", 2, 100, None)
    ids = torch.randint(5, 100, (3, 7))
    every = build_classifier_student(built([0, 1, 2, 3]), 2, 100, None)
    assert torch.equal(logits(every, ids), logits(teacher, ids))
    student = build_classifier_student(built([0, 3]), 2, 100, None)
    assert student.config.num_hidden_layers == 2 and student.bert.encoder.layer[1] is not teacher.bert.encoder.layer[3]
    assert torch.equal(
        student.bert.encoder.layer[1].output.dense.weight, teacher.bert.encoder.layer[3].output.dense.weight
    )
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)  # the head comes along
    student.save_pretrained(tmp_path)
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert torch.allclose(logits(again, ids), logits(student, ids), atol=1e-6)


def test_layers_from_another_checkpoint_of_the_same_architecture(tmp_path):
    base = load_classifier(ModelConfig(**{**TEACHER.__dict__, "init_seed": 7}), "x", 2, 100, None)
    base.save_pretrained(tmp_path / "base")
    teacher = load_classifier(TEACHER, "teacher", 2, 100, None)
    student = build_classifier_student(built([1], layers_from=str(tmp_path / "base")), 2, 100, None)
    layer = student.bert.encoder.layer[0].output.dense.weight
    assert torch.equal(layer, base.bert.encoder.layer[1].output.dense.weight)
    assert not torch.equal(layer, teacher.bert.encoder.layer[1].output.dense.weight)
    other = ModelConfig("o", num_layers=2, hidden_size=16, num_heads=2, intermediate_size=32)
    load_classifier(other, "x", 2, 100, None).save_pretrained(tmp_path / "other")
    cfg = built([0], layers_from=str(tmp_path / "other"))
    cfg.teacher = ModelConfig("t", path=str(tmp_path / "base"))
    with pytest.raises(ModelError, match="not the teacher's architecture .*hidden_size"):
        build_classifier_student(cfg, 2, 100, None)


def test_kept_mapping_and_its_errors():
    assert kept_pairs(built([0, 2, 3])) == [[1, 1], [2, 3], [3, 4]]
    with pytest.raises(ModelError, match="student.init=from_teacher"):
        kept_pairs(Config(mapping=MappingConfig(strategy="kept")))
    with pytest.raises(ConfigError, match="layers_from=.* init=random"):
        ModelConfig("s", layers_from="/x")


def test_staged_factors_and_learning_rate():
    assert [feature_scale("staged", 1.0, k, 10, 4) for k in (0, 3, 4, 9)] == [1, 1, 0, 0]
    assert [prediction_scale("staged", k, 4) for k in (0, 3, 4, 9)] == [0, 0, 1, 1]
    assert prediction_scale("linear", 0, 0) == 1.0
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = staged_lr(opt, 0.25, 4, 8)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0, 1, 2 / 3, 1 / 3, 0, 0.5, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    for bad in ({"feature_schedule": "staged"}, {"intermediate_epochs": 1}):
        with pytest.raises(ConfigError, match="intermediate_epochs"):
            LossConfig(**bad)
    with pytest.raises(ConfigError, match="staged trains"):
        LossConfig(alpha=0, ce=0, feature_schedule="staged", intermediate_epochs=1)


def test_staged_run_trains_features_then_prediction(tmp_path):
    cfg = built([0, 3])
    cfg.mapping = MappingConfig(strategy="kept", include_embeddings=True)
    cfg.loss = LossConfig(feature_schedule="staged", intermediate_epochs=1)
    cfg.task = TaskConfig(data_dir="sample", max_train_samples=16, max_eval_samples=8, unlabelled_rows=16)
    cfg.train = TrainConfig(epochs=1, batch_size=8, log_every=1, save_student=False)
    train(cfg, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "steps.jsonl").open()]
    assert [r["prediction_scale"] for r in rows] == [0, 0, 0, 0, 1, 1, 1, 1]  # 32 rows / 8 = 4 steps a stage
    for r in rows:
        features, prediction = r["cos"] + r["mse"] + r["attn"], r["kd"] + r["ce"]
        expected = prediction if r["prediction_scale"] else features
        assert r["loss"] == pytest.approx(expected, rel=1e-5)
    first = rows[0]
    assert first["cos"] == pytest.approx(sum(first[f"cos/{k}"] for k in ("s0_t0", "s1_t1", "s2_t4")), abs=1e-7)
    assert first["cos/s0_t0"] < 1e-6 and first["cos/s1_t1"] < 1e-6  # the embeddings and layer 1 start as the teacher's
    assert first["cos/s2_t4"] > 1e-4  # the skipped layers are what stage 1 teaches


def test_pool_hides_labels_after_the_labelled_rows(tmp_path):
    task = get_task("sst2")
    cfg = Config(task=TaskConfig(data_dir="sample", max_train_samples=10, unlabelled_rows=5))
    rows = training_rows(cfg, task, "fadkd/assets/glue_sample", lambda _: None)
    assert len(rows) == 15 and [r["_index"] for r in rows] == list(range(15))
    assert all(r["label"] in (0, 1) for r in rows[:10]) and all(r["label"] == -100 for r in rows[10:])
    everything = training_rows(Config(task=TaskConfig(data_dir="sample", max_train_samples=15)), task,
                               "fadkd/assets/glue_sample", print)  # fmt: skip
    assert [r["sentence"] for r in rows] == [r["sentence"] for r in everything]
    with pytest.raises(ConfigError, match="max_train_samples, which is unset"):
        TaskConfig(data_dir="sample", unlabelled_rows=5)
    with pytest.raises(ConfigError, match="unlabelled_rows=5 adds rows without hard labels"):
        Config(
            task=TaskConfig(data_dir="sample", max_train_samples=5, unlabelled_rows=5),
            loss=LossConfig(alpha=0, beta=0, gamma=0, delta=0),
        )


def test_unlabelled_files(tmp_path):
    sst2, mrpc = get_task("sst2"), get_task("mrpc")
    (tmp_path / "a.txt").write_text("one text\n\nanother text\n")
    assert read_unlabelled(sst2, tmp_path / "a.txt") == [{"sentence": "one text"}, {"sentence": "another text"}]
    (tmp_path / "b.tsv").write_text("sentence1\tsentence2\tx\nA b\tC d\t1\n")
    assert read_unlabelled(mrpc, tmp_path / "b.tsv") == [{"sentence1": "A b", "sentence2": "C d"}]
    (tmp_path / "c.jsonl").write_text('{"sentence": "ok"}\n{"text": "no"}\n')
    for path, message in (
        ("c.jsonl", "c.jsonl:2: no text field sentence"),
        ("a.txt", None),
        ("b.tsv", "no column sentence"),
        ("missing.tsv", "no such file"),
    ):
        if message:
            with pytest.raises(TaskError, match=message):
                read_unlabelled(sst2, tmp_path / path)
    with pytest.raises(TaskError, match="one text per line"):
        read_unlabelled(mrpc, tmp_path / "a.txt")
    (tmp_path / "d.txt").write_bytes(b"ok\n\xff\n")
    with pytest.raises(TaskError, match="not valid UTF-8"):
        read_unlabelled(sst2, tmp_path / "d.txt")


def test_substitution_follows_the_proposals():
    proposals = [[], [("dog", 0.9), ("bird", 0.1)], [("runs", 1.0)]]
    rng = random.Random(0)
    copies = [substitute("The Cat sat", proposals, 0.0, rng) for _ in range(50)]
    assert all(len(c.split()) == 3 and c.startswith("The ") for c in copies)  # no proposals: kept
    assert all(c != "The Cat sat" for c in copies)  # p = 0 still changes one word
    assert {c.split()[1] for c in copies} <= {"Dog", "Bird", "Cat"}  # capitalisation follows the original
    assert substitute("a b", [[], []], 0.5, rng) == "a b"
    assert math.isclose(sum(c == "The Cat runs" for c in copies) / 50, 0.5, abs_tol=0.25)


@pytest.mark.parametrize("kind", ["roberta", "mpnet"])
def test_roberta_and_mpnet_classifiers_keep_layers_too(tmp_path, kind):
    shape = dict(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64)
    config = AutoConfig.for_model(kind, num_labels=2, pad_token_id=1, max_position_embeddings=40, **shape)
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / "teacher")
    cfg = built([0, 3])
    cfg.teacher = ModelConfig("t", path=str(tmp_path / "teacher"))
    student = build_classifier_student(cfg, 2, 100, None)
    assert student.config.num_hidden_layers == 2 and student.config.model_type == kind
    student.save_pretrained(tmp_path / "student")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student")
    ids = torch.randint(5, 100, (2, 6))
    assert torch.allclose(logits(again, ids), logits(student, ids), atol=1e-6)
    cfg.student = ModelConfig("s", init="from_teacher", keep_layers=[0, 1, 2, 3])
    every = build_classifier_student(cfg, 2, 100, None)
    teacher = AutoModelForSequenceClassification.from_pretrained(tmp_path / "teacher")
    assert torch.allclose(logits(every, ids), logits(teacher, ids), atol=1e-6)  # every layer kept: the teacher
