"""Draw the documentation's figures (needs matplotlib: `pip install -e ".[bench]"`).

- docs/images/jit_overhead.png: the jit overhead ratios against N for statejax,
  BrainState and Flax NNX, read from the recorded table of docs/performance.md (the
  first table under "## jit"), so the chart always shows the figures the page states.
- docs/images/lif_raster.png: the raster plot of the tutorial's spiking network, from
  the tutorial's own code (the Python blocks of docs/tutorial.md, run in order).

Run by hand after re-recording the figures or editing the tutorial; the images are
committed.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

DOCS = Path(__file__).parents[1] / "docs"
IMAGES = DOCS / "images"

ROW = re.compile(
    r"^\| (\d+) \| [^|]*\*\*([\d.]+)x\*\* \| [^|]*\*\*([\d.]+)x\*\* "
    r"\| ([\d.]+)x / ([\d.]+)x \| ([\d.]+)x / ([\d.]+)x \|$",
    flags=re.M,
)


def jit_ratios() -> dict[str, dict[str, list[float]]]:
    """`{"cached"|"first": {library: [ratio per N]}}` and the Ns, from performance.md."""
    page = (DOCS / "performance.md").read_text()
    section = page[page.index("## jit") : page.index("**After")]
    rows = [tuple(float(x) for x in m.groups()) for m in ROW.finditer(section)]
    if len(rows) < 2:
        raise SystemExit("docs/performance.md: the jit table with the rivals was not found")
    return {
        "N": {"N": [r[0] for r in rows]},
        "cached": {
            "statejax": [r[1] for r in rows],
            "BrainState 0.5.4": [r[3] for r in rows],
            "Flax NNX 0.12.8": [r[5] for r in rows],
        },
        "first": {
            "statejax": [r[2] for r in rows],
            "BrainState 0.5.4": [r[4] for r in rows],
            "Flax NNX 0.12.8": [r[6] for r in rows],
        },
    }


def plot_jit_overhead(path: Path) -> None:
    data = jit_ratios()
    ns = data["N"]["N"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    titles = {"cached": "cached call", "first": "first call (trace + compile)"}
    for ax, kind in zip(axes, ("cached", "first"), strict=True):
        for (library, ratios), marker in zip(data[kind].items(), "osd", strict=True):
            ax.plot(ns, ratios, marker=marker, label=library)
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xscale("log")
        ax.set_xticks(ns, [str(int(n)) for n in ns])
        ax.set_xlabel("N states")
        ax.set_title(titles[kind])
    axes[0].set_ylabel("time / plain jax.jit")
    axes[0].legend()
    fig.suptitle("jit overhead against plain JAX (CPU, lower is better)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_lif_raster(path: Path) -> None:
    page = (DOCS / "tutorial.md").read_text()
    namespace: dict[str, object] = {"__name__": "tutorial"}
    for block in re.findall(r"```python\n(.*?)```", page, flags=re.S):
        if "class LIF" in block:
            exec(compile(block, "docs/tutorial.md", "exec"), namespace)
            break
        if "make_moons" in block or "class MLP" in block:
            exec(compile(block, "docs/tutorial.md", "exec"), namespace)
    import numpy as np

    spikes = np.asarray(namespace["spikes"])
    steps, neurons = np.nonzero(spikes)
    fig, ax = plt.subplots(figsize=(8, 3.2), constrained_layout=True)
    ax.scatter(steps, neurons, s=4, marker="|", color="black")
    ax.set_xlabel("time step")
    ax.set_ylabel("neuron (drive increases upwards)")
    ax.set_xlim(0, spikes.shape[0])
    ax.set_title(f"LIF population: {len(steps)} spikes")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    IMAGES.mkdir(exist_ok=True)
    plot_jit_overhead(IMAGES / "jit_overhead.png")
    plot_lif_raster(IMAGES / "lif_raster.png")
    print(f"wrote {IMAGES / 'jit_overhead.png'} and {IMAGES / 'lif_raster.png'}")


if __name__ == "__main__":
    main()
