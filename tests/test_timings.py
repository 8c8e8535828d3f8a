"""The measured run time at the top of each notebook: from a run's state.json, never made up (issue 19, item 7)."""

from __future__ import annotations

import json

import pytest

from aestudy.errors import ConfigError, DataError
from aestudy.runner.timings import record_timings
from aestudy.watermark import TIMINGS_FILE, duration_text, load_timings, run_time_text


def _run(tmp_path, name, profile, walls, *, status="done", commit="0123456789abcdef", jobs=1):
    run = tmp_path / name
    run.mkdir()
    state = {"schema": 1, "name": name, "profile": profile, "started": "2026-11-30T09:00:00+00:00",
             "finished": "2026-11-30T09:30:00+00:00", "jobs": jobs,
             "status": {nb: status for nb in walls}, "wall_s": walls,
             "environment": {"git": {"commit": commit, "dirty": False},
                             "device": {"resolved": "cpu", "cpu": "AMD EPYC", "cpu_count": 2}}}
    (run / "state.json").write_text(json.dumps(state))
    return run


def test_record_merges_per_notebook_and_profile_and_replaces_only_its_pair(tmp_path):
    file = tmp_path / "timings.json"
    record_timings(_run(tmp_path, "s", "smoke", {"01_a.ipynb": 16.04, "02_b.ipynb": 11.5}), path=file)
    record_timings(_run(tmp_path, "t", "standard", {"01_a.ipynb": 1009.14}, commit="fedcba9876543210"), path=file,
                   note="5 notebooks at once")
    written = record_timings(_run(tmp_path, "u", "smoke", {"01_a.ipynb": 20.0}), path=file)
    data = load_timings(file)
    assert written == {"01_a": data["notebooks"]["01_a"]["smoke"]}
    assert data["notebooks"]["01_a"]["smoke"]["wall_s"] == 20.0 and data["notebooks"]["01_a"]["smoke"]["run"] == "u"
    assert data["notebooks"]["01_a"]["standard"] == {
        "wall_s": 1009.1, "date": "2026-11-30", "commit": "fedcba9876543210", "dirty": False, "jobs": 1,
        "machine": "2-core AMD EPYC", "run": "t", "note": "5 notebooks at once"}
    assert data["notebooks"]["02_b"]["smoke"]["wall_s"] == 11.5
    assert "standard" not in data["notebooks"]["02_b"]


def test_the_text_says_not_measured_yet_for_a_missing_profile_or_notebook(tmp_path):
    file = tmp_path / "timings.json"
    record_timings(_run(tmp_path, "s", "smoke", {"01_a.ipynb": 16.04}, jobs=2), path=file)
    assert run_time_text("01", path=file) == (
        "**Measured run time:** smoke 16 s (2-core AMD EPYC, 2026-11-30, commit 0123456, 2 notebooks at once); "
        "standard not measured yet; full not measured yet.")
    assert run_time_text("03", path=file) == ("**Measured run time:** smoke not measured yet; standard not measured "
                                              "yet; full not measured yet.")
    assert run_time_text("01", path=tmp_path / "absent.json").count("not measured yet") == 3


def test_unfinished_notebooks_are_not_recorded(tmp_path):
    run = _run(tmp_path, "f", "smoke", {"01_a.ipynb": 3.0}, status="failed")
    with pytest.raises(DataError, match="records no finished notebook"):
        record_timings(run, path=tmp_path / "timings.json")
    assert not (tmp_path / "timings.json").exists()


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ConfigError, match="holds no state.json"):
        record_timings(tmp_path, path=tmp_path / "timings.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": 7}')
    with pytest.raises(DataError, match="not an aestudy timings file with schema 1"):
        run_time_text("01", path=bad)


@pytest.mark.parametrize(("seconds", "text"), [(16.04, "16 s"), (119.4, "119 s"), (1009.1, "17 min"),
                                               (9000.0, "2.5 h")])
def test_duration_text(seconds, text):
    assert duration_text(seconds) == text


def test_the_committed_file_names_each_series_notebook_and_only_measured_times():
    data = load_timings(TIMINGS_FILE)
    for stem, profiles in data["notebooks"].items():
        assert stem[:2].isdigit(), stem
        for profile, entry in profiles.items():
            assert profile in ("smoke", "standard", "full")
            assert entry["wall_s"] > 0 and entry["commit"] and entry["run"], (stem, profile)
