"""Pion and Muon optimizers with an AdamW fallback, and the routing of parameters between them."""

from torch.optim import AdamW

from .muon import Muon
from .param_groups import param_groups
from .pion import Pion

__all__ = ["AdamW", "Muon", "Pion", "param_groups"]
