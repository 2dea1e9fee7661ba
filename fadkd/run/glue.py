"""The GLUE builder of a run (the same Setup as causal LMs', fadkd/run/setup.py): training rows (labelled,
copies, unlabelled pool), dev rows, tokenizers, the student, and the teacher's part (fadkd/teacher/glue.py),
which fadkd/teacher/setup.py loads, evaluates and caches."""

from pathlib import Path

from fadkd.config.schema import Config
from fadkd.data.batches import Collator
from fadkd.data.glue import load_split, resolve_data_dir
from fadkd.data.glue_tasks import get_task
from fadkd.data.pool import training_rows
from fadkd.eval.glue import evaluate
from fadkd.models.load import check_max_length, load_tokenizer, model_shape
from fadkd.models.shrink import build_classifier_student
from fadkd.run.progress import make_console
from fadkd.run.pruning import calibration_batches, check_prune_shape, prune_student
from fadkd.run.setup import Setup
from fadkd.teacher.glue import GlueTeacher

console = make_console()


def prepare_glue(cfg: Config, attn: str | None, device, use_teacher: bool, out_dir: Path) -> Setup:
    task = get_task(cfg.task.name)
    if cfg.student.init == "pruned":
        check_prune_shape(cfg)  # a shape the teacher cannot take: refused before any data or model is loaded
    data_dir = resolve_data_dir(cfg.task.data_dir)
    train_rows = training_rows(cfg, task, data_dir, console.print)  # labelled, copies, unlabelled pool
    dev_rows = load_split(task, "dev", data_dir, cfg.task.max_eval_samples).to_list()
    built = cfg.student.init != "random" and not cfg.student.tokenizer  # the teacher's own tokenizer
    student_tok = load_tokenizer(cfg.teacher if built else cfg.student, "student")
    student = build_classifier_student(cfg, task.num_labels, len(student_tok), attn).to(device)
    check_max_length(student, cfg.task.max_length, "student")
    teacher_tok = teacher_shape = None
    if use_teacher:
        teacher_tok = load_tokenizer(cfg.teacher, "teacher")
        teacher_shape = model_shape(cfg.teacher, "teacher")
    collator = Collator(task, student_tok, teacher_tok, cfg.task.max_length, cfg.loss.layerwise)

    def dev_metrics(model, tok) -> dict[str, float]:
        return evaluate(model, dev_rows, tok, task, cfg.task.max_length, cfg.train.eval_batch_size, device)

    if cfg.student.init == "pruned":  # the teacher's copy above, pruned on the first training rows
        plain = Collator(task, student_tok, None, cfg.task.max_length, False)
        rows = calibration_batches(
            train_rows, plain, cfg.student.prune.calibration_rows, cfg.train.eval_batch_size, device
        )
        student = prune_student(cfg, student, rows, lambda m: dev_metrics(m, student_tok), student_tok, out_dir)

    family = None
    if use_teacher:
        log = console.print
        family = GlueTeacher(cfg, task, teacher_shape, collator, train_rows, dev_rows, dev_metrics, device, log)
    return Setup(task, train_rows, student, student_tok, collator, dev_metrics, family, teacher_shape)
