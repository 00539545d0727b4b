"""`nbmlops run -p` and `nbmlops sweep --grid` refuse values of the wrong type for the notebook's declared
parameters before any kernel starts: one line naming the parameter and the expected type, exit 2 (usage
error), nothing recorded, nothing executed. Real `nbmlops` processes, real notebooks, a real store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nbmlops.runner import run_notebook
from nbmlops.runner.parameters import ParameterError, ParameterTypeError
from tests.conftest import runs_of
from tests.test_runner import notebook

EXIT_USAGE = 2

#: the parameters cell: the types come from the defaults, and from a `# type:` comment
PARAMETERS = "C = 1.0\nn = 10\nlabel = 'a'\nflag = True\nlimit = None  # type: int"
#: the cell after it leaves a trace if it ever runs
BODY = "open('executed', 'w').write(repr((C, n, label, flag, limit)))\nscore = C * n"


def _nbmlops(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nbmlops.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=600,
        check=False,
    )


def _assert_refused(result: subprocess.CompletedProcess, *named: str) -> None:
    assert result.returncode == EXIT_USAGE, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("nbmlops:")]
    assert len(lines) == 1, result.stderr
    for text in named:
        assert text in lines[0], lines[0]


def _assert_nothing_ran(project: Path, client, experiment: str) -> None:
    assert not (project / "executed").exists()  # no kernel ran a cell
    assert not (project / ".nbmlops" / "outputs").exists()  # papermill never started
    assert runs_of(client, experiment) == []


@pytest.mark.parametrize(
    "options, named",
    [
        (["-p", "C", "abc"], ["parameter C", "a number (float)", "a string"]),
        (["-p", "n", "1.5"], ["parameter n", "an integer (int)"]),
        (["-y", "flag: 1"], ["parameter flag", "true or false (bool)"]),
        (["-p", "limit", "many"], ["parameter limit", "an integer (int)", "a string"]),
        (["-y", "label: [1, 2]"], ["parameter label", "a string (str)", "a list"]),
    ],
    ids=["string-for-float", "float-for-int", "int-for-bool", "string-for-type-comment-int", "list-for-str"],
)
def test_run_with_a_value_of_the_wrong_type_is_refused_before_any_kernel_starts(project, client, request, options,
                                                                               named):
    path = notebook(project / "typed.ipynb", BODY, parameters=PARAMETERS)
    result = _nbmlops("run", str(path), *options, "--no-progress", cwd=project)
    _assert_refused(result, *named)
    _assert_nothing_ran(project, client, request.node.name)


def test_run_with_values_of_the_declared_types_executes(project, client, request):
    path = notebook(project / "typed.ipynb", BODY, parameters=PARAMETERS)
    result = _nbmlops("run", str(path), "-p", "C", "2", "-p", "n", "3", "-y", "{label: b, flag: false, limit: 7}",
                      "--no-progress", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (project / "executed").read_text() == "(2, 3, 'b', False, 7)"  # an int is a fine float
    (run,) = runs_of(client, request.node.name)
    assert run.info.status == "FINISHED"


@pytest.mark.parametrize(
    "grid, named",
    [
        (["--grid", "C=0.1,abc,1"], ["parameter C", "'abc'", "a number (float)"]),
        (["--grid", "C=0.1,1", "--grid", "n=1,2.5"], ["parameter n", "2.5", "an integer (int)"]),
        (["--grid", "C=0.1,1", "-p", "label", "3"], ["parameter label", "a string (str)"]),
    ],
    ids=["grid-string-for-float", "grid-float-for-int", "fixed-int-for-str"],
)
def test_sweep_with_a_value_of_the_wrong_type_is_refused_before_any_run_starts(project, client, request, grid, named):
    path = notebook(project / "typed.ipynb", BODY, parameters=PARAMETERS)
    result = _nbmlops("sweep", str(path), *grid, "--workers", "1", "--no-progress", cwd=project)
    _assert_refused(result, *named)
    _assert_nothing_ran(project, client, request.node.name)


def test_run_notebook_refuses_a_value_of_the_wrong_type_as_a_parameter_error(project, client, request):
    path = notebook(project / "typed.ipynb", BODY, parameters=PARAMETERS)
    with pytest.raises(ParameterTypeError) as caught:
        run_notebook(path, parameters={"C": "abc", "n": 2}, progress_bar=False)
    assert isinstance(caught.value, ParameterError)  # whoever refuses unknown names refuses these too
    assert caught.value.problems == {"C": "expected a number (float), got a string"}
    assert caught.value.bad == ["C"] and caught.value.notebook == "typed.ipynb"
    _assert_nothing_ran(project, client, request.node.name)


def test_run_sweep_refuses_a_grid_value_of_the_wrong_type_before_any_run(project, client, request):
    from nbmlops.runner.sweep import run_sweep

    path = notebook(project / "typed.ipynb", BODY, parameters=PARAMETERS)
    with pytest.raises(ParameterTypeError) as caught:  # the second value is wrong: found before the first runs
        run_sweep(path, {"C": [0.5, "abc"]}, workers=1, progress=False)
    assert "C" in str(caught.value)
    _assert_nothing_ran(project, client, request.node.name)


def test_a_file_that_is_not_a_notebook_is_a_usage_error(project, client, request):
    (project / "broken.ipynb").write_text("{not json")
    result = _nbmlops("run", "broken.ipynb", "--no-progress", cwd=project)
    _assert_refused(result, "broken.ipynb", "not a notebook")
    _assert_nothing_ran(project, client, request.node.name)
