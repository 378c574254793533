# SPDX-License-Identifier: Apache-2.0
"""Every deployment file that can hold a comment starts with the SPDX line (JSON cannot)."""

from __future__ import annotations

import pytest

from conftest import DEPLOY, REPO

SPDX = "SPDX-License-Identifier: Apache-2.0"
FILES = sorted(
    [REPO / "Dockerfile", REPO / ".dockerignore"]
    + [p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix != ".json"]
    + [p for p in (REPO / "tests" / "deploy").iterdir()
       if p.is_file() and p.suffix in {".py", ".txt"}])


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_spdx_header(path):
    head = path.read_text(encoding="utf-8").splitlines()[:3]
    assert any(SPDX in line for line in head), f"{path}: no '{SPDX}' in its first lines"
