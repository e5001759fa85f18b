"""Print the Terraform files of the given directories as JSON (runs in the infra venv).

Uses `hcl2` as shipped with checkov (bc-python-hcl2): expressions come back as
"${...}" strings, blocks as lists. Output: {"<dir>": {"<file>.tf": {...}}}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hcl2


def main(dirs: list[str]) -> None:
    out: dict[str, dict[str, object]] = {}
    for d in dirs:
        out[d] = {}
        for path in sorted(Path(d).glob("*.tf")):
            with path.open() as f:
                out[d][path.name] = hcl2.load(f)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
