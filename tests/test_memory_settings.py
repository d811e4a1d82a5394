"""Process-wide memory settings the `landun` package applies before numpy loads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "import landun.cli, numpy; print(numpy._core.multiarray._get_madvise_hugepage())"


@pytest.mark.parametrize(("setting", "advised"), [(None, "False"), ("1", "True")])
def test_numpy_huge_page_advice_is_off_unless_asked_for(setting: str | None, advised: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    if setting is not None:
        env["NUMPY_MADVISE_HUGEPAGE"] = setting
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == advised
