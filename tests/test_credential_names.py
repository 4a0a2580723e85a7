"""One answer to "does this name hold a credential" (:func:`aiwatch.semconv.is_credential_name`) for all its users:
the headers redacted on spans, the console's ``--header`` warning and the refusal of a URL whose query holds one.
Two lists used to decide it: the spans redacted six exact names only (``X-Auth-Token`` went on a span whole), while
the console warned of ``Idempotency-Key`` and refused ``?idempotency_key=``."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from aiwatch.cli import main
from aiwatch.console import ScrapeSource
from aiwatch.headercapture import REDACTED
from aiwatch.middleware.asgi import AiwatchMiddleware
from aiwatch.semconv import is_credential_name
from tests.http.asgi_driver import call
from tests.http.test_http_header_capture import SERVER_REQUEST, header_attributes, only_server, starlette_app

#: (name, whether it holds a credential)
NAMES = [
    ("Authorization", True), ("Proxy-Authorization", True), ("Cookie", True), ("Set-Cookie", True),
    ("X-Api-Key", True), ("api-key", True), ("X-Auth-Token", True), ("x-goog-api-key", True),
    ("Ocp-Apim-Subscription-Key", True), ("X-Amz-Security-Token", True), ("access_token", True), ("apiKey", True),
    ("client_secret", True), ("X-Session-Id", True),
    # an idempotency key is chosen by the client to make a retry safe: it authorizes nothing, and on a span it ties
    # the retries of one request together
    ("Idempotency-Key", False), ("X-Cache-Key", False), ("page_token", False), ("X-Scope-OrgID", False),
    ("X-Tenant", False), ("author", False), ("x-ratelimit-remaining-tokens", False), ("keyboard", False),
]
CREDENTIALS = [name for name, credential in NAMES if credential]


@pytest.mark.parametrize(("name", "credential"), NAMES)
def test_the_predicate_names_credentials_and_only_them(name: str, credential: bool) -> None:
    assert is_credential_name(name) is credential


async def test_an_asgi_span_redacts_exactly_the_headers_named_like_a_credential(
        monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry, provider: TracerProvider,
        exporter: InMemorySpanExporter) -> None:
    monkeypatch.setenv(SERVER_REQUEST, ".*")
    monkeypatch.delenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS", raising=False)
    app = AiwatchMiddleware(starlette_app(), registry=registry, tracer_provider=provider)
    assert (await call(app, "/hello", headers=[(name, f"value-{i}") for i, (name, _) in enumerate(NAMES)])).status \
        == 200
    attributes = header_attributes(only_server(exporter))
    captured = {name: attributes[f"http.request.header.{name.lower()}"] for name, _ in NAMES}
    assert captured == {name: (REDACTED,) if credential else (f"value-{i}",)
                        for i, (name, credential) in enumerate(NAMES)}


@pytest.mark.parametrize(("name", "credential"), NAMES)
def test_a_url_is_refused_exactly_when_a_query_parameter_is_named_like_a_credential(name: str,
                                                                                   credential: bool) -> None:
    url = f"http://127.0.0.1:9/metrics?module=a&{name}=s3cr3t"
    if credential:
        with pytest.raises(ValueError, match=rf"holds credentials in its query \({name}\)") as info:
            ScrapeSource([url], start=False)
        assert "s3cr3t" not in str(info.value)
    else:
        assert ScrapeSource([url], start=False).description == f"scraping {url}"


def test_the_header_option_warns_of_exactly_the_headers_named_like_a_credential(
        capsys: pytest.CaptureFixture[str]) -> None:
    headers = [arg for name, _ in NAMES for arg in ("--header", f"{name}: s3cr3t")]
    main(["diagnose", "--prometheus", "http://127.0.0.1:9", *headers, "--service", "x"])
    err = capsys.readouterr().err
    assert f"aiwatch diagnose: warning: --header {', '.join(CREDENTIALS)} puts a credential on the command line" \
        in err
    assert "s3cr3t" not in err
