"""README.md stays true: every setting is in its table, and the two commands are on top."""

from pathlib import Path

from herald.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_documented():
    missing = [f"HERALD_{name.upper()}" for name in Settings.model_fields if f"`HERALD_{name.upper()}`" not in README]
    assert not missing, f"add to README (python tools/settings_table.py): {missing}"


def test_the_first_lines_give_the_two_commands():
    top = "\n".join(README.splitlines()[:10])
    assert "make run" in top and "make test" in top
