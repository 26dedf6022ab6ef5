"""Where a ledger lives (a file path or a database URL), checked before anything is written;
and where a run took place, for its ``location`` column."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from carbon_callbacks.intensity import IntensitySource

import platformdirs

ENV_LEDGER = "CARBON_CALLBACKS_LEDGER"
"""Environment variable naming the ledger (a file path or a database URL)."""


def default_data_dir() -> Path:
    """The per-user data folder for carbon-callbacks (XDG on Linux, the OS's own elsewhere)."""
    return Path(platformdirs.user_data_dir("carbon-callbacks", appauthor=False))


def default_location() -> str:
    """Where ``Ledger.open()`` looks: ``$CARBON_CALLBACKS_LEDGER``, else the per-user data file."""
    env = os.environ.get(ENV_LEDGER, "").strip()
    return env or str(default_data_dir() / "ledger.sqlite")


def is_url(location: str) -> bool:
    return "://" in location


def sqlite_path(location: str) -> Path | None:
    """The file path for a SQLite location (plain path or ``sqlite:///`` URL), else None."""
    if location.startswith("sqlite:///"):
        return Path(location[len("sqlite:///") :])
    if location.startswith("sqlite://"):
        raise ValueError(
            f"ledger location {location!r} has no file path; use "
            "'sqlite:///path/to/ledger.sqlite' or a plain file path"
        )
    if is_url(location):
        return None
    return Path(location).expanduser()


def sqlalchemy_url(location: str) -> str:
    # psycopg 3 is the driver we depend on; SQLAlchemy's default for "postgresql://" is psycopg2.
    for bare in ("postgresql://", "postgres://"):
        if location.startswith(bare):
            return "postgresql+psycopg://" + location[len(bare) :]
    return location


def check_location(location: str | os.PathLike[str]) -> None:
    """Refuse a ledger location that could never be written, without opening anything.

    ``Ledger()`` and the callbacks' ``ledger=`` argument both call this, so a bad string fails
    where it is given, not after a run that went unrecorded.

    Raises:
        ValueError: for an empty location, a ``sqlite://`` URL without a path, a malformed
            database URL, an unknown database kind or a missing driver.
    """
    location = os.fspath(location)
    if not location.strip():
        raise ValueError("ledger location is empty; give a file path or a database URL")
    if sqlite_path(location) is None:
        check_url(sqlalchemy_url(location), redact(location))


def check_url(url: str, label: str) -> None:
    """Refuse, at construction, a database URL that could never be written.

    Only the URL and the installed packages are looked at (no connection): a server that is
    down is a run-time matter and spools, but a misspelt dialect or a missing driver would
    spool forever with a message promising it will be written later.

    Raises:
        ValueError: naming the location argument, ``$CARBON_CALLBACKS_LEDGER``, and the fix.
    """
    where = f"ledger location {label!r} (the ledger= or location argument, or ${ENV_LEDGER})"
    try:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    except ImportError:
        raise ValueError(
            f"{where} is a database URL, which needs SQLAlchemy: "
            "pip install 'carbon-callbacks[ledger]', or give a SQLite file path"
        ) from None
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ValueError(
            f"{where} is not a database URL ({exc}); use e.g. "
            "'postgresql://user:password@host:5432/db' or a SQLite file path"
        ) from None
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ValueError(
            f"{where}: unknown database kind {parsed.drivername!r}; use e.g. "
            "'postgresql://user:password@host:5432/db' or a SQLite file path"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        raise ValueError(
            f"{where}: the {parsed.drivername!r} driver needs the Python package {missing!r}, "
            "which is not installed; install it, or name an installed driver in the URL "
            "(e.g. 'postgresql+psycopg://', 'mysql+pymysql://')"
        ) from None


def redact(url: str) -> str:
    """The URL without its password (in the user part or the query), for messages."""
    if "://" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - no SQLAlchemy, or not a URL it parses: hide all creds
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}" if "@" in rest else url
    query = {k: "***" if "password" in k.lower() else v for k, v in parsed.query.items()}
    return parsed.set(query=query).render_as_string(hide_password=True)


def identity(location: str) -> str:
    """What a ledger is, without credentials: a SQLite file's absolute path, or a database's
    kind, host, port and name.

    Spool files are named from it, so fixing a wrong password or user name (or switching
    between drivers of one database) finds the records spooled meanwhile.
    """
    path = sqlite_path(location)
    if path is not None:
        return os.path.abspath(path)
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(sqlalchemy_url(location))
    except Exception:  # noqa: BLE001 - refused by check_url before any spool is named
        return redact(location)
    # Only the query keys that choose the server (a socket folder, a service name) stay.
    query = {k: v for k, v in parsed.query.items() if k in ("host", "port", "service", "dbname")}
    # set() takes a plain dict for the query but ignores None, so the credentials go by _replace.
    where = parsed.set(drivername=parsed.get_backend_name(), query=query)._replace(
        username=None, password=None
    )
    return where.render_as_string(hide_password=False)


def digest(text: str) -> str:
    """A short stable name for a location (spool files are named after their ledger)."""
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def run_location(source: IntensitySource) -> str:
    """Where a run took place, read from its intensity source's fields ("" when it has none).

    An embedded zone (``ZoneSource``) knows its code; a fixed value, a mix or a callable knows
    no place.
    """
    zone = getattr(source, "zone", None)
    code = getattr(zone, "code", None)
    return code if isinstance(code, str) else ""


# The embedded tables end their provenance with the zone code ("... [FRA]"): for callers that
# pass only that text (older exports, hand-written metadata), it is the best location known.
_ZONE_TAG = re.compile(r"\[([^\]\s]+)\]\s*$")


def location_from_provenance(text: str) -> str:
    """The zone code a table's provenance ends with, else ""."""
    tag = _ZONE_TAG.search(text)
    return tag.group(1) if tag else ""
