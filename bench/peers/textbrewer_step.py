"""TextBrewer 0.2.1.post1 GeneralDistiller on the speed protocol's setting (bench/common.py).

Run with the peer's venv (`make bench-peers`): `.venv-textbrewer/bin/python bench/peers/textbrewer_step.py`.

Configured objective, as close to the protocol's full objective as TextBrewer allows:
- KD: `kd_loss_type="ce"`, temperature 2, weight 1. TextBrewer's KD term is soft cross-entropy
  without the tau^2 factor (it has no KL option); the amount of work is the same.
- hard CE: the student is called with `labels`, the adaptor returns `out.loss` as "losses",
  `hard_label_weight=1`.
- hidden MSE on every pair (student s <- teacher 2s): `hidden_mse` with TextBrewer's own
  `["linear", 384, 768]` projection (applied to the student side; its parameters are added to
  the optimizer by `initialize_training`). Hidden-state index = 1-based layer (index 0 is the
  embeddings).
- attention MSE per head on every pair: `attention_mse` (per-head, not summed over heads) on the
  attention probabilities (attention index = layer - 1). Both matches are masked with
  "inputs_mask" (the student's attention mask; the teacher's is identical, token ids align 1:1).
The student is loaded with eager attention: SDPA returns no attention maps.

What a step calls (the body of `BasicDistiller.train_with_num_steps`, without its dataloader
cycling, checkpointing and logging schedule): `distiller.train_on_batch(batch, args)` (teacher
forward under no_grad, student forward, adaptors, `compute_loss`), `distiller.write_loss` (a
no-op writer, log_dir=None), `loss.backward()`, `optimizer.step()`, `optimizer.zero_grad()`.
It runs inside `with distiller:` (teacher eval, student train), as TextBrewer's examples do.
Device and dtype as bench/common.py says (bf16: autocast around train_on_batch, backward outside).
"""

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402
import torch  # noqa: E402
from textbrewer import DistillationConfig, GeneralDistiller, TrainingConfig  # noqa: E402


def adaptor_T(batch, out):
    return {
        "logits": out.logits,
        "hidden": out.hidden_states,
        "attention": out.attentions,
        "inputs_mask": batch["attention_mask"],
    }


def adaptor_S(batch, out):
    return {**adaptor_T(batch, out), "losses": out.loss}


def matches():
    """Per pair: hidden MSE through a Linear 384->768 (the models' widths), and per-head attention MSE."""
    out, (s_width, t_width) = [], common.widths()
    for s, t in common.PAIRS:
        hidden = {"layer_T": t, "layer_S": s, "feature": "hidden", "loss": "hidden_mse", "weight": 1}
        out.append({**hidden, "proj": ["linear", s_width, t_width]})
        out.append({"layer_T": t - 1, "layer_S": s - 1, "feature": "attention", "loss": "attention_mse", "weight": 1})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=common.STEPS)
    ap.add_argument("--warmup", type=int, default=common.WARMUP)
    args = ap.parse_args()
    common.STEPS, common.WARMUP = args.steps, args.warmup
    torch.set_num_threads(common.THREADS)

    data = common.batch()
    teacher, student = common.models(student_attn="eager")
    batch = {"teacher": data["teacher"], "student": {**data["student"], "labels": data["labels"]}}
    model_args = {"output_hidden_states": True, "output_attentions": True}

    out_dir = tempfile.mkdtemp(prefix="textbrewer-")  # TrainingConfig creates it; nothing is saved
    t_config = TrainingConfig(device=str(common.DEVICE), output_dir=out_dir, log_dir=None)
    d_config = DistillationConfig(
        temperature=2, kd_loss_type="ce", kd_loss_weight=1, hard_label_weight=1, intermediate_matches=matches()
    )
    distiller = GeneralDistiller(t_config, d_config, teacher, student, adaptor_T, adaptor_S)
    optimizer = torch.optim.AdamW(student.parameters(), lr=common.LR)
    optimizer, _, _ = distiller.initialize_training(optimizer, None, None, None)  # adds the projections

    def step():
        with common.autocast():
            loss, losses = distiller.train_on_batch(batch, model_args)
        distiller.write_loss(loss, 0, losses)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    with distiller:
        result = common.time_steps(step)
    common.report("textbrewer", result)


if __name__ == "__main__":
    main()
