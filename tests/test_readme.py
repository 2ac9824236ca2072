"""The README's Python example runs as written and prints what it promises."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_from_python_example_runs_as_written(tmp_path):
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"<!-- test: from-python -->\n```python\n(.*?)```", readme, re.S).group(1)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert re.search(r"time budget at step [1-9]\d*, \d+ images/s", out)
    kept, drawn = map(int, re.search(r"kept (\d+) of (\d+) drawn", out).groups())
    assert kept == 5000 <= drawn
    accuracy = float(re.search(r"test accuracy ([\d.]+)%", out).group(1))
    assert 90 < accuracy < 100  # 1,000 real + 1,000 synthetic labels: ~96-97% on a quiet machine
    assert (tmp_path / "runs/nb/gan/generator.pt").is_file() and (tmp_path / "runs/nb/classifier.json").is_file()
