"""The HTML report: one self-contained file drawn from the JSON result.

``poolsvc run --report run.html`` and ``poolsvc report RESULT.json -o run.html``
both call :func:`render` on the result document (:mod:`poolsvc.report.result`), so a
report re-rendered later from a saved result is the same report. The page
inlines everything it needs - uPlot (MIT, its licence notice kept in the page),
its own script and style, and the result as JSON - and opens with the network off.
"""

from __future__ import annotations

import html
from importlib import resources
from typing import Any, Final

import orjson

_ASSETS: Final = resources.files("poolsvc") / "assets"


def _asset(name: str) -> str:
    return (_ASSETS / name).read_text(encoding="utf-8")


def _script_safe(text: str) -> str:
    """Text that cannot end the ``<script>`` element it sits in."""
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def render(doc: dict[str, Any]) -> str:
    """The report page of the result ``doc``."""
    # JSON escapes '<' as \u003c: the data can hold a target's name, which is the user's
    data = orjson.dumps(doc).decode().replace("<", "\\u003c")
    title = html.escape(f"poolsvc report: {doc.get('target', '')}")
    licence = html.escape(_asset("uplot.LICENSE"))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{_asset("uplot.min.css")}</style>
<style>{_asset("report.css")}</style>
</head>
<body>
<header><h1>{title}</h1><p id="what"></p></header>
<div id="cards"></div>
<p class="note">Shaded: red where a breaker was open or half-open, orange where a fault was
injected. Every figure is exact: rows are differences of the run's counters, and each
row's percentiles come from its own histogram.</p>
<main id="charts"></main>
<section id="gate" hidden><h2>Thresholds</h2>
<table id="thresholds"><thead><tr><th>threshold</th><th>value</th><th>verdict</th></tr></thead>
<tbody></tbody></table></section>
<h2>Summary</h2>
<p class="note">The same figures, under the same names, as <code>poolsvc run --json</code>.</p>
<table id="summary"><thead><tr><th>metric</th><th>value</th></tr></thead><tbody></tbody></table>
<h2>Events</h2>
<pre id="events"></pre>
<footer><details><summary>uPlot licence</summary><pre>{licence}</pre></details></footer>
<script>{_script_safe(_asset("uplot.min.js"))}</script>
<script type="application/json" id="result">{data}</script>
<script>{_script_safe(_asset("report.js"))}</script>
</body>
</html>
"""
