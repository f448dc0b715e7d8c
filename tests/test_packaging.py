"""The built wheel carries everything a pip-installed hf_lrnn needs, model card templates included."""

import os
import subprocess
import sys
import zipfile

from helpers import ROOT


def test_the_wheel_ships_the_model_card_templates_and_finds_them_installed(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), ROOT], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("hf_lrnn-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = sorted(f for f in os.listdir(os.path.join(ROOT, "model_cards")) if f.endswith(".md"))
    assert templates and {f"hf_lrnn/model_cards/{t}" for t in templates} <= names
    assert {"hf_lrnn/modeling_lrnn.py", "hf_lrnn/training/model_card.py", "hf_lrnn/training/text_data.py"} <= names

    target = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                                str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]
    probe = ("import hf_lrnn.training.model_card as m; "
             "print(m.TEMPLATES_DIR); print(sorted(p.name for p in m.TEMPLATES_DIR.iterdir() if p.suffix == '.md'))")
    env = {**os.environ, "PYTHONPATH": str(target)}  # the installed copy, not this checkout
    found = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
    assert found.returncode == 0, found.stderr[-3000:]
    templates_dir, listed = found.stdout.strip().splitlines()
    assert templates_dir.startswith(str(target)) and listed == str(templates)
