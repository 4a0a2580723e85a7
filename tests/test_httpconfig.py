"""HTTPConfig, the headers, credentials and TLS of every request aiwatch sends to Prometheus or a /metrics endpoint:
what reaches a real HTTP server (headers, the tenant, a token file read on every request, nothing carried to
another host on a redirect), how the command line and the environment build it, and that no secret is printed."""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import re
import signal
import socket
import threading
import time
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from aiwatch import httpconfig
from aiwatch.cli import main
from aiwatch.commands._connection import add_connection_options, connection_from_args
from aiwatch.console import ScrapeSource
from aiwatch.httpconfig import CredentialsError, HTTPConfig, parse_header, parse_headers_env
from aiwatch.promapi import PrometheusAPI, PrometheusError, PrometheusSlow
from aiwatch.scrape import fetch_metrics
from tests.test_scrape import raw_endpoint

EMPTY_VECTOR = b'{"status": "success", "data": {"resultType": "vector", "result": []}}'


class Recorder:
    """A real HTTP server on loopback that keeps the path and headers of every request; ``redirect_to`` makes it
    answer every request outside ``/moved/`` with a 302 to ``redirect_to`` + ``/moved`` + the path (``"self"``: its
    own URL)."""

    def __init__(self, redirect_to: str = "") -> None:
        self.seen: list[dict[str, str]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
                if redirect_to and not self.path.startswith("/moved/"):
                    self.send_response(302)
                    self.send_header("Location", (recorder.url if redirect_to == "self" else redirect_to)
                                     + "/moved" + self.path)
                    self.end_headers()
                    return
                metrics = self.path.removeprefix("/moved").startswith("/metrics")
                body = b"# TYPE up gauge\nup 1\n" if metrics else EMPTY_VECTOR
                self.send_response(200)
                self.send_header("Content-Type", "text/plain" if metrics else "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def recording(redirect_to: str = "") -> Iterator[Recorder]:
    recorder = Recorder(redirect_to)
    try:
        yield recorder
    finally:
        recorder.close()


def test_prometheus_gets_the_tenant_the_headers_and_the_bearer_token() -> None:
    cfg = HTTPConfig(headers=(("X-Source", "aiwatch"),), tenant="team-a", bearer_token="t0k3n")
    with recording() as server:
        assert PrometheusAPI(server.url, http=cfg).query("up") == []
    (seen,) = server.seen
    assert seen["x-scope-orgid"] == "team-a" and seen["x-source"] == "aiwatch"
    assert seen["authorization"] == "Bearer t0k3n"


def test_basic_auth_is_the_username_and_the_password_read_from_its_file(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    with recording() as server:
        PrometheusAPI(server.url, http=HTTPConfig(username="ops", password_file=str(password))).query("up")
    assert server.seen[0]["authorization"] == "Basic " + base64.b64encode(b"ops:s3cret").decode()


def test_a_token_file_is_read_again_on_every_request(tmp_path: Path) -> None:
    """Kubernetes rotates projected service-account tokens in place: the next request sends the new one."""
    token = tmp_path / "token"
    token.write_text("first\n")
    api = PrometheusAPI("http://127.0.0.1:1", http=HTTPConfig(bearer_token_file=str(token)))
    with recording() as server:
        api.url = server.url
        api.query("up")
        token.write_text("second")
        api.query("up")
    assert [s["authorization"] for s in server.seen] == ["Bearer first", "Bearer second"]


def test_a_token_file_gone_at_request_time_is_an_error_naming_the_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first")
    cfg = HTTPConfig(bearer_token_file=str(token))
    token.unlink()
    with recording() as server:
        with pytest.raises(PrometheusError, match=r"cannot read the bearer token file .*token"):
            PrometheusAPI(server.url, http=cfg).query("up")
        with pytest.raises(CredentialsError):
            fetch_metrics(f"{server.url}/metrics", http=cfg)
    assert server.seen == []  # nothing was sent without the credentials


def test_a_token_file_written_by_a_windows_editor_sends_the_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_bytes("t0k3n \r\n".encode("utf-8-sig"))  # a byte-order mark, CRLF and a trailing space
    with recording() as server:
        PrometheusAPI(server.url, http=HTTPConfig(bearer_token_file=str(token))).query("up")
    assert server.seen[0]["authorization"] == "Bearer t0k3n"


@pytest.mark.parametrize(("content", "message"), [
    ("\n", "is empty or holds a control character"),
    ("t\u00f6k\u20acn", "holds a character an HTTP header cannot carry"),
    ("t" * (1 << 16) + "tail", "is larger than 65536 characters"),
])
def test_a_token_file_that_cannot_be_sent_is_an_error_naming_the_file(tmp_path: Path, content: str,
                                                                      message: str) -> None:
    token = tmp_path / "token"
    token.write_text(content, encoding="utf-8")
    with recording() as server:
        with pytest.raises(PrometheusError, match=f"bearer token file '{token}' {message}") as info:
            PrometheusAPI(server.url, http=HTTPConfig(bearer_token_file=str(token))).query("up")
        with pytest.raises(CredentialsError, match=message):
            fetch_metrics(f"{server.url}/metrics", http=HTTPConfig(bearer_token_file=str(token)))
    secret = content.strip()
    assert not secret or secret not in str(info.value)
    assert server.seen == []


def test_the_scrape_reader_sends_the_same_headers() -> None:
    with recording() as server:
        assert fetch_metrics(f"{server.url}/metrics", http=HTTPConfig(tenant="t", bearer_token="x")) == {
            "up": {(): 1.0}}
    assert server.seen[0]["authorization"] == "Bearer x" and server.seen[0]["x-scope-orgid"] == "t"
    assert server.seen[0]["accept"].startswith("text/plain")


def test_credentials_follow_a_redirect_on_the_same_host_only() -> None:
    cfg = HTTPConfig(bearer_token="t0k3n", tenant="team-a", headers=(("X-Key", "k"),))
    configured = {"authorization", "x-scope-orgid", "x-key"}
    with recording() as target, recording(redirect_to=target.url) as elsewhere:
        PrometheusAPI(elsewhere.url, http=cfg).query("up")
    # another port is another origin: the redirected request carries none of the configured headers
    assert configured <= set(elsewhere.seen[0]) and not configured & set(target.seen[0])
    assert target.seen[0]["path"].startswith("/moved/api/v1/query")
    with recording(redirect_to="self") as same:
        PrometheusAPI(same.url, http=cfg).query("up")
    _first, moved = same.seen
    assert moved["path"].startswith("/moved/") and configured <= set(moved)


def test_repr_and_messages_never_show_a_secret(tmp_path: Path) -> None:
    cfg = HTTPConfig(username="ops", password="pa55word", headers=(("X-Api-Key", "k3y-value"),))
    text = repr(cfg) + str(cfg)
    assert "pa55word" not in text and "k3y-value" not in text
    assert "ops" in text and "X-Api-Key" in text
    with pytest.raises(ValueError) as info:
        parse_header("X-Api-Key k3y-value")
    assert "k3y-value" not in str(info.value)


@pytest.mark.parametrize(("url", "message"), [
    ("http://127.0.0.1:abc", "Port could not be cast to integer value"),
    ("http://127.0.0.1:99999", "Port out of range 0-65535"),
    ("http://[::1", "must look like http://host:9090"),
])
def test_a_url_with_a_bad_port_or_host_is_refused_naming_it(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        PrometheusAPI(url)
    assert repr(url) in str(info.value)
    with pytest.raises(ValueError, match=f"^endpoint must be a URL like .*, got {re.escape(repr(url + '/m'))}$"):
        ScrapeSource([url + "/m"], start=False)


def test_a_url_holding_credentials_is_refused() -> None:
    with pytest.raises(ValueError, match="holds credentials") as info:
        PrometheusAPI("http://ops:pa55word@127.0.0.1:9090")
    assert "pa55word" not in str(info.value) and "http://127.0.0.1:9090" in str(info.value)
    # a URL that is malformed besides: its message (which prints the URL) came first, the password in it
    with pytest.raises(ValueError, match="holds credentials") as info:
        PrometheusAPI("htp://ops:pa55word@127.0.0.1:9090")
    assert "pa55word" not in str(info.value)


@pytest.mark.parametrize("url", ["http://ops:pa55word@127.0.0.1:8000/metrics", "http://ops@127.0.0.1:8000/metrics",
                                 "http://ops:pa55word@[::1:8000/metrics"])
def test_a_scrape_url_holding_credentials_is_refused(url: str) -> None:
    """The scrape source took ``http://user:password@host/metrics`` (urllib cannot use it: the scrape failed with
    "Name or service not known") and put it, password and all, in the console's "Source: scraping ..." caption,
    in every failed scrape's message on the page, and on ``aiwatch diagnose``'s and ``aiwatch console``'s
    terminal."""
    with pytest.raises(ValueError, match=r"^the /metrics URL .* holds credentials") as info:
        ScrapeSource([url], start=False)
    assert "pa55word" not in str(info.value) and "ops" not in str(info.value)


@pytest.mark.parametrize("command", ["console", "diagnose"])
@pytest.mark.parametrize("option", ["--prometheus", "--scrape"])
def test_the_commands_refuse_a_url_holding_credentials_without_printing_them(
        command: str, option: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``aiwatch console --prometheus http://user:password@...`` printed "aiwatch console on ... reading
    http://user:password@..." and served a page; ``aiwatch diagnose --scrape`` printed the URL in its failure."""
    url = "http://ops:pa55word@127.0.0.1:9" + ("/metrics" if option == "--scrape" else "")
    code = main([command, option, url, *(["--port", "1"] if command == "console" else ["--service", "x"])])
    out = capsys.readouterr()
    assert code == 2, out
    assert "holds credentials" in out.err
    assert "pa55word" not in out.out + out.err


@pytest.mark.parametrize("command", ["console", "diagnose"])
@pytest.mark.parametrize(("option", "url", "names"), [
    ("--prometheus", "http://127.0.0.1:9/?token=s3cr3t", "token"),
    ("--prometheus", "http://127.0.0.1:9/prom?access_token=s3cr3t#x", "access_token"),
    ("--scrape", "http://127.0.0.1:9/metrics?module=a&apiKey=s3cr3t&X-Amz-Signature=s3cr3t",
     "apiKey, X-Amz-Signature"),
    ("--scrape", "http://127.0.0.1:9/metrics?api_key=s3cr3t&api_key=s3cr3t", "api_key"),
])
def test_the_commands_refuse_a_url_with_credentials_in_its_query_without_printing_them(
        command: str, option: str, url: str, names: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``aiwatch diagnose --prometheus 'http://h:9/?token=secret'`` printed "Prometheus at http://h:9/?token=secret
    is unreachable" (the query's known secrets, ``access_token=``, too), and ``--scrape`` its URL in "no /metrics
    endpoint answered: ..."; ``aiwatch console`` put it on its page and terminal. Refused like ``user:password@``,
    the URL shown with the values left out."""
    code = main([command, option, url, *(["--port", "1"] if command == "console" else ["--service", "x"])])
    out = capsys.readouterr()
    assert code == 2, out
    assert f"holds credentials in its query ({names})" in out.err
    assert "s3cr3t" not in out.out + out.err and "=REDACTED" in out.err


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/?x=1", "http://127.0.0.1:9/#x", "http://127.0.0.1:9/?"])
def test_a_prometheus_url_with_a_query_or_fragment_is_refused(url: str) -> None:
    """The API's paths were appended to the URL, so into its query (``/?x=1/api/v1/query?...``): no call could
    reach the API."""
    with pytest.raises(ValueError, match=r"^Prometheus URL must have no query or fragment .*, got "
                       + re.escape(repr(url)) + "$"):
        PrometheusAPI(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/metrics?module=http_2xx&target=a.example&author=x",
                                 "http://127.0.0.1:9/metrics?name[]=up&keyboard=1"])
def test_a_scrape_url_whose_query_names_no_credential_is_taken(url: str) -> None:
    assert ScrapeSource([url], start=False).description == f"scraping {url}"


@pytest.mark.parametrize("command", ["console", "diagnose"])
def test_a_credential_header_on_the_command_line_is_warned_of_without_its_value(
        command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``--header 'Authorization: Bearer ...'`` put the token where ``ps`` shows it, for as long as the console
    runs, while the docs said secrets never go on the command line: taken, with a warning naming the header (not
    its value) and the ways that keep it off; a header that is no credential, and the same header given in
    AIWATCH_PROMETHEUS_HEADERS, are not warned of."""
    # the console stops at its --timeout, checked after the headers (it would serve its page otherwise)
    tail = ["--timeout", "0"] if command == "console" else ["--service", "x"]
    main([command, "--prometheus", "http://127.0.0.1:9", "--header", "Authorization: Bearer s3cr3t",
          "--header", "X-Api-Key=k3y", "--header", "X-Scope-OrgID: team-a", "--header", "authorization: b", *tail])
    err = capsys.readouterr().err
    assert (f"aiwatch {command}: warning: --header Authorization, X-Api-Key, authorization puts a credential on "
            "the command line") in err
    assert "AIWATCH_PROMETHEUS_HEADERS" in err and "s3cr3t" not in err and "k3y" not in err
    monkeypatch.setenv("AIWATCH_PROMETHEUS_HEADERS", "Authorization=Bearer%20s3cr3t")
    main([command, "--prometheus", "http://127.0.0.1:9", "--header", "X-Scope-OrgID: team-a", *tail])
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"bearer_token": "a", "username": "ops"}, "basic auth or a bearer token, not both"),
    ({"bearer_token": "a", "bearer_token_file": "/etc/hostname"}, "not both"),
    ({"password": "p"}, "needs a username"),
    ({"key_file": "/etc/hostname"}, "needs its certificate file"),
    ({"bearer_token_file": "/nonexistent/token"}, "cannot be read"),
    ({"ca_file": "/etc/hostname"}, "is not a PEM bundle"),
    ({"tenant": "a\r\nX-Injected: 1"}, "control character"),
    ({"tenant": "团队"}, "the tenant holds a character an HTTP header cannot carry"),
    ({"headers": (("X-Note", "5 €"),)}, "header X-Note holds a character an HTTP header cannot carry"),
    ({"bearer_token": "t\u00f6k\u20acn"}, "the bearer token holds a character an HTTP header cannot carry"),
    ({"headers": (("Bad Name", "v"),)}, "not an HTTP header name"),
    ({"headers": (("Authorization", "Basic x"),), "bearer_token": "t"}, "cannot both be given"),
])
def test_invalid_configs_fail_before_any_request(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HTTPConfig(**kwargs)


def test_headers_are_written_like_curl_on_the_command_line_and_like_otel_in_the_environment() -> None:
    assert parse_header("X-Scope-OrgID: team-a") == ("X-Scope-OrgID", "team-a")
    assert parse_header("X-Key=a=b:c") == ("X-Key", "a=b:c")
    assert parse_headers_env("A=1, B=x%2Cy,") == (("A", "1"), ("B", "x,y"))
    with pytest.raises(ValueError, match="name=value"):
        parse_headers_env("justaname")


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_connection_options(parser)
    return parser.parse_args(argv)


def test_the_command_line_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("from-file")
    monkeypatch.setenv("AIWATCH_PROMETHEUS_TENANT", "env-tenant")
    monkeypatch.setenv("AIWATCH_PROMETHEUS_BASIC_AUTH_USER", "env-user")
    monkeypatch.setenv("AIWATCH_PROMETHEUS_BASIC_AUTH_PASSWORD", "env-password")
    assert connection_from_args(_args()).request_headers()["X-Scope-OrgID"] == "env-tenant"
    cfg = connection_from_args(_args("--tenant", "cli-tenant", "--bearer-token-file", str(token),
                                     "--header", "X-A: 1"))
    # a token on the command line replaces the basic auth of the environment instead of clashing with it
    assert cfg.request_headers() == {"X-A": "1", "X-Scope-OrgID": "cli-tenant", "Authorization": "Bearer from-file"}
    monkeypatch.setenv("MY_TOKEN", "from-variable")
    assert connection_from_args(_args("--bearer-token-env", "MY_TOKEN")).request_headers()["Authorization"] == \
        "Bearer from-variable"
    with pytest.raises(ValueError, match="MY_UNSET_TOKEN: that environment variable is not set"):
        connection_from_args(_args("--bearer-token-env", "MY_UNSET_TOKEN"))


def test_to_env_and_from_env_round_trip(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("x")
    cfg = HTTPConfig(headers=(("X-A", "a,b=c"),), bearer_token_file=str(token), tenant="t")
    assert HTTPConfig.from_env(cfg.to_env()) == cfg


def test_aiwatch_env_shows_that_a_secret_is_set_not_its_value(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AIWATCH_PROMETHEUS_BEARER_TOKEN", "t0p-s3cret")
    monkeypatch.setenv("AIWATCH_PROMETHEUS_TENANT", "team-a")
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "t0p-s3cret" not in out and "(set, not shown)" in out and "'team-a'" in out


def test_bad_connection_options_are_a_usage_error_of_diagnose(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["diagnose", "--prometheus", "http://127.0.0.1:1", "--bearer-token-file", "/nonexistent/token"])
    assert code == 2
    assert "bearer token file '/nonexistent/token' cannot be read" in capsys.readouterr().err


@pytest.mark.parametrize(("status", "error", "message"), [
    ("200 OK", PrometheusSlow, r"is slow: /api/v1/query \(query: up\) was not answered within 1 s"),
    ("503 Service Unavailable", PrometheusError, r"answered 503 to /api/v1/query: Service Unavailable$"),
])
def test_prometheus_dripping_its_answer_is_cut_off_at_the_timeout(status: str, error: type[Exception],
                                                                 message: str) -> None:
    """Each byte comes well within the socket timeout, so only the deadline on the whole answer ends the read (a
    read of 64 KiB at once waits for all of them). An error's status is its answer when its text drips."""
    head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nRetry-After: 5\r\n"
            "Content-Length: 100000\r\n\r\n").encode()
    hung_up = threading.Event()
    with raw_endpoint(head, b" ", hung_up) as url:
        base = url.removesuffix("/metrics")
        with pytest.raises(error, match=f"^Prometheus at {base} {message}" if error is PrometheusSlow
                           else f"^Prometheus {message}"):
            PrometheusAPI(base, timeout=1).query("up")
        assert hung_up.wait(10)  # it hung up while the server was still dripping, not when the server gave up


def test_an_answer_whose_head_drips_is_cut_off_at_the_timeout() -> None:
    """The status line comes, then a header a byte at a time, each well within the socket timeout."""
    hung_up = threading.Event()
    with raw_endpoint(b"HTTP/1.1 200 OK\r\nX-Pad: ", b"x", hung_up) as url:
        base = url.removesuffix("/metrics")
        with pytest.raises(PrometheusSlow, match=f"^Prometheus at {base} is slow: /api/v1/query "
                                                 r"\(query: up\) was not answered within 1 s"):
            PrometheusAPI(base, timeout=1).query("up")
        assert hung_up.wait(10)  # it hung up while the server was still dripping, not when the server gave up
        with pytest.raises(TimeoutError, match=f"^{base.removeprefix('http://')} did not answer within 1 s$"):
            fetch_metrics(url, timeout=1)


def test_a_redirect_to_ftp_is_not_followed() -> None:
    """urllib follows a redirect to ftp: (to any host, with no deadline on the answer): a hostile endpoint could send
    aiwatch anywhere its network reaches."""
    ftp = socket.create_server(("127.0.0.1", 0))
    location = f"ftp://127.0.0.1:{ftp.getsockname()[1]}/metrics"
    redirect = f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()
    with ftp, raw_endpoint(redirect) as url:
        base = url.removesuffix("/metrics")
        with pytest.raises(PrometheusError, match=r"^Prometheus answered 302 to /api/v1/query: Found: a redirect to "
                                                  r"a ftp: URL is not followed$"):
            PrometheusAPI(base, timeout=1).query("up")
        with pytest.raises(urllib.error.HTTPError, match="a redirect to a ftp: URL is not followed"):
            fetch_metrics(url, timeout=1)
        ftp.setblocking(False)
        with pytest.raises(BlockingIOError):  # nothing connected to it
            ftp.accept()


def deadline_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "aiwatch-http-deadline"]


def test_many_requests_share_one_deadline_thread_and_leave_no_deadline_armed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The console sends dozens of queries per refresh: a timer thread per connection was dozens of threads started
    and stopped each time. Every way a request ends (an answer, an error status, a connection closed with no answer,
    one refused, one cut off) must take its deadline off the watchdog."""
    here = threading.current_thread()
    started: list[str] = []
    start = threading.Thread.start

    def recorded_start(thread: threading.Thread) -> None:
        if threading.current_thread() is here:  # not the threads of the test servers
            started.append(thread.name)
        start(thread)

    refused = socket.create_server(("127.0.0.1", 0))
    closed_url = f"http://127.0.0.1:{refused.getsockname()[1]}"
    refused.close()
    with recording() as rec, raw_endpoint(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n") as down, \
            raw_endpoint(b"") as hangs_up, raw_endpoint(b"HTTP/1.1 200 OK\r\nX-Pad: ", b"x") as drips:
        monkeypatch.setattr(threading.Thread, "start", recorded_start)  # the servers' own threads have started
        for _ in range(25):
            PrometheusAPI(rec.url, timeout=5).query("up")
            fetch_metrics(rec.url + "/metrics", timeout=5)
            for url in (down, hangs_up, closed_url + "/metrics"):
                with pytest.raises((urllib.error.URLError, OSError, http.client.HTTPException)):
                    fetch_metrics(url, timeout=5)
        with pytest.raises(TimeoutError, match=r"did not answer within 0\.2 s$"):
            fetch_metrics(drips, timeout=0.2)
    assert len(started) <= 1 and set(started) <= {"aiwatch-http-deadline"}, started
    assert len(deadline_threads()) == 1
    assert httpconfig._WATCHDOG.armed() == 0


def test_the_deadline_thread_outlives_a_cut_off_that_fails(caplog: pytest.LogCaptureFixture) -> None:
    def fails() -> None:
        raise RuntimeError("cut-off failed")

    ran = threading.Event()
    httpconfig._WATCHDOG.arm(0, fails)
    httpconfig._WATCHDOG.arm(0.05, ran.set)
    assert ran.wait(10)
    assert len(deadline_threads()) == 1 and deadline_threads()[0].is_alive()
    assert "cutting off a late HTTP connection failed" in caplog.text and "RuntimeError: cut-off failed" in caplog.text
    with raw_endpoint(b"HTTP/1.1 200 OK\r\nX-Pad: ", b"x") as drips, \
            pytest.raises(TimeoutError, match=r"did not answer within 0\.2 s$"):
        fetch_metrics(drips, timeout=0.2)  # and it still cuts off a connection


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX")
def test_a_forked_child_cuts_off_its_own_connections() -> None:
    """A forked child has only the thread that forked: not the watchdog's, and the watchdog's lock may be held by a
    thread that is gone there; its heap must not hold the parent's deadlines."""
    holding, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with httpconfig._WATCHDOG._wake:
            holding.set()
            release.wait()

    parents = httpconfig._WATCHDOG.arm(3600, lambda: None)
    holder = threading.Thread(target=hold_the_lock, daemon=True)
    holder.start()
    assert holding.wait(10)
    try:
        with raw_endpoint(b"HTTP/1.1 200 OK\r\nX-Pad: ", b"x") as drips:
            pid = os.fork()
            if pid == 0:  # the child: its exit status is the test's verdict
                status = 1
                try:
                    try:
                        fetch_metrics(drips, timeout=0.2)
                    except TimeoutError as exc:
                        status = 0 if str(exc).endswith("did not answer within 0.2 s") else 2
                    if httpconfig._WATCHDOG.armed() != 0:
                        status = 3
                finally:
                    os._exit(status)
            release.set()
            for _ in range(300):  # a child hanging on the lock would never exit: give up on it after 30 s
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("the forked child hung")
    finally:
        release.set()
        holder.join(10)
        httpconfig._WATCHDOG.disarm(parents)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_proxy_dripping_its_tunnel_answer_is_cut_off_as_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CONNECT answer's header drips a byte at a time: the deadline cuts it off, and the caller is told it was
    slow, not that the (shut) connection broke."""
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with raw_endpoint(b"HTTP/1.1 200 Connection established\r\nX-Pad: ", b"x") as proxy:
        proxy_base = proxy.removesuffix("/metrics")
        monkeypatch.setenv("https_proxy", proxy_base)
        monkeypatch.setenv("HTTPS_PROXY", proxy_base)
        with pytest.raises(PrometheusSlow, match=r"^Prometheus at https://prometheus\.invalid:9090 is slow: "
                                                 r"/api/v1/query \(query: up\) was not answered within 1 s"):
            PrometheusAPI("https://prometheus.invalid:9090", timeout=1).query("up")
        with pytest.raises(urllib.error.URLError) as caught:
            fetch_metrics("https://prometheus.invalid:9090/metrics", timeout=1)
        assert isinstance(caught.value.reason, TimeoutError)
        assert str(caught.value.reason) == f"{proxy_base.removeprefix('http://')} did not answer within 1 s"
