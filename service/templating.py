"""The server's HTML: one Jinja2 environment over service/templates (report/ for reports, console/ for the web
console), autoescaping every value and failing on an undefined name, so a template typo is an error in the tests,
not a blank cell on a page."""

from __future__ import annotations

from functools import cache
from typing import Any

import jinja2


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("editaudit.service", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    from editaudit.service.services.reports.view import fmt, fmt_ci, fmt_p

    env.filters.update(num=fmt, signed=lambda v: fmt(v, True), ci=fmt_ci, pval=fmt_p)
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)
