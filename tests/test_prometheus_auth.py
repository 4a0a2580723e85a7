"""A real Prometheus behind its own web config: TLS with a certificate from a test CA, basic auth, and a client
certificate required (``client_auth_type: RequireAndVerifyClientCert``). The one Prometheus client
(``aiwatch.promapi``), the console's PrometheusSource, ``aiwatch diagnose`` and the scrape reader reach it with
the right credentials, and fail with one clear message, naming no secret, without them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from aiwatch.cli import main
from aiwatch.console import PrometheusSource
from aiwatch.diagnose import PrometheusWindows, diagnose
from aiwatch.httpconfig import HTTPConfig
from aiwatch.promapi import PrometheusAPI, PrometheusError
from aiwatch.scrape import fetch_metrics
from tests.diagnose.backfill import backfilled_prometheus
from tests.diagnose.traffic import BASELINE, INCIDENT, History, history, slower
from tests.tls import Certificates, make_certificates

pytestmark = pytest.mark.slow

USER = "ops"
PASSWORD = "aiwatch-test-password"
# bcrypt (cost 4) of PASSWORD, as Prometheus' web config wants it
PASSWORD_HASH = "$2b$04$N9suxifVUExxe3REn05eJOoLzvnNbeKyapt87/pWGij.EJF0qys3y"


@dataclass(frozen=True)
class Secured:
    url: str
    certs: Certificates
    password_file: Path
    history: History

    def config(self, **changes: str) -> HTTPConfig:
        """Every credential the server asks for, some replaced (``""`` leaves one out)."""
        fields = {"username": USER, "password_file": str(self.password_file), "ca_file": str(self.certs.ca),
                  "cert_file": str(self.certs.client_cert), "key_file": str(self.certs.client_key), **changes}
        return HTTPConfig(**{k: v for k, v in fields.items() if v})


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    tmp = tmp_path_factory.mktemp("secured-prometheus")
    certs = make_certificates(tmp)
    web = tmp / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {certs.server_cert}\n  key_file: {certs.server_key}\n"
                   f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {certs.ca}\n"
                   f"basic_auth_users:\n  {USER}: '{PASSWORD_HASH}'\n")
    password_file = tmp / "password"
    password_file.write_text(PASSWORD + "\n")
    recorded = history(slower(network=0.2))
    ready_config = HTTPConfig(username=USER, password=PASSWORD, ca_file=str(certs.ca),
                              cert_file=str(certs.client_pem))

    def ready(url: str) -> bool:
        return PrometheusAPI(url, timeout=2, http=ready_config).query("vector(1)") == [({}, 1.0)]

    with backfilled_prometheus(recorded.traffic.openmetrics(), (f"--web.config.file={web}",), ready=ready,
                               scheme="https") as prom:
        yield Secured(prom.url, certs, password_file, recorded)


def test_the_one_client_reads_prometheus_with_basic_auth_tls_and_a_client_certificate(secured: Secured) -> None:
    api = PrometheusAPI(secured.url, http=secured.config())
    found = api.query("sum(aiwatch_request_duration_seconds_count)", time=secured.history.incident_end)
    assert len(found) == 1 and found[0][1] > 0
    # the client certificate and its key in one file work too
    combined = PrometheusAPI(secured.url, http=secured.config(cert_file=str(secured.certs.client_pem), key_file=""))
    assert combined.query("vector(2)") == [({}, 2.0)]


@pytest.mark.parametrize(("changes", "expected"), [
    ({"username": "", "password_file": ""}, "answered 401"),
    ({"password_file": "WRONG"}, "answered 401"),
    ({"ca_file": "OTHER"}, "TLS with Prometheus at"),
    ({"cert_file": "", "key_file": ""}, "TLS with Prometheus at"),
])
def test_missing_or_wrong_credentials_fail_with_a_message_that_names_no_secret(
        secured: Secured, tmp_path: Path, changes: dict[str, str], expected: str) -> None:
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    resolved = {k: {"WRONG": str(wrong), "OTHER": str(secured.certs.other_ca)}.get(v, v) for k, v in changes.items()}
    api = PrometheusAPI(secured.url, timeout=5, http=secured.config(**resolved))
    with pytest.raises(PrometheusError) as info:
        api.query("vector(1)")
    message = str(info.value)
    assert expected in message, message
    assert PASSWORD not in message and "not-the-password" not in message
    if "401" in expected:
        assert "credentials" in message  # the hint says what is missing


def test_plain_http_to_a_tls_prometheus_fails_clearly(secured: Secured) -> None:
    with pytest.raises(PrometheusError):
        PrometheusAPI(secured.url.replace("https://", "http://"), timeout=5, http=secured.config()).query("up")


def test_the_console_source_answers_its_panels_through_the_same_options(secured: Secured) -> None:
    source = PrometheusSource(secured.url, http=secured.config(), timeout=10)
    targets = source.health()  # /api/v1/targets: none here, but answered
    assert targets == []
    totals = source.window_totals(secured.history.incident_start, secured.history.incident_end)
    assert totals.services() == {"gateway", "inference"}


def test_diagnose_reads_it_with_the_command_line_options(secured: Secured, capsys: pytest.CaptureFixture[str]) -> None:
    h, certs = secured.history, secured.certs
    args = ["diagnose", "--prometheus", secured.url, "--service", "gateway", "--json",
            "--incident", f"{INCIDENT:g}s", "--baseline", f"{BASELINE:g}s", "--at", f"{h.incident_end:.0f}",
            "--basic-auth-user", USER, "--basic-auth-password-file", str(secured.password_file),
            "--ca-file", str(certs.ca), "--cert-file", str(certs.client_cert), "--key-file", str(certs.client_key)]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    expected = diagnose(PrometheusWindows(secured.url, http=secured.config()), "gateway", INCIDENT, BASELINE,
                        h.incident_end)
    assert out["verdict"] == expected.verdict and "network gateway -> inference" in expected.verdict
    # without the password: the source failed (exit 3), one line, no secret in it
    assert main([a for a in args if a not in ("--basic-auth-password-file", str(secured.password_file))]) == 3
    err = capsys.readouterr().err
    assert "401" in err and PASSWORD not in err and len(err.strip().splitlines()) == 1


def test_the_password_can_come_from_the_environment(secured: Secured, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    h, certs = secured.history, secured.certs
    monkeypatch.setenv("AIWATCH_PROMETHEUS_BASIC_AUTH_USER", USER)
    monkeypatch.setenv("MY_PROM_PASSWORD", PASSWORD)
    monkeypatch.setenv("AIWATCH_PROMETHEUS_CA_FILE", str(certs.ca))
    monkeypatch.setenv("AIWATCH_PROMETHEUS_CERT_FILE", str(certs.client_pem))
    code = main(["diagnose", "--prometheus", secured.url, "--service", "gateway", "--incident", f"{INCIDENT:g}s",
                 "--baseline", f"{BASELINE:g}s", "--at", f"{h.incident_end:.0f}",
                 "--basic-auth-password-env", "MY_PROM_PASSWORD"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert PASSWORD not in out + err


def test_the_scrape_reader_fetches_metrics_behind_the_same_tls_and_auth(secured: Secured) -> None:
    """Prometheus serves its own /metrics behind its web config: an endpoint that wants TLS and auth."""
    samples = fetch_metrics(f"{secured.url}/metrics", timeout=10, http=secured.config())
    assert "prometheus_build_info" in samples
