"""Agent: merges findings: one per key (the most severe wins), sorted by severity, counted per severity, with a one-line report."""

from dataclasses import dataclass, field
from typing import Dict, List, Literal

from corral_sdk import Agent, AgentError, Context, guest

Severity = Literal["critical", "high", "medium", "low"]
RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3}


@dataclass
class Finding:
    """One observation: a dedupe key, how bad it is, and what was seen."""

    key: str
    severity: Severity
    message: str


@dataclass
class Input:
    """Findings from one or more sources, duplicates allowed."""

    findings: List[Finding]


@dataclass
class Output:
    """Unique findings, most severe first, and how many of each severity."""

    findings: List[Finding]
    counts: Dict[str, int]
    total: int
    duplicates: int
    report: str


class Aggregate(Agent):
    name = "aggregate"
    version = "0.1.0"
    description = "Merges findings: dedupe by key (most severe wins), sort by severity, count per severity."
    Input = Input
    Output = Output

    def run(self, ctx: Context, input: Input) -> Output:
        if not input.findings:
            raise AgentError.permanent("no findings to aggregate: `findings` is empty")
        best: Dict[str, Finding] = {}
        order: Dict[str, int] = {}
        for i, f in enumerate(input.findings):
            kept = best.get(f.key)
            if kept is None:
                order[f.key] = i
            if kept is None or RANK[f.severity] < RANK[kept.severity]:
                best[f.key] = f
        # Most severe first; among equals, the first seen first.
        merged = sorted(best.values(), key=lambda f: (RANK[f.severity], order[f.key]))
        counts = {s: 0 for s in RANK}
        for f in merged:
            counts[f.severity] += 1
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        worst = merged[0]
        report = f"{len(merged)} unique findings ({summary}); worst: {worst.message}"
        ctx.log("info", "aggregated", unique=len(merged), duplicates=len(input.findings) - len(merged))
        return Output(
            findings=merged,
            counts=counts,
            total=len(merged),
            duplicates=len(input.findings) - len(merged),
            report=report,
        )


Guest = guest(Aggregate())
