"""NeMo JSON-lines manifests read with every problem reported: the file, the line and what is wrong."""

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Issue:
    """One problem in the input: the file (and 1-based line) where it is, and what is wrong."""

    file: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        return f"{self.file}{f':{self.line}' if self.line else ''}: {self.reason}"


def read_manifest(path: str | Path) -> tuple[list[dict], list[Issue]]:
    """Rows of a NeMo JSON-lines manifest, and the problems of the lines left out (not JSON, fields wrong)."""
    rows, issues = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                issues.append(Issue(str(path), n, f"not JSON: {e}"))
                continue
            if not isinstance(row, dict):
                issues.append(Issue(str(path), n, f"not a JSON object: {line.strip()[:80]}"))
                continue
            wrong = [k for k, t in (("audio_filepath", str), ("duration", (int, float)), ("text", str))
                     if not isinstance(row.get(k), t)]
            if wrong:
                issues.append(Issue(str(path), n, f"missing or mistyped field(s) {wrong}"))
                continue
            rows.append(row)
    return rows, issues
