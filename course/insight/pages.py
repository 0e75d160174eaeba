"""The class report as self-contained HTML: ``index.html`` (the course) and ``<slug>.html`` per assignment.

Everything is inline (CSS, SVG figures): the pages open from disk with no network. Every string
that a student controls (ids, test names, messages) is escaped. Colour is never the only signal:
each state is also written out.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
from pathlib import Path
from typing import Iterable
from urllib.parse import quote

from course.insight import plots
from course.insight.health import BROKEN_BELOW, MIN_STRONG, STRONG_SHARE
from course.insight.summary import AssignmentSummary, CourseSummary, _fmt, cell_for

e = html.escape

CSS = """
:root{--ok:#1f6f43;--late:#8a5a00;--pend:#5b4a9e;--bad:#a11d1d;--miss:#666;--line:#d5d9de}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5rem auto;max-width:72rem;padding:0 1rem;
color:#1a1a1a;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid var(--line);padding-bottom:.2rem}
.meta{color:#555}table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.92rem}
td,th{border:1px solid var(--line);padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f4f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
.cell-score{background:#e7f4ec;color:var(--ok)}.cell-late{background:#fff3dc;color:var(--late)}
.cell-pending{background:#ece9f7;color:var(--pend)}.cell-failed{background:#fbe4e4;color:var(--bad)}
.cell-missing{background:#f2f2f2;color:var(--miss);font-style:italic}.cell-not-graded{background:#f7f7f7;color:#444}
.flag{border-left:4px solid var(--bad);background:#fdf2f2;padding:.5rem .8rem;margin:.6rem 0}
.flag h3{margin:.1rem 0 .3rem;font-size:1rem}.ok{color:var(--ok)}.bad{color:var(--bad)}
figure{margin:1rem 0}figure svg{max-width:100%;height:auto}figcaption{color:#555;font-size:.9rem}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(28rem,1fr));gap:1rem}
.legend span{display:inline-block;padding:.1rem .5rem;margin-right:.4rem;border-radius:3px}
.empty{padding:1rem;background:#f6f6f6;border:1px dashed #bbb}code{font-size:.9em}td code{overflow-wrap:anywhere}
"""


def _page(title: str, body: Iterable[str]) -> str:
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{e(title)}</title><style>{CSS}</style></head><body>" + "".join(body) + "</body></html>\n")


def _figure(p: plots.Plot, caption: str = "") -> str:
    data = e(json.dumps(p.data), quote=True)
    cap = f"<figcaption>{e(caption)}</figcaption>" if caption else ""
    return f"<figure class='plot' id='plot-{e(p.id)}' data-plot='{data}'>{p.svg}{cap}</figure>"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.0f} %"


def _generated() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _feedback_href(out: Path, feedback: Path | None, slug: str, student: str) -> str | None:
    if feedback is None:
        return None
    target = feedback / slug / f"{student}.html"
    if not target.is_file():
        return None
    return quote(os.path.relpath(target, out).replace(os.sep, "/"))


# ------------------------------------------------------------------ course page

def course_page(c: CourseSummary, out: Path, feedback: Path | None) -> str:
    body = [f"<h1>{e(c.name)} — class report</h1>",
            f"<p class='meta'>{len(c.students)} student(s), {len(c.assignments)} assignment(s); "
            f"generated {_generated()} from the gradebook.</p>"]
    body.append("<h2>Assignments</h2><table id='assignments'><tr><th>assignment</th><th>graded</th>"
                "<th>not graded</th><th>grading failed</th><th>missing</th><th>mean</th><th>median</th>"
                "<th>tests to check</th></tr>")
    for a in c.assignments:
        flagged = len(a.flagged)
        body.append(
            f"<tr><td><a href='{e(quote(a.slug))}.html'>{e(a.slug)}</a> — {e(a.title)}</td>"
            f"<td class='num'>{len(a.graded)}</td><td class='num'>{len(a.by_status('not graded'))}</td>"
            f"<td class='num'>{len(a.by_status('error'))}</td><td class='num'>{len(a.by_status('missing'))}</td>"
            f"<td class='num'>{'—' if a.mean is None else _fmt(a.mean)} / {_fmt(a.points)}</td>"
            f"<td class='num'>{'—' if a.median is None else _fmt(a.median)}</td>"
            f"<td class='num {'bad' if flagged else 'ok'}'>{flagged or 'none'}</td></tr>")
    body.append("</table>")
    body.append("<h2>Students × assignments</h2><p class='legend'>"
                "<span class='cell-score'>score</span><span class='cell-late'>late (penalty)</span>"
                "<span class='cell-pending'>GPU tests pending</span><span class='cell-failed'>grading failed</span>"
                "<span class='cell-not-graded'>not graded</span><span class='cell-missing'>missing</span>"
                "Scores are after late penalties; a cell links to the student's feedback page where one was "
                "written (<code>course feedback</code>).</p>")
    if not c.students:
        body.append("<p class='empty'>No student has submitted anything yet.</p>")
    else:
        body.append("<table id='matrix'><tr><th>student</th>"
                    + "".join(f"<th><a href='{e(quote(a.slug))}.html'>{e(a.slug)}</a></th>" for a in c.assignments)
                    + f"<th>total / {_fmt(c.total_points)}</th></tr>")
        for st in c.students:
            cells = []
            for a in c.assignments:
                cell = cell_for(next((g for g in a.rows if g.student == st), None))
                href = _feedback_href(out, feedback, a.slug, st)
                text = e(cell.text)
                if href:
                    text = f"<a href='{e(href)}'>{text}</a>"
                cls = "cell-" + cell.state.replace(" ", "-")
                cells.append(f"<td class='{cls}' data-state='{e(cell.state)}' title='{e(cell.detail)}'>{text}</td>")
            body.append(f"<tr><th>{e(st)}</th>{''.join(cells)}<td class='num'>{_fmt(c.totals[st])}</td></tr>")
        body.append("</table>")
    h = c.total_hist
    body.append("<h2>Course total</h2>")
    body.append(_figure(plots.histogram("course-total", h.edges, h.counts, title="Course total (after late penalties)",
                                        xlabel=f"points (of {_fmt(c.total_points)})"),
                        "Each bin is a tenth of the total; the last bin includes full marks. Missing work counts 0."))
    return _page(f"{c.name} — class report", body)


# ------------------------------------------------------------------ assignment page

def assignment_page(a: AssignmentSummary, out: Path, feedback: Path | None) -> str:
    body = [f"<p><a href='index.html'>← course</a></p><h1>{e(a.slug)}: {e(a.title)}</h1>",
            f"<p class='meta'>due {e(a.due)}, {_fmt(a.points)} points; generated {_generated()}.</p>",
            "<table id='counts'><tr><th>graded</th><th>GPU tests pending</th><th>not graded</th>"
            "<th>grading failed</th><th>missing</th></tr>"
            f"<tr><td class='num'>{len(a.graded)}</td><td class='num'>{len(a.pending)}</td>"
            f"<td class='num'>{len(a.by_status('not graded'))}</td><td class='num'>{len(a.by_status('error'))}</td>"
            f"<td class='num'>{len(a.by_status('missing'))}</td></tr></table>"]
    body += _status_lists(a, out, feedback)
    if not a.graded:
        body.append("<p class='empty' id='nobody-graded'>Nobody has been graded on this assignment yet: no score, "
                    "task or test figures until <code>course grade</code> records a result.</p>")
        return _page(f"{a.slug} — class report", body)
    body += _scores(a) + _tasks(a) + _health(a) + _tests(a) + _lateness(a) + _cost(a) + _outcomes(a)
    return _page(f"{a.slug} — class report", body)


def _students(names: Iterable[str]) -> str:
    return ", ".join(e(n) for n in names)


def _status_lists(a: AssignmentSummary, out: Path, feedback: Path | None) -> list[str]:
    parts = []
    if a.pending:
        parts.append(f"<p class='cell-pending'>GPU tests pending (shown as pending, not failed): "
                     f"{_students(g.student for g in a.pending)}. <code>course grade --only-pending --device cuda"
                     "</code> fills them in.</p>")
    if a.by_status("error"):
        parts.append("<p class='cell-failed'>Grading failed (infrastructure, retried by the next "
                     f"<code>course grade</code>): {_students(g.student for g in a.by_status('error'))}.</p>")
    if a.by_status("missing"):
        parts.append(f"<p class='cell-missing'>No submission: {_students(g.student for g in a.by_status('missing'))}.</p>")
    return parts


def _scores(a: AssignmentSummary) -> list[str]:
    h = a.scores
    return ["<h2>Scores</h2>",
            f"<p>mean {_fmt(a.mean or 0)}, median {_fmt(a.median or 0)} of {_fmt(a.points)} over "
            f"{len(a.graded)} graded submission(s), after late penalties.</p>",
            _figure(plots.histogram("scores", h.edges, h.counts, title=f"{a.slug}: score distribution",
                                    xlabel=f"points (of {_fmt(a.points)})"),
                    "Each bin is a tenth of the points; the last bin includes full marks.")]


def _tasks(a: AssignmentSummary) -> list[str]:
    labels = [t.task for t in a.tasks]
    series = {"mean": [round(100 * t.mean / t.max_points, 1) if t.max_points else 0 for t in a.tasks],
              "median": [round(100 * t.median / t.max_points, 1) if t.max_points else 0 for t in a.tasks],
              "full marks": [round(100 * t.full_share, 1) for t in a.tasks]}
    rows = "".join(f"<tr><td>{e(t.task)}</td><td class='num'>{_fmt(t.max_points)}</td>"
                   f"<td class='num'>{_fmt(round(t.mean, 2))}</td><td class='num'>{_fmt(round(t.median, 2))}</td>"
                   f"<td class='num'>{_pct(t.full_share)}</td></tr>" for t in a.tasks)
    return ["<h2>Points per task</h2>",
            _figure(plots.grouped_bars("tasks", labels, series, title=f"{a.slug}: points per task",
                                       xlabel="task", ylabel="% of the task's points / of students", ymax=105),
                    "Mean and median points as a share of the task's points, and the share of students with full "
                    "marks on the task."),
            "<table id='tasks'><tr><th>task</th><th>points</th><th>mean</th><th>median</th>"
            f"<th>full marks</th></tr>{rows}</table>"]


def _health(a: AssignmentSummary) -> list[str]:
    parts = ["<h2>Test health</h2>",
             f"<p>For each test: its pass rate among <em>otherwise-strong</em> students (those who pass at least "
             f"{STRONG_SHARE:.0%} of the other tests of its task), and its <em>discrimination</em>, the correlation "
             "of passing it with the rest of the score (near +1: the test tells strong from weak work; near 0 or "
             "below: it does not). A test is flagged when fewer than "
             f"{BROKEN_BELOW:.0%} of at least {MIN_STRONG} otherwise-strong students pass it (a broken expectation "
             "or an unclear specification), or when two gradings of identical content gave it different outcomes "
             "(a flaky test: a grading bug; <code>course validate --seeds N</code> looks for these before grading)."
             "</p>"]
    flagged = a.flagged
    if not flagged:
        parts.append("<p class='ok' id='no-flags'>No test needs checking.</p>")
    for h in flagged:
        items = "".join(f"<li>{e(x)}</li>" for x in h.evidence)
        who = (f"<li>otherwise-strong students who failed it: {_students(h.failed_by_strong[:12])}"
               f"{' …' if len(h.failed_by_strong) > 12 else ''}</li>") if h.failed_by_strong else ""
        parts.append(f"<div class='flag' data-test='{e(h.test_id)}'><h3>check this test: <code>{e(h.name)}</code> "
                     f"(task {e(str(h.task))}, {'hidden' if h.hidden else 'public'})</h3>"
                     f"<p>{e('; '.join(h.flags))}</p><ul>{items}{who}</ul></div>")
    rows = []
    for h in a.health:
        disc = "—" if h.discrimination is None else f"{h.discrimination:+.2f}"
        strong = "—" if not h.strong_n else f"{h.strong_passed}/{h.strong_n} ({_pct(h.strong_pass_rate)})"
        rows.append(f"<tr class='{'bad' if h.flags else ''}'><td><code>{e(h.name)}</code></td><td>{e(str(h.task))}</td>"
                    f"<td>{'hidden' if h.hidden else 'public'}</td><td class='num'>{_pct(h.pass_rate)}</td>"
                    f"<td class='num'>{strong}</td><td class='num'>{disc}</td>"
                    f"<td>{'check this test' if h.flags else 'ok'}</td></tr>")
    parts.append("<table id='health'><tr><th>test</th><th>task</th><th>kind</th><th>pass rate</th>"
                 "<th>passed by otherwise-strong</th><th>discrimination</th><th>verdict</th></tr>"
                 + "".join(rows) + "</table>")
    return parts


def _tests(a: AssignmentSummary) -> list[str]:
    rows = []
    for t in a.tests:
        o = t.outcomes
        rows.append(f"<tr><td><code>{e(t.name)}</code></td><td>{e(str(t.task))}</td>"
                    f"<td>{'hidden' if t.hidden else 'public'}</td><td class='num'>{_fmt(t.max_points)}</td>"
                    f"<td class='num'>{o.get('passed', 0)}/{t.decided}</td><td class='num'>{_pct(t.pass_rate)}</td>"
                    + "".join(f"<td class='num'>{o.get(k, 0)}</td>" for k in ("failed", "error", "timeout", "crash",
                                                                             "pending"))
                    + "</tr>")
    return ["<h2>Tests, hardest first</h2>",
            "<table id='tests'><tr><th>test</th><th>task</th><th>kind</th><th>points</th><th>passed</th>"
            "<th>pass rate</th><th>failed</th><th>error</th><th>timeout</th><th>crash</th><th>pending</th></tr>"
            + "".join(rows) + "</table>"]


def _lateness(a: AssignmentSummary) -> list[str]:
    late, sub = a.late_rows, a.submitted
    used = a.extensions_used
    share = f"{len(used)} of {len(sub)} ({_pct(len(used) / len(sub) if sub else None)})"
    h = a.late
    return ["<h2>Lateness</h2>",
            f"<p>{len(sub) - len(late)} on time, {len(late)} late (after their due date, extensions applied); "
            f"handed in after the course's due date within an extension: {share}.</p>",
            _figure(plots.histogram("late", h.edges, h.counts, title=f"{a.slug}: hours late (late submissions)",
                                    xlabel="hours after the due date that applied", colour=plots.ORANGE))]


def _cost(a: AssignmentSummary) -> list[str]:
    h = a.cost
    slow = "".join(f"<li>{e(s)}: {d:.1f} s</li>" for s, d in a.durations[:5])
    errors = a.by_status("error")
    err = "".join(f"<li>{e(g.student)}: {e((g.message or '')[:300])}</li>" for g in errors)
    return ["<h2>Grading cost</h2>",
            f"<p>seconds per graded submission: median {a.cost_median:.1f}, p95 {a.cost_p95:.1f}. "
            f"Infrastructure errors recorded: {a.error_gradings} (students whose latest grading failed: "
            f"{len(errors)}).</p>",
            f"<p>Slowest five:</p><ul id='slowest'>{slow}</ul>",
            f"<ul id='infra-errors'>{err}</ul>" if err else "",
            _figure(plots.histogram("cost", h.edges, h.counts, title=f"{a.slug}: grading time per submission",
                                    xlabel="seconds", ylabel="submissions", colour=plots.GREY))]


def _outcomes(a: AssignmentSummary) -> list[str]:
    mix = a.outcome_mix
    labels = [k for k in ("passed", "failed", "error", "timeout", "crash", "pending", "skipped") if mix[k]]
    colours = {"passed": plots.GREEN, "failed": plots.RED, "error": plots.RED, "timeout": plots.ORANGE,
               "crash": plots.RED, "pending": "#6d5bb5", "skipped": plots.GREY}
    return ["<h2>Outcome mix</h2>",
            _figure(plots.horizontal_bars("outcomes", labels, [mix[k] for k in labels],
                                          title=f"{a.slug}: test outcomes over all graded submissions",
                                          xlabel="test results", colours=[colours[k] for k in labels]),
                    "crash: the student's process ended abruptly; pending: a GPU test waiting for a GPU machine.")]


# ------------------------------------------------------------------ writing

def write(c: CourseSummary, out: Path, feedback: Path | None = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    written = [out / "index.html"]
    written[0].write_text(course_page(c, out, feedback), encoding="utf-8")
    for a in c.assignments:
        path = out / f"{a.slug}.html"
        path.write_text(assignment_page(a, out, feedback), encoding="utf-8")
        written.append(path)
    return written
