"""`vallum check`: validate a configuration and the material it points to."""

from __future__ import annotations

import argparse
import os
import sys

from shared.config import ConfigError, load_config
from shared.material import MaterialError, load_ca_bundle, load_key_pair
from shared.server_tls import certificate_sources


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check", help="validate a configuration file; exit 1 if it has problems")
    p.add_argument("--config", "-c", help="config.yaml (environment variables override it)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, dict(os.environ))
    except ConfigError as e:
        n = len(e.problems)
        print(f"{args.config or 'configuration'}: {n} problem{'s' * (n != 1)}", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    # Warnings first: they may explain a problem below, and never fail the check.
    for notice in config.notices:
        print(f"warning: {notice}", file=sys.stderr)
    problems: list[str] = []
    for source in certificate_sources(config):
        try:
            load_key_pair(source.cert, source.key, cert_key=source.cert_key, key_key=source.key_key)
        except MaterialError as e:
            problems.append(str(e))
    cert, key = config.internal_certificate, config.internal_certificate_key
    if cert is not None and key is not None:
        try:
            load_key_pair(
                cert, key, cert_key="internal_certificate", key_key="internal_certificate_key"
            )
        except MaterialError as e:
            problems.append(str(e))
    if config.certificate_authority is not None:
        try:
            load_ca_bundle(config.certificate_authority, "certificate_authority")
        except MaterialError as e:
            problems.append(str(e))
    if problems:
        print(f"{args.config or 'configuration'}: {len(problems)} problem(s)", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 1
    services = ",".join(sorted(config.services))
    print(
        f"{args.config or 'configuration'}: OK ({len(config.routes)} route(s), services: "
        f"{services})"
    )
    return 0
