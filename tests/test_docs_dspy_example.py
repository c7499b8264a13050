"""The DSPy example of docs/concepts.md runs verbatim (offline, DummyLM)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("dspy")

_ROOT = Path(__file__).resolve().parents[1]


def _dspy_example() -> str:
    text = (_ROOT / "docs" / "concepts.md").read_text(encoding="utf-8")
    section = text.split("\n## DSPy\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, re.S)
    return block


def test_the_dspy_fan_out_example_runs(tmp_path: Path) -> None:
    # Its own process: the example calls asyncio.run and sets a class attribute.
    script = tmp_path / "example.py"
    script.write_text(_dspy_example(), encoding="utf-8")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": str(_ROOT)}
    done = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
