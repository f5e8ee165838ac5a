"""Teacher access: the real `openai` client, against a real endpoint or the local simulator."""

from contextlib import contextmanager

from distill.teacher.client import Teacher
from distill.teacher.simulator import Simulator


@contextmanager
def open_teacher(cfg, task, gold_rows=(), dry: bool = False):
    """Yield a Teacher; with `teacher.simulated` it talks over HTTP to a simulator serving gold_rows.
    A `dry` teacher only estimates, so it needs no API key and no simulator."""
    if not cfg.simulated or dry:
        yield Teacher(cfg, task, simulated=cfg.simulated, need_key=not dry)
        return
    with Simulator(task, gold_rows, cfg.sim, cfg.model) as sim:
        yield Teacher(cfg, task, base_url=sim.base_url, simulated=True)


__all__ = ["Teacher", "Simulator", "open_teacher"]
