"""Tests for fadkd.data.glue: parsing the GLUE TSV layouts, error messages, metrics."""

from __future__ import annotations

import codecs
import math
import os
import shutil
from collections import Counter
from pathlib import Path

import datasets
import pytest

from fadkd.data.glue import compute_metrics, load_split
from fadkd.data.glue_tasks import TASKS, TaskError, get_task
from fadkd.errors import FadkdError

FIXTURES = Path(__file__).parent / "fixtures" / "glue"
SAMPLE = Path(__file__).parents[1] / "fadkd" / "assets" / "glue_sample"
REAL_GLUE = Path(os.environ.get("FADKD_GLUE_DIR", Path(__file__).parents[1].parent / "shared/data/glue"))

# (task, split) -> number of data rows in the fixture files
FIXTURE_ROWS = {
    ("cola", "train"): 20,
    ("cola", "dev"): 12,
    ("sst2", "train"): 20,
    ("sst2", "dev"): 12,
    ("mrpc", "train"): 20,
    ("mrpc", "dev"): 12,
    ("stsb", "train"): 20,
    ("stsb", "dev"): 12,
    ("qqp", "train"): 10,
    ("qqp", "dev"): 8,
    ("mnli", "train"): 10,
    ("mnli", "dev"): 8,
    ("mnli_mm", "train"): 10,
    ("mnli_mm", "dev"): 8,
    ("qnli", "train"): 20,
    ("qnli", "dev"): 12,
    ("rte", "train"): 20,
    ("rte", "dev"): 12,
    ("wnli", "train"): 20,
    ("wnli", "dev"): 12,
}


def copy_task(tmp_path: Path, folder: str) -> Path:
    """Copy one fixture task folder so a test can corrupt it; returns the data dir."""
    shutil.copytree(FIXTURES / folder, tmp_path / folder)
    return tmp_path


def replace_line(path: Path, line_no: int, new_line: str) -> None:
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[line_no - 1] = new_line
    path.write_text("\n".join(lines), encoding="utf-8")


# ---------------------------------------------------------------- registry


def test_registry_is_consistent():
    assert set(TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "mnli_mm", "qnli", "rte", "wnli"}
    for name, task in TASKS.items():
        assert task.name == name
        assert task.main_metric in task.metrics
        assert set(task.splits) == {"train", "dev"}
        assert task.text_columns in (("sentence",), ("sentence1", "sentence2"))
    assert {t: TASKS[t].main_metric for t in ("cola", "stsb", "mrpc", "qqp", "rte")} == {
        "cola": "matthews_correlation",
        "stsb": "pearson",
        "mrpc": "f1",
        "qqp": "f1",
        "rte": "accuracy",
    }
    assert TASKS["mnli"].splits["dev"] == "dev_matched.tsv"
    assert TASKS["mnli_mm"].splits["dev"] == "dev_mismatched.tsv"
    assert TASKS["mnli"].label_names == ("entailment", "neutral", "contradiction")
    assert TASKS["rte"].label_names == ("entailment", "not_entailment")
    assert hash(TASKS["sst2"]) == hash(TASKS["sst2"])  # usable as dict key / in sets


def test_num_labels_and_regression():
    assert TASKS["stsb"].is_regression and TASKS["stsb"].num_labels == 1
    assert not TASKS["mnli"].is_regression and TASKS["mnli"].num_labels == 3
    assert TASKS["sst2"].num_labels == 2


@pytest.mark.parametrize(
    "alias, name", [("sst2", "sst2"), ("SST-2", "sst2"), ("STS-B", "stsb"), ("mnli-mm", "mnli_mm"), (" CoLA ", "cola")]
)
def test_get_task_accepts_folder_spellings(alias, name):
    assert get_task(alias) is TASKS[name]


def test_unknown_task_lists_known_tasks():
    with pytest.raises(TaskError, match=r"unknown GLUE task 'squad'.*cola.*sst2.*wnli") as info:
        get_task("squad")
    assert isinstance(info.value, FadkdError)


# ---------------------------------------------------------------- fixtures


@pytest.mark.parametrize("task_name, split", sorted(FIXTURE_ROWS))
def test_fixture_parses(task_name, split):
    task = TASKS[task_name]
    data = load_split(task, split, FIXTURES)
    assert isinstance(data, datasets.Dataset)
    assert data.column_names == [*task.text_columns, "label"]
    assert len(data) == FIXTURE_ROWS[task_name, split]
    labels = data["label"]
    if task.is_regression:
        assert all(isinstance(v, float) and 0.0 <= v <= 5.0 for v in labels)
    else:
        assert all(isinstance(v, int) for v in labels)
        assert set(labels) <= set(range(task.num_labels))
        assert data.features["label"].names == list(task.label_names)
    for column in task.text_columns:
        assert all(isinstance(text, str) and text.strip() for text in data[column])


