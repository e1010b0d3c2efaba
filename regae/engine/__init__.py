"""The generic training engine: phases, the loop, checkpoints, logging."""

from regae.engine.checkpoint import CheckpointManager, read_folder, write_folder
from regae.engine.phase import Batch, Phase
from regae.engine.trainer import Trainer, build_optimizer, make_fabric

__all__ = [
    "Batch",
    "Phase",
    "Trainer",
    "CheckpointManager",
    "build_optimizer",
    "make_fabric",
    "read_folder",
    "write_folder",
]
