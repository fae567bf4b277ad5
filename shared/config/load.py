"""The I/O edge of configuration: read the YAML file, the environment, and every
file the configuration names, then hand back one validated Config.

This is the only place in Vallum that reads os.environ (and only when the caller
passes no environment of its own).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, overload

import yaml

from shared.config.errors import ConfigError, FieldError, Problem
from shared.config.fields import kind_of, parse_secret
from shared.config.model import Config, Source
from shared.config.mtls import DOWNSTREAM_MTLS_KEYS
from shared.config.parse import TOP_KEYS, env_name, parse_config_partial
from shared.config.routes import ROUTE_KEYS
from shared.config.schema import FileMode, Key
from shared.config.sources import PemKind, check_pem

# PEM files and secrets are a few KiB; a limit keeps a mistyped path such as
# /dev/zero from hanging start-up.
MAX_FILE_BYTES = 1 << 20

PemCheck = Callable[[bytes], None]


def load_config(path: str | None, environ: Mapping[str, str] | None = None) -> Config:
    """Load `path` (None: no file, only the environment), raising ConfigError with
    every problem found, including files that cannot be read."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    source_path = None if path is None else os.path.abspath(path)
    if source_path is None:
        raw: Any = {}
        base_dir = os.getcwd()
    else:
        raw = _read_yaml(source_path)
        base_dir = os.path.dirname(source_path)
        if not isinstance(raw, Mapping):
            message = f"the top level must be a mapping of keys to values, got {kind_of(raw)}"
            raise ConfigError([Problem(source_path, message)])
    config, problems = parse_config_partial(raw, env, base_dir)
    config = _FileReader(env, problems).fill(replace(config, source_path=source_path))
    if problems:
        raise ConfigError(problems)
    return config


def _read_yaml(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except OSError as exc:
        raise ConfigError(
            [Problem(path, f"cannot read config file: {exc.strerror or exc}")]
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(path, f"not UTF-8 text: {exc.reason}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(path, _yaml_message(exc))]) from None
    return {} if data is None else data


def _yaml_message(exc: yaml.YAMLError) -> str:
    if not isinstance(exc, yaml.MarkedYAMLError):
        return f"invalid YAML: {exc}"
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    context = f" ({exc.context})" if exc.context else ""
    return f"{where}invalid YAML: {exc.problem}{context}"


def read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise FieldError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise FieldError(f"{path} is larger than {MAX_FILE_BYTES} bytes; is it the right file?")
    return data


class _FileReader:
    """Fills in the bytes of every file-backed value, collecting problems as it goes."""

    def __init__(self, environ: Mapping[str, str], problems: list[Problem]) -> None:
        self._environ = environ
        self._problems = problems

    def fill(self, config: Config) -> Config:
        updates: dict[str, Any] = {}
        for key in TOP_KEYS:
            label = self._top_label(key.file_key)
            if key.file is FileMode.SOURCE:
                updates[key.field] = self._source(
                    getattr(config, key.field), key.pem, label, key.check
                )
            elif key.file is FileMode.SECRET and getattr(config, key.file_key) is not None:
                updates[key.field] = self._secret(getattr(config, key.file_key), label)
            elif key.file is FileMode.TEXT and getattr(config, key.file_key) is not None:
                updates[key.field] = self._text(getattr(config, key.file_key), label, key.check)
        updates["certificates"] = tuple(
            replace(
                pair,
                cert=self._source(pair.cert, PemKind.CERT, f"certificates[{index}].cert"),
                key=self._source(pair.key, PemKind.KEY, f"certificates[{index}].key"),
            )
            for index, pair in enumerate(config.certificates)
        )
        mtls = config.downstream_mtls
        updates["downstream_mtls"] = replace(
            mtls, **self._nested_sources(mtls, DOWNSTREAM_MTLS_KEYS, "downstream_mtls")
        )
        updates["routes"] = tuple(
            replace(route, **self._nested_sources(route, ROUTE_KEYS, f"routes[{index}]"))
            for index, route in enumerate(config.routes)
        )
        return replace(config, **updates)

    def _nested_sources(self, value: Any, keys: Sequence[Key], path: str) -> dict[str, Any]:
        """The file-backed Sources of an object inside the config, labelled by key path."""
        return {
            key.field: self._source(
                getattr(value, key.field), key.pem, f"{path}.{key.file_key}", key.check
            )
            for key in keys
            if key.file is FileMode.SOURCE
        }

    def _top_label(self, file_key: str) -> str:
        # A path that came from CERTIFICATE_FILE should be blamed on that variable.
        if self._environ.get(env_name(file_key), "").strip():
            return f"{env_name(file_key)} (environment)"
        return file_key

    @overload
    def _source(
        self, source: Source, kind: PemKind, label: str, check: PemCheck | None = None
    ) -> Source: ...
    @overload
    def _source(
        self, source: None, kind: PemKind, label: str, check: PemCheck | None = None
    ) -> None: ...
    def _source(
        self, source: Source | None, kind: PemKind, label: str, check: PemCheck | None = None
    ) -> Source | None:
        if source is None or source.path is None or source.data is not None:
            return source
        try:
            data = read_file(source.path)
        except FieldError as exc:
            self._problems.append(Problem(label, str(exc)))
            return source
        try:
            check_pem(data, kind)
            if check is not None:
                check(data)
        except FieldError as exc:
            self._problems.append(Problem(label, f"{source.path}: {exc}"))
            return source
        return Source(source.path, data)

    def _secret(self, path: str, label: str) -> bytes | None:
        try:
            text = read_file(path).decode("utf-8", "replace")
        except FieldError as exc:
            self._problems.append(Problem(label, str(exc)))
            return None
        try:
            # Files written by `echo ... > file` end in a newline; it is not part of the secret.
            return parse_secret(text.strip())
        except FieldError as exc:
            self._problems.append(Problem(label, f"{path}: {exc}"))
            return None

    def _text(self, path: str, label: str, check: PemCheck | None = None) -> str | None:
        try:
            data = read_file(path)
        except FieldError as exc:
            self._problems.append(Problem(label, str(exc)))
            return None
        try:
            # As with base64 secrets, the newline `echo` leaves is not part of the value.
            text = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            self._problems.append(Problem(label, f"{path}: not UTF-8 text"))
            return None
        if not text:
            self._problems.append(Problem(label, f"{path}: is empty"))
            return None
        if check is not None:
            try:
                check(text.encode())
            except FieldError as exc:
                self._problems.append(Problem(label, f"{path}: {exc}"))
                return None
        return text
