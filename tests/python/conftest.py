# SPDX-License-Identifier: Apache-2.0
"""pytest setup for the Python tests: puts ``<repo>/tools`` on sys.path (for ``aaren_torch`` and the
tools' helper modules) so the tests run with or without ``PYTHONPATH=tools``."""

import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[2] / "tools"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))
