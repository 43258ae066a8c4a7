"""Run every notebook here in place, keeping its outputs small enough to commit.

    JAXLEARN_FASHION_MNIST_DIR=... JAXLEARN_NAMES_PATH=... .venv/bin/python notebooks/execute.py [NAME.ipynb ...]

Figures come from the inline backend (72 dpi, its default: MPLBACKEND is unset for the kernel); text outputs
longer than ``MAX_TEXT`` characters (progress bars, long logs) are cut to their last lines, and PNGs wider
than ``MAX_WIDTH`` pixels (a saved figure shown from docs/, a large diagnostics grid) are scaled down to it
with a 256-colour palette.
"""

import base64
import io
import os
import sys
import time
from pathlib import Path

import nbclient
import nbformat
from PIL import Image

HERE = Path(__file__).resolve().parent
MAX_TEXT = 3000
MAX_WIDTH = 720


def small_png(data: str) -> str:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    if image.width > MAX_WIDTH:
        image = image.resize((MAX_WIDTH, round(image.height * MAX_WIDTH / image.width)), Image.LANCZOS)
    out = io.BytesIO()
    image.convert("RGB").quantize(256).save(out, "PNG", optimize=True)
    smaller = base64.b64encode(out.getvalue()).decode()
    return smaller if len(smaller) < len(data) else data


def shorten(nb: nbformat.NotebookNode) -> None:
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and len(out["text"]) > MAX_TEXT:
                out["text"] = "…\n" + out["text"][-MAX_TEXT:].split("\n", 1)[-1]
            out.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)
            if "image/png" in out.get("data", {}):
                out["data"]["image/png"] = small_png(out["data"]["image/png"])


def execute(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend, so figures become outputs
    t0 = time.monotonic()
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    shorten(nb)
    nbformat.write(nb, path)
    return time.monotonic() - t0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--shrink"]:  # only make the saved outputs small, without running
        for path in sorted(HERE.glob("*.ipynb")):
            nb = nbformat.read(path, as_version=4)
            shorten(nb)
            nbformat.write(nb, path)
        sys.exit()
    for name in sys.argv[1:] or sorted(p.name for p in HERE.glob("*.ipynb")):
        print(f"{name}: {execute(HERE / name):.0f} s, {(HERE / name).stat().st_size / 1e3:.0f} kB", flush=True)
