"""The README is the front door: it names both commands and documents every setting."""

from __future__ import annotations

from pathlib import Path

from core.store.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [
        f"EMBEDTRAIN_{name.upper()}" for name in Settings.model_fields if f"EMBEDTRAIN_{name.upper()}" not in README
    ]
    assert not missing, missing


def test_both_commands_are_there() -> None:
    assert "make run" in README and "make test" in README
