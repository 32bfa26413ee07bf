"""Optimizer telemetry: what each step of AdamW, Muon or Pion does to the weights and their spectra.

One entry, :class:`OptimizerTelemetry` (attach it to an optimizer; read ``pop_metrics()`` after each step).
The verl engine (:mod:`pion_rl.verl_plugin.engine`) and the CPU demo both use it, under the same names.
"""

from .monitor import OptimizerTelemetry

__all__ = ["OptimizerTelemetry"]
