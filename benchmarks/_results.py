"""What the benchmark scripts share: this CPU's name, and rewriting one section of RESULTS.md in place."""

from __future__ import annotations

import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_section(start: str, end: str, section: str, path: Path = RESULTS) -> None:
    """Put ``section`` between the ``start`` and ``end`` markers of ``path`` (appended with them when
    absent); ``section`` may carry the markers itself."""
    body = section.strip()
    body = body.removeprefix(start).removesuffix(end).strip()
    block = f"{start}\n{body}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")
