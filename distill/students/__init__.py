"""Student kinds own everything model-specific; stages call fit, predict, save and load."""

from distill.students.base import Student
from distill.students.causal import CausalStudent
from distill.students.encoder import EncoderStudent
from distill.students.seq2seq import Seq2SeqStudent

KINDS = {"seq2seq": Seq2SeqStudent, "causal": CausalStudent, "encoder": EncoderStudent}


def student_class(cfg) -> type[Student]:
    return KINDS[cfg.kind]


__all__ = ["Student", "student_class", "KINDS"]
