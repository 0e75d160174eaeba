"""`course lms fetch canvas` through canvasapi, against a LOCAL HTTP SERVER on 127.0.0.1 that replays
responses shaped as Canvas's REST API documents them (Courses, Assignments, Submissions, Users;
pagination by the Link header). No real Canvas is contacted."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from click.testing import CliRunner

pytest.importorskip("canvasapi")
pytestmark = pytest.mark.filterwarnings("ignore:Canvas may respond unexpectedly:UserWarning")  # http on 127.0.0.1
pytestmark = pytest.mark.filterwarnings("ignore:Canvas may respond unexpectedly:UserWarning")   # http://127.0.0.1

from course import api
from course.cli import main

import lmsfixtures as F

TOKEN = "test-token-not-secret"


def _submission(p, when, late):
    # fields as in Canvas's Submission object (Submissions API)
    return {"id": 90000 + p.canvas_id, "assignment_id": 7001, "user_id": p.canvas_id, "attempt": 1 if when else None,
            "submitted_at": when, "late": late, "missing": when is None, "seconds_late": 36000 if late else 0,
            "workflow_state": "submitted" if when else "unsubmitted", "submission_type": "online_upload" if when else None}


PAGES = {
    1: [_submission(F.BY_ID["ann"], "2026-10-01T19:59:00Z", False), _submission(F.BY_ID["ben"], "2026-10-02T09:59:00Z", True)],
    2: [_submission(F.BY_ID["dan"], None, False)],
}


class Replay(BaseHTTPRequestHandler):
    seen: list[str] = []

    def log_message(self, *args):       # quiet
        pass

    def do_GET(self):
        Replay.seen.append(self.path)
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._send(401, {"errors": [{"message": "Invalid access token."}]})
        url = urlparse(self.path)
        query = parse_qs(url.query)
        base = f"http://{self.server.server_address[0]}:{self.server.server_address[1]}"
        if url.path == "/api/v1/courses/42":
            return self._send(200, {"id": 42, "name": "LLM internals", "course_code": "LLM101"})
        if url.path == "/api/v1/courses/42/assignments/7001":
            return self._send(200, {"id": 7001, "course_id": 42, "name": "Vector operations",
                                    "due_at": "2026-10-01T23:59:00Z", "points_possible": 10.0})
        if url.path == "/api/v1/courses/42/assignments/7001/submissions":
            page = int(query.get("page", ["1"])[0])
            link = (f'<{base}{url.path}?page=2&per_page=2>; rel="next"' if page == 1 else
                    f'<{base}{url.path}?page=1&per_page=2>; rel="first"')
            return self._send(200, PAGES[page], {"Link": link})
        if url.path == "/api/v1/courses/42/search_users":      # "List users in course"
            assert query.get("enrollment_type[]") == ["student"]
            return self._send(200, [{"id": p.canvas_id, "name": p.name, "sortable_name": p.sortable,
                                     "sis_user_id": p.sis_user_id, "login_id": p.login} for p in F.CLASS])
        return self._send(404, {"errors": [{"message": "The specified resource does not exist."}]})

    def _send(self, code, body, headers={}):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def canvas_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Replay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_then_collect_uses_canvass_record(toy, tmp_path, canvas_server, monkeypatch):
    out = tmp_path / "times.json"
    monkeypatch.setenv("CANVAS_TOKEN", TOKEN)
    result = CliRunner().invoke(main, ["lms", "fetch", "canvas", "--url", canvas_server, "--course-id", "42",
                                       "--canvas-assignment", "7001", "--out", str(out),
                                       "--course", str(toy / "course.yml")])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [s["user_id"] for s in data["submissions"]] == [1001, 1002, 1004]         # both pages
    assert any("page=2" in p for p in Replay.seen)
    assert len(data["students"]) == 5
    # the zip's files and the fetched times go together
    texts = {k: v for k, v in F.toy_texts(toy).items() if k in ("ann", "ben")}
    zip_path = F.canvas_zip(tmp_path / "submissions.zip", texts)
    course = api.load_course(toy / "course.yml")
    rep = api.collect(course, zip_path, "vecops", lms="canvas", times=out)
    assert {i.student: (i.time_source, i.submitted_at) for i in rep.items} == {
        "leeann": ("lms-record", "2026-10-01T19:59:00+00:00"), "odeben": ("lms-record", "2026-10-02T09:59:00+00:00")}


def test_a_missing_or_wrong_token_is_a_clear_error(toy, tmp_path, canvas_server, monkeypatch):
    args = ["lms", "fetch", "canvas", "--url", canvas_server, "--course-id", "42", "--canvas-assignment", "7001",
            "--out", str(tmp_path / "t.json"), "--course", str(toy / "course.yml")]
    monkeypatch.delenv("CANVAS_TOKEN", raising=False)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "$CANVAS_TOKEN is not set" in result.output
    monkeypatch.setenv("CANVAS_TOKEN", "wrong")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "Canvas refused the request" in result.output
