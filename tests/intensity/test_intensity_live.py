"""Live providers against a real HTTP server on 127.0.0.1 that answers like the real APIs.

The server speaks Electricity Maps v3 (``/v3/carbon-intensity/latest`` and ``/past-range``,
``auth-token`` header) and the UK Carbon Intensity API (``/intensity``, ``/intensity/{from}/{to}``,
``/regional/postcode/{pc}``, ``/regional/intensity/{from}/{to}/postcode/{pc}``). Each test sets
how it behaves: normal answers, slow, HTTP 500, malformed JSON, or a 401 for a wrong token.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from carbon_callbacks.intensity import ENV_VARS, emissions, lookup_country, resolution, resolve
from carbon_callbacks.intensity import co2e as co2e_module
from carbon_callbacks.intensity.live import ElectricityMaps, UKCarbonIntensity
from carbon_callbacks.records import ComponentEnergy, Window

HOUR = 3600.0
TOKEN = "em-test-token-4f9c2d7e1b"


def iso(t: float, fmt: str = "%Y-%m-%dT%H:%M:%S.000Z") -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime(fmt)


def parse(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class FakeGrid:
    """What the server answers; tests change ``mode`` and the hourly values."""

    def __init__(self) -> None:
        self.mode = "ok"  # ok | slow | http500 | garbage
        self.hourly: dict[float, float] = {}
        self.latest = 321.0
        self.requests: list[str] = []
        self.tokens: list[str | None] = []
        self.release = threading.Event()
        self.answered_slow = False
        self.redirect: str | None = None  # answer every request with a 302 to this URL

    def value(self, t: float) -> float:
        return self.hourly.get(math.floor(t / HOUR) * HOUR, self.latest)


def make_handler(grid: FakeGrid):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def send_json(self, status: int, body) -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 - http.server's name
            grid.requests.append(self.path)
            grid.tokens.append(self.headers.get("auth-token"))
            if self.path.startswith("/moved/"):
                # A same-host move (an API path renamed): following it is safe.
                target = self.path[len("/moved"):]
                self.send_response(301)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                return self.end_headers()
            if grid.redirect is not None:
                self.send_response(302)
                self.send_header("Location", grid.redirect)
                self.send_header("Content-Length", "0")
                return self.end_headers()
            if grid.mode == "slow":
                grid.release.wait(10)
                grid.answered_slow = True
                return self.send_json(200, {"carbonIntensity": 1.0})
            if grid.mode == "http500":
                return self.send_json(500, {"message": "internal error"})
            if grid.mode == "garbage":
                return self.send_json(200, b"<html>upstream proxy error</html>")
            url = urlparse(self.path)
            if url.path.startswith("/v3/"):
                return self.electricity_maps(url)
            return self.uk(url.path)

        def electricity_maps(self, url):
            token = self.headers.get("auth-token")
            if token != TOKEN:
                # Like many APIs, echo the bad credential: the client must not repeat it.
                return self.send_json(401, {"error": f"Invalid auth-token {token}"})
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == "/v3/carbon-intensity/latest":
                now = math.floor(time.time() / HOUR) * HOUR
                return self.send_json(200, {
                    "zone": q["zone"], "carbonIntensity": grid.latest, "datetime": iso(now),
                    "updatedAt": iso(time.time()), "emissionFactorType": "lifecycle",
                    "isEstimated": False, "estimationMethod": None,
                })
            if url.path == "/v3/carbon-intensity/past-range":
                start, end = parse(q["start"]), parse(q["end"])
                data = [
                    {"zone": q["zone"], "carbonIntensity": g, "datetime": iso(h),
                     "updatedAt": iso(h), "emissionFactorType": "lifecycle",
                     "isEstimated": False, "estimationMethod": None}
                    for h, g in sorted(grid.hourly.items()) if start <= h < end
                ]
                return self.send_json(200, {"zone": q["zone"], "data": data})
            return self.send_json(404, {"error": "not found"})

        def half_hours(self, start: float, end: float, regional: bool) -> list[dict]:
            out = []
            t = start
            while t < end:
                g = grid.value(t)
                # Half-hours differ by +/-10 around the hour's value; their mean is that value.
                g = g - 10 if (t // 1800) % 2 == 0 else g + 10
                intensity = {"forecast": g, "index": "moderate"}
                if not regional:
                    intensity = {"forecast": g + 50, "actual": g, "index": "moderate"}
                entry = {"from": iso(t, "%Y-%m-%dT%H:%MZ"),
                         "to": iso(t + 1800, "%Y-%m-%dT%H:%MZ"), "intensity": intensity}
                if regional:
                    entry["generationmix"] = [{"fuel": "gas", "perc": 40.0}]
                out.append(entry)
                t += 1800
            return out

        def uk(self, path: str):
            parts = path.strip("/").split("/")
            now = math.floor(time.time() / 1800) * 1800
            region = {"regionid": 12, "dnoregion": "SSE South", "shortname": "South England",
                      "postcode": None}
            if parts == ["intensity"]:
                return self.send_json(200, {"data": self.half_hours(now, now + 1800, False)})
            if len(parts) == 3 and parts[0] == "intensity":
                start, end = parse(parts[1]), parse(parts[2])
                return self.send_json(200, {"data": self.half_hours(start, end, False)})
            if len(parts) == 3 and parts[:2] == ["regional", "postcode"]:
                region["postcode"] = parts[2]
                region["data"] = self.half_hours(now, now + 1800, True)
                return self.send_json(200, {"data": [region]})
            regional_range = parts[:2] == ["regional", "intensity"] and parts[4:5] == ["postcode"]
            if len(parts) == 6 and regional_range:
                start, end = parse(parts[2]), parse(parts[3])
                region["postcode"] = parts[5]
                region["data"] = self.half_hours(start, end, True)
                return self.send_json(200, {"data": region})
            return self.send_json(400, {"error": {"code": "400 Bad Request"}})

    return Handler


@contextlib.contextmanager
def serve(host: str):
    fake = FakeGrid()
    server = ThreadingHTTPServer((host, 0), make_handler(fake))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    fake.url = f"http://{host}:{server.server_address[1]}"
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def grid():
    with serve("127.0.0.1") as fake:
        yield fake


@pytest.fixture
def other_host():
    """A second server on another loopback address: a different host to the client."""
    try:
        probe = socket.socket()
        probe.bind(("127.0.0.2", 0))
        probe.close()
    except OSError:
        pytest.skip("127.0.0.2 is not a loopback address on this system")
    with serve("127.0.0.2") as fake:
        yield fake


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    resolution._warned.clear()
    co2e_module._warned.clear()


def em(grid, **kwargs) -> ElectricityMaps:
    kwargs.setdefault("token", TOKEN)
    kwargs.setdefault("timeout", 1.0)
    return ElectricityMaps("DE", base_url=f"{grid.url}/v3", **kwargs)


def window(start: float, seconds: float, kwh: float) -> Window:
    j = kwh * 3.6e6
    return Window(start, start + seconds, seconds,
                  {"gpu": ComponentEnergy("gpu", j, 0.95 * j, 1.05 * j, "counter")})


def this_hour() -> float:
    return math.floor(time.time() / HOUR) * HOUR


def test_electricity_maps_latest_with_token_header(grid):
    source = em(grid)
    now = time.time()
    g, provenance = source.intensity_at(now - 10, now)
    assert g == grid.latest
    assert "Electricity Maps DE" in provenance
    assert grid.requests[0].startswith("/v3/carbon-intensity/latest?zone=DE")
    assert grid.tokens == [TOKEN]


def test_electricity_maps_is_cached_per_zone_and_hour(grid):
    source = em(grid)
    now = time.time()
    for _ in range(5):
        source.intensity_at(now - 10, now)
    assert len(grid.requests) == 1


def test_three_hour_window_equals_hour_by_hour_sum(grid):
    h = this_hour()
    # Four clock hours touched by a 3-hour window that starts 20 min into the first one.
    hours = [h - 4 * HOUR, h - 3 * HOUR, h - 2 * HOUR, h - HOUR]
    grid.hourly = dict(zip(hours, [120.0, 480.0, 250.0, 60.0], strict=True))
    start = hours[0] + 1200.0
    kwh = 6.0
    result = emissions(window(start, 3 * HOUR, kwh), em(grid))

    expected_parts = [
        (hours[0] + 1200, hours[1], 120.0), (hours[1], hours[2], 480.0),
        (hours[2], hours[3], 250.0), (hours[3], start + 3 * HOUR, 60.0),
    ]
    expected = sum(kwh * (b - a) / (3 * HOUR) * g for a, b, g in expected_parts)
    assert result.g == pytest.approx(expected)
    assert [p.g_per_kwh for p in result.parts] == [120.0, 480.0, 250.0, 60.0]
    assert sum(p.g for p in result.parts) == pytest.approx(result.g)
    assert result.intensity_g_per_kwh == pytest.approx(expected / kwh)
    # One past-range request covered all four hours (prefetch), with the right span.
    assert len(grid.requests) == 1 and "/past-range?" in grid.requests[0]
    # A live hourly value carries a tighter band than a yearly table.
    yearly = emissions(window(start, 3 * HOUR, kwh), resolve("DE"))
    assert (result.high - result.low) / result.g < (yearly.high - yearly.low) / yearly.g


def test_timeout_falls_back_to_the_zone_embedded_value(grid, caplog):
    grid.mode = "slow"
    source = em(grid, timeout=0.3)
    now = time.time()
    with caplog.at_level(logging.WARNING):
        g, provenance = source.intensity_at(now - 10, now)
    # Returned before the server answered: the deadline, not the server, ended the request.
    assert not grid.answered_slow
    assert g == pytest.approx(lookup_country("DE").g_per_kwh)
    assert "fallback" in provenance and "timeout" in provenance
    assert len([r for r in caplog.records if "timeout" in r.getMessage()]) == 1


def test_deadline_covers_dns_resolution(grid, monkeypatch):
    blocked = threading.Event()
    released = threading.Event()

    def hanging_dns(*args, **kwargs):
        blocked.set()
        released.wait(10)
        raise socket.gaierror("released by the test")

    monkeypatch.setattr(socket, "getaddrinfo", hanging_dns)
    source = ElectricityMaps("FR", token=TOKEN, base_url="http://grid.invalid/v3", timeout=0.3)
    now = time.time()
    try:
        g, provenance = source.intensity_at(now - 10, now)
        assert blocked.is_set() and not released.is_set()
        assert g == pytest.approx(lookup_country("FR").g_per_kwh)
        assert "timeout" in provenance
    finally:
        released.set()


def test_http_500_falls_back_with_one_warning_per_cause(grid, caplog):
    grid.mode = "http500"
    source = em(grid)
    h = this_hour()
    with caplog.at_level(logging.WARNING):
        current = source.intensity_at(time.time() - 10, time.time())
        past = source.intensity_at(h - 2 * HOUR, h - HOUR)
    assert current[0] == past[0] == pytest.approx(lookup_country("DE").g_per_kwh)
    assert len([r for r in caplog.records if "HTTP 500" in r.getMessage()]) == 1
    # The failure is cached for that hour: no retry storm at every epoch end.
    source.intensity_at(time.time() - 10, time.time())
    assert len(grid.requests) == 2


def test_malformed_json_falls_back(grid, caplog):
    grid.mode = "garbage"
    source = em(grid)
    with caplog.at_level(logging.WARNING):
        g, provenance = source.intensity_at(time.time() - 10, time.time())
    assert g == pytest.approx(lookup_country("DE").g_per_kwh)
    assert "malformed" in provenance
    assert any("malformed" in r.getMessage() for r in caplog.records)


def test_answer_with_wrong_shape_or_absurd_value_falls_back(grid):
    grid.latest = 99999.0
    g, provenance = em(grid).intensity_at(time.time() - 10, time.time())
    assert g == pytest.approx(lookup_country("DE").g_per_kwh)
    assert "malformed" in provenance


def test_bad_token_never_appears_in_logs_output_or_results(grid, caplog, capsys, monkeypatch):
    bad = "wrong-secret-token-9d8e7f"
    monkeypatch.setenv("CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN", bad)
    monkeypatch.setenv("CARBON_CALLBACKS_ELECTRICITYMAPS_URL", f"{grid.url}/v3")
    monkeypatch.setenv("CARBON_CALLBACKS_ZONE", "DE")
    h = this_hour()
    with caplog.at_level(logging.DEBUG):
        source = resolve()
        assert isinstance(source, ElectricityMaps)
        result = emissions(window(h - 2 * HOUR, 2 * HOUR, 1.0), source)
        latest = source.intensity_at(time.time() - 10, time.time())
    assert grid.tokens and all(t == bad for t in grid.tokens)  # it was sent, in the header
    assert result.g == pytest.approx(lookup_country("DE").g_per_kwh)
    assert "HTTP 401" in result.provenance
    out = capsys.readouterr()
    assert "Electricity Maps DE" in str(source)
    seen = " ".join([caplog.text, out.out, out.err, repr(source), str(source), str(vars(result)),
                     repr(latest), *grid.requests])
    assert "HTTP 401" in caplog.text
    assert bad not in seen


def test_missing_token_is_refused_at_construction_naming_the_variable():
    with pytest.raises(ValueError, match="CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN"):
        ElectricityMaps("DE")


def test_token_and_zone_in_environment_select_electricity_maps(grid, monkeypatch):
    monkeypatch.setenv("CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN", TOKEN)
    monkeypatch.setenv("CARBON_CALLBACKS_ELECTRICITYMAPS_URL", f"{grid.url}/v3")
    monkeypatch.setenv("CARBON_CALLBACKS_ZONE", "DE")
    assert resolve().intensity_at(time.time() - 10, time.time())[0] == grid.latest
    # An explicit fixed value still wins over a configured provider.
    assert resolve(40.0).intensity_at(0, HOUR)[0] == 40.0
    monkeypatch.setenv("CARBON_CALLBACKS_PROVIDER", "none")
    assert resolve().intensity_at(0, HOUR)[0] == pytest.approx(lookup_country("DE").g_per_kwh)


def test_uk_national_prefers_actual_and_averages_half_hours(grid):
    source = UKCarbonIntensity(base_url=grid.url)
    g, provenance = source.intensity_at(time.time() - 10, time.time())
    # Current half-hour only: actual (not the forecast, which the fake sets 50 higher).
    assert g in (grid.latest - 10, grid.latest + 10)
    assert "UK Carbon Intensity GB" in provenance
    h = this_hour()
    grid.hourly = {h - 3 * HOUR: 200.0, h - 2 * HOUR: 150.0, h - HOUR: 90.0}
    result = emissions(window(h - 3 * HOUR, 3 * HOUR, 3.0), source)
    assert [p.g_per_kwh for p in result.parts] == [200.0, 150.0, 90.0]
    assert result.g == pytest.approx(200.0 + 150.0 + 90.0)
    assert grid.requests[-1].startswith("/intensity/")


def test_uk_postcode_uses_the_regional_endpoints(grid):
    source = UKCarbonIntensity("RG10 9XX", base_url=grid.url)
    source.intensity_at(time.time() - 10, time.time())
    assert grid.requests[-1] == "/regional/postcode/RG10"
    h = this_hour()
    grid.hourly = {h - 2 * HOUR: 300.0, h - HOUR: 100.0}
    result = emissions(window(h - 2 * HOUR, 2 * HOUR, 2.0), source)
    assert result.g == pytest.approx(300.0 + 100.0)
    assert "/postcode/RG10" in grid.requests[-1] and grid.requests[-1].startswith("/regional/")
    with pytest.raises(ValueError, match="postcode"):
        UKCarbonIntensity("not a postcode")


def test_uk_failure_falls_back_to_great_britain(grid):
    grid.mode = "http500"
    g, provenance = UKCarbonIntensity(base_url=grid.url).intensity_at(time.time() - 5, time.time())
    assert g == pytest.approx(lookup_country("GB").g_per_kwh)
    assert "GBR" in provenance and "HTTP 500" in provenance


def test_uk_provider_from_environment(grid, monkeypatch):
    monkeypatch.setenv("CARBON_CALLBACKS_PROVIDER", "uk-carbon-intensity")
    monkeypatch.setenv("CARBON_CALLBACKS_UK_CARBON_INTENSITY_URL", grid.url)
    monkeypatch.setenv("CARBON_CALLBACKS_UK_POSTCODE", "SW1A 1AA")
    source = resolve()
    assert isinstance(source, UKCarbonIntensity) and source.postcode == "SW1A"
    source.intensity_at(time.time() - 5, time.time())
    assert grid.requests[-1] == "/regional/postcode/SW1A"


def test_redirect_to_another_host_never_receives_the_token(grid, other_host, caplog):
    # The other host answers like the real API, so following the redirect would "work".
    grid.redirect = f"{other_host.url}/v3/carbon-intensity/latest?zone=DE"
    source = em(grid)
    with caplog.at_level(logging.DEBUG):
        g, provenance = source.intensity_at(time.time() - 10, time.time())
    assert len(grid.requests) == 1 and grid.tokens == [TOKEN]
    assert other_host.requests == [] and other_host.tokens == []
    assert g == pytest.approx(lookup_country("DE").g_per_kwh)
    assert "redirect refused" in provenance
    assert "redirect refused" in caplog.text and "127.0.0.2" in caplog.text
    assert TOKEN not in caplog.text + provenance + repr(source) + str(source)


def test_redirect_within_the_same_host_is_followed(grid):
    g, provenance = ElectricityMaps(
        "DE", token=TOKEN, base_url=f"{grid.url}/moved/v3", timeout=1.0
    ).intensity_at(time.time() - 10, time.time())
    assert g == grid.latest and "fallback" not in provenance
    assert grid.requests[1].startswith("/v3/carbon-intensity/latest")
    assert grid.tokens == [TOKEN, TOKEN]


def test_hours_missing_from_the_answer_cost_no_further_requests(grid, caplog):
    h = this_hour()
    # A 6-hour past window; the provider has data for only two of its hours.
    grid.hourly = {h - 7 * HOUR: 100.0, h - 4 * HOUR: 300.0}
    source = em(grid)
    fallback = lookup_country("DE").g_per_kwh
    with caplog.at_level(logging.WARNING):
        result = emissions(window(h - 7 * HOUR, 6 * HOUR, 6.0), source)
        again = emissions(window(h - 7 * HOUR, 6 * HOUR, 6.0), source)
    assert len(grid.requests) == 1 and "/past-range?" in grid.requests[0]
    expected = [100.0, fallback, fallback, 300.0, fallback, fallback]
    assert [p.g_per_kwh for p in result.parts] == pytest.approx(expected)
    assert again.g == pytest.approx(result.g)
    assert "no data" in result.provenance
    assert len([r for r in caplog.records if "no data" in r.getMessage()]) == 1


def test_a_failing_provider_costs_one_request_per_emissions_call(grid):
    grid.mode = "slow"
    source = em(grid, timeout=0.2)
    now = time.time()
    # Six finished hours (prefetch) and the current one (latest): one deadline, not two.
    result = emissions(window(now - 6 * HOUR, 6 * HOUR, 6.0), source)
    assert len(grid.requests) == 1
    assert len(result.parts) == 7
    assert all(p.g_per_kwh == pytest.approx(lookup_country("DE").g_per_kwh) for p in result.parts)
    assert "timeout" in result.provenance
    # A later call tries again: a failure is not taken to last for ever.
    emissions(window(now - 60, 60, 0.01), source)
    assert len(grid.requests) == 2


@pytest.mark.parametrize(
    ("code", "zone"),
    [("FRA", "FR"), ("fr", "FR"), ("France", "FR"), ("UK", "GB"), ("GBR", "GB"),
     ("US-CAL-CISO", "US-CAL-CISO"), ("DK-DK1", "DK-DK1"), ("electricitymaps:DEU", "DE")],
)
def test_countries_are_sent_to_electricity_maps_as_alpha2(grid, monkeypatch, code, zone):
    monkeypatch.setenv("CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN", TOKEN)
    monkeypatch.setenv("CARBON_CALLBACKS_ELECTRICITYMAPS_URL", f"{grid.url}/v3")
    g, provenance = resolve(code).intensity_at(time.time() - 10, time.time())
    assert grid.requests == [f"/v3/carbon-intensity/latest?zone={zone}"]
    assert g == grid.latest and f"Electricity Maps {zone} hourly" in provenance


def test_aggregates_use_the_embedded_table_not_electricity_maps(grid, monkeypatch, caplog):
    monkeypatch.setenv("CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN", TOKEN)
    monkeypatch.setenv("CARBON_CALLBACKS_ELECTRICITYMAPS_URL", f"{grid.url}/v3")
    with caplog.at_level(logging.WARNING):
        for code in ("WORLD", "EU", "europe"):
            g, provenance = resolve(code).intensity_at(time.time() - 10, time.time())
            assert g == pytest.approx(lookup_country(code).g_per_kwh)
            assert "Ember" in provenance
    assert grid.requests == []
    assert "no aggregate zones" in caplog.text and TOKEN not in caplog.text
    with pytest.raises(ValueError, match="aggregate"):
        resolve("electricitymaps:WORLD")
