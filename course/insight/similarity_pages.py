"""Similarity as self-contained HTML: ``index.html`` (pairs, groups, notes) and a side-by-side page per
flagged pair with the matching passages highlighted. Every file's text is escaped (copydetect's
highlighter escapes with markupsafe); file names never carry student text.
"""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import quote

import numpy as np
from copydetect.utils import highlight_overlap

from course.insight import plots
from course.insight.pages import _figure, _page
from course.insight.similarity import SimilarityReport, VERDICT_NOTE, Pair

e = html.escape
MAX_PAGES = 500     # side-by-side pages written at most (the highest scores); the index lists every pair

SIDE_CSS = """.verdict{border-left:4px solid #8a5a00;background:#fff6e0;padding:.6rem .9rem}
.sides{display:grid;grid-template-columns:1fr 1fr;gap:1rem}.sides pre{background:#f7f7f7;padding:.6rem;
overflow-x:auto;font-size:.82rem;line-height:1.35;white-space:pre-wrap;word-break:break-word}
mark{background:#ffd36b;color:inherit}"""


def _pct(x: float) -> str:
    return f"{x * 100:.0f} %"


def _label(rep: SimilarityReport, key: str) -> str:
    return rep.label(key)


def index_page(rep: SimilarityReport, links: dict[tuple[str, str], str]) -> str:
    body = [f"<h1>{e(rep.slug)}: code similarity</h1>",
            f"<p class='verdict' id='verdict'>{e(VERDICT_NOTE)}</p>",
            f"<p class='meta'>{sum(1 for d in rep.documents.values() if d.kind == 'student')} submission(s), "
            f"threshold {rep.threshold:g}; the stub's code never counts; {rep.seconds:.1f} s.</p>"]
    groups = [g for g in rep.clusters if len(g) > 2]
    body.append("<h2>Groups</h2>")
    if groups:
        body.append("<ul id='groups'>" + "".join(
            "<li>" + ", ".join(e(_label(rep, k)) for k in g) + "</li>" for g in groups) + "</ul>")
    else:
        body.append("<p id='groups'>No group of three or more.</p>")
    sections = [("Pairs of students", "student"), ("Matches with the reference solution", "reference"),
                ("Matches with --against sources", "against")]
    for title, kind in sections:
        rows = [p for p in rep.flagged if rep.documents[p.b].kind == kind]
        body.append(f"<h2>{e(title)} above {rep.threshold:g}</h2>")
        if not rows:
            body.append(f"<p class='ok' data-kind='{kind}'>None.</p>")
            continue
        body.append(f"<table data-kind='{kind}'><tr><th>score</th><th>first</th><th>share of first</th><th>second</th>"
                    "<th>share of second</th><th>side by side</th></tr>")
        for p in rows:
            href = links.get((p.a, p.b))
            view = f"<a href='{e(quote(href))}'>view</a>" if href else f"not written (only the top {MAX_PAGES})"
            body.append(f"<tr><td class='num'>{_pct(p.score)}</td><td>{e(_label(rep, p.a))}</td>"
                        f"<td class='num'>{_pct(p.share_a)}</td><td>{e(_label(rep, p.b))}</td>"
                        f"<td class='num'>{_pct(p.share_b)}</td><td>{view}</td></tr>")
        body.append("</table>")
    below = [p for p in rep.pairs if p.score < rep.threshold][:10]
    body.append(f"<h2>The closest pairs below {rep.threshold:g}</h2>")
    if below:
        body.append("<table id='below'><tr><th>score</th><th>first</th><th>second</th><th>how</th></tr>" + "".join(
            f"<tr><td class='num'>{_pct(p.score)}</td><td>{e(_label(rep, p.a))}</td><td>{e(_label(rep, p.b))}</td>"
            f"<td>{'matching passages' if p.exact else 'shared fingerprints (estimate)'}</td></tr>" for p in below)
            + "</table>")
    else:
        body.append("<p id='below'>None.</p>")
    scores = [p.score for p in rep.student_pairs]
    counts, edges = np.histogram(np.asarray(scores, dtype=float), bins=20, range=(0.0, 1.0))
    body.append("<h2>All pairs of students</h2>")
    body.append(_figure(plots.histogram("pair-scores", [round(float(x), 4) for x in edges], [int(c) for c in counts],
                                        title=f"{rep.slug}: similarity of every pair of students",
                                        xlabel="score (share of code in matching passages)", ylabel="pairs"),
                        f"The threshold is {rep.threshold:g}. Pairs well below it are estimated from shared "
                        "fingerprints only."))
    notes = rep.notes
    body.append("<h2>Notes</h2>")
    body.append("<ul id='notes'>" + "".join(f"<li>{e(who)}: {e(n)}</li>" for who, n in notes) + "</ul>"
                if notes else "<p id='notes'>Every submission was read in full.</p>")
    return _page(f"{rep.slug} — similarity", [f"<style>{SIDE_CSS}</style>", *body])


def _highlighted(text: str, slices) -> str:
    if slices is None or len(slices) == 0 or np.asarray(slices).size == 0:
        return e(text)
    doc, _ = highlight_overlap(text, np.asarray(slices), "<mark>", "</mark>", escape_html=True)
    return doc


def pair_page(rep: SimilarityReport, p: Pair) -> str:
    a, b = rep.documents[p.a], rep.documents[p.b]
    body = ["<p><a href='index.html'>← all pairs</a></p>",
            f"<h1>{e(_label(rep, p.a))} and {e(_label(rep, p.b))}: {_pct(p.score)}</h1>",
            f"<p class='verdict'>{e(VERDICT_NOTE)}</p>",
            f"<p>{_pct(p.share_a)} of {e(_label(rep, p.a))}'s code and {_pct(p.share_b)} of "
            f"{e(_label(rep, p.b))}'s lie in matching passages (highlighted; the stub's code is not counted).</p>",
            "<div class='sides'>",
            f"<div><h2>{e(_label(rep, p.a))}</h2><pre class='side' data-side='a'>{_highlighted(a.text, p.slices_a)}</pre></div>",
            f"<div><h2>{e(_label(rep, p.b))}</h2><pre class='side' data-side='b'>{_highlighted(b.text, p.slices_b)}</pre></div>",
            "</div>"]
    return _page(f"{rep.slug} — {a.label} / {b.label}", [f"<style>{SIDE_CSS}</style>", *body])


def write(rep: SimilarityReport, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    links: dict[tuple[str, str], str] = {}
    written = []
    for i, p in enumerate(rep.flagged[:MAX_PAGES], 1):
        name = f"pair-{i:03d}.html"
        links[(p.a, p.b)] = name
        path = out / name
        path.write_text(pair_page(rep, p), encoding="utf-8")
        written.append(path)
    index = out / "index.html"
    index.write_text(index_page(rep, links), encoding="utf-8")
    rep.written = [index, *written]
    return rep.written

