"""What `check_estimator` returns: one `CheckResult` per check, gathered in a `ContractReport`.

A check that finds a problem raises `CheckFailed` with the reason (the driver turns it into a
failed `CheckResult`); `ContractReport.raise_if_failed` turns a failed report into a
`ContractViolation` for a test.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


class ContractViolation(AssertionError):
    """An estimator broke its contract; the message lists every failed check and why."""


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check.

    Attributes:
        name: the check, one of `CHECKS`.
        passed: whether the estimator satisfies it.
        message: what was found, in plain words (why it failed, or what was verified).
        details: measured numbers and, for a check that raised, the traceback.
    """

    name: str
    passed: bool
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ContractReport:
    """The results of `check_estimator` for one estimator.

    Attributes:
        estimator: the estimator's name and construction (`repr`).
        results: one `CheckResult` per check run, in order.
    """

    estimator: str
    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return all(result.passed for result in self.results)

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        """The checks that failed."""
        return tuple(result for result in self.results if not result.passed)

    def __getitem__(self, name: str) -> CheckResult:
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(f"no check {name!r} in this report (ran {[r.name for r in self.results]})")

    def __iter__(self) -> Iterator[CheckResult]:
        return iter(self.results)

    def summary(self) -> str:
        """One line per check: `PASS`/`FAIL`, its name and its message."""
        return "\n".join(
            f"{'PASS' if r.passed else 'FAIL'} {r.name}: {r.message}" for r in self.results
        )

    def raise_if_failed(self) -> None:
        """Raises `ContractViolation` listing every failed check and why, if any failed."""
        if self.passed:
            return
        lines = "\n".join(f"- {r.name}: {r.message}" for r in self.failures)
        raise ContractViolation(
            f"{self.estimator} breaks the estimator contract "
            f"({len(self.failures)} of {len(self.results)} checks failed):\n{lines}"
        )


class CheckFailed(Exception):
    """Raised inside a check to fail it with a message (and optional details)."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details
