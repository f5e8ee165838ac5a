"""Teacher access: the real `openai` client, against a real endpoint or the local simulator."""

from contextlib import contextmanager

from distill.teacher.client import Teacher
from distill.teacher.simulator import Simulator


@contextmanager
def open_endpoint(cfg, task, gold_rows=()):
    """Yield the endpoint's base URL: the configured one, or with `teacher.simulated` that of a
    simulator serving gold_rows over HTTP while the block runs."""
    if not cfg.simulated:
        yield cfg.base_url
        return
    with Simulator(task, gold_rows, cfg.sim, cfg.model) as sim:
        yield sim.base_url


@contextmanager
def open_teacher(cfg, task, gold_rows=()):
    """Yield a Teacher; with `teacher.simulated` it talks over HTTP to a simulator serving gold_rows."""
    with open_endpoint(cfg, task, gold_rows) as base_url:
        yield Teacher(cfg, task, base_url=base_url, simulated=bool(cfg.simulated))


__all__ = ["Teacher", "Simulator", "open_endpoint", "open_teacher"]
