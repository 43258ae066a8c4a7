"""miniai's ``ActivationStats``, computed inside the compiled step: each followed layer's mean, std,
histogram, dead and saturated fractions per training batch, and the lesson's figures from them."""

from __future__ import annotations

import flax.linen as nn
import numpy as np

from jaxlearn.callback import StepRecorder
from jaxlearn.callbacks.stats import N_BINS, module_filter, summarize
from jaxlearn.step import StepContext


class ActivationStats(StepRecorder):
    """miniai's ``ActivationStats``, computed inside the compiled step from flax's intermediates collection.

    ``ActivationStats(GeneralRelu)`` follows every GeneralRelu (the module ``types`` given); ``names=`` picks
    modules by name. Per layer and training batch it keeps mean, std, a ``bins``-bin (default 40) |x| histogram
    on [0, 10], the "dead" fraction (lowest bin) and the "saturated" fraction (|x| > 0.97) — nothing bigger
    leaves the device. ``signed=True`` adds a signed histogram on [-5, 5] (a second scatter over every
    activation, so opt-in). Figures: :meth:`plot_stats`, :meth:`color_dim`, :meth:`dead_chart`.
    """

    def __init__(self, *types: type[nn.Module], names: tuple[str, ...] = (), bins: int = N_BINS,
                 signed: bool = False):
        if not types and not names:
            raise ValueError("ActivationStats needs module types and/or names to follow")
        self.capture = module_filter(*types, names=names)
        self.types, self.names, self.bins, self.signed = types, tuple(names), bins, signed

    @property
    def signature(self) -> tuple:
        """The followed modules and the histogram settings: equal ones share a compilation."""
        return (type(self), self.types, self.names, self.bins, self.signed)

    def in_step(self, ctx: StepContext) -> dict:
        """Each captured activation of ``ctx.intermediates`` reduced to its statistics
        (:func:`~jaxlearn.callbacks.stats.summarize`), inside the step."""
        return {name: summarize(x, self.bins, signed=self.signed) for name, x in ctx.intermediates.items()}

    @property
    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        """``{layer: {'mean': (T,), 'std': (T,), 'hist': (T, 40), ...}}`` over the T training batches."""
        return self.recorded or {}

    def plot_stats(self, path=None):
        """miniai's figure of each layer's mean and std over training
        (:func:`~jaxlearn.callbacks.plots.plot_stats`), saved to ``path`` when given."""
        from jaxlearn.callbacks.plots import plot_stats
        return plot_stats(self.stats, path=path)

    def color_dim(self, path=None, title: str | None = None):
        """Lesson 17's histogram image per layer over training (:func:`~jaxlearn.callbacks.plots.color_dim`),
        titled ``title``, saved to ``path`` when given."""
        from jaxlearn.callbacks.plots import color_dim
        return color_dim(self.stats, path=path, title=title)

    def dead_chart(self, path=None, title: str | None = None):
        """The share of each layer's activations near zero over training
        (:func:`~jaxlearn.callbacks.plots.dead_chart`), titled ``title``, saved to ``path`` when given."""
        from jaxlearn.callbacks.plots import dead_chart
        return dead_chart(self.stats, path=path, title=title)

