"""One exception tree: the model server answers evergreen.errors' classes with their status."""

from __future__ import annotations

import json

import grpc
import pytest

from evergreen import errors
from evergreen.serving.audit import Call
from evergreen.serving.grpc_common import _status_of
from evergreen.serving.rest_io import error_answer

ANSWERED = [
    (errors.BadRequest, 400, "INVALID_ARGUMENT"),
    (errors.Unauthorized, 401, "UNAUTHENTICATED"),
    (errors.NotFound, 404, "NOT_FOUND"),
    (errors.PayloadTooLarge, 413, "RESOURCE_EXHAUSTED"),
    (errors.Unavailable, 503, "UNAVAILABLE"),
    (errors.DeadlineExceeded, 504, "DEADLINE_EXCEEDED"),
]


def answer(error: Exception) -> tuple[int, dict[str, str]]:
    try:
        raise error
    except Exception as e:  # error_answer logs the traceback of the error being handled
        response = error_answer(e)
    return response.status_code, json.loads(response.body)


@pytest.mark.parametrize("kind,status,code", ANSWERED, ids=[k.__name__ for k, _, _ in ANSWERED])
def test_each_error_answers_its_status_and_grpc_code(kind, status, code):
    assert issubclass(kind, errors.EvergreenError)
    assert answer(kind("what went wrong")) == (status, {"error": "what went wrong"})
    assert _status_of(kind("what went wrong"), Call("grpc_v1")) == (
        getattr(grpc.StatusCode, code),
        "what went wrong",
    )


def test_a_registry_not_found_while_serving_is_a_404_of_the_one_not_found_class():
    # The CLI's NotFound (exit code 1) is the server's 404: there is no second class.
    assert errors.NotFound.exit_code == 1
    assert answer(errors.NotFound("version 9 does not exist")) == (
        404,
        {"error": "version 9 does not exist"},
    )
    with pytest.raises(ImportError):
        __import__("evergreen.serving.errors")


@pytest.mark.parametrize("error", [errors.ConfigError("bad key"), ValueError("bad value")])
def test_errors_without_a_status_are_internal_errors_with_the_class_name(error):
    name = type(error).__name__
    assert answer(error) == (500, {"error": f"internal error: {name}: {error}"})
    assert _status_of(error, Call("grpc_v1", "/x/Y")) == (
        grpc.StatusCode.INTERNAL,
        f"internal error: {name}: {error}",
    )


def test_the_tree_drawn_in_the_docstring_names_every_error_class():
    drawn = {
        line.split("─ ")[-1].split()[0] for line in errors.__doc__.splitlines() if "─ " in line
    }
    classes = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.EvergreenError)
    }
    assert classes - {"EvergreenError"} == drawn, "draw each class in evergreen.errors' docstring"
