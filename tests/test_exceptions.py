"""One tree of errors: every error nbmlops raises on purpose is an NbmlopsError whose class carries its exit code
and HTTP status, and the command line and the server read them from there."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import nbmlops
from nbmlops.exceptions import EXIT_FAILED, EXIT_REFUSED, EXIT_USAGE, NbmlopsError


def _all_errors() -> list[type[NbmlopsError]]:
    for module in pkgutil.walk_packages(nbmlops.__path__, "nbmlops."):
        importlib.import_module(module.name)
    found, todo = [], [NbmlopsError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return found


def test_every_error_carries_an_exit_code_and_an_http_status():
    errors = _all_errors()
    assert len(errors) > 30
    for cls in errors:
        assert cls.exit_code in (EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED), cls
        assert 400 <= cls.http_status < 600, cls
        if issubclass(cls, ValueError) and cls.__name__ != "ConfigError":
            assert cls.exit_code == EXIT_USAGE and cls.http_status in (400, 404, 409, 413), cls


@pytest.mark.parametrize("module, name, code, status", [
    ("nbmlops.registry.promote", "AliasChangedError", 3, 409),
    ("nbmlops.registry.models", "ModelNotFoundError", 2, 404),
    ("nbmlops.tracking.query", "RunNotFoundError", 2, 404),
    ("nbmlops.exceptions", "StoreUnavailableError", 1, 503),
    ("nbmlops.exceptions", "ConfigError", 2, 500),
    ("nbmlops.server.jobs", "JobLimitError", 1, 429),
    ("nbmlops.server.handlers", "BodyTooLargeError", 2, 413),
    ("nbmlops.runner.parameters", "ParameterTypeError", 2, 400),
])
def test_what_a_class_means_to_the_command_line_and_the_server(module, name, code, status):
    from nbmlops.cli import _report
    from nbmlops.server.handlers import _status_for

    cls = getattr(importlib.import_module(module), name)
    assert (cls.exit_code, cls.http_status) == (code, status)
    error = cls.__new__(cls)
    Exception.__init__(error, "what went wrong")
    assert _report(error) == code
    assert _status_for(error) == status


def test_the_whole_tree_is_defined_in_exceptions_and_drawn_in_its_docstring():
    import re

    import nbmlops.exceptions as exceptions

    drawn = {}
    for line in (exceptions.__doc__ or "").splitlines():
        found = re.match(r"^\s*[│├└─\s]*(\w+)\s+(\d)\s+(\d{3})\b", line)
        if found:
            drawn[found.group(1)] = (int(found.group(2)), int(found.group(3)))
    errors = _all_errors()
    assert {cls.__name__ for cls in errors} == set(drawn) == set(exceptions.__all__)
    for cls in errors:
        assert cls.__module__ == "nbmlops.exceptions", cls
        assert drawn[cls.__name__] == (cls.exit_code, cls.http_status), cls


def test_a_permission_refusal_named_about_its_resource_keeps_everything_else():
    from nbmlops.exceptions import PermissionRefused

    refused = PermissionRefused("http://h", "bob", "create runs in", "EDIT", "experiment")
    named = refused.about("experiment", "churn")
    assert (named.user, named.action, named.permission, named.resource) == ("bob", "create runs in", "EDIT", "churn")
    assert "MLflow user 'bob' may not create runs in experiment 'churn' on http://h: that needs EDIT" in str(named)
    assert refused.about("registered model", "churn") is refused  # about another kind: unchanged
    assert named.about("experiment", "other") is named  # already named


def test_a_refusal_whose_permission_is_not_known_reads_as_one_plain_sentence():
    from nbmlops.exceptions import PermissionRefused

    refused = PermissionRefused("http://h", "bob", "call /api/2.0/mlflow/traces/x", None)
    assert str(refused).startswith(
        "MLflow user 'bob' may not call /api/2.0/mlflow/traces/x on http://h (the server answered 403); ")
    assert " for this" not in str(refused) and "more permission" not in str(refused)


def test_permission_refused_has_one_import_path():
    from nbmlops.backend import identity

    assert "PermissionRefused" not in identity.__all__
