"""Recall@k curves of Deep Memory evaluation, drawn to an image file.

matplotlib is imported only here, lazily and with the Agg backend (no display needed);
it comes with ``pip install "tensordb[models]"``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..errors import MissingExtraError, TensorDBError

#: The curve covers recall@1 ... recall@CURVE_MAX_K.
CURVE_MAX_K = 100
INSTALL_HINT = 'pip install "tensordb[models]"'


class PlotPathError(TensorDBError, ValueError):
    """A plot cannot be written where it was asked for."""


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, or a :class:`MissingExtraError` saying how to install it."""
    try:
        import matplotlib
    except ImportError as e:
        raise MissingExtraError(f"plotting needs matplotlib, which is not installed ({e}); "
                                f"install it with: {INSTALL_HINT}") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def check_plot_path(path: str | os.PathLike[str]) -> str:
    """``path`` as a str once it is known a plot can be written there; raises before any work otherwise.

    Checks that matplotlib is installed, that the folder exists and that the file
    extension names an image format matplotlib writes.
    """
    plt = _pyplot()
    path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise PlotPathError(f"plot path must be a non-empty file name, got {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise PlotPathError(f"cannot write the plot {path!r}: the folder {folder!r} does not exist")
    if os.path.isdir(path):
        raise PlotPathError(f"cannot write the plot {path!r}: it is a folder; expected a file name such as recall.png")
    extension = os.path.splitext(path)[1].lstrip(".").lower()
    formats = plt.figure().canvas.get_supported_filetypes()
    plt.close("all")
    if extension not in formats:
        got = f".{extension}" if extension else "no extension"
        raise PlotPathError(f"cannot write the plot {path!r}: expected a file name ending in one of "
                            f"{', '.join('.' + f for f in sorted(formats))}, got {got}")
    return path


def plot_recall_at_k(curves: Mapping[str, Mapping[int, float]], path: str | os.PathLike[str],
                     title: str = "Recall@k with and without Deep Memory") -> str:
    """Draw each curve (label → {k: recall in [0, 1]}) against k on a log-scaled x axis; returns the path.

    Recall is shown in percent; the file format follows the extension (``.png``, ``.svg``, ``.pdf``...).
    """
    path = check_plot_path(path)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    try:
        for i, (label, curve) in enumerate(curves.items()):
            ks = sorted(int(k) for k in curve)
            # Dashes keep a curve visible where it lies on top of another.
            ax.plot(ks, [100 * curve[k] for k in ks], label=label, linewidth=2, linestyle=("-", "--", ":")[i % 3])
        ax.set_xscale("log")
        ax.set_xlabel("k (log scale)")
        ax.set_ylabel("recall@k (%)")
        ax.set_ylim(0, 100)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
