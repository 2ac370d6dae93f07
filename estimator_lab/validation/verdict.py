"""One check's verdict: a status, a line that says what was found, and its evidence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STATUSES = ("pass", "fail", "biased", "info", "skip")
"""`pass`/`fail`: the estimator keeps/breaks a claim; `biased`: it declares `is_unbiased=False`
and bias was measured; `info`: a comparison with no claim at stake; `skip`: not run, and why."""


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check of the validation battery.

    Attributes:
        check: the check's name.
        status: one of `STATUSES`.
        line: what was found, in one line, with its evidence (what is wrong, on a failure).
        details: measured numbers behind the line (JSON-ready).
    """

    check: str
    status: str
    line: str
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    @property
    def failed(self) -> bool:
        """Whether the estimator broke a claim in this check."""
        return self.status == "fail"

    def __str__(self) -> str:
        return f"{self.status.upper():6} {self.check}: {self.line}"