def test_cola_has_no_header_and_no_final_newline():
    raw = (FIXTURES / "CoLA" / "dev.tsv").read_bytes()
    assert not raw.endswith(b"\n")
    first = load_split(TASKS["cola"], "train", FIXTURES)[0]
    assert first == {"sentence": "Our friends won't buy this analysis, let alone the next one we propose.", "label": 1}
    dev = load_split(TASKS["cola"], "dev", FIXTURES)
    assert dev[-1]["sentence"] == raw.decode().split("\t")[-1]  # last row read despite no newline


def test_mrpc_bom_is_stripped_and_bare_quote_kept():
    assert (FIXTURES / "MRPC" / "dev.tsv").read_bytes().startswith(codecs.BOM_UTF8)
    dev = load_split(TASKS["mrpc"], "dev", FIXTURES)
    assert dev[0]["sentence2"] == '" The foodservice pie business does not fit our long-term growth strategy .'
    assert dev[0]["label"] == 1


def test_qnli_rows_starting_with_quote_kept():
    dev = load_split(TASKS["qnli"], "dev", FIXTURES)
    assert dev[-1]["sentence2"].startswith('" Luis Walter Alvarez')
    assert dev[-2]["sentence2"].startswith('" ')


def test_sst2_keeps_trailing_space():
    first = load_split(TASKS["sst2"], "dev", FIXTURES)[0]
    assert first["sentence"] == "it 's a charming and often affecting journey . "


def test_stsb_scores_are_floats_across_genres():
    raw = (FIXTURES / "STS-B" / "dev.tsv").read_text(encoding="utf-8")
    assert "\tmain-forums\t" in raw
    dev = load_split(TASKS["stsb"], "dev", FIXTURES)
    assert dev[0]["label"] == 5.0
    forum = dev[6]
    assert forum["sentence1"].startswith("You'll need to check the particular policies of each publisher")
    assert forum["sentence2"] == "If you need to publish the book and you have found one publisher that allows it."
    assert forum["label"] == 3.0


def test_string_labels_map_to_hub_indices():
    assert load_split(TASKS["rte"], "train", FIXTURES)[0]["label"] == 1  # not_entailment
    mnli = load_split(TASKS["mnli"], "train", FIXTURES)
    assert mnli["label"][:3] == [2, 0, 1]  # contradiction, entailment, neutral
    mismatched = load_split(TASKS["mnli_mm"], "dev", FIXTURES)
    assert mismatched[1]["sentence1"] == "The chapter describes early weaving tools."


def test_max_samples_takes_first_rows():
    full = load_split(TASKS["rte"], "train", FIXTURES)
    head = load_split(TASKS["rte"], "train", FIXTURES, max_samples=3)
    assert head.to_dict() == full.select(range(3)).to_dict()
    assert len(load_split(TASKS["rte"], "train", FIXTURES, max_samples=1000)) == 20


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_max_samples_must_be_positive_int(bad):
    with pytest.raises(TaskError, match="max_samples must be a positive integer"):
        load_split(TASKS["rte"], "train", FIXTURES, max_samples=bad)


def test_demo_sample_loads():
    task = TASKS["sst2"]
    assert len(load_split(task, "train", SAMPLE)) == 400
    assert len(load_split(task, "dev", SAMPLE)) == 120


# ---------------------------------------------------------------- errors


def test_wrong_column_count_names_file_and_line(tmp_path):
    data_dir = copy_task(tmp_path, "MRPC")
    path = data_dir / "MRPC" / "dev.tsv"
    replace_line(path, 5, "1\t123\t456\tonly one sentence")
    with pytest.raises(TaskError, match=r"expected 5 tab-separated columns, found 4") as info:
        load_split(TASKS["mrpc"], "dev", data_dir)
    assert f"{path}:5:" in str(info.value)


def test_extra_tab_in_headerless_cola(tmp_path):
    data_dir = copy_task(tmp_path, "CoLA")
    path = data_dir / "CoLA" / "train.tsv"
    replace_line(path, 3, "gj04\t1\t\tOne more\tsplit sentence.")
    with pytest.raises(TaskError, match=r"train\.tsv:3: expected 4 tab-separated columns, found 5"):
        load_split(TASKS["cola"], "train", data_dir)


