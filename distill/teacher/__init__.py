"""Teacher access: the real `openai` client, against a real endpoint or the local simulator."""

from contextlib import contextmanager

from distill.teacher.client import Teacher
from distill.teacher.simulator import Simulator


@contextmanager
def open_teacher(cfg, task, gold_rows=()):
    """Yield a Teacher; with `teacher.simulated` it talks over HTTP to a simulator serving gold_rows."""
    if not cfg.simulated:
        yield Teacher(cfg, task)
        return
    with Simulator(task, gold_rows, cfg.sim, cfg.model) as sim:
        yield Teacher(cfg, task, base_url=sim.base_url, simulated=True)


__all__ = ["Teacher", "Simulator", "open_teacher"]
