"""What a user reads (issue 28): pasteable resume commands, --help's columns, the demo's folder guard,
plot/report --out, dev_metric.png panels per metric family, one table per task family, no empty cli.log."""

import json
import shlex
import subprocess

import pytest
from conftest import ROOT
from hydra.core.override_parser.overrides_parser import OverridesParser

from fadkd.cli import _usage, main
from fadkd.report import plots
from fadkd.report.summary import path_override

FAST = ["task.max_train_samples=16", "task.max_eval_samples=8", "train.max_steps=1", "train.batch_size=8"]


@pytest.mark.parametrize("path", ["/tmp/plain-run", "/tmp/a b é", "/tmp/it's", "/tmp/0_loss.alpha=1,x=2", "/tmp/$HOME"])
def test_run_dir_in_a_printed_command_reads_back_as_the_same_path(path):
    (arg,) = shlex.split(path_override("hydra.run.dir", path))  # what the shell hands fadkd
    (override,) = OverridesParser.create().parse_overrides([arg])  # what Hydra makes of it
    assert override.value() == path


def test_verb_descriptions_start_in_one_column():
    lines = [line for line in _usage().splitlines() if line.startswith("  ") and not line.startswith("   ")]
    starts = {len(line) - len(line.split(None, 1)[1]) for line in lines}
    assert len(lines) == 6 and len(starts) == 1


def test_demo_refuses_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    proc = subprocess.run(["bash", "scripts/demo_kd.sh", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "is not a folder this demo wrote (it holds: precious.txt)" in proc.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_lm_dev_metrics_get_one_panel_per_family(tmp_path, monkeypatch):
    names = ["perplexity", "bleu", "rouge_1", "rouge_2", "rouge_l", "cer", "bleu_vs_teacher", "rouge_l_vs_teacher",
             "cer_vs_teacher", "tokens_per_s", "score_tokens_per_s", "params"]  # fmt: skip
    evals = [{"step": s, **{n: float(s) for n in names}} for s in (1, 2)]
    saved = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: saved.setdefault("axes", fig.axes))
    plots.plot_dev_metric(tmp_path, evals, {"main_metric": "perplexity"}, tmp_path)
    titles = [ax.get_ylabel() for ax in saved["axes"]]
    assert titles == ["perplexity (main: perplexity)", "BLEU", "ROUGE", "CER", "speed (tokens/s)"]
    assert max(len(ax.get_lines()) for ax in saved["axes"]) <= 4  # ROUGE: 1, 2, L and L against the teacher


def test_run_has_no_empty_log_and_plot_report_write_to_out(tmp_path, capsys):
    run = tmp_path / "run"
    main(["train", *FAST, "train.num_threads=1", f"hydra.run.dir={run}"])
    assert not (run / "cli.log").exists()
    main(["plot", str(run), "--out", str(tmp_path / "figs")])
    main(["report", str(run), "--out", str(tmp_path / "rep")])
    assert {p.name for p in (tmp_path / "figs").iterdir()} >= {"loss_terms.png", "dev_metric.png"}
    assert (tmp_path / "rep" / "report.md").is_file() and (tmp_path / "rep" / "plots" / "dev_metric.png").is_file()
    assert not (run / "plots").exists() and not (run / "report.md").exists()


def test_glue_and_lm_runs_get_a_table_each(tmp_path, capsys):
    lm = {n: 1.0 for n in ("perplexity", "bleu", "rouge_1", "rouge_2", "rouge_l", "cer", "tokens_per_s")}
    for name, metrics in (("g", {"task": "sst2", "main_metric": "accuracy", "student": {"accuracy": 0.8}}),
                          ("l", {"task": "lm_sst2", "main_metric": "perplexity", "student": lm})):  # fmt: skip
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    main(["table", str(tmp_path), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "1 GLUE run(s)" in out and "1 causal-LM run(s)" in out and "…" not in out
    glue, causal = out.split("1 causal-LM run(s)")
    assert "accuracy" in glue and "perplexity" not in glue and "rouge_2" not in causal  # the files hold it
    assert "rouge_2" in (tmp_path / "out" / "results.md").read_text()
