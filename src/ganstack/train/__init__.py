"""Training: the generic loop and checkpoints."""

from ganstack.train.trainer import Trainer, load_run_config

__all__ = ["Trainer", "load_run_config"]
