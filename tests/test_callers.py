"""API keys and rate limits: the callers file, its lock, the token bucket, `shipway callers`, and
the feature service's own door (in process; the front door's, with Envoy, is in
test_serving)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import stat
import threading
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipway import callers
from shipway.callers import Buckets, Caller
from shipway.cli import main
from shipway.errors import BadRequest, Forbidden, NotFound
from shipway.features.server import FeatureServer
from shipway.paths import ShipwayHome
from shipway.serving.client import CONTROL_ENV, SERVING_ENV, TOKEN_ENV


def _caller(name: str = "scoring-team", key: str = "k", rate: int = 5, burst: int = 2) -> Caller:
    return Caller(name, callers.digest(key), rate, burst)


def test_a_key_is_kept_as_htpasswd_s_sha_digest_never_itself(tmp_path: Path) -> None:
    key = callers.new_key()
    assert len(base64.urlsafe_b64decode(key + "=")) == 32
    expected = "{SHA}" + base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
    assert callers.digest(key) == expected
    path = tmp_path / "callers.json"
    callers.update(path, lambda known: known.update({"a": _caller("a", key)}))
    assert key not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert callers.load(path) == {"a": _caller("a", key)}


def test_identify_takes_the_right_key_only() -> None:
    known = {"a": _caller("a", "right"), "b": _caller("b", "other")}
    assert callers.identify(known, callers.credentials("a", "right")) == known["a"]
    for wrong in [
        None,
        "",
        callers.credentials("a", "wrong"),
        callers.credentials("a", "other"),  # b's key under a's name
        callers.credentials("c", "right"),
        "Bearer right",
        "Basic !!!not-base64",
        "Basic " + base64.b64encode(b"\xff\xfe").decode(),
    ]:
        assert callers.identify(known, wrong) is None, wrong


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"name": "Scoring Team"}, "caller name 'Scoring Team'"),
        ({"name": "../x"}, "caller name '../x'"),
        # A trailing newline passed `^...$` and broke the users list Envoy reads.
        ({"name": "alice\n"}, "caller name 'alice\\n'"),
        ({"name": "a" * 64}, "caller name 'aaaa"),
        ({"name": 7}, "caller name 7"),
        ({"digest": "plain"}, "digest"),
        ({"digest": callers.digest("k") + "\n"}, "is not {SHA} followed by exactly 28 base64"),
        ({"digest": callers.digest("k")[:20] + "\n" + callers.digest("k")[21:]}, "digest"),
        ({"digest": "{SHA}" + "!" * 27 + "="}, "is not {SHA} followed by exactly 28 base64"),
        ({"acl": "root"}, "acl 'root' is not one of ['public', 'staff']"),
        ({"rate": 0}, "rate must be a whole number >= 1, not 0"),
        ({"rate": 2.5}, "rate must be a whole number >= 1, not 2.5"),
        ({"burst": True}, "burst must be a whole number >= 1, not True"),
    ],
)
def test_a_bad_caller_is_refused_by_name(fields: dict[str, object], named: str) -> None:
    base: dict[str, object] = {
        "name": "a",
        "digest": callers.digest("k"),
        "rate": 1,
        "burst": 1,
    }
    with pytest.raises(BadRequest, match=re.escape(named)):
        Caller(**{**base, **fields})  # type: ignore[arg-type]


def test_a_callers_file_edited_with_a_newline_in_a_name_is_unreadable_never_used(
    tmp_path: Path,
) -> None:
    path = tmp_path / "callers.json"
    callers.update(path, lambda known: known.update({"a": _caller("a")}))
    document = json.loads(path.read_text())
    document["callers"].append({**document["callers"][0], "name": "b\n"})
    path.write_text(json.dumps(document))
    with pytest.raises(BadRequest, match=r"callers file .* is unreadable \(caller name 'b\\n'"):
        callers.load(path)


def test_a_caller_s_access_is_its_record_s_and_a_request_may_only_narrow_it() -> None:
    assert _caller().acl == "public"
    assert callers.narrowest("staff", None) == "staff"
    assert callers.narrowest("staff", "public") == "public"
    assert callers.narrowest("public", "public") == "public"
    with pytest.raises(Forbidden, match=r"'staff' would widen this caller's access \('public'"):
        callers.narrowest("public", "staff")
    with pytest.raises(BadRequest, match=r"parameters\.acl: 'root' is not one of"):
        callers.narrowest("staff", "root")
    staff = Caller("desk", callers.digest("k"), 1, 1, "staff")
    assert callers.access_map({"desk": staff, "a": _caller("a")}) == {
        "a": "public",
        "desk": "staff",
    }


def test_a_change_the_front_door_did_not_apply_is_an_error_never_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The control plane answers `applied: false` with Envoy's reason (the front door still
    runs the configuration before): the CLI says so and fails, it never prints "applied"."""
    from shipway.serving.client import ServingClient

    class Refusing:
        def set_caller(self, *args: object) -> dict[str, object]:
            return {"applied": False, "reason": "Envoy rejected configuration 17: bad users"}

        remove_caller = set_caller

    monkeypatch.setenv("SHIPWAY_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(ServingClient, "for_home", classmethod(lambda cls, path: Refusing()))
    assert main(["callers", "add", "late", "--acl", "staff"]) == 2
    captured = capsys.readouterr()
    assert "the front door did not apply it: Envoy rejected configuration 17" in captured.err
    assert "--replace" in captured.err and "serving applied it" not in captured.out
    assert main(["callers", "remove", "late"]) == 2
    assert "applied" not in capsys.readouterr().out


def test_doctor_reports_a_front_door_that_does_not_run_serving_s_last_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from shipway.cli.services import _doctor_dataplane
    from shipway.errors import ShipwayError
    from shipway.serving.client import ServingClient

    answers = {"generation": "18", "applied": False, "error": "Envoy rejected configuration 18"}

    class Serving:
        def dataplane(self) -> dict[str, object]:
            return answers

    monkeypatch.setattr(ServingClient, "for_home", classmethod(lambda cls, path: Serving()))
    home = ShipwayHome(tmp_path)
    with pytest.raises(ShipwayError, match="does not run serving's last change: Envoy rejected"):
        _doctor_dataplane(home)
    answers.update(applied=True, error=None)
    _doctor_dataplane(home)
    assert "ok  front door runs serving's last change (18)" in capsys.readouterr().out


def test_an_unreadable_callers_file_is_named_not_guessed(tmp_path: Path) -> None:
    path = tmp_path / "callers.json"
    path.write_text('{"callers": [{"name": "a"}]}')
    with pytest.raises(BadRequest, match=r"callers file .*callers.json is unreadable"):
        callers.load(path)
    with pytest.raises(BadRequest, match="unreadable"):
        callers.update(path, lambda known: known.clear())
    assert path.read_text() == '{"callers": [{"name": "a"}]}'


def test_removing_a_caller_nobody_issued_names_who_there_is(tmp_path: Path) -> None:
    path = tmp_path / "callers.json"
    callers.update(path, lambda known: known.update({"a": _caller("a")}))
    with pytest.raises(NotFound, match=r"no caller 'b'; callers: \['a'\]"):
        callers.update(path, lambda known: callers.remove(known, "b"))
    assert list(callers.load(path)) == ["a"]


def test_writers_at_once_lose_no_caller(tmp_path: Path) -> None:
    path = tmp_path / "callers.json"
    names = [f"c{i}" for i in range(16)]

    def add(name: str) -> None:
        callers.update(path, lambda known: known.update({name: _caller(name)}))

    threads = [threading.Thread(target=add, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(callers.load(path)) == sorted(names)


def test_a_bucket_lets_a_burst_through_then_the_rate() -> None:
    buckets = Buckets()
    a, b = _caller("a", rate=2, burst=3), _caller("b", rate=2, burst=3)
    assert [buckets.take(a, now=0.0) for _ in range(4)] == [True, True, True, False]
    assert buckets.take(b, now=0.0)  # another caller's bucket is its own
    assert not buckets.take(a, now=0.4)
    assert buckets.take(a, now=0.5)  # 0.5 s at 2/s: one token
    assert not buckets.take(a, now=0.5)
    faster = _caller("a", rate=2, burst=10)
    assert buckets.take(faster, now=0.5)  # new limits start a full bucket


@settings(max_examples=60, deadline=None)
@given(
    rate=st.integers(1, 50),
    burst=st.integers(1, 50),
    gaps=st.lists(st.floats(0.0, 0.5), min_size=1, max_size=200),
)
def test_a_bucket_never_admits_more_than_burst_plus_rate_times_time(
    rate: int, burst: int, gaps: list[float]
) -> None:
    buckets, caller, now, admitted = Buckets(), _caller(rate=rate, burst=burst), 0.0, 0
    for gap in gaps:
        now += gap
        admitted += buckets.take(caller, now=now)
    assert admitted <= burst + rate * now + 1e-9


def test_shipway_callers_add_list_remove_without_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHIPWAY_HOME", str(tmp_path / "home"))
    # No serving for this home: not even one another test exported the address of.
    for name in (CONTROL_ENV, SERVING_ENV, TOKEN_ENV, callers.KEY_ENV):
        monkeypatch.delenv(name, raising=False)
    home = ShipwayHome(tmp_path / "home")
    assert main(["callers", "add", "scoring-team", "--rate", "7", "--burst", "9"]) == 0
    out = capsys.readouterr().out
    assert "serving is not answering" in out and "saved for its next start" in out
    issued = re.search(r"SHIPWAY_API_KEY=scoring-team:(\S+)", out)
    assert issued is not None
    key = issued.group(1)
    known = callers.load(home.served.callers)
    assert known["scoring-team"] == Caller("scoring-team", callers.digest(key), 7, 9)
    assert key not in home.served.callers.read_text()

    assert main(["callers", "add", "scoring-team"]) == 2
    assert "exists: --replace gives it a new key" in capsys.readouterr().err
    assert main(["callers", "add", "scoring-team", "--replace"]) == 0
    replaced = callers.load(home.served.callers)
    assert callers.identify(replaced, callers.credentials("scoring-team", key)) is None

    assert main(["callers", "add", "Bad Name"]) == 2
    assert "caller name 'Bad Name'" in capsys.readouterr().err
    assert main(["callers", "list"]) == 0
    assert re.search(r"scoring-team\s+rate 50/s\s+burst 100\s+acl public", capsys.readouterr().out)
    assert main(["callers", "remove", "nobody"]) == 2
    assert "no caller 'nobody'" in capsys.readouterr().err
    assert main(["callers", "remove", "scoring-team"]) == 0
    assert callers.load(home.served.callers) == {}


def _feature_server(home: ShipwayHome) -> FeatureServer:
    return FeatureServer(home, require_keys=True)


async def _call(server: FeatureServer, path: str, auth: str | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=server)
    headers = {"authorization": auth} if auth else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://features") as http:
        if path.startswith("/get-online-features"):
            return await http.post(path, json={"feature_service": "x"}, headers=headers)
        return await http.get(path, headers=headers)


def _refused(server: FeatureServer, caller: str, reason: str) -> float:
    value = server.registry.get_sample_value(
        "shipway_feature_refused_total", {"caller": caller, "reason": reason}
    )
    return value or 0.0


def test_the_feature_service_needs_a_key_holds_a_caller_to_its_rate_and_counts_refusals(
    home: ShipwayHome,
) -> None:
    callers.update(
        home.served.callers,
        lambda known: known.update({"a": _caller("a", "key-a", rate=1, burst=2)}),
    )
    server = _feature_server(home)

    async def scenario() -> None:
        nobody = await _call(server, "/get-online-features")
        assert nobody.status_code == 401
        assert nobody.headers["www-authenticate"] == 'Basic realm="shipway"'
        assert "needs a caller's API key" in nobody.json()["error"]
        wrong = await _call(server, "/get-online-features", callers.credentials("a", "nope"))
        assert wrong.status_code == 401
        assert _refused(server, "-", "unauthenticated") == 2
        # Health and metrics stay open: Prometheus and the supervisor hold no key.
        assert (await _call(server, "/metrics")).status_code == 200

        good = callers.credentials("a", "key-a")
        # Admitted: past the door, the lookup finds no registry yet (503), not 401.
        codes = [(await _call(server, "/get-online-features", good)).status_code for _ in range(3)]
        assert codes == [503, 503, 429]
        assert _refused(server, "a", "rate_limited") == 1
        over = await _call(server, "/get-online-features", good)
        assert over.headers["retry-after"] == "1"
        assert "caller a is over its rate of 1/s (burst 2)" in over.json()["error"]

    asyncio.run(scenario())


def test_a_revoked_key_stops_opening_the_feature_service(
    home: ShipwayHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shipway.features.server.CALLERS_CHECK_SECONDS", 0.0)
    callers.update(home.served.callers, lambda known: known.update({"a": _caller("a", "key-a")}))
    server = _feature_server(home)
    good = callers.credentials("a", "key-a")

    async def scenario() -> None:
        assert (await _call(server, "/get-online-features", good)).status_code == 503
        callers.update(home.served.callers, lambda known: callers.remove(known, "a"))
        assert (await _call(server, "/get-online-features", good)).status_code == 401
        # A file broken by hand lets nobody in, and says so in the log.
        home.served.callers.write_text("not json")
        assert (await _call(server, "/get-online-features", good)).status_code == 401

    asyncio.run(scenario())


def test_an_open_feature_service_asks_for_no_key(home: ShipwayHome) -> None:
    server = FeatureServer(home, require_keys=False)
    response = asyncio.run(_call(server, "/get-online-features"))
    assert response.status_code == 503
    assert json.loads(response.text)["error"].startswith("no feature registry yet")
