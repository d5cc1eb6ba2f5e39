"""The built-in MNIST mode source: rotations ``rot<deg>`` (the paper's) and corruptions
(``noise<sigma>``, ``blur``, ``invert``); one :class:`MNISTModes` serves both (training/data.py)."""

from __future__ import annotations

from taugate.training.data import DataConfig, MNISTModes, Mode, rotate
from taugate.training.modes.corruptions import Corruption

__all__ = ["Corruption", "DataConfig", "MNISTModes", "Mode", "rotate"]