def test_unknown_label_names_file_line_and_allowed(tmp_path):
    data_dir = copy_task(tmp_path, "RTE")
    path = data_dir / "RTE" / "dev.tsv"
    replace_line(path, 4, "2\tA man sleeps.\tA man is awake.\tcontradiction")
    with pytest.raises(TaskError) as info:
        load_split(TASKS["rte"], "dev", data_dir)
    message = str(info.value)
    assert f"{path}:4:" in message
    assert "'contradiction'" in message and "'entailment', 'not_entailment'" in message


def test_bad_stsb_score(tmp_path):
    data_dir = copy_task(tmp_path, "STS-B")
    path = data_dir / "STS-B" / "train.tsv"
    line = path.read_text(encoding="utf-8").split("\n")[1].rsplit("\t", 1)[0] + "\t7.5"
    replace_line(path, 2, line)
    with pytest.raises(TaskError, match=r"train\.tsv:2: score '7\.5'.*between 0 and 5"):
        load_split(TASKS["stsb"], "train", data_dir)


def test_header_without_expected_columns(tmp_path):
    data_dir = copy_task(tmp_path, "SST-2")
    replace_line(data_dir / "SST-2" / "dev.tsv", 1, "text\tlabel")
    with pytest.raises(TaskError, match=r"dev\.tsv:1: header lacks column\(s\) \['sentence'\]"):
        load_split(TASKS["sst2"], "dev", data_dir)


def test_empty_split(tmp_path):
    (tmp_path / "WNLI").mkdir()
    (tmp_path / "WNLI" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n", encoding="utf-8")
    (tmp_path / "WNLI" / "train.tsv").write_text("", encoding="utf-8")
    with pytest.raises(TaskError, match="has no data rows"):
        load_split(TASKS["wnli"], "dev", tmp_path)
    with pytest.raises(TaskError, match="file is empty"):
        load_split(TASKS["wnli"], "train", tmp_path)


def test_not_utf8(tmp_path):
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "dev.tsv").write_bytes(b"sentence\tlabel\ncaf\xe9 \t1\n")
    with pytest.raises(TaskError, match="not valid UTF-8"):
        load_split(TASKS["sst2"], "dev", tmp_path)


def test_missing_data_dir(tmp_path):
    with pytest.raises(TaskError, match=r"does not exist.*<data dir>/SST-2/train\.tsv"):
        load_split(TASKS["sst2"], "train", tmp_path / "nowhere")


def test_missing_task_folder_lists_present_folders(tmp_path):
    data_dir = copy_task(tmp_path, "CoLA")
    pattern = r"MNLI not found.*<data dir>/MNLI/dev_matched\.tsv.*folders in .*: CoLA"
    with pytest.raises(TaskError, match=pattern):
        load_split(TASKS["mnli"], "dev", data_dir)


def test_missing_split_file_lists_files(tmp_path):
    (tmp_path / "QNLI").mkdir()
    shutil.copy(FIXTURES / "QNLI" / "dev.tsv", tmp_path / "QNLI" / "dev.tsv")
    with pytest.raises(TaskError, match=r"train\.tsv not found: split 'train'.*files in .*QNLI: dev\.tsv"):
        load_split(TASKS["qnli"], "train", tmp_path)


def test_unknown_split():
    with pytest.raises(TaskError, match=r"no split 'test'; available splits: train, dev"):
        load_split(TASKS["sst2"], "test", FIXTURES)


# ---------------------------------------------------------------- Hub path (offline, faked)


def fake_hub(monkeypatch, features: datasets.Features, rows: dict, calls: list):
    def load_dataset(path, config, split):
        calls.append((path, config, split))
        return datasets.Dataset.from_dict(rows, features=features)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)


def test_hub_columns_renamed(monkeypatch):
    text = datasets.Value("string")
    mnli_labels = datasets.ClassLabel(names=["entailment", "neutral", "contradiction"])
    features = datasets.Features(
        {"premise": text, "hypothesis": text, "label": mnli_labels, "idx": datasets.Value("int32")}
    )
    rows = {"premise": ["a", "b", "c"], "hypothesis": ["x", "y", "z"], "label": [0, 2, 1], "idx": [0, 1, 2]}
    calls: list = []
    fake_hub(monkeypatch, features, rows, calls)
    data = load_split(TASKS["mnli_mm"], "dev", None, max_samples=2)
    assert calls == [("nyu-mll/glue", "mnli", "validation_mismatched")]
    assert data.to_dict() == {"sentence1": ["a", "b"], "sentence2": ["x", "y"], "label": [0, 2]}
    assert data.features == load_split(TASKS["mnli"], "train", FIXTURES).features


