"""A metrics log as JSON lines: one object per line, one file per run.

    {"step": 100, "loss": 0.043, "lr": 0.0002, "images_per_s": 812.5, "time": 1732460000.1}

Appending (not rewriting) means a resumed run continues the same file, and a run that is
killed loses at most the line being written. Read it back with `read_log`.
"""

import json
import math
import time
from pathlib import Path


class MetricsLog:
    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, step: int, **metrics: float) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}, "time": round(time.time(), 3)}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


    def keep_until(self, step: int) -> None:
        """Drop the rows after `step`: a resumed run continues from its checkpoint's step, so the
        rows a killed run wrote after its last checkpoint would otherwise appear twice."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines(keepends=True)
                if _row_step(line) is not None and _row_step(line) <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(kept))
        tmp.replace(self.path)


def _row_step(line: str):
    try:
        return int(json.loads(line)["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _plain(v):
    """Tensors and NumPy scalars to plain numbers; NaN/inf as strings JSON can hold."""
    v = v.item() if hasattr(v, "item") else v
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def read_log(path: str | Path) -> list[dict]:
    """Every complete line of a metrics log (a torn last line is skipped)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
