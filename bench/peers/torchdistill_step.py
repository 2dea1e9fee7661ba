"""torchdistill 1.1.5 DistillationBox on the speed protocol's setting (bench/common.py).

Run with the peer's venv (`make bench-peers`): `.venv-torchdistill/bin/python bench/peers/torchdistill_step.py`.

Configured objective (a WeightedSumLoss over torchdistill terms fed by its forward hooks), as close
to the protocol's full objective as torchdistill allows:
- KD + hard CE: `KDLoss` on the hooked `classifier` outputs (logits), temperature 2, alpha=1,
  beta=1, i.e. CE(student, labels) + tau^2 * KL(teacher || student).
- hidden MSE on every pair (student s <- teacher 2s): `MSELoss` between the teacher layer's
  output (hook on `mpnet.encoder.layer.{2s-1}.output`) and the student layer's output (hook on
  `bert.encoder.layer.{s-1}.output`) projected by a Linear 384->768. The projections live in an
  auxiliary student wrapper (`Linear4Hidden`, modelled on torchdistill's `Connector4DAB`), so
  they are part of the student and of its optimizer; their outputs are hooked too.
- attention MSE per head on every pair: `MSELoss` between attention probabilities, hooked on
  the teacher's attention-dropout module (its output is the probabilities, identity in eval) and
  on the student's self-attention module (output `(context, probs)`: `ItemLossWrapper` takes [1]).
  The student uses eager attention (SDPA returns no attention maps). The MSEs include padding.

Teacher and student take different input ids (MPNet = MiniLM + 4), so two registered forward
procs pick their part of the batch dict. What a step calls (the loop body of torchdistill's example
`train_one_epoch`): `box.pre_forward_process`, `box.forward_process(batch, labels, {})` (teacher
forward under no_grad, student forward, wrapper's secondary_forward, criterion), then
`box.post_forward_process(loss)` (backward, `optimizer.step()`, `optimizer.zero_grad()`).
Device and dtype as bench/common.py says (bf16: autocast around forward_process, backward outside).
"""

import argparse
import sys
from pathlib import Path

import torch

# torchvision 0.28's only wheel here is a CUDA build: with CPU torch its import fails on these
# missing op schemas (see the speed protocol). Define them before anything imports torchvision
# (torchdistill does, and so does transformers when torchvision is installed). A CUDA torch with its
# own torchvision (the GPU run) registers them itself, and a second definition would be an error.
if torch.version.cuda is None:
    _TV_LIB = torch.library.Library("torchvision", "DEF")
    _TV_LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TV_LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402
from torch import nn  # noqa: E402
from torchdistill.core.distillation import DistillationBox  # noqa: E402
from torchdistill.core.interfaces.registry import register_forward_proc_func  # noqa: E402
from torchdistill.losses.mid_level import SimpleLossWrapper  # noqa: E402
from torchdistill.losses.registry import register_loss_wrapper  # noqa: E402
from torchdistill.models.registry import register_auxiliary_model_wrapper  # noqa: E402
from torchdistill.models.wrapper import AuxiliaryModelWrapper  # noqa: E402


@register_forward_proc_func
def forward_teacher_part(model, sample_batch, targets=None, supp_dict=None, **kwargs):
    return model(**sample_batch["teacher"])


@register_forward_proc_func
def forward_student_part(model, sample_batch, targets=None, supp_dict=None, **kwargs):
    return model(**sample_batch["student"])


@register_auxiliary_model_wrapper
class Linear4Hidden(AuxiliaryModelWrapper):
    """Student + one Linear per hooked hidden state, run in secondary_forward (cf. Connector4DAB)."""

    def __init__(self, student_model, projections, dim_in, dim_out, **kwargs):
        super().__init__()
        self.student_model = student_model
        self.proj = nn.ModuleDict({key: nn.Linear(dim_in, dim_out) for key in projections})
        self.sources = projections  # projection key -> hooked module path

    def forward(self, **inputs):
        return self.student_model(**inputs)

    def secondary_forward(self, io_dict):
        for key, path in self.sources.items():
            self.proj[key](io_dict[path]["output"])


