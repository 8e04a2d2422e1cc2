"""A non-editable install finds the shipped checkpoint without any option."""
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from forgeryloc.weights import DEFAULT_WEIGHTS_NAME

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (REPO / "weights" / DEFAULT_WEIGHTS_NAME).is_file(),
                    reason="no shipped checkpoint in this checkout")
def test_installed_package_finds_the_shipped_weights(tmp_path):
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
                    str(REPO)], check=True, capture_output=True, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("forgeryloc-*.whl"))
    prefix = tmp_path / "prefix"
    # --ignore-installed: never uninstall the copy the developer or CI has installed.
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--ignore-installed",
                    "--prefix", str(prefix), str(wheel)], check=True, capture_output=True,
                   cwd=tmp_path)
    site = sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})
    env = {k: v for k, v in os.environ.items() if k != "FORGERYLOC_WEIGHTS"}
    env["PYTHONPATH"] = site
    code = ("import json, forgeryloc, forgeryloc.weights as w; "
            "print(json.dumps([forgeryloc.__file__, str(w.default_weights_path())]))")
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                            capture_output=True, text=True, check=True)
    module, weights = json.loads(result.stdout)
    assert Path(module).is_relative_to(prefix), "the installed copy must be the one imported"
    assert Path(weights).is_relative_to(prefix.resolve())
    assert Path(weights).read_bytes() == (REPO / "weights" / DEFAULT_WEIGHTS_NAME).read_bytes()
