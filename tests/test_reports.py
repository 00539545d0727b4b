"""Run reports: JUnit XML for CI and the GitHub Actions job summary."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from nbmlops.runner.gates import evaluate_gates, parse_gate
from nbmlops.runner.reports import NotebookReport, append_github_summary, github_summary, write_junit

TRACEBACK = "\x1b[0;31m----\x1b[0m\nTraceback (most recent call last):\n  cell 3\nZeroDivisionError: oops\x00"


@pytest.fixture
def reports() -> list[NotebookReport]:
    metrics = {"accuracy": 0.93, "rmse": 1.5}
    gates = tuple(evaluate_gates([parse_gate("accuracy >= 0.9"), parse_gate("rmse < 1.2")], metrics))
    return [
        NotebookReport("train.ipynb", "FINISHED", 12.25, gates=gates, params={"lr": 0.1}, metrics=metrics,
                       run_id="abc123", url="http://mlflow:5000/#/runs/abc123", output="out/train.ipynb"),
        NotebookReport("eval.ipynb", "FAILED", 3.5, error=TRACEBACK),
        NotebookReport("slow.ipynb", "TIMEOUT", 600.0),
    ]


def read_junit(path) -> tuple[ET.Element, list[ET.Element]]:
    root = ET.parse(path).getroot()
    (suite,) = root.findall("testsuite")
    return suite, suite.findall("testcase")


def test_junit_counts_cases_and_failures(tmp_path, reports):
    path = tmp_path / "ci" / "report.xml"
    write_junit(path, reports, suite_name="nightly")
    suite, cases = read_junit(path)
    assert {k: suite.get(k) for k in ("name", "tests", "failures", "errors", "time")} == {
        "name": "nightly", "tests": "5", "failures": "3", "errors": "0", "time": "615.750",
    }
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("nbmlops.notebook", "train.ipynb"),
        ("nbmlops.gate", "train.ipynb: accuracy >= 0.9"),
        ("nbmlops.gate", "train.ipynb: rmse < 1.2"),
        ("nbmlops.notebook", "eval.ipynb"),
        ("nbmlops.notebook", "slow.ipynb"),
    ]
    failures = {c.get("name"): c.find("failure") for c in cases}
    assert failures["train.ipynb"] is None and failures["train.ipynb: accuracy >= 0.9"] is None
    gate_failure = failures["train.ipynb: rmse < 1.2"]
    assert gate_failure.get("type") == "gate" and gate_failure.text == reports[0].gates[1].message
    assert failures["eval.ipynb"].get("type") == "FAILED"
    assert failures["eval.ipynb"].get("message") == "ZeroDivisionError: oops\ufffd"
    assert "\x1b" not in failures["eval.ipynb"].text and "Traceback" in failures["eval.ipynb"].text
    assert failures["slow.ipynb"].get("type") == "TIMEOUT"
    assert cases[0].get("time") == "12.250"


def test_junit_system_out_describes_the_run(tmp_path, reports):
    write_junit(tmp_path / "r.xml", reports)
    _, cases = read_junit(tmp_path / "r.xml")
    out = cases[0].find("system-out").text
    for line in ("run_id: abc123", "url: http://mlflow:5000/#/runs/abc123", "output: out/train.ipynb",
                 "params:", "  lr = 0.1", "metrics:", "  accuracy = 0.93", "  rmse = 1.5"):
        assert line in out.splitlines()


def test_junit_escapes_user_strings(tmp_path):
    name = 'a<&>"b\'.ipynb'
    gates = tuple(evaluate_gates([parse_gate("`<&>` > 1")], {"<&>": 0.0}))
    write_junit(tmp_path / "r.xml", [NotebookReport(name, "KILLED", 1.0, error='<boom & "bang">', gates=gates)])
    raw = (tmp_path / "r.xml").read_text(encoding="utf-8")
    assert name not in raw and "&lt;&amp;&gt;" in raw
    _, (notebook, gate) = read_junit(tmp_path / "r.xml")
    assert notebook.get("name") == name and notebook.find("failure").text == '<boom & "bang">'
    assert gate.get("name") == f"{name}: `<&>` > 1" and gate.find("failure") is not None


def test_junit_replaces_an_existing_file_atomically(tmp_path, reports):
    path = tmp_path / "r.xml"
    path.write_text("old")
    write_junit(path, reports[1:2])
    _, cases = read_junit(path)
    assert [c.get("name") for c in cases] == ["eval.ipynb"]
    assert [p.name for p in tmp_path.iterdir()] == ["r.xml"]


def test_empty_junit_is_valid(tmp_path):
    write_junit(tmp_path / "r.xml", [])
    suite, cases = read_junit(tmp_path / "r.xml")
    assert cases == [] and (suite.get("tests"), suite.get("failures")) == ("0", "0")


def unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_github_summary_table(reports):
    text = github_summary(reports)
    lines = text.splitlines()
    assert lines[0] == "### nbmlops: 0 of 3 notebook(s) passed"
    header, _, *rows = lines[2:]
    assert len(rows) == 3 and all(unescaped_pipes(row) == unescaped_pipes(header) == 7 for row in rows)
    assert rows[0].startswith("| train.ipynb | ✅ FINISHED | 12.2 s | accuracy = 0.93, rmse = 1.5 |")
    assert "✅ accuracy &gt;= 0.9<br>❌ rmse &lt; 1.2" in rows[0]
    assert rows[0].endswith("| [abc123](http://mlflow:5000/#/runs/abc123) |")
    assert rows[1].startswith("| eval.ipynb | ❌ FAILED |") and rows[1].endswith("| - | - | - |")


def test_github_summary_escapes_user_strings():
    gates = tuple(evaluate_gates([parse_gate("`a|b` > 0")], {"a|b": 1.0}))
    report = NotebookReport("x|y\n<script>&_z_.ipynb", "FINISHED", 1.0, gates=gates, metrics={"a|b": 1.0},
                            run_id="r|1", url="https://h/runs/r|1 (x)")
    (row,) = github_summary([report]).splitlines()[4:]
    assert unescaped_pipes(row) == 7
    assert row.startswith(r"| x\|y<br>&lt;script&gt;&amp;\_z\_.ipynb |")
    assert r"✅ \`a\|b\` &gt; 0" in row and r"a\|b = 1" in row
    assert row.endswith(r"| [r\|1](https://h/runs/r%7C1%20%28x%29) |")
    unsafe = NotebookReport("n", "FINISHED", 1.0, run_id="r1", url="javascript:alert(1)")
    assert github_summary([unsafe]).splitlines()[4].endswith("| r1 |")


def test_summary_appended_to_github_step_summary(tmp_path, monkeypatch, reports):
    target = tmp_path / "summary.md"
    target.write_text("previous step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(target))
    assert append_github_summary(reports) is True
    assert target.read_text(encoding="utf-8") == "previous step\n\n" + github_summary(reports)


def test_summary_not_written_without_github_step_summary(tmp_path, monkeypatch, reports):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.chdir(tmp_path)
    assert append_github_summary(reports) is False
    assert append_github_summary(reports, environ={"GITHUB_STEP_SUMMARY": ""}) is False
    assert list(tmp_path.iterdir()) == []
