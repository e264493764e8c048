"""Calibration prompts for the skip-set search: built in (written for this project), or from a file.

The search times draft-and-verify on these, so they should look like the work the model will do.
The built-in set mixes the paper's three kinds of task: summarisation, code and question answering.
"""

from __future__ import annotations

import json
from pathlib import Path

BUILTIN: tuple[tuple[str, str], ...] = (
    ("summarisation",
     "Summarise in two sentences: The town council met on Tuesday to discuss the new bicycle lanes. "
     "Shop owners on the main street worried that losing parking spaces would cost them customers, "
     "while parents said the lanes would let their children ride to school safely. After three hours "
     "the council agreed to build the lanes on a trial basis for one year and to count visitors to "
     "the shops before and after."),
    ("summarisation",
     "Give a one-paragraph summary of this report: The lighthouse on the north cape was built in 1872 "
     "and ran on oil until 1931, when it was converted to electricity. Its keeper lived on site until "
     "1989; since then the light has been automatic. Storms in the last decade damaged the stairs, and "
     "a volunteer group is now raising money to repair them and open the tower to visitors."),
    ("code",
     "Write a Python function `is_palindrome(text)` that ignores case, spaces and punctuation, "
     "and explain how it works."),
    ("code",
     "Write a Python function that reads a CSV file with columns name and score and returns the "
     "name with the highest average score. Use only the standard library."),
    ("qa",
     "Why is the sky blue during the day but red and orange at sunset? Answer for a curious "
     "twelve-year-old."),
    ("qa",
     "What are three practical ways to save energy at home in winter, and how much can each save?"),
)


class CalibrationError(ValueError):
    """A calibration file is missing, empty or malformed."""


def builtin_prompts() -> list[str]:
    return [text for _, text in BUILTIN]


def read_calibration(path: str | Path) -> list[str]:
    """Prompts from a file: a JSON list of strings, or plain text with prompts separated by blank lines."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"cannot read calibration file {path}: {exc}") from None
    if path.suffix == ".json":
        try:
            prompts = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CalibrationError(f"calibration file {path} is not valid JSON: {exc}") from None
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise CalibrationError(f"calibration file {path} must hold a JSON list of strings")
    else:
        prompts = text.split("\n\n")
    prompts = [p.strip() for p in prompts if p.strip()]
    if not prompts:
        raise CalibrationError(f"calibration file {path} holds no prompts")
    return prompts
