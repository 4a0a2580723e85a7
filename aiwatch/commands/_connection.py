"""The options ``aiwatch console`` and ``aiwatch diagnose`` share for reaching a real Prometheus (or the ``/metrics``
URLs they scrape): headers, a bearer token or basic auth, a tenant, a CA bundle and a client certificate.

Secrets stay off the command line: the options take a file, or the name of an environment variable holding
the secret; a ``--header`` named like a credential is taken with a warning. Each option falls back to its
``AIWATCH_PROMETHEUS_*`` variable (``aiwatch env`` lists them).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiwatch.httpconfig import HTTPConfig


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    from aiwatch import env

    group = parser.add_argument_group(
        "reaching Prometheus", "Authentication, tenant and TLS for Prometheus (also sent to the --scrape URLs). "
        "Each option falls back to its AIWATCH_PROMETHEUS_* environment variable; secrets are read from a file or "
        "an environment variable: a --header holding one (Authorization, Cookie, X-Api-Key...) is shown by ps, "
        "and warned of.")
    group.add_argument("--header", action="append", metavar="'NAME: VALUE'",
                       help="an extra header for every request (repeatable); not for a credential, which ps "
                            f"would show: put those in {env.PROMETHEUS_HEADERS.name}")
    group.add_argument("--bearer-token-file", metavar="PATH",
                       help="send the token in PATH as 'Authorization: Bearer' (read on every request)")
    group.add_argument("--bearer-token-env", metavar="VAR",
                       help=f"send the token in environment variable VAR (default: {env.PROMETHEUS_BEARER_TOKEN.name})")
    group.add_argument("--basic-auth-user", metavar="USER", help="basic auth as USER")
    group.add_argument("--basic-auth-password-file", metavar="PATH", help="the basic-auth password, from PATH")
    group.add_argument("--basic-auth-password-env", metavar="VAR",
                       help="the basic-auth password, from environment variable VAR (default: "
                            f"{env.PROMETHEUS_BASIC_AUTH_PASSWORD.name})")
    group.add_argument("--tenant", metavar="ID", help="the tenant, sent as X-Scope-OrgID (Mimir, Cortex)")
    group.add_argument("--ca-file", metavar="PATH", help="PEM bundle of the CAs to trust (default: the system's)")
    group.add_argument("--cert-file", metavar="PATH", help="PEM client certificate (mutual TLS)")
    group.add_argument("--key-file", metavar="PATH", help="PEM key of the client certificate")


def connection_from_args(args: argparse.Namespace) -> HTTPConfig:
    """The :class:`~aiwatch.httpconfig.HTTPConfig` of the options, over the ``AIWATCH_PROMETHEUS_*`` variables.
    ``ValueError`` for anything invalid (an unreadable file, basic auth and a token together, a bad header)."""
    from aiwatch.httpconfig import HTTPConfig, parse_header

    overrides: dict[str, Any] = {
        "bearer_token": _from_variable(args.bearer_token_env, "--bearer-token-env"),
        "bearer_token_file": args.bearer_token_file,
        "username": args.basic_auth_user,
        "password": _from_variable(args.basic_auth_password_env, "--basic-auth-password-env"),
        "password_file": args.basic_auth_password_file,
        "tenant": args.tenant,
        "ca_file": args.ca_file,
        "cert_file": args.cert_file,
        "key_file": args.key_file,
        "headers": tuple(parse_header(h) for h in args.header or ()),
    }
    _warn_of_credentials(args, overrides["headers"])
    return HTTPConfig.from_env(**overrides)


def _warn_of_credentials(args: argparse.Namespace, headers: tuple[tuple[str, str], ...]) -> None:
    """Say on stderr that a ``--header`` holds a credential (``Authorization``, ``Cookie``, ``X-Api-Key``...):
    ``ps`` shows it to every user of the host for as long as the command runs, and the shell keeps it in its
    history. Not refused: it is on the command line already, and a working setup keeps working while it moves."""
    from aiwatch import env
    from aiwatch.semconv import is_credential_name

    names = list(dict.fromkeys(name for name, _ in headers if is_credential_name(name)))
    if names:
        print(f"aiwatch {args.command}: warning: --header {', '.join(names)} puts a credential on the command line, "
              "where ps shows it to every user of the host and the shell keeps it in its history: give it in "
              f"{env.PROMETHEUS_HEADERS.name} (name=value, percent-encoded), or a token with --bearer-token-file or "
              "--bearer-token-env", file=sys.stderr)


def _from_variable(name: str | None, flag: str) -> str:
    if not name:
        return ""
    from aiwatch.env import named_variable

    value = named_variable(name)
    if not value:
        raise ValueError(f"{flag} {name}: that environment variable is not set")
    return value
