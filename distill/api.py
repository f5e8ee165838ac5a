"""The library layer: fit a student on rows, label rows with it, and score its labels.

    from distill.api import agreement, fit, predict, score
    meta = fit(cfg, rows, "out/student", trained_on="my rows")  # rows: id, text, label (NER: tokens)
    preds = predict(cfg, task, "out/student", corpus_rows)      # {id: {label, confidence}}
    score(task, gold_rows, preds)                               # the task's metrics on human gold

Grow, refine and the collapse audit build their students with these instead of running other
stages through patched configs and reading their files back; so can a script. `cfg` is a recipe's
config (`distill.config.load_config`), `task` its `distill.tasks.build_task(cfg.task)`.
"""

from distill.label import agreement, predict, score
from distill.train import fit

__all__ = ["agreement", "fit", "predict", "score"]
