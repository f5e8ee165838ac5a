"""Student kinds own everything model-specific; stages call fit, predict, save and load."""

from distill.errors import ConfigError
from distill.students.base import Student
from distill.students.causal import CausalStudent
from distill.students.encoder import EncoderStudent
from distill.students.seq2seq import Seq2SeqStudent

KINDS = {"seq2seq": Seq2SeqStudent, "causal": CausalStudent, "encoder": EncoderStudent}


def student_class(cfg) -> type[Student]:
    if cfg.kind not in KINDS:
        raise ConfigError(f"student.kind {cfg.kind!r} is unknown; choose one of: {', '.join(KINDS)}")
    return KINDS[cfg.kind]


__all__ = ["Student", "student_class", "KINDS"]
