"""Reports of headless notebook runs: a JUnit XML file for CI and a GitHub Actions job summary."""

from __future__ import annotations

import contextlib
import html
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from nbmlops.runner.gates import GateResult

__all__ = ["STATUSES", "NotebookReport", "append_github_summary", "github_summary", "write_junit"]

STATUSES = ("FINISHED", "FAILED", "TIMEOUT", "KILLED")
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_MARKDOWN = re.compile(r"([\\`*_\[\]|~])")
_URL_SAFE = ":/?#[]@!$&'*+,;=%"  # kept in links; anything else (spaces, parentheses, pipes) is %-encoded


@dataclass(frozen=True)
class NotebookReport:
    """One executed notebook: its status (one of :data:`STATUSES`), gates, params, metrics and run."""

    notebook: str
    status: str
    duration_s: float
    error: str | None = None
    gates: tuple[GateResult, ...] = ()
    params: Mapping[str, object] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    run_id: str | None = None
    url: str | None = None
    output: str | None = None

    @property
    def passed(self) -> bool:
        """Whether the notebook FINISHED and every gate passed."""
        return self.status == "FINISHED" and all(result.passed for result in self.gates)


def _xml(text: object) -> str:
    """``text`` without terminal colour codes and with characters XML 1.0 cannot hold replaced."""
    return _NOT_XML.sub("\ufffd", _ANSI.sub("", str(text)))


def _headline(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:1000] if lines else text  # a traceback's last line names the exception


def _details(report: NotebookReport) -> str:
    lines = [f"{label}: {value}" for label, value in
             (("run_id", report.run_id), ("url", report.url), ("output", report.output)) if value]
    for title, mapping in (("params", report.params), ("metrics", report.metrics)):
        if mapping:
            lines += [f"{title}:", *(f"  {key} = {value}" for key, value in mapping.items())]
    return "\n".join(lines)


def _testcase(classname: str, name: str, seconds: float) -> ET.Element:
    return ET.Element("testcase", classname=classname, name=_xml(name), time=f"{seconds:.3f}")


def _fail(case: ET.Element, kind: str, text: str) -> None:
    text = _xml(text)
    ET.SubElement(case, "failure", message=_headline(text), type=_xml(kind)).text = text


def write_junit(path: str | os.PathLike[str], reports: Sequence[NotebookReport], suite_name: str = "nbmlops") -> None:
    """Write ``reports`` as JUnit XML to ``path`` atomically (a temp file, then ``os.replace``).

    Each notebook is a ``nbmlops.notebook`` test case, failed unless FINISHED, and each of its gates
    a ``nbmlops.gate`` test case named ``"<notebook>: <gate>"``, failed when the gate failed.
    """
    cases: list[ET.Element] = []
    failures = 0
    for report in reports:
        case = _testcase("nbmlops.notebook", report.notebook, report.duration_s)
        if report.status != "FINISHED":
            failures += 1
            _fail(case, report.status, report.error or f"notebook ended with status {report.status}")
        if details := _details(report):
            ET.SubElement(case, "system-out").text = _xml(details)
        cases.append(case)
        for result in report.gates:
            gate_case = _testcase("nbmlops.gate", f"{report.notebook}: {result.gate.text}", 0.0)
            if not result.passed:
                failures += 1
                _fail(gate_case, "gate", result.message)
            cases.append(gate_case)
    counts = {
        "name": _xml(suite_name), "tests": str(len(cases)), "failures": str(failures), "errors": "0",
        "time": f"{sum(report.duration_s for report in reports):.3f}",
    }
    root = ET.Element("testsuites", counts)
    ET.SubElement(root, "testsuite", counts).extend(cases)
    ET.indent(root)
    _write_atomically(Path(path), ET.tostring(root, encoding="utf-8", xml_declaration=True))


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, 0o644)  # mkstemp's 0600 would hide the report from other CI users
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _md(text: object) -> str:
    """``text`` safe inside a Markdown table cell: HTML, Markdown punctuation and newlines escaped."""
    escaped = _MARKDOWN.sub(r"\\\1", html.escape(str(text), quote=False))
    return "<br>".join(escaped.splitlines())


def _key_metrics(report: NotebookReport, limit: int = 5) -> str:
    names = [n for r in report.gates for n in r.values if n in report.metrics] + list(report.metrics)
    names = list(dict.fromkeys(names))
    shown = [f"{_md(name)} = {report.metrics[name]:.4g}" for name in names[:limit]]
    return ", ".join(shown) + (", ..." if len(names) > limit else "") or "-"


def _run_link(report: NotebookReport) -> str:
    label = _md(report.run_id or "run")
    if report.url and report.url.startswith(("https://", "http://")):
        return f"[{label}]({quote(report.url, safe=_URL_SAFE)})"
    return label if report.run_id else "-"


def github_summary(reports: Sequence[NotebookReport]) -> str:
    """A Markdown section with one table row per notebook: status, duration, key metrics, gates, run."""
    lines = [
        f"### nbmlops: {sum(r.passed for r in reports)} of {len(reports)} notebook(s) passed",
        "",
        "| Notebook | Status | Duration | Metrics | Gates | Run |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for report in reports:
        mark = "✅" if report.status == "FINISHED" else "❌"
        gates = "<br>".join(f"{'✅' if r.passed else '❌'} {_md(r.gate.text)}" for r in report.gates) or "-"
        cells = [_md(report.notebook), f"{mark} {_md(report.status)}", f"{report.duration_s:.1f} s",
                 _key_metrics(report), gates, _run_link(report)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def append_github_summary(reports: Sequence[NotebookReport], environ: Mapping[str, str] = os.environ) -> bool:
    """Append :func:`github_summary` to the file named by ``GITHUB_STEP_SUMMARY``; whether it wrote."""
    target = environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return False
    with open(target, "a", encoding="utf-8") as file:
        file.write("\n" + github_summary(reports))
    return True
