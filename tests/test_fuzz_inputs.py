"""Fuzzing the inputs a user or a file hands the bedside: WFDB headers, bundle metadata, CLI numbers and
alarm settings files.

Each property says the same two things: a bad input is refused with the documented error type
(RecordError, BundleError, a click usage error with exit 2, AlarmConfigError), never a traceback of
another type; and nothing that is accepted carries an invalid value (a NaN, an infinity, a rate or
threshold out of range). Examples are derandomized and few, so the file runs in seconds and CI
cannot flake.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import onnx
import pytest
import wfdb
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bedside.alarm_config import AlarmConfigError, load_alarm_config
from bedside.bundle import HOP_RANGE_S, METADATA_KEY, verify_bundle
from bedside.bundle import FS_RANGE_HZ as BUNDLE_FS_RANGE_HZ
from bedside.bundle import WINDOW_RANGE_S
from bedside.cli import MAX_UNIX_S, main, parse_since
from bedside.cli_types import MAX_SQLITE_INT, FiniteFloat
from bedside.errors import BundleError, RecordError
from bedside.leads import CANONICAL_LEADS
from bedside.records import FS_RANGE_HZ, open_record
from bedside.trust import TrustSettings
from bundles import make_bundle
from export.bundle_writer import atomic_write, bundle_bytes

#: Few derandomized examples in CI; FUZZ_EXAMPLES=2000 FUZZ_RANDOM=1 for a longer, random search.
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "50")), deadline=None, database=None,
                derandomize=os.environ.get("FUZZ_RANDOM") is None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
CPU = ("CPUExecutionProvider",)
DEV = TrustSettings(None, allow_unsigned=True)  # no signature asked for: the semantic checks are under test
_counter = itertools.count()


# -- 1. WFDB record headers ------------------------------------------------------------------------------------------

FS, N = 500, 6000  # the written record: 12 s of 12 leads at 500 Hz (one 10 s window fits)


@pytest.fixture(scope="module")
def wfdb_base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[str]]]:
    """A real 12-lead record written by wfdb.wrsamp; returns its folder and the fields of its signal lines."""
    folder = tmp_path_factory.mktemp("wfdb")
    sig = np.random.default_rng(0).normal(0, 0.5, (N, 12))
    wfdb.wrsamp("base", fs=FS, units=["mV"] * 12, sig_name=list(CANONICAL_LEADS), p_signal=sig,
                fmt=["16"] * 12, write_dir=str(folder))
    lines = (folder / "base.hea").read_text().splitlines()
    return folder, [line.split() for line in lines[1:] if line.strip()]


VALID_FS = st.sampled_from(["500", "500.0", "500/1000", "250", "1000", "25", "10000"])  # 500 Hz keeps a window
FS_FIELDS = st.one_of(
    VALID_FS, VALID_FS,
    st.sampled_from([None, "0", "-500", "nan", "NaN", "inf", "-inf", "1e9", "99999999", "0.001", "24.9", "10001",
                     "abc", "500Hz", "", "500/1000", "250", "1000", "25", "10000", "500.0", "5e2"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**6, 10**6).map(str),
)
GAIN_FIELDS = st.one_of(
    st.sampled_from(["200", "1000", "0.5", "-200", "1e-3"]),
    st.sampled_from(["0", "nan", "inf", "-inf", "-200", "abc", "", "1e-300", "1e300", "200", "1000", "0.5"]),
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(repr),
)
NAME_SETS = st.one_of(
    st.just(list(CANONICAL_LEADS)), st.just(list(CANONICAL_LEADS)),
    st.permutations(list(CANONICAL_LEADS)).map(list),
    st.just([n.lower() for n in CANONICAL_LEADS]),
    st.just([""] * 12),  # no description field
    st.just(["I"] * 12),  # duplicates
    st.just(["MLII", "V5", "ECG 1", "PLETH", "ABP", "RESP", "x", "y", "z", "w", "v", "u"]),  # unknown
    st.lists(st.sampled_from([*CANONICAL_LEADS, "", "MLII", "ECG 1", "I"]), min_size=12, max_size=12),
)
NSAMP_FIELDS = st.sampled_from([str(N), str(N), str(N), None, "0", "1", "100", "4999", "5000", str(N - 1), str(N), str(N + 1),
                                str(10 * N), "-5", "abc", "nan"])


def _valid_number(text: str | None, lo: float, hi: float) -> bool:
    try:
        v = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return math.isfinite(v) and lo <= v <= hi


@FUZZ
@given(fuzzed=st.sets(st.sampled_from(["fs", "gain", "names", "nsamp"]), max_size=2), data=st.data())
def test_a_fuzzed_header_gives_a_usable_record_or_a_record_error(wfdb_base, fuzzed, data):
    """Up to two header fields fuzzed at a time, the others as written (so most faults are alone)."""
    folder, signal_fields = wfdb_base
    fs = data.draw(FS_FIELDS if "fs" in fuzzed else VALID_FS, label="fs")
    gains = data.draw(st.lists(GAIN_FIELDS, min_size=1, max_size=3), label="gains") if "gain" in fuzzed else []
    gain_channel = data.draw(st.integers(0, 11), label="gain_channel")
    names = data.draw(NAME_SETS if "names" in fuzzed else st.just(list(CANONICAL_LEADS)), label="names")
    nsamp = data.draw(NSAMP_FIELDS, label="nsamp") if "nsamp" in fuzzed else str(N)
    name = f"r{next(_counter)}"
    record_line = [name, "12"] + ([] if fs is None else [fs] + ([] if nsamp is None else [nsamp]))
    lines = [" ".join(record_line)]
    bad_gain = False
    for ch, base_fields in enumerate(signal_fields):
        f = list(base_fields[:8])
        if gain_channel <= ch < gain_channel + len(gains):
            gain = gains[ch - gain_channel]
            units = base_fields[2].split("/", 1)[1]
            f[2] = f"{gain}/{units}"
            v = None
            try:
                v = float(gain)
            except ValueError:
                pass
            bad_gain |= v is None or v == 0 or not math.isfinite(v)
        if names[ch]:
            f.append(names[ch])
        lines.append(" ".join(f))
    (folder / f"{name}.hea").write_text("\n".join(lines) + "\n")

    try:
        record = open_record(folder / name)
        x = record.read()
    except RecordError:
        event("refused")
        return
    event("accepted")
    # accepted: the header's rate and gains were real, and the samples are finite mV
    assert fs is not None and _valid_number(fs.split("/")[0], *FS_RANGE_HZ), fs
    assert not bad_gain, gains
    assert FS_RANGE_HZ[0] <= record.fs_hz <= FS_RANGE_HZ[1]
    assert math.isclose(record.fs_hz, float(fs.split("/")[0]))
    assert x.shape == (12, record.n_samples) and x.dtype == np.float32
    assert np.isfinite(x).all()


# -- 2. bundle metadata ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundle_base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, onnx.ModelProto, dict[str, Any]]:
    """A valid signed test bundle, its ONNX model and its metadata."""
    folder = tmp_path_factory.mktemp("bundle")
    path = make_bundle(folder / "base.onnx")
    model = onnx.load(path)
    meta = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    return folder, model, meta


def _leaf_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a metadata tree (dict keys and list indices), golden input bytes excluded."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            if k != "input_b64":
                out += _leaf_paths(v, prefix + (k,))
    elif isinstance(node, list) and len(node) <= 12:  # golden/expected rows, labels, leads, shapes
        for i, v in enumerate(node):
            out += _leaf_paths(v, prefix + (i,))
    return out


BAD_VALUES = [float("nan"), float("inf"), float("-inf"), -1, -0.5, 0, 1, 1e300, 1e-300, 0.5, 5.0, "x", "", None,
              True, False, [], {}, [1, 2], {"a": 1}]


def _isotonic(meta: dict, x: list, y: list) -> None:
    meta["calibration"] = {"method": "isotonic", "params": {label: {"x": list(x), "y": list(y)}
                                                            for label in meta["labels"]}}


def _platt(meta: dict, a: Any, b: Any) -> None:
    meta["calibration"] = {"method": "platt", "params": {label: {"a": a, "b": b} for label in meta["labels"]}}


def _structural(kind: str, value: Any) -> Any:
    """Edits the leaf mutations do not reach: calibration tables, label sets, golden shapes."""
    def edit(meta: dict) -> None:
        if kind == "iso-random":
            _isotonic(meta, value[0], value[1])
        elif kind == "platt":
            _platt(meta, *value)
        elif kind == "labels":
            meta["labels"] = value
        elif kind == "golden-shape":
            meta["golden"]["input_shape"] = value
        elif kind == "input-shape":
            meta["input"]["shape"] = value
        elif kind == "thresholds":
            meta["thresholds"] = value
    return edit


NUMS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3), st.sampled_from([0.0, 1.0]))
STRUCTURAL = st.one_of(
    st.tuples(st.just("iso-random"), st.tuples(st.lists(NUMS, max_size=4), st.lists(NUMS, max_size=4))),
    st.tuples(st.just("iso-random"), st.integers(2, 5).flatmap(
        lambda n: st.tuples(st.lists(st.floats(0, 1), min_size=n, max_size=n),
                            st.lists(st.floats(0, 1), min_size=n, max_size=n)))),
    st.tuples(st.just("platt"), st.tuples(NUMS, NUMS)),
    st.tuples(st.just("labels"), st.lists(st.sampled_from(["edema", "pleural_effusion", "cardiomegaly",
                                                           "pneumothorax", ""]), max_size=4)),
    st.tuples(st.just("golden-shape"), st.lists(st.integers(-1, 1001), max_size=4)),
    st.tuples(st.just("input-shape"), st.lists(st.one_of(st.integers(-1, 1001), st.just("batch")), max_size=4)),
    st.tuples(st.just("thresholds"), st.dictionaries(st.sampled_from(["edema", "pleural_effusion", "cardiomegaly"]),
                                                     NUMS, max_size=3)),
)


def _check_accepted(meta: dict) -> None:
    """What an accepted bundle must hold, whatever edit it went through."""
    labels = meta["labels"]
    assert labels and len(set(labels)) == len(labels)
    assert set(meta["thresholds"]) == set(labels)
    for t in meta["thresholds"].values():
        assert isinstance(t, (int, float)) and math.isfinite(t) and 0 < t < 1, t
    for key, (lo, hi) in (("hop_s", HOP_RANGE_S), ("window_s", WINDOW_RANGE_S), ("fs_hz", BUNDLE_FS_RANGE_HZ)):
        assert math.isfinite(meta[key]) and lo <= meta[key] <= hi, (key, meta[key])
    cal = meta["calibration"]
    if cal["method"] == "platt":
        for q in cal["params"].values():
            assert math.isfinite(q["a"]) and q["a"] > 0 and math.isfinite(q["b"])
    elif cal["method"] == "isotonic":
        for q in cal["params"].values():
            x, y = q["x"], q["y"]
            assert len(x) == len(y) >= 2 and all(math.isfinite(v) for v in x + y)
            assert all(b > a for a, b in zip(x, x[1:])) and all(b >= a for a, b in zip(y, y[1:]))
            assert 0 <= min(y) and max(y) <= 1
    else:
        assert cal["method"] == "identity"


@FUZZ
@given(data=st.data())
def test_a_mutated_bundle_metadata_is_accepted_sane_or_refused(bundle_base, data):
    folder, model, base_meta = bundle_base
    meta = copy.deepcopy(base_meta)
    if data.draw(st.booleans(), label="structural"):
        kind, value = data.draw(STRUCTURAL, label="edit")
        _structural(kind, value)(meta)
    else:
        path = data.draw(st.sampled_from(_leaf_paths(base_meta)), label="path")
        parent = meta
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans(), label="drop"):
            parent.pop(path[-1])
        else:
            parent[path[-1]] = data.draw(st.sampled_from(BAD_VALUES), label="value")
    out = folder / f"m{next(_counter)}.onnx"
    atomic_write(out, bundle_bytes(model, meta))  # unsigned, valid checksum
    try:
        bundle = verify_bundle(out, CPU, trust=DEV)
    except BundleError as exc:
        event(f"refused: {exc.check}")
        return
    event("accepted")
    read_back = bundle.metadata
    _check_accepted(read_back)
    assert bundle.thresholds == {k: float(v) for k, v in read_back["thresholds"].items()}
    out.unlink()  # refused variants stay in the pytest temp folder, for a look after a failure


# -- 3. CLI numeric options ------------------------------------------------------------------------------------------

REPLAY = ["rec", "--model", "m.onnx", "--db", "never.db"]
MONITOR = ["--port", "loop://", "--protocol", "ads1298", "--db", "never.db"]
#: command, its fixed arguments, option, click parameter name, (lo, hi, lo_open, integer)
NUMERIC_OPTIONS = [
    ("replay", REPLAY, "--hop", "hop_s", (0.1, 3600, False, False)),
    ("replay", REPLAY, "--speed", "speed", (0, 1000, True, False)),
    ("monitor", MONITOR, "--hop", "hop_s", (0.1, 3600, False, False)),
    ("monitor", MONITOR, "--duration", "duration", (0, 10 * 365 * 86400, True, False)),
    ("monitor", MONITOR, "--baudrate", "baudrate", (300, 20_000_000, False, True)),
    ("alerts", ["--db", "never.db"], "--session", "session_id", (1, MAX_SQLITE_INT, False, True)),
]
NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda v: f"{v:g}"),
    st.integers(-2**70, 2**70).map(str),
    st.integers(-10, 20_000_100).map(str),
    st.sampled_from(["nan", "-nan", "inf", "+inf", "-Infinity", "1e400", "-0", "0.1", "3600", "1000", "300",
                     "20000000", "20000001", str(MAX_SQLITE_INT), str(MAX_SQLITE_INT + 1), "1_000", " 5 ", "abc",
                     "0x10", "5.", ".5"]),
)


def _in_range(text: str, lo: float, hi: float, lo_open: bool, integer: bool) -> bool:
    """The oracle: what each option must accept, computed without click."""
    try:
        v = int(text) if integer else float(text)
    except ValueError:
        return False
    if not integer and not math.isfinite(v):
        return False
    return (lo < v if lo_open else lo <= v) and v <= hi


@FUZZ
@given(option=st.sampled_from(NUMERIC_OPTIONS), text=NUMBER_TEXT)
def test_a_numeric_option_is_parsed_only_when_finite_and_in_range(option, text, tmp_path_factory):
    command, fixed, flag, param, bounds = option
    cmd = main.commands[command]
    never = tmp_path_factory.getbasetemp() / "never.db"
    args = [str(never) if a == "never.db" else a for a in fixed] + [flag, text]
    if _in_range(text, *bounds):
        with cmd.make_context(command, list(args)) as ctx:  # parsing only: the command body never runs
            value = ctx.params[param]
        assert value == (int(text) if bounds[3] else float(text))
        assert math.isfinite(value)
        return
    with pytest.raises(click.BadParameter):
        cmd.make_context(command, list(args))
    result = CliRunner().invoke(main, [command, *args], env={"BEDSIDE_DB": None})
    assert not never.exists()
    assert result.exit_code == 2, result.output
    assert flag in result.output and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@FUZZ
@given(text=st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-2**64, 2**64).map(str),
    st.tuples(st.integers(0, 10**30), st.sampled_from("smhd")).map(lambda t: f"{t[0]}{t[1]}"),
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(["", " ", "yesterday", "2h", "1.5d", "9" * 400 + "d", "0001-01-01T00:00:00+14:00",
                     "9999-12-31T23:59:59-14:00", "T", "1e400"]),
))
def test_since_is_a_finite_time_or_a_bad_parameter(text):
    try:
        t = parse_since(text, now=1.7e9)
    except click.BadParameter as exc:
        assert "--since" in (exc.param_hint or "")
        return
    assert isinstance(t, float) and math.isfinite(t), (text, t)
    try:
        seconds = float(text)
    except ValueError:
        return
    assert 0 <= seconds <= MAX_UNIX_S and t == seconds


@FUZZ
@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**70, 2**70)),
       lo=st.floats(-1e6, 1e6), width=st.floats(0, 1e6), lo_open=st.booleans(), hi_open=st.booleans())
def test_finite_float_refuses_nan_inf_and_out_of_range(value, lo, width, lo_open, hi_open):
    hi = lo + width
    kind = FiniteFloat(min=lo, max=hi, min_open=lo_open, max_open=hi_open)
    try:
        v = float(value)
    except OverflowError:  # an integer beyond float: click.FLOAT cannot read it either
        v = math.inf
    ok = math.isfinite(v) and (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)
    if ok:
        assert kind.convert(str(value), None, None) == v
    else:
        with pytest.raises(click.BadParameter):
            kind.convert(str(value), None, None)


# -- 4. alarm settings files ------------------------------------------------------------------------------------------

def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def _to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """A small TOML writer for the alarm settings tree (tables as [a.b] sections, values inline)."""
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    text = "".join(f"{json.dumps(k)} = {_toml_value(v)}\n" for k, v in scalars.items())
    for k, v in tables.items():
        name = f"{prefix}.{json.dumps(k)}" if prefix else json.dumps(k)
        text += f"\n[{name}]\n" + _to_toml(v, name)
    return text


@pytest.fixture(scope="module")
def alarm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("alarms")


@pytest.fixture(scope="module")
def alarm_defaults() -> dict[str, Any]:
    from importlib import resources

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    data = tomllib.loads(resources.files("bedside").joinpath("alarms.toml").read_text())
    data["risk"]["labels"] = {"cardiomegaly": {"priority": "low"}}
    return data


def _alarm_paths(node: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for k, v in node.items():
        out.append(prefix + (k,))
        if isinstance(v, dict):
            out += _alarm_paths(v, prefix + (k,))
    return out


ALARM_BAD = [float("nan"), float("inf"), float("-inf"), -1, -0.5, -1000, 0, 10**9, 1e300, "", "high", "loud", True,
             [], [float("nan")], [float("nan"), 1.0], [-1.0, 0.5], [0.5, float("inf")], [True, False], [1.0, 0.5],
             [-0.3, 0.0, 0.2], {}, {"x": 1}, 3.5]


def _numbers_in(obj: Any) -> list[float]:
    """Every number held by a parsed AlarmConfig (dataclasses, dicts, tuples)."""
    if isinstance(obj, bool):
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)]
    if is_dataclass(obj):
        return [x for f in fields(obj) for x in _numbers_in(getattr(obj, f.name))]
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _numbers_in(v)]
    if isinstance(obj, (tuple, list)):
        return [x for v in obj for x in _numbers_in(v)]
    return []


@FUZZ
@given(data=st.data())
def test_a_fuzzed_alarm_file_is_refused_naming_the_key_or_holds_no_nan_or_negative(alarm_dir, alarm_defaults, data):
    config = copy.deepcopy(alarm_defaults)
    path = data.draw(st.sampled_from(_alarm_paths(alarm_defaults)), label="path")
    parent = config
    for key in path[:-1]:
        parent = parent[key]
    action = data.draw(st.sampled_from(["set", "drop", "unknown"]), label="action")
    if action == "drop":
        del parent[path[-1]]
    elif action == "unknown":
        parent["no_such_key" if not isinstance(parent.get(path[-1]), dict) else path[-1] + "_x"] = 1
    else:
        parent[path[-1]] = data.draw(st.one_of(st.sampled_from(ALARM_BAD), st.floats(), st.integers(-10**20, 10**20)),
                                     label="value")
    file = alarm_dir / f"alarms{next(_counter)}.toml"
    file.write_text(_to_toml(config))
    try:
        loaded = load_alarm_config(file)
    except AlarmConfigError as exc:
        message = str(exc)
        assert str(file) in message
        named = {str(p) for p in path} | {"no_such_key", f"{path[-1]}_x"}
        assert any(name in message for name in named), (path, message)
        event("refused")
        return
    event("accepted")
    numbers = _numbers_in(loaded)
    assert all(math.isfinite(v) and v >= 0 for v in numbers), (path, numbers)
    if action == "unknown":
        raise AssertionError(f"an unknown key next to {path} was accepted")


@pytest.mark.parametrize("path, value", [
    (("risk", "labels"), float("nan")),  # was a TypeError: 'float' object is not iterable
    (("risk", "labels"), "high"),  # was an AttributeError: 'str' object has no attribute 'get'
    (("technical",), 3),  # was an AttributeError
    (("audio", "high", "pulses_s"), [float("nan")]),  # was accepted: a NaN pulse offset
    (("audio", "low", "pulses_s"), [-0.3, 0.0]),  # was accepted: a negative offset
    (("audio", "low", "pulses_s"), [True]),  # was accepted as 1.0
    (("quality", "flat_mv"), [-1.0, 0.08]),  # was accepted: a negative bound
    (("quality", "max_mv"), [8.0, float("inf")]),  # was accepted: an infinite bound
], ids=["labels-nan", "labels-str", "technical-int", "pulse-nan", "pulse-negative", "pulse-bool",
        "bound-negative", "bound-inf"])
def test_alarm_file_regressions_found_by_fuzzing(alarm_dir, alarm_defaults, path, value):
    config = copy.deepcopy(alarm_defaults)
    parent = config
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    file = alarm_dir / f"alarms{next(_counter)}.toml"
    file.write_text(_to_toml(config))
    with pytest.raises(AlarmConfigError) as info:
        load_alarm_config(file)
    assert path[-1] in str(info.value)
