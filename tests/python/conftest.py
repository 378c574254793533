# SPDX-License-Identifier: Apache-2.0
"""pytest setup for the Python tests: puts ``<repo>/tools`` (for ``aaren_torch`` and the tools'
helper modules) and ``tests/python_support`` (the float64 oracle) on sys.path, so the tests run
with or without ``PYTHONPATH=tools``."""

import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[2] / "tools"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))
SUPPORT = Path(__file__).resolve().parents[1] / "python_support"
if str(SUPPORT) not in sys.path:
    sys.path.insert(0, str(SUPPORT))
