"""The README is the front door: it names both commands and documents every setting."""

from __future__ import annotations

from pathlib import Path

from core.store.settings import Settings, markdown_table

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [
        f"EMBEDTRAIN_{name.upper()}" for name in Settings.model_fields if f"EMBEDTRAIN_{name.upper()}" not in README
    ]
    assert not missing, missing


def test_the_settings_table_is_the_one_the_settings_write() -> None:
    """`python -m core.store.settings` prints it from the fields' descriptions; before, three rows had been edited in
    the README alone, and regenerating the table would have undone them."""
    start, end = "<!-- settings:start (python -m core.store.settings) -->\n", "\n<!-- settings:end -->"
    assert README[README.index(start) + len(start) : README.index(end)] == markdown_table()


def test_both_commands_are_there() -> None:
    assert "make run" in README and "make test" in README
