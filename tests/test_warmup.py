"""The warm-up job and the CLI's notice while it runs on an empty numba cache."""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_metaseg import cli, workflows
from napari_metaseg.core.progress import drain


def test_warm_up_job_reports_its_stage_and_returns_seconds():
    steps = []
    t0 = time.perf_counter()
    seconds = drain(workflows.warm_up_engine(), lambda f, s: steps.append((f, s)))
    elapsed = time.perf_counter() - t0
    assert 0 < seconds <= elapsed
    assert {s for _, s in steps} == {workflows.WARM_UP_STAGE}
    fractions = [f for f, _ in steps]
    assert fractions == sorted(fractions) and 0 < fractions[0] and fractions[-1] == 1.0


def _slow_job(seconds):
    def job(*, label_errors=False, ood=False):
        time.sleep(seconds)
        yield 1.0, workflows.WARM_UP_STAGE
        return seconds

    return job


class _Args:
    quiet = False


@pytest.mark.parametrize(("job_seconds", "quiet", "said"), [(0.4, False, True), (0.0, False, False),
                                                            (0.4, True, False)])
def test_cli_says_why_it_waits_only_when_the_warm_up_is_slow(monkeypatch, capsys, job_seconds, quiet, said):
    monkeypatch.setattr(workflows, "warm_up_engine", _slow_job(job_seconds))
    monkeypatch.setattr(cli, "WARM_UP_NOTICE_AFTER", 0.1)
    args = _Args()
    args.quiet = quiet
    cli._warm_up(args)
    time.sleep(0.2)  # a notice still pending would fire now
    err = capsys.readouterr().err
    assert err.count("preparing the engine (first run only)") == (1 if said else 0), err


def test_case_commands_warm_up_before_the_first_case(monkeypatch, tmp_path):
    p = np.full((12, 10, 3), 0.2, np.float32)
    p[..., 0] = 0.6
    np.save(tmp_path / "a_softmax.npy", p)
    np.save(tmp_path / "a_gt.npy", np.zeros((12, 10), np.uint8))
    order = []

    def job(*, label_errors=False, ood=False):
        order.append("warm-up")
        yield 1.0, workflows.WARM_UP_STAGE
        return 0.0

    measure = workflows.measure_cases

    def measured(*args, **kwargs):
        order.append("cases")
        return (yield from measure(*args, **kwargs))

    monkeypatch.setattr(workflows, "warm_up_engine", job)
    monkeypatch.setattr(workflows, "measure_cases", measured)
    assert cli.main(["metrics", str(tmp_path), "--out", str(tmp_path / "out"), "-q"]) == 0
    assert order == ["warm-up", "cases"]