@register_loss_wrapper
class ItemLossWrapper(SimpleLossWrapper):
    """SimpleLossWrapper that takes item `index` of a hooked tuple output (else the value as is)."""

    def __init__(self, low_level_loss, index=1, **kwargs):
        super().__init__(low_level_loss, **kwargs)
        self.index = index

    def extract_value(self, io_dict, path, key):
        value = io_dict[path][key]
        return value[self.index] if isinstance(value, tuple) else value


def mse(s_path, t_path, wrapper="SimpleLossWrapper"):
    """An MSE term between a hooked student output (input) and a hooked teacher output (target)."""
    io = {"input": {"is_from_teacher": False, "module_path": s_path, "io": "output"}}
    io["target"] = {"is_from_teacher": True, "module_path": t_path, "io": "output"}
    loss = {"key": "MSELoss", "kwargs": {"reduction": "mean"}}
    return {"criterion": loss, "criterion_wrapper": {"key": wrapper, "kwargs": io}, "weight": 1.0}


def train_config() -> dict:
    T, S = "mpnet.encoder.layer.", "student_model.bert.encoder.layer."  # teacher, wrapped student
    t_hooks, s_hooks, terms, projections = ["classifier"], ["student_model.classifier"], {}, {}
    for s, t in common.PAIRS:
        t_hid, t_att = f"{T}{t - 1}.output", f"{T}{t - 1}.attention.attn.dropout"
        s_hid, s_att, s_proj = f"{S}{s - 1}.output", f"{S}{s - 1}.attention.self", f"proj.s{s}"
        projections[f"s{s}"] = s_hid
        t_hooks += [t_hid, t_att]
        s_hooks += [s_hid, s_att, s_proj]
        terms[f"hidden{s}"] = mse(s_proj, t_hid)
        terms[f"attention{s}"] = mse(s_att, t_att, wrapper="ItemLossWrapper")
    kd = {"student_module_path": "student_model.classifier", "student_module_io": "output"}
    kd |= {"teacher_module_path": "classifier", "teacher_module_io": "output"}
    kd |= {"temperature": 2.0, "alpha": 1.0, "beta": 1.0}
    terms["kd"] = {"criterion": {"key": "KDLoss", "kwargs": kd}, "weight": 1.0}
    s_width, t_width = common.widths()
    wrapper = {"key": "Linear4Hidden", "kwargs": {"projections": projections, "dim_in": s_width, "dim_out": t_width}}
    teacher = {"forward_proc": "forward_teacher_part", "requires_grad": False, "forward_hook": {"output": t_hooks}}
    student = {"forward_proc": "forward_student_part", "forward_hook": {"output": s_hooks}}
    return {
        "num_epochs": 1,
        "teacher": teacher,
        "student": {**student, "auxiliary_model_wrapper": wrapper},
        "optimizer": {"key": "AdamW", "kwargs": {"lr": common.LR}},
        "criterion": {"key": "WeightedSumLoss", "kwargs": {"sub_terms": terms}},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=common.STEPS)
    ap.add_argument("--warmup", type=int, default=common.WARMUP)
    args = ap.parse_args()
    common.STEPS, common.WARMUP = args.steps, args.warmup
    torch.set_num_threads(common.THREADS)

    data = common.batch()
    teacher, student = common.models(student_attn="eager")
    batch, labels = {"teacher": data["teacher"], "student": data["student"]}, data["labels"]
    box = DistillationBox(teacher, student, {}, train_config(), common.DEVICE, None, False, 1)
    box.pre_epoch_process(epoch=0)  # clears the hook dicts, student.train()

    def step():
        box.pre_forward_process()
        with common.autocast():
            loss = box.forward_process(batch, labels, {})
        box.post_forward_process(loss)

    common.report("torchdistill", common.time_steps(step))


if __name__ == "__main__":
    main()
