"""Time criteria: `date`, `day_of_week`, `time_of_day` (Pomerium Enterprise's PPL builder).

Windows are half-open, `after` inclusive and `before` exclusive, so that adjacent windows
(`before: 12:00` and `after: 12:00`) tile the day with no gap and no overlap. A
`time_of_day` window whose `after` is later than its `before` wraps past midnight
(`after: 22:00, before: 06:00` is the night shift).

Time zones are loaded once at compile time (zoneinfo reads the system's tz database);
evaluation only converts `PolicyInput.now`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time, tzinfo
from typing import Any, Final, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.policy.errors import Where, did_you_mean, type_name
from shared.policy.inputs import PolicyInput
from shared.policy.logic import Node, request_leaf

_T = TypeVar("_T", datetime, time)
_DAYS: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_NUMBERS: Final = {
    **{name: i for i, name in enumerate(_DAYS)},
    **{name[:3]: i for i, name in enumerate(_DAYS)},
    "tues": 1,
    "thur": 3,
    "thurs": 3,
}
# "3:04 PM", "3PM", "15:04:05.999999999", "15:04" and friends, as Pomerium documents.
_TIME_RE: Final = re.compile(
    r"(?P<h>\d{1,2})(?::(?P<m>\d{2})(?::(?P<s>\d{2})(?:\.(?P<f>\d{1,9}))?)?)?"
    r"\s*(?P<ampm>[AaPp][Mm])?"
)


def compile_date(value: Any, where: Where) -> Node | None:
    bounds = _bounds(value, where, ("after", "before"), _instant)
    if bounds is None:
        return None
    after, before = bounds

    def test(inp: PolicyInput) -> bool:
        now = inp.now
        return (after is None or now >= after) and (before is None or now < before)

    return request_leaf(
        where.label, _describe("date", bounds, ""), "date-ok", "date-unauthorized", test
    )


def compile_day_of_week(value: Any, where: Where) -> Node | None:
    """A day list (`mon-fri`, `sat,sun`, `*`) in UTC, or `{days: ..., timezone: ...}`."""
    zone: tzinfo = UTC
    spec = value
    if isinstance(value, Mapping):
        if not _known_keys(value, where, ("days", "timezone")):
            return None
        if "timezone" in value:
            found = _zone(value["timezone"], where.at("timezone"))
            if found is None:
                return None
            zone = found
        spec = value.get("days")
        where = where.at("days")
    if not isinstance(spec, str) or not spec.strip():
        where.error(f"expected days such as mon-fri or sat,sun, got {type_name(spec)}")
        return None
    days = _parse_days(spec, where)
    if days is None:
        return None

    def test(inp: PolicyInput) -> bool:
        return inp.now.astimezone(zone).weekday() in days

    suffix = "" if zone is UTC else f" ({zone})"
    return request_leaf(
        where.label,
        f"day_of_week {spec.strip()}{suffix}",
        "day-of-week-ok",
        "day-of-week-unauthorized",
        test,
    )


def compile_time_of_day(value: Any, where: Where) -> Node | None:
    if not isinstance(value, Mapping):
        where.error(
            f"expected a mapping with timezone, after and/or before, got {type_name(value)}"
        )
        return None
    if not _known_keys(value, where, ("timezone", "after", "before")):
        return None
    if "timezone" not in value:
        where.error('"timezone" is required, e.g. timezone: America/Phoenix')
        return None
    rest = {k: v for k, v in value.items() if k != "timezone"}
    zone = _zone(value["timezone"], where.at("timezone"))
    bounds = _bounds(rest, where, ("after", "before"), _clock)
    if zone is None or bounds is None:
        return None
    after, before = bounds

    def test(inp: PolicyInput) -> bool:
        now = inp.now.astimezone(zone).time()
        if after is not None and before is not None and after > before:
            return now >= after or now < before
        return (after is None or now >= after) and (before is None or now < before)

    return request_leaf(
        where.label,
        _describe("time_of_day", bounds, f" ({zone})"),
        "time-of-day-ok",
        "time-of-day-unauthorized",
        test,
    )


def _bounds(
    value: Any, where: Where, keys: tuple[str, str], parse: Callable[[Any, Where], _T | None]
) -> tuple[_T | None, _T | None] | None:
    if not isinstance(value, Mapping):
        where.error(f"expected a mapping with after and/or before, got {type_name(value)}")
        return None
    if not _known_keys(value, where, keys):
        return None
    if not any(k in value for k in keys):
        where.error("give after, before, or both")
        return None
    parsed = [parse(value[k], where.at(k)) if k in value else None for k in keys]
    if any(k in value and p is None for k, p in zip(keys, parsed, strict=True)):
        return None
    return parsed[0], parsed[1]


def _known_keys(value: Mapping[Any, Any], where: Where, keys: tuple[str, ...]) -> bool:
    unknown = [key for key in value if key not in keys]
    for key in unknown:
        expected = " or ".join(keys)
        where.error(f'unknown key "{key}": expected {expected}' + did_you_mean(str(key), keys))
    return not unknown


def _describe(
    name: str, bounds: tuple[datetime | time | None, datetime | time | None], suffix: str
) -> str:
    after, before = bounds
    parts = [f"after {after.isoformat()}"] if after is not None else []
    if before is not None:
        parts.append(f"before {before.isoformat()}")
    return f"{name} " + " and ".join(parts) + suffix


def _instant(raw: Any, where: Where) -> datetime | None:
    """An RFC 3339 timestamp; without an offset it is read as UTC."""
    if isinstance(raw, datetime):
        value = raw
    elif isinstance(raw, date):
        value = datetime(raw.year, raw.month, raw.day)
    elif isinstance(raw, str):
        try:
            value = datetime.fromisoformat(raw.strip())
        except ValueError:
            where.error(f'invalid date "{raw}": expected RFC 3339, e.g. 2025-01-31T18:00:00Z')
            return None
    else:
        where.error(f"expected an RFC 3339 timestamp, got {type_name(raw)}")
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _clock(raw: Any, where: Where) -> time | None:
    if isinstance(raw, int) and not isinstance(raw, bool):
        # YAML 1.1 reads an unquoted 17:00 as the base-60 number 1020.
        where.error(f'got the number {raw}: quote times in YAML, e.g. "17:00"')
        return None
    if not isinstance(raw, str):
        where.error(f'expected a time such as "17:00" or "5:30 PM", got {type_name(raw)}')
        return None
    match = _TIME_RE.fullmatch(raw.strip())
    if match is None:
        where.error(f'invalid time "{raw}": expected e.g. "09:30", "17:00:00" or "5:30 PM"')
        return None
    hour, minute = int(match["h"]), int(match["m"] or 0)
    second = int(match["s"] or 0)
    micro = int((match["f"] or "0").ljust(9, "0")[:6])
    if match["ampm"]:
        if not 1 <= hour <= 12:
            where.error(f'invalid time "{raw}": 12-hour times run from 1 to 12')
            return None
        hour = hour % 12 + (12 if match["ampm"].lower() == "pm" else 0)
    if hour > 23 or minute > 59 or second > 59:
        where.error(f'invalid time "{raw}": out of range')
        return None
    return time(hour, minute, second, micro)


def _zone(raw: Any, where: Where) -> tzinfo | None:
    if not isinstance(raw, str) or not raw:
        where.error(f"expected an IANA time zone name such as Europe/Paris, got {type_name(raw)}")
        return None
    if raw.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        where.error(f'unknown time zone "{raw}": use an IANA name such as America/New_York')
        return None


def _parse_days(spec: str, where: Where) -> frozenset[int] | None:
    days: set[int] = set()
    ok = True
    for item in spec.split(","):
        item = item.strip().lower()
        if item == "*":
            days.update(range(7))
            continue
        ends = [part.strip() for part in item.split("-")]
        if len(ends) > 2 or not all(ends):
            where.error(f'invalid day range "{item}": expected e.g. mon-fri')
            ok = False
            continue
        numbers = [_DAY_NUMBERS.get(end) for end in ends]
        for end, number in zip(ends, numbers, strict=True):
            if number is None:
                where.error(f'unknown day "{end}"' + did_you_mean(end, _DAY_NUMBERS))
                ok = False
        first, last = numbers[0], numbers[-1]
        if first is not None and last is not None:
            # A range may wrap past Sunday: fri-mon is Friday to Monday.
            days.update((first + i) % 7 for i in range((last - first) % 7 + 1))
    return frozenset(days) if ok else None
