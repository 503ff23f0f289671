"""Tags as Go templates (``SERVICE_TAGS``, ``SERVICE_<port>_TAGS``, ``--tags``): what gets registered, what is
warned, what ``plan`` and ``explain`` show, on recorded inspect payloads."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from click.testing import CliRunner
from structlog.testing import capture_logs

from registrar import tag_template
from registrar.cli import cli
from registrar.explain import explain, render
from registrar.options import build_settings
from registrar.services import services_from_container
from registrar.settings import Settings
from tests.unit.fakes import MemoryConsul, MemoryDocker
from tests.unit.payloads import HERE, container, payload, published

S = Settings(hostname="host1")
ID12 = payload("web")["Id"][:12]


def web(labels: dict[str, str]) -> dict[str, Any]:
    """The recorded web container with these labels instead of its own."""
    return container("web", labels=labels)


def tags_and_problems(c: dict[str, Any], settings: Settings = S) -> tuple[list[tuple[str, ...]], list[tuple[str, str]]]:
    result = services_from_container(c, settings)
    return [s.tags for s in result.services], [(p.container, p.key) for p in result.problems]


def test_label_template_rendered_and_split() -> None:
    """A SERVICE_TAGS template renders against the container, then splits on commas (``\\,`` kept, blanks gone)."""
    c = web({"SERVICE_TAGS": r"id={{ strSlice .ID 0 12 }}, team={{ .Config.Labels.team }},a\,b,,", "team": "pay"})
    assert tags_and_problems(c) == ([(f"id={ID12}", "team=pay", "a,b")], [])


def test_flag_template_rendered_for_each_container() -> None:
    """--tags as a template gives each container its own tags, after its SERVICE_TAGS, before the plain ones."""
    settings = dataclasses.replace(S, tags_template="name={{ strSlice .Name 1 }}")
    assert tags_and_problems(web({"SERVICE_TAGS": "x"}), settings) == ([("x", "name=rec-web")], [])
    multi = {s.id: s.tags for s in services_from_container(payload("multi"), settings).services}
    assert multi == {
        "host1:rec-multi:53:udp": ("name=rec-multi", "udp"),
        "host1:rec-multi:80": ("name=rec-multi",),
        "host1:rec-multi:443": ("name=rec-multi",),
    }


def test_port_scoped_template_beats_the_general_one() -> None:
    """SERVICE_<port>_TAGS as a template applies to its port and beats SERVICE_TAGS there."""
    c = container(
        "plain",
        labels={"SERVICE_TAGS": "all", "SERVICE_81_TAGS": "port={{ len .Config.Labels }}"},
        ports=published("80/tcp=127.0.0.1:30000", "81/tcp=127.0.0.1:30001"),
    )
    assert tags_and_problems(c)[0] == [("all",), ("port=2",)]


def test_broken_label_template_warns_once_and_registers_without_it() -> None:
    """A label template that does not parse: one warning naming container and key, the service registered
    with the rest of its tags."""
    c = container("multi", labels={"SERVICE_TAGS": "{{ .Name ", "SERVICE_NAME": "m"})  # three ports, one warning
    settings = dataclasses.replace(S, tags=("always",))
    tags, problems = tags_and_problems(c, settings)
    assert sorted(tags) == [("always",), ("always",), ("always", "udp")]
    assert problems == [("rec-multi", "label SERVICE_TAGS")]
    message = services_from_container(c, settings).problems[0].message
    assert "unclosed action" in message


def test_template_failing_for_one_container_only() -> None:
    """A template that works for one container and fails for another (an index past an empty list) warns for
    that one only; both are registered."""
    label = {"SERVICE_TAGS": "cmd={{ sIndex 0 .Config.Cmd }}"}
    with_cmd = web(label)
    without = web(label)
    without["Config"]["Cmd"] = None
    assert tags_and_problems(with_cmd) == ([(f"cmd={with_cmd['Config']['Cmd'][0]}",)], [])
    assert tags_and_problems(without) == ([()], [("rec-web", "label SERVICE_TAGS")])


def test_flag_template_failing_warns_naming_the_flag() -> None:
    """--tags failing for a container (a nil pointer: no swarm node) warns naming --tags; its other tags stay."""
    settings = dataclasses.replace(S, tags_template="node={{ .Node.Name }}")
    assert tags_and_problems(web({"SERVICE_TAGS": "mine"}), settings) == ([("mine",)], [("rec-web", "--tags")])


def test_missing_label_is_no_value_as_go_prints_it() -> None:
    """A missing map key renders as Go renders it (``<no value>``); ``index`` gives the empty string."""
    c = web({"SERVICE_TAGS": '{{ .Config.Labels.nope }},x{{ index .Config.Labels "nope" }}'})
    assert tags_and_problems(c) == ([("<no value>", "x")], [])


def test_no_template_no_engine() -> None:
    """Without ``{{`` anywhere, building services does not import the template engine (no cost on the plain path)."""
    code = (
        "import sys, json; from registrar.services import services_from_container; "
        "from registrar.settings import Settings; "
        f"c = json.load(open({str(HERE / 'web.json')!r})); "
        "assert services_from_container(c, Settings(hostname='h', tags=('a',))).services[0].tags == ('a', 'b,c'); "
        "print(sorted(m for m in sys.modules if 'template' in m or m.startswith('registrar.go')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_warning_logged_by_the_daemon(one_shot: Any) -> None:
    """sync logs one container_label_problem naming the container and the key, and registers the service."""
    consul = MemoryConsul()
    daemon = one_shot(MemoryDocker(web({"SERVICE_TAGS": "ok,{{ .Nope }}", "SERVICE_80_TAGS": "{{ toUpper }}"})), consul)
    with capture_logs() as logs:
        daemon.sync()
    problems = [(e["container"], e["key"]) for e in logs if e["event"] == "container_label_problem"]
    assert problems == [("rec-web", "label SERVICE_80_TAGS")]
    assert consul.registered["vm:rec-web:80"].get("Tags") is None  # the port's key beat SERVICE_TAGS, and failed


def test_plan_json_shows_rendered_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    """``plan`` and ``plan --json`` with a --tags template show the tags as rendered, as sync would register them."""
    c = web({"SERVICE_TAGS": "{{ .Config.Labels.SERVICE_NAME | toUpper }}", "SERVICE_NAME": "web"})

    def connected(params: Any, shutdown: Any) -> Any:
        settings = dataclasses.replace(build_settings(params, {}), hostname="host1")
        return settings, MemoryDocker(c), MemoryConsul()

    monkeypatch.setattr("registrar.commands._connect", connected)
    result = CliRunner().invoke(cli, ["plan", "--json", "--tags", "id={{ strSlice .ID 0 12 }},plain"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.output[result.output.index("[\n") :])  # after the log lines
    assert row["service"]["Tags"] == ["WEB", f"id={ID12}", "plain"]
    text = CliRunner().invoke(cli, ["plan", "--tags", "id={{ strSlice .ID 0 12 }},plain"]).output
    assert f'tags=["WEB","id={ID12}","plain"]' in text


def test_explain_shows_rendered_tags_and_the_error() -> None:
    """explain lists each tag template with what it rendered, or why it failed (and the problem)."""
    c = web({"SERVICE_TAGS": "id={{ strSlice .ID 0 12 }}", "SERVICE_80_TAGS": "{{ .Nope }}"})
    settings = dataclasses.replace(S, tags_template="{{ .State.Status }}")
    explained = explain(c, settings, {})
    got = {t.key: (t.output, t.error) for t in explained.templates}
    assert got["label SERVICE_80_TAGS"][0] is None
    assert "can't evaluate field Nope" in got["label SERVICE_80_TAGS"][1]
    assert got["--tags"] == ("running", "")
    text = render(explained)
    assert (
        "tag templates:\n" in text
        and "    renders: 'running'" in text
        and "    fails: can't evaluate field Nope" in text
    )
    assert explained.to_json()["tag_templates"][0]["key"] in ("--tags", "label SERVICE_80_TAGS")


class _Pages(BaseHTTPRequestHandler):
    stop = threading.Event()  # set when the test ends: a trickling page stops

    def do_GET(self) -> None:
        try:
            if self.path.startswith("/trickle/"):  # /trickle/N: N bytes, one every 0.2 s
                self._trickle(int(self.path.rsplit("/", 1)[1]))
                return
            if self.path.startswith("/big"):  # 2 MiB, with its Content-Length or without (the connection closes)
                self._big(sized=self.path == "/big")
                return
            if self.path == "/slow":  # no answer: held until the client gives up (closes the connection)
                self.rfile.read()
                return
            body = b'{"zone": {"name": "eu-1"}}'
            location = "/meta"
            if self.path.startswith("/hop/"):  # /hop/N: 0.3 s, then a redirect to /hop/N+1, up to 10
                hop = int(self.path.rsplit("/", 1)[1])
                self.stop.wait(0.3)
                location, body = f"/hop/{hop + 1}", b"end"
            moved = self.path == "/moved" or (self.path.startswith("/hop/") and location != "/hop/11")
            self.send_response(302 if moved else 200)
            self.send_header("Location", location)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (the timeout tests)
            pass

    def _trickle(self, count: int) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(count))
        self.end_headers()
        for _ in range(count):
            self.wfile.write(b"x")
            self.wfile.flush()
            if self.stop.wait(0.2):
                return

    def _big(self, sized: bool) -> None:
        body = b"x" * (2 * 1024 * 1024)
        self.send_response(200)
        if sized:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def pages() -> Iterator[str]:
    """A local HTTP server for httpGet: its base URL; stopped afterwards."""
    _Pages.stop.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    _Pages.stop.set()
    server.shutdown()
    server.server_close()
    thread.join()


def http_get_within(url: str, seconds: float) -> bytes | None:
    """httpGet's result, or None when the call has not returned within ``seconds`` (it goes on in its thread)."""
    result: list[bytes] = []
    call = threading.Thread(target=lambda: result.append(tag_template.http_get(url)), daemon=True)
    call.start()
    call.join(seconds)
    return result[0] if result else None


def test_http_get_only_with_tags_http(pages: str) -> None:
    """httpGet fetches only with --tags-http; without it the template fails (a warning), and nothing is fetched."""
    c = web({"SERVICE_TAGS": f'zone={{{{ jsonParse (httpGet "{pages}/meta") "zone::name" }}}}'})
    assert tags_and_problems(c, dataclasses.replace(S, tags_http=True)) == ([("zone=eu-1",)], [])
    tags, problems = tags_and_problems(c)
    assert (tags, problems) == ([()], [("rec-web", "label SERVICE_TAGS")])


def test_http_get_failure_is_empty(pages: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreachable URL, a timeout or a scheme other than http(s) give httpGet's empty body, as registrator's;
    a redirect is followed."""
    monkeypatch.setattr(tag_template, "HTTP_TIMEOUT", 0.2)
    assert http_get_within(f"{pages}/slow", seconds=10) == b""
    assert tag_template.http_get("http://127.0.0.1:9/") == b""
    assert tag_template.http_get("file:///etc/passwd") == b""
    assert tag_template.http_get(f"{pages}/meta") == b'{"zone": {"name": "eu-1"}}'
    assert tag_template.http_get(f"{pages}/moved") == b'{"zone": {"name": "eu-1"}}'  # redirects followed, as Go's


def test_template_over_a_million_iterations_fails_for_its_container() -> None:
    """Nested ranges of over a million iterations in all (two over a 64 KiB string would run for half an hour,
    printing nothing) fail for their container, which is registered without that key's tags."""
    loops = '{{ $s := printf "%1001s" "" }}{{ range split "" $s }}{{ range split "" $s }}{{ end }}{{ end }}'
    assert tags_and_problems(web({"SERVICE_TAGS": loops})) == ([()], [("rec-web", "label SERVICE_TAGS")])


def test_printf_width_over_gos_limit_prints_as_go() -> None:
    """A printf width Go refuses (over 1e6) renders Go's ``%!(NOVERB)``, not megabytes of padding."""
    c = web({"SERVICE_TAGS": '{{ printf "%012345678d" 1 }}'})
    assert tags_and_problems(c) == ([("%!(NOVERB)%!(EXTRA int=1)",)], [])


@pytest.mark.parametrize(
    "label",
    [
        '{{ printf "%70000d" 1 }}',  # a width Go allows, over the cap
        '{{ range split "" (printf "%1000s" "") }}{{ printf "%100s" "" }}x{{ end }}',  # small pieces, many
        '{{ $x := "ab" }}{{ range split "" "01234567890123456789" }}{{ $x = printf "%s%s" $x $x }}{{ end }}'
        "{{ len $x }}",  # a string doubled, never printed
        '{{ $s := printf "%300s" "" }}{{ len (replace -1 "" $s $s) }}',
        '{{ $s := printf "%300s" "" }}{{ len (join $s (split "" $s)) }}',
        '{{ $s := printf "%30000s" "" }}{{ len (print $s $s $s) }}|{{ len (println $s $s $s) }}',
    ],
    ids=["width", "range", "doubling", "replace", "join", "print"],
)
def test_template_over_the_output_cap_fails_for_its_container(label: str) -> None:
    """A template whose output, or a string it makes, is over 64 KiB warns naming the container and key, and the
    service is registered without that key's tags."""
    c = web({"SERVICE_TAGS": label})
    settings = dataclasses.replace(S, tags=("always",))
    result = services_from_container(c, settings)
    assert [s.tags for s in result.services] == [("always",)]
    assert [(p.container, p.key) for p in result.problems] == [("rec-web", "label SERVICE_TAGS")]
    assert "limit of 65536 bytes" in result.problems[0].message


def test_http_get_deadline_covers_the_whole_body(pages: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server trickling its body a byte every 0.2 s gives httpGet's empty body once its deadline is past, not
    the body 20 s later; a body trickled within the deadline is returned whole."""
    monkeypatch.setattr(tag_template, "HTTP_TIMEOUT", 1.0)
    assert http_get_within(f"{pages}/trickle/100", seconds=10) == b""  # the trickle would take 20 s
    monkeypatch.setattr(tag_template, "HTTP_TIMEOUT", 5.0)
    assert http_get_within(f"{pages}/trickle/3", seconds=10) == b"xxx"


def test_http_get_deadline_covers_redirects(pages: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redirects, each answered in 0.3 s, share httpGet's one deadline: ten of them past a 1 s deadline give ""."""
    monkeypatch.setattr(tag_template, "HTTP_TIMEOUT", 1.0)
    assert http_get_within(f"{pages}/hop/0", seconds=10) == b""
    monkeypatch.setattr(tag_template, "HTTP_TIMEOUT", 5.0)
    assert http_get_within(f"{pages}/hop/9", seconds=10) == b"end"


@pytest.mark.parametrize("path", ["/big", "/big-unsized"])
def test_http_get_body_over_a_mebibyte_is_empty(pages: str, path: str) -> None:
    """A body over 1 MiB (2 MiB, announced or not) gives httpGet's empty body, as any HTTP failure."""
    assert tag_template.http_get(pages + path) == b""
