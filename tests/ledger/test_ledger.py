"""The SQLite ledger: round trip, metadata, default location, schema versions and migration."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from carbon_callbacks.ledger import MIGRATIONS, SCHEMA_VERSION, Ledger, LedgerError
from tests.helpers.ledger_records import make_record


def test_round_trip_keeps_every_field_of_every_epoch(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.sqlite")
    run_id = ledger.start_run({"project": "digits", "framework": "lightning"})
    records = [make_record(i, energy_kwh=0.001 * (i + 1)) for i in range(4)]
    for r in records:
        ledger.add_epoch(run_id, r)
    ledger.end_run(run_id, stopped_early=True, stop_reason="gain per kg fell below 0.01")

    assert ledger.epochs(run_id) == records
    [run] = ledger.runs()
    assert run.run_id == run_id
    assert run.finished and run.stopped_early
    assert run.stop_reason == "gain per kg fell below 0.01"
    assert run.epochs == 4
    assert run.energy_kwh == pytest.approx(0.010)
    assert run.co2_g == pytest.approx(0.010 * 400)
    ledger.close()


def test_run_metadata_is_stored_and_missing_fields_filled(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.sqlite")
    run_id = ledger.start_run(
        {
            "project": "p",
            "team": "vision",
            "framework": "keras",
            "hyperparameters": {"lr": 0.01, "batch_size": 32},
            "location": "FR",
            "intensity_source": "embedded table FR 2023",
            "hardware": {"cpu": "Xeon", "gpus": []},
            "methods": {"cpu": "counter"},
            "dataset": "digits",
        }
    )
    run = ledger.run(run_id)
    assert (run.project, run.team, run.framework) == ("p", "vision", "keras")
    assert run.hyperparameters == {"lr": 0.01, "batch_size": 32}
    assert run.location == "FR" and run.intensity_source == "embedded table FR 2023"
    assert run.hardware == {"cpu": "Xeon", "gpus": []}
    assert run.methods == {"cpu": "counter"}
    assert run.metadata == {"dataset": "digits"}
    assert run.user and run.host and run.start_wall > 0
    assert not run.finished and run.end_wall is None


def test_project_and_team_fall_back_to_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CARBON_CALLBACKS_PROJECT", "envproj")
    monkeypatch.setenv("CARBON_CALLBACKS_TEAM", "envteam")
    ledger = Ledger.open(tmp_path / "l.sqlite")
    run = ledger.run(ledger.start_run({}))
    assert (run.project, run.team) == ("envproj", "envteam")


def test_default_location_follows_env_var_then_xdg(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "from-env.sqlite"
    monkeypatch.setenv("CARBON_CALLBACKS_LEDGER", str(target))
    ledger = Ledger.open()
    ledger.start_run({"project": "x"})
    assert target.exists()

    monkeypatch.delenv("CARBON_CALLBACKS_LEDGER")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr("sys.platform", "linux")
    ledger = Ledger.open()
    ledger.start_run({"project": "x"})
    assert (tmp_path / "xdg" / "carbon-callbacks" / "ledger.sqlite").exists()


def test_argument_beats_env_var(tmp_path: Path) -> None:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'arg.sqlite'}")
    ledger.start_run({})
    assert (tmp_path / "arg.sqlite").exists()


def test_sqlite_file_is_in_wal_mode_with_current_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    Ledger.open(path).start_run({})
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION


def test_version_1_ledger_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied REAL)")
    for statement in MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (1, 0)")
    conn.execute("INSERT INTO runs (run_id, project, start_wall) VALUES ('old1', 'legacy', 5)")
    conn.commit()
    conn.close()

    ledger = Ledger.open(path)
    new_id = ledger.start_run({"project": "new"})
    runs = {r.run_id: r for r in ledger.runs()}
    assert runs["old1"].project == "legacy" and runs["old1"].source == ""
    assert runs[new_id].source == "carbon-callbacks"
    versions = sqlite3.connect(path).execute("SELECT version FROM schema_version").fetchall()
    assert [v for (v,) in versions] == list(range(1, SCHEMA_VERSION + 1))


def test_reading_writes_nothing_so_a_read_only_ledger_can_be_read(tmp_path: Path) -> None:
    # A v1 ledger in rollback-journal mode: a read must not migrate it, switch it to WAL or
    # create anything next to it, since a reader may have no write access to file or folder.
    path = tmp_path / "shared.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied REAL)")
    for statement in MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (1, 0)")
    conn.execute("INSERT INTO runs (run_id, project, start_wall) VALUES ('old1', 'legacy', 5)")
    conn.commit()
    conn.close()
    before = path.read_bytes()

    ledger = Ledger.open(path)
    assert [(r.run_id, r.project, r.source) for r in ledger.runs()] == [("old1", "legacy", "")]
    assert ledger.epochs("old1") == []
    ledger.close()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.sqlite"]
    assert not (tmp_path / "absent").exists()
    assert Ledger.open(tmp_path / "absent" / "l.sqlite").runs() == []
    assert not (tmp_path / "absent").exists()  # reading does not create the folder


def test_unreadable_ledger_error_says_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "dir.sqlite"
    path.mkdir()  # exists, but is no file SQLite can open
    with pytest.raises(LedgerError, match="cannot be read"):
        Ledger.open(path).runs()


def test_newer_schema_is_refused_for_reading(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied REAL)")
    conn.execute("INSERT INTO schema_version VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(LedgerError, match="newer than this carbon-callbacks"):
        Ledger.open(path).runs()


def test_unknown_and_prefix_run_ids(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.sqlite")
    with pytest.raises(LedgerError, match="holds no runs"):
        ledger.run("nope")
    run_id = ledger.start_run({"run_id": "abcdef123456"})
    assert ledger.run("abcd").run_id == run_id
    with pytest.raises(LedgerError, match="no run 'zzz'"):
        ledger.run("zzz")


def test_end_run_twice_keeps_the_first_end(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.sqlite")
    run_id = ledger.start_run({})
    ledger.end_run(run_id, stopped_early=True, stop_reason="first")
    ledger.end_run(run_id, stop_reason="second")
    assert ledger.run(run_id).stop_reason == "first"


def test_runs_filters_by_project_team_user_and_time(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.sqlite")
    a = ledger.start_run({"project": "a", "team": "t1", "user": "ann", "start_wall": 100.0})
    b = ledger.start_run({"project": "b", "team": "t2", "user": "bob", "start_wall": 200.0})
    assert [r.run_id for r in ledger.runs(project="a")] == [a]
    assert [r.run_id for r in ledger.runs(team="t2")] == [b]
    assert [r.run_id for r in ledger.runs(user="ann")] == [a]
    assert [r.run_id for r in ledger.runs(since=150.0)] == [b]
    assert [r.run_id for r in ledger.runs(until=150.0)] == [a]


def test_bad_arguments_fail_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timeout"):
        Ledger(tmp_path / "l.sqlite", timeout=0)
    with pytest.raises(ValueError, match="sqlite:///path"):
        Ledger("sqlite://")
    with pytest.raises(TypeError, match="EpochRecord"):
        Ledger(tmp_path / "l.sqlite").add_epoch("r", {"epoch": 1})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresq://u:pw@db.example/ledger", "unknown database kind 'postgresq'"),
        ("mysql://u:pw@db.example/ledger", "'MySQLdb', which is not installed"),
        ("postgresql+psycopg://u@db.example:notaport/ledger", "not a database URL"),
    ],
)
def test_database_url_that_can_never_work_fails_at_construction(url: str, says: str) -> None:
    pytest.importorskip("sqlalchemy")
    with pytest.raises(ValueError, match="CARBON_CALLBACKS_LEDGER") as info:
        Ledger.open(url)
    assert says in str(info.value)
    assert ":pw@" not in str(info.value)  # the password never reaches a message


def test_unreachable_server_is_accepted_at_construction(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    # A well-formed URL with an installed driver is fine even if nothing answers (it spools).
    ledger = Ledger.open("postgresql://u@127.0.0.1:9/none", spool=tmp_path / "s.jsonl", timeout=1)
    ledger.start_run({})
    assert ledger.spooled() == 1


def test_ledger_report_and_cli_import_no_heavy_packages() -> None:
    import subprocess
    import sys

    code = (
        "import sys, carbon_callbacks.ledger, carbon_callbacks.reports, carbon_callbacks.cli;"
        "heavy = {'sqlalchemy', 'matplotlib', 'torch', 'lightning', 'sklearn', 'psycopg'};"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_hardware_and_location_are_filled_when_not_given(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.sqlite")
    run = ledger.run(ledger.start_run({"intensity_source": "Ember yearly average 2024 [FRA]"}))
    assert run.location == "FRA"
    assert run.hardware["cpu_count"] >= 1 and run.hardware["cpu_model"]
    named = ledger.run(ledger.start_run({"intensity_source": "x [FRA]", "location": "Paris"}))
    assert named.location == "Paris"


def test_energy_meter_window_is_recorded_as_a_run(tmp_path: Path) -> None:
    from carbon_callbacks.records import ComponentEnergy, Window

    window = Window(
        start_wall=1_700_000_000.0,
        end_wall=1_700_000_100.0,
        seconds=100.0,
        components={
            "cpu": ComponentEnergy("cpu", 3600.0, 3000.0, 4200.0, "model"),
            "ram": ComponentEnergy("ram", 360.0, 300.0, 420.0, "model"),
        },
    )
    ledger = Ledger.open(tmp_path / "l.sqlite")
    run_id = ledger.record_window(window, intensity=500.0, metadata={"project": "etl"})
    run = ledger.run(run_id)
    assert run.project == "etl" and run.framework == "EnergyMeter" and run.finished
    [rec] = ledger.epochs(run_id)
    assert rec.energy_kwh == pytest.approx(0.0011)
    assert rec.cpu_energy_kwh == pytest.approx(0.001) and rec.ram_energy_kwh == pytest.approx(1e-4)
    assert rec.co2_g == pytest.approx(0.55) and rec.power_w == pytest.approx(39.6)
    assert rec.methods == {"cpu": "model", "ram": "model"}


def test_a_long_lived_ledger_keeps_nothing_per_ended_run(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.sqlite")
    for _ in range(50):  # a sweep: many short runs through one ledger object
        run_id = ledger.start_run({})
        ledger.add_epoch(run_id, make_record(0))
        ledger.add_epoch(run_id, make_record(1))
        ledger.end_run(run_id)
    assert ledger._positions == {}
    assert [e.epoch for e in ledger.epochs(run_id)] == [0, 1]