def test_hub_label_mismatch_is_reported(monkeypatch):
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["positive", "negative"])}
    )
    fake_hub(monkeypatch, features, {"sentence": ["s"], "label": [0]}, [])
    with pytest.raises(TaskError, match="labels are"):
        load_split(TASKS["sst2"], "train", None)


def test_hub_failure_suggests_local_dir(monkeypatch):
    def load_dataset(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(TaskError, match=r"ConnectionError: offline.*local GLUE data directory"):
        load_split(TASKS["cola"], "dev", None)


# ---------------------------------------------------------------- metrics


def test_binary_metrics_hand_computed():
    preds, labels = [1, 0, 1, 1], [1, 0, 0, 1]  # TP=2 TN=1 FP=1 FN=0
    assert compute_metrics(TASKS["mrpc"], preds, labels) == pytest.approx({"accuracy": 0.75, "f1": 0.8})
    assert compute_metrics(TASKS["sst2"], preds, labels) == {"accuracy": 0.75}
    mcc = compute_metrics(TASKS["cola"], preds, labels)
    assert mcc == pytest.approx({"matthews_correlation": 2 / math.sqrt(3 * 2 * 2 * 1)})
    assert all(type(v) is float for v in mcc.values())


def test_multiclass_accuracy():
    assert compute_metrics(TASKS["mnli"], [0, 1, 2, 2, 0], [0, 1, 2, 1, 1]) == {"accuracy": 0.6}


def test_regression_metrics_hand_computed():
    # x deviations (-1.5,-.5,.5,1.5), y deviations (-1.75,.25,-.75,2.25): r = 5.5/sqrt(5*8.75);
    # y ranks (1,3,2,4): rho = 1 - 6*2/(4*15) = 0.8
    result = compute_metrics(TASKS["stsb"], [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 5.0])
    assert result == pytest.approx({"pearson": 5.5 / math.sqrt(43.75), "spearmanr": 0.8})
    assert all(type(v) is float for v in result.values())


def test_metrics_reject_logits_and_length_mismatch():
    with pytest.raises(TaskError, match="argmax"):
        compute_metrics(TASKS["sst2"], [[0.1, 0.9], [0.8, 0.2]], [1, 0])
    with pytest.raises(TaskError, match="3 predictions for 2 labels"):
        compute_metrics(TASKS["sst2"], [1, 0, 1], [1, 0])
    with pytest.raises(TaskError, match="class indices"):
        compute_metrics(TASKS["sst2"], [0.4, 1.0], [1, 0])
    with pytest.raises(TaskError, match="no examples"):
        compute_metrics(TASKS["sst2"], [], [])
    column_output = compute_metrics(TASKS["stsb"], [[1.0], [2.0], [3.0]], [1.0, 2.0, 4.0])
    assert column_output["spearmanr"] == pytest.approx(1.0)


# ---------------------------------------------------------------- real GLUE data

REAL_COUNTS = [  # (task, split, rows, rows with label index 1, from the data README)
    ("sst2", "train", 67349, 37569),
    ("sst2", "dev", 872, 444),
    ("cola", "train", 8551, 6023),
    ("cola", "dev", 1043, 721),
    ("mrpc", "train", 3668, 2474),
    ("mrpc", "dev", 408, 279),
    ("stsb", "train", 5749, None),
    ("stsb", "dev", 1500, None),
    ("rte", "train", 2490, 1241),
    ("rte", "dev", 277, 131),
    ("wnli", "train", 635, 312),
    ("wnli", "dev", 71, 31),
    ("qnli", "dev", 5463, 2761),
]


@pytest.mark.skipif(
    not REAL_GLUE.is_dir(), reason=f"real GLUE data not found at {REAL_GLUE} (set FADKD_GLUE_DIR to a GLUE folder)"
)
@pytest.mark.parametrize("task_name, split, rows, ones", REAL_COUNTS)
def test_real_glue_official_counts(task_name, split, rows, ones):
    data = load_split(TASKS[task_name], split, REAL_GLUE)
    assert len(data) == rows
    if ones is not None:
        assert Counter(data["label"])[1] == ones
