"""distill: fine-tune-then-label distillation with a drift monitor."""

__version__ = "0.1.0"
