"""Go templates as Go renders them: each golden case, written by Go's own text/template, rendered again here."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest

from registrar import tag_template
from registrar.gotemplate import parse
from registrar.gotemplate_builtins import TemplateError
from tests.unit.payloads import HERE


@cache
def golden() -> dict[str, Any]:
    return json.loads((HERE / "gotemplate_golden.json").read_text())  # type: ignore[no-any-return]


def render(case: dict[str, Any]) -> str:
    """The case's template rendered by registrar, ``httpGet`` answering from the golden's table."""
    http = golden()["http"]
    functions = tag_template.functions(lambda url: http[url].encode() if url in http else b"")
    view = tag_template.container_view(golden()["containers"][case["container"]])
    out = parse(case["template"], functions).execute(view)
    return out.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


CASES = golden()["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_renders_as_go(case: dict[str, Any]) -> None:
    """registrar renders the template as Go's text/template does, or fails where Go fails."""
    if "error" in case or case.get("python") == "refuses":  # refused on purpose: an error, never other text
        with pytest.raises(TemplateError):
            render(case)
    else:
        assert render(case) == case["output"]
