"""`make mutate` (mk/mutate.mk): mutmut over Herald's domain and services, outside the tree.

mutmut 3 copies the code it mutates into ``mutants/`` beside the config it reads and
expects the package under ``src/`` (or ``./``), while Herald keeps it under ``service/``.
So the run happens in a scratch copy, ``var/mutate/work``: ``src/herald`` (a copy of
service/herald), ``tests/`` and ``pyproject.toml``, whose ``[tool.mutmut]`` section is the
configuration. Nothing in the working tree is touched.

    python -m tests.support.mutation prepare WORK   # the copy, and a baseline of the fast tests
    python -m tests.support.mutation survivors WORK --only GLOB...    # names, for stage 2
    python -m tests.support.mutation report WORK OUT --only GLOB...   # kill rate + survivors

``prepare`` runs the fast tests once (``[tool.mutmut] pytest_add_cli_args``); tests that
already fail on the unmutated code (someone's work in progress, or an xfail for a known
bug) are deselected in the copy, since mutmut refuses to start on a red baseline, and listed at the top of the
report: a mutant they would have killed counts as surviving, never the reverse.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DESELECTED = "deselected.txt"
EQUIVALENTS = "tests/support/mutation_equivalents.toml"
LEFT_OUT = {"service", "var", "mutants", "bench"}  # service/herald becomes src/herald


def _config() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]  # type: ignore[no-any-return]


def prepare(work: Path) -> None:
    if work.exists():
        shutil.rmtree(work)
    (work / "src").mkdir(parents=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules", ".terraform")
    shutil.copytree(ROOT / "service" / "herald", work / "src" / "herald", ignore=skip)
    for entry in ROOT.iterdir():  # what the tests read besides the package: tests/, tools/, examples/, README …
        if entry.name in LEFT_OUT or entry.name.startswith("."):
            continue
        if entry.is_dir():
            shutil.copytree(entry, work / entry.name, ignore=skip)
        else:
            shutil.copy2(entry, work / entry.name)
    pyproject = (ROOT / "pyproject.toml").read_text()
    # pytest adds service/ to sys.path; in the copy the package is src/herald (and mutmut
    # puts mutants/src first), so the tests import the mutated code.
    pyproject = pyproject.replace('pythonpath = ["service", "."]', 'pythonpath = ["src", "."]')
    # mutmut copies src/ and tests/ into mutants/ itself; everything else the tests may read
    # (tools/, terraform/, examples/, README …) is listed here, whatever the tree holds today.
    copied = sorted(e.name for e in work.iterdir() if e.name not in {"src", "tests", "pyproject.toml"})
    pyproject = re.sub(r"(?m)^also_copy = .*$", "also_copy = " + json.dumps(copied), pyproject)
    (work / "pyproject.toml").write_text(pyproject)
    config = _config()
    args = [str(a) for a in config.get("pytest_add_cli_args", [])]  # type: ignore[attr-defined]
    selection = [str(a) for a in config.get("pytest_add_cli_args_test_selection", [])]  # type: ignore[attr-defined]
    baseline = subprocess.run(
        # --runxfail: mutmut's own runs count an expected failure as a failure, so those go too.
        [sys.executable, "-m", "pytest", *args, *selection, "--runxfail", "-rf", "--tb=no"],
        cwd=work,
        capture_output=True,
        text=True,
    )
    failing = sorted(set(re.findall(r"^FAILED (\S+)", baseline.stdout, re.MULTILINE)))
    failing = [f.split(" - ")[0] for f in failing]
    (work / DESELECTED).write_text("".join(f"{f}\n" for f in failing))
    if failing:
        extra = "".join(f'  "--deselect", "{f}",\n' for f in failing)
        text = (work / "pyproject.toml").read_text()
        text = text.replace("pytest_add_cli_args = [\n", "pytest_add_cli_args = [\n" + extra, 1)
        (work / "pyproject.toml").write_text(text)
        print(f"{len(failing)} test(s) fail on the unmutated code and are left out (see the report)")
    tail = baseline.stdout.strip().splitlines()[-1:] or ["(no output)"]
    print(f"baseline: {tail[0]}")
    if "passed" not in tail[0]:
        raise SystemExit(f"the fast tests did not run in {work}:\n{baseline.stdout[-3000:]}{baseline.stderr[-3000:]}")


def _results(work: Path) -> dict[str, str]:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "mutmut"), "results", "--all", "true"],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: dict[str, str] = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name:
            found[name] = status.strip()
    return found


def _diff(work: Path, name: str) -> str:
    shown = subprocess.run(
        [str(Path(sys.executable).parent / "mutmut"), "show", name], cwd=work, capture_output=True, text=True
    )
    return shown.stdout.strip()


def equivalents(path: Path = ROOT / EQUIVALENTS) -> dict[str, str]:
    """Surviving mutants judged equivalent, each with the reason no test can tell it apart."""
    if not path.exists():
        return {}
    entries = tomllib.loads(path.read_text())["equivalent"]
    return {name: entry["reason"] for entry in entries for name in entry["mutants"]}


def report(work: Path, out: Path, only: list[str]) -> float:
    results = {n: s for n, s in _results(work).items() if not only or any(fnmatch.fnmatch(n, g) for g in only)}
    killed = sum(1 for s in results.values() if s in ("killed", "timeout"))
    skipped = sum(1 for s in results.values() if s in ("skipped", "not checked"))
    tested = len(results) - skipped
    rate = 100.0 * killed / tested if tested else 0.0
    survivors = sorted(n for n, s in results.items() if s not in ("killed", "timeout", "skipped", "not checked"))
    explained = equivalents()
    open_ = [n for n in survivors if n not in explained]
    equivalent = [n for n in survivors if n in explained]
    # An explanation whose mutant is now killed is stale (its function changed, or a test
    # now tells it apart): listed so the file can be corrected.
    stale = sorted(n for n in explained if results.get(n) in ("killed", "timeout"))
    scored = tested - len(equivalent)
    lines = [
        f"mutmut over {', '.join(only) or 'everything configured'}",
        f"kill rate: {rate:.1f}% ({killed} killed of {tested} tested; {skipped} not run)",
        f"with the {len(equivalent)} explained equivalents counted out: "
        + (f"{100.0 * killed / scored:.1f}% ({killed} of {scored})" if scored else "-"),
        f"surviving, not explained: {len(open_)}",
    ]
    by_module: dict[str, list[int]] = {}
    for name, status in results.items():
        if status in ("skipped", "not checked"):
            continue
        row = by_module.setdefault(name.split(".x")[0], [0, 0, 0])
        row[0] += status in ("killed", "timeout")
        row[1] += 1
        row[2] += name in explained and status not in ("killed", "timeout")
    lines += ["", "module: killed / tested (equivalent)"]
    lines += [f"  {m}: {k} / {t} ({e})" for m, (k, t, e) in sorted(by_module.items())]
    deselected = (work / DESELECTED).read_text().split() if (work / DESELECTED).exists() else []
    if deselected:
        lines += ["", "tests left out because they failed on the unmutated code:", *(f"  {t}" for t in deselected)]
    if stale:
        lines += ["", f"explained as equivalent but killed (stale entries in {EQUIVALENTS}):"]
        lines += [f"  {n}" for n in stale]
    by_status: dict[str, list[str]] = {}
    for name in open_:
        by_status.setdefault(results[name], []).append(name)
    for status, names in sorted(by_status.items()):
        lines += ["", f"== {status}, not explained ({len(names)})"]
        for name in names:
            lines += ["", f"-- {name}", _diff(work, name)]
    lines += ["", f"== equivalent ({len(equivalent)}), reasons in {EQUIVALENTS}"]
    lines += [f"  {n}" for n in equivalent]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:4]))
    print(f"report: {out}")
    return rate


def survivors(work: Path, only: list[str]) -> list[str]:
    """The mutants that survived stage 1: stage 2 runs them again with every test."""
    return sorted(
        n
        for n, s in _results(work).items()
        if s == "survived" and (not only or any(fnmatch.fnmatch(n, g) for g in only))
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("work", type=Path)
    r = sub.add_parser("report")
    r.add_argument("work", type=Path)
    r.add_argument("out", type=Path)
    r.add_argument("--only", nargs="*", default=[])
    v = sub.add_parser("survivors")
    v.add_argument("work", type=Path)
    v.add_argument("--only", nargs="*", default=[])
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.work)
    elif args.command == "survivors":
        print("\n".join(survivors(args.work, args.only)))
    else:
        report(args.work, args.out, args.only)


if __name__ == "__main__":
    main()
