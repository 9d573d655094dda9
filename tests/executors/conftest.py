# The Ray tests reuse the runner tests' corpus and deterministic responder (tests/pipeline/test_runner.py);
# Ray's worker processes find the same modules through PYTHONPATH (see test_ray.py's fixture).
import sys
from pathlib import Path

_DIRS = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent / "pipeline"),
             str(Path(__file__).resolve().parent.parent)]
for d in _DIRS:
    if d not in sys.path:
        sys.path.insert(0, d)
