"""Replay scheduling changes no result: streaming conditioning (each sample conditioned once) and inference
on a worker thread (overlapped with conditioning) give the same WindowResults and alarm transitions, in the
same order, as conditioning every window and scoring it on the engine's thread."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from bedside.analysis import WindowAnalyser
from bedside.events import WindowResult
from bedside.replay import ReplayOptions, build_replay_engine
from bedside.stream_condition import StreamConditioner
from tests.engine_helpers import flip_lead_i, synthetic_ecg, write_record

#: (stream_condition, overlap_inference, max_batch, inference_workers); the first is the reference (the plain
#: per-window path). Batches of 3 on 2 workers keep two batches in flight whose results must still go through
#: the alarms in window order.
SCHEDULES = [(False, False, 16, 1), (True, False, 16, 1), (False, True, 16, 1), (True, True, 16, 1), (True, True, 3, 1),
             (True, True, 3, 2)]


@pytest.fixture(scope="module")
def gap_record(tmp_path_factory):
    """4 minutes at 500 Hz, lead I inverted (the 'risk') 60-130 s, with missing samples: a 7 s gap in every
    lead, a 30 ms hole, a single lost sample, and 3 s of silent precordial leads (an electrode off)."""
    fs = 500.0
    x = flip_lead_i(synthetic_ecg(240, fs, hr_bpm=80.0, seed=13), fs, [(60, 130)]).astype(np.float64)
    x[:, int(41.3 * fs):int(48.3 * fs)] = np.nan
    x[:, int(90.01 * fs):int(90.04 * fs)] = np.nan
    x[:, int(150 * fs)] = np.nan
    x[6:9, int(200.2 * fs):int(203.2 * fs)] = np.nan  # V1-V3
    return write_record(tmp_path_factory.mktemp("rec"), "gaps", x, fs)


def run_replay(record, bundle, db, monkeypatch, stream: bool, overlap: bool, max_batch: int, workers: int = 1):
    """Every WindowResult and alarm transition of a replay; how many windows the stream conditioned;
    the threads the model ran on."""
    streamed, threads = [], set()
    original_window, original_infer = StreamConditioner.window, WindowAnalyser.infer

    def window(self, start):
        out = original_window(self, start)
        streamed.append(out is not None)
        return out

    def infer(self, batch):
        threads.add(threading.current_thread().name)
        return original_infer(self, batch)

    monkeypatch.setattr(StreamConditioner, "window", window)
    monkeypatch.setattr(WindowAnalyser, "infer", infer)
    engine = build_replay_engine(ReplayOptions(record=str(record), model=str(bundle), db=str(db), resume=False,
                                               max_batch=max_batch, stream_condition=stream,
                                               overlap_inference=overlap, inference_workers=workers))
    windows: list[WindowResult] = []
    engine.subscribe(lambda e: windows.append(e) if isinstance(e, WindowResult) else None)
    summary = engine.run()
    engine.close()
    monkeypatch.undo()
    transitions = [(c.seq, c.alarm, c.state, c.previous, round(c.t_s, 6), c.message) for c in summary.transitions]
    return windows, transitions, sum(streamed), threads, summary


def check_schedules(record, bundle, tmp_path, monkeypatch) -> list[WindowResult]:
    runs = {s: run_replay(record, bundle, tmp_path / f"{i}.db", monkeypatch, *s) for i, s in enumerate(SCHEDULES)}
    ref_windows, ref_transitions, _, ref_threads, _ = runs[SCHEDULES[0]]
    assert ref_threads == {threading.current_thread().name}  # no overlap: scored on the engine's thread
    assert [w.index for w in ref_windows] == list(range(len(ref_windows)))
    for (stream, overlap, _, n_workers), (windows, transitions, streamed, threads, summary) in runs.items():
        assert windows == ref_windows, (stream, overlap)
        assert transitions == ref_transitions, (stream, overlap)
        assert summary.log_complete
        if stream:  # every whole window came from the stream
            assert streamed == sum(1 for w in windows if w.reason not in ("gap", "lead off") or w.quality)
            assert streamed > 0
        else:
            assert streamed == 0
        workers = {t for t in threads if t.startswith("bedside-inference")}
        assert workers == (threads if overlap else set())
        assert len(workers) <= n_workers
    return ref_windows


def test_schedules_agree_on_a_record_with_gaps(gap_record, bundle_path, tmp_path, monkeypatch):
    windows = check_schedules(gap_record, bundle_path, tmp_path, monkeypatch)
    reasons = {w.reason for w in windows}
    assert {"", "gap", "lead off"} <= reasons  # scored windows, the gaps and the silent leads all exercised
    assert any(w.scores.get("edema", 0) > 0.5 for w in windows if w.scored)  # the risk stretch was scored high


def test_schedules_agree_on_a_real_record(records_dir, bundle_path, tmp_path, monkeypatch):
    windows = check_schedules(records_dir / "s0010_re", bundle_path, tmp_path, monkeypatch)  # 1000 Hz, 15 signals
    assert sum(w.scored for w in windows) >= 5


def test_a_paced_replay_scores_on_the_engine_thread(gap_record, bundle_path, tmp_path, monkeypatch):
    """A paced replay (like live) never holds a result back for the next batch: no worker thread."""
    threads = set()
    original = WindowAnalyser.infer

    def infer(self, batch):
        threads.add(threading.current_thread().name)
        return original(self, batch)

    monkeypatch.setattr(WindowAnalyser, "infer", infer)
    engine = build_replay_engine(ReplayOptions(record=str(gap_record), model=str(bundle_path),
                                               db=str(tmp_path / "p.db"), speed=2000.0))
    summary = engine.run()
    engine.close()
    assert summary.windows > 40 and threads == {threading.current_thread().name}


def test_the_summary_says_how_many_windows_were_skipped():
    import io

    from rich.console import Console

    from bedside.console import print_summary
    from bedside.engine import RunSummary

    def printed(skipped: int) -> str:
        out = io.StringIO()
        print_summary(RunSummary(1, "x.db", end_reason="complete", windows=9, skipped_windows=skipped),
                      Console(file=out, width=200), "t")
        return out.getvalue()

    assert "Windows skipped (inference behind, samples all kept): 7" in printed(7)
    assert "skipped" not in printed(0)


def test_an_acknowledgement_and_a_stop_apply_where_they_would_without_overlap(gap_record, bundle_path, tmp_path):
    """A listener acknowledging when it sees window k, and stopping at window m: the same transitions and the
    same windows logged with the inference worker as without it (a batch in flight is not yet announced)."""
    def run(overlap: bool, db: str):
        engine = build_replay_engine(ReplayOptions(record=str(gap_record), model=str(bundle_path), resume=False,
                                                   db=str(tmp_path / db), chunk_s=5.0, overlap_inference=overlap))
        seen = []

        def listener(event):
            if isinstance(event, WindowResult):
                seen.append(event.index)
                if event.index == 16:
                    engine.acknowledge(None, "rn.lee")
                if event.index == 30:
                    engine.stop()
        engine.subscribe(listener)
        summary = engine.run()
        engine.close()
        return seen, [(c.seq, c.alarm, c.state, c.cause, round(c.t_s, 6)) for c in summary.transitions]

    plain, overlapped = run(False, "plain.db"), run(True, "overlap.db")
    assert any(cause == "acknowledge" for *_, cause, _ in plain[1])
    assert overlapped == plain
    assert plain[0] == list(range(31))


def test_replay_threads_follow_the_schedule():
    from bedside.bundle import REPLAY_SESSION, SessionSettings
    from bedside.replay import replay_session

    fast = ReplayOptions(record="r", model="m", db="d")  # as fast as possible: 2 workers, 1 thread per call
    assert fast.inference_workers == 2 and replay_session(fast) == REPLAY_SESSION
    assert REPLAY_SESSION.intra_op_threads == 1 and REPLAY_SESSION.memory_arena
    default_threads = SessionSettings().intra_op_threads
    for alone in (ReplayOptions(record="r", model="m", db="d", speed=60.0),  # paced: on the engine's thread
                  ReplayOptions(record="r", model="m", db="d", overlap_inference=False),
                  ReplayOptions(record="r", model="m", db="d", inference_workers=1)):
        assert replay_session(alone).intra_op_threads == default_threads
    with pytest.raises(ValueError, match="inference_workers=0"):
        from bedside.engine import EngineSettings
        EngineSettings(bed_id="b", inference_workers=0)
