"""Result types shared by the spam and virus scanners."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SpamCheck:
    """One rule that matched (or a pseudo-rule such as ``TIMEOUT``/``ERROR``)."""

    code: str
    score: float
    description: str | None = None


@dataclass
class InspectionResult:
    """Everything the scanners found out about one message."""

    spam_checks: list[SpamCheck] = field(default_factory=list)
    threat: bool = False
    threat_message: str | None = None

    @property
    def spam_score(self) -> float:
        return round(float(sum(check.score for check in self.spam_checks)), 2)

    def add(self, code: str, score: float, description: str | None = None) -> None:
        self.spam_checks.append(SpamCheck(code, float(score), description))
