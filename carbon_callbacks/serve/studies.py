"""An Optuna study's trials for the Compare page, read from the study's own storage.

The trial states (complete, pruned, failed) are Optuna's, and each trial's CO2e is what the
training adapters (or ``report_carbon``) stored in it, so the page needs nothing but the
storage. It is opened for reading only: SQLite through a read-only connection, PostgreSQL with
read-only transactions, and no table is created.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

from carbon_callbacks.serve.compare import Comparison, Point, build_comparison


def redact(url: str) -> str:
    """The storage URL without its password, for the page and messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse is shown without credentials
        return url.split("@", 1)[-1] if "@" in url else url


def open_storage(url: str) -> Any:
    """An Optuna ``RDBStorage`` over ``url`` that can only read.

    Raises:
        ValueError: for a URL that is neither a SQLite file that exists nor PostgreSQL, or when
            Optuna is not installed; the message names ``--optuna-storage``.
    """
    try:
        import optuna
        from sqlalchemy.engine import make_url
    except ImportError as exc:
        raise ValueError(
            f"--optuna-storage needs Optuna ({exc}); pip install 'carbon-callbacks[optuna]'"
        ) from None
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - reported as the argument's error
        raise ValueError(
            f"--optuna-storage {redact(url)!r} is not a database URL; use e.g. "
            "'sqlite:///study.db' or 'postgresql://user@host/db'"
        ) from None
    backend = parsed.get_backend_name()
    engine_kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        path = Path(parsed.database or "")
        if not parsed.database or parsed.database == ":memory:" or not path.is_file():
            raise ValueError(f"--optuna-storage: no SQLite file at {parsed.database or '(none)'}")
        quoted = urllib.parse.quote(str(path.resolve()))
        url = f"sqlite:///file:{quoted}?mode=ro&uri=true"
    elif backend == "postgresql":
        engine_kwargs["connect_args"] = {"options": "-c default_transaction_read_only=on"}
    else:
        raise ValueError(
            f"--optuna-storage: reads SQLite and PostgreSQL study storages, not {backend!r}"
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=True)


def study_names(storage: Any) -> list[str]:
    """The studies in the storage, by name."""
    return sorted(s.study_name for s in storage.get_all_studies())


def compare_study(storage: Any, name: str) -> Comparison:
    """One study's trials as points: the first objective against the CO2e each reported.

    Completed trials make the front; pruned trials are shown at the CO2e they had spent and the
    last value they reported; failed and running trials are listed, not drawn.

    Raises:
        KeyError: for a study the storage does not hold.
    """
    import optuna
    from optuna.trial import TrialState

    from carbon_callbacks.integrations.optuna import trial_carbon

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise KeyError(f"study: no study {name!r} in the Optuna storage") from None
    direction = "max" if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else "min"
    metric_names = study.metric_names
    metric = metric_names[0] if metric_names else "objective"
    points = []
    for trial in study.get_trials(deepcopy=False):
        carbon = trial_carbon(trial)
        curve = tuple((p.co2_g_total, p.value) for p in carbon if p.value is not None)
        if trial.state == TrialState.COMPLETE and trial.values:
            value: float | None = trial.values[0]
        elif trial.state == TrialState.PRUNED and curve:
            value = curve[-1][1]
        else:
            value = None
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in sorted(trial.params.items()))  # fmt: skip
        points.append(
            Point(
                key=f"trial {trial.number}",
                label=f"trial {trial.number}",
                metric=value,
                co2_g=max((p.co2_g_total for p in carbon), default=0.0),
                energy_kwh=max((p.energy_kwh_total for p in carbon), default=0.0),
                status=trial.state.name.lower(),
                curve=curve,
                detail=params,
            )
        )
    untracked = sum(1 for p in points if p.co2_g == 0 and p.metric is not None)
    note = (
        f"{untracked} trial(s) reported no CO2e (trained without a carbon-callbacks adapter?)"
        if untracked
        else ""
    )
    return build_comparison(
        f"Optuna study {name}", points, metric, direction,
        front_states=frozenset({"complete"}), note=note,
    )  # fmt: skip
