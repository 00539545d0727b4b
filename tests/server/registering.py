"""Registering model versions for the server tests, in a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def register_in_another_process(store_uri: str, folder: Path, name: str, experiment: str, script: str) -> str:
    """Run ``script`` (with ``NAME`` set to ``name``) in a process of its own tracking into ``store_uri``, so that
    the one where the server runs never imports skops or a model flavour; returns ``name``."""
    (folder / "pyproject.toml").write_text("[project]\nname = 'register'\n")
    env = {**os.environ, "NBMLOPS_TRACKING_URI": store_uri, "NBMLOPS_EXPERIMENT": experiment,
           "NBMLOPS_ARTIFACT_ROOT": str(Path(store_uri[len("sqlite:///"):]).parent / "artifacts")}
    result = subprocess.run([sys.executable, "-c", f"NAME = {name!r}\n" + textwrap.dedent(script)], cwd=folder,
                            env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    return name
