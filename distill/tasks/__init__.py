"""Task kinds own everything task-specific: prompt, schema, parsing, student target, metrics,
the Parquet type of labels, review configs and the units the monitor counts."""

from distill.tasks.base import Task
from distill.tasks.classification import Classification
from distill.tasks.multilabel import Multilabel
from distill.tasks.ner import NER

KINDS = {"classification": Classification, "multilabel": Multilabel, "ner": NER}


def build_task(cfg) -> Task:
    return KINDS[cfg.kind](cfg)
