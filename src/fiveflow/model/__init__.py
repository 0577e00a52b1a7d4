"""FiVE model: frozen text encoder, prompt bank, TFS aggregator (FIVE_METHOD.md section 3)."""

from .checkpoint import load_checkpoint, save_checkpoint
from .five import FiVEModel, build_model
from .questions import FIVE_QUESTIONS, load_questions
from .text import FrozenTextEncoder, get_text_encoder

__all__ = [
    "FiVEModel",
    "build_model",
    "FrozenTextEncoder",
    "get_text_encoder",
    "FIVE_QUESTIONS",
    "load_questions",
    "save_checkpoint",
    "load_checkpoint",
]
