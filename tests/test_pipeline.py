"""The overlapped scan pipeline writes exactly what scoring the scans one by one writes, and a bad case fails alone."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter1d

from anomalyclip_med.io.cases import find_cases
from anomalyclip_med.runs import CaseRunner, ScanJob, StagedPipeline, Status
from anomalyclip_med.inference.options import OutputOptions, ScoringOptions
from anomalyclip_med.api import score_scan
from anomalyclip_med.inference.scan import expected_outputs
from anomalyclip_med.inference.slices import smooth_along_axis
from conftest import tiny_model
from scan_data import oblique_affine, save_nifti, synthetic_head_ct

SCORING = ScoringOptions(z_smooth=2.0, batch_size=4)
OUTPUT = OutputOptions(progress=False, overwrite=True)


@pytest.fixture(scope="module")
def model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tiny_model()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scans")
    paths = [save_nifti(synthetic_head_ct(seed=i), oblique_affine() if i % 2 else np.eye(4), folder / f"s{i}.nii.gz")
             for i in range(3)]
    broken = folder / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    return paths, broken


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_pipeline_writes_byte_identical_outputs_and_a_bad_case_fails_alone(model, scans, tmp_path):
    paths, broken = scans
    sequential = tmp_path / "sequential"
    for p in paths:
        score_scan(model, p, sequential, SCORING, output=OUTPUT)

    # a case whose read fails (prepare stage) and one whose map cannot be renamed into place (write stage)
    piped = tmp_path / "piped"
    blocked = expected_outputs(paths[1], piped)["map"]
    blocked.mkdir(parents=True)
    job = ScanJob(piped, SCORING, output=OUTPUT)
    runner = CaseRunner(find_cases([paths[0], broken, paths[1], paths[2]]), piped, job, "overwrite", progress=False,
                        prefetch=2, background_write=True, quiet=True)
    results = runner.run(lambda ctx: job.bind(model)).results

    assert [r.case.name for r in results] == ["s0", "broken", "s1", "s2"]
    assert [r.status for r in results] == [Status.SCORED, Status.FAILED, Status.FAILED, Status.SCORED]
    assert "broken.nii.gz" in results[1].error
    assert "IsADirectoryError" in results[2].error
    assert not expected_outputs(paths[1], piped)["scores"].exists()  # the unfinished case is not marked done
    assert not list(piped.glob(".*tmp*"))  # no temporaries left behind
    got, want = _files(piped), _files(sequential)
    for p in (paths[0], paths[2]):
        for out in expected_outputs(p, piped).values():
            assert got[out.name] == want[out.name], out.name
    assert results[0].record["scan_score"] == score_scan(model, paths[0], tmp_path / "again", SCORING,
                                                         output=OUTPUT).record["scan_score"]


def test_stages_overlap_and_stay_bounded():
    # item k+1 is prepared while item k is computed, and item k is written while item k+1 is computed: each stage
    # waits for the other to have started, which only overlapped stages can satisfy
    n, events, lock = 4, [], threading.Lock()
    prepared, computing = ({i: threading.Event() for i in range(n)} for _ in range(2))

    def log(event):
        with lock:
            events.append(event)

    def prepare(i):
        log(("prepare", i))
        prepared[i].set()
        return i

    def compute(i, item):
        computing[i].set()
        log(("compute", i))
        assert i == n - 1 or prepared[i + 1].wait(10), "the next item was not prepared during this compute"
        return item * 10

    def write(i, item, computed):
        assert i == n - 1 or computing[i + 1].wait(10), "the next compute did not start during this write"
        log(("write", i))
        return computed + 1

    outcomes = list(StagedPipeline(prepare, compute, write, prefetch=1).run(range(n)))
    assert [o.error for o in outcomes] == [None] * n
    assert [o.result for o in outcomes] == [1, 11, 21, 31]
    for k, event in enumerate(events):  # never more than prefetch (1) items prepared beyond the one computing
        if event[0] == "prepare":
            assert event[1] <= sum(1 for e in events[:k] if e[0] == "compute") + 1


def test_a_case_is_reported_as_soon_as_its_outputs_are_written():
    """The per-case line and the progress bar move when a case's write finishes, not when the network is done with
    the next case: case 1's compute waits until case 0 has been reported, which only an immediate report allows."""
    reported, first = [], threading.Event()

    def on_done(outcome):
        reported.append((outcome.index, outcome.error is None))
        if outcome.index == 0:
            first.set()

    def compute(i, item):
        if i == 1:
            assert first.wait(10), "case 0 was not reported while case 1 was computed"
        if i == 2:
            raise ValueError("a case failing in compute is reported in its turn")
        return item

    outcomes = list(StagedPipeline(lambda i: i, compute, lambda i, p, c: c, prefetch=1, on_done=on_done).run(range(4)))
    assert [o.error is None for o in outcomes] == [True, True, False, True]
    assert reported == [(0, True), (1, True), (2, False), (3, True)]


def test_sequential_pipeline_runs_in_the_calling_thread():
    threads = set()

    def stage(*args):
        threads.add(threading.current_thread())
        return args[0]

    outcomes = list(StagedPipeline(stage, stage, stage, prefetch=0, background_write=False).run(["a", "b"]))
    assert [o.result for o in outcomes] == ["a", "b"] and threads == {threading.current_thread()}


def test_device_z_smoothing_equals_scipy():
    volume = torch.rand(9, 7, 12, generator=torch.Generator().manual_seed(0))
    for axis, sigma in ((2, 1.3), (0, 0.7), (1, 4.0)):
        want = gaussian_filter1d(volume.numpy(), sigma, axis=axis, mode="nearest")
        got = smooth_along_axis(volume, sigma, axis).numpy()
        assert np.abs(got - want).max() < 1e-6


def test_the_monai_engine_face_fails_cases_alone_and_counts_cases_a_handler_cut_off(model, scans, tmp_path):
    """The bundle's evaluator over the runner: a scan that cannot be read fails alone, and cases a handler cut off
    by ending the engine's run early are failed, not silently left out of an exit-0 summary; the lock is let go."""
    from ignite.engine import Events
    from monai.data import ThreadDataLoader

    from anomalyclip_med.io.case_outputs import read_finished_case
    from anomalyclip_med.runs import CaseDataset, CaseEvaluator
    from anomalyclip_med.utils.lock import FolderLock

    paths, broken = scans
    out = tmp_path / "out"
    job = ScanJob(out, SCORING)
    runner = CaseRunner(find_cases([paths[0], broken, paths[1], paths[2]]), out, job, progress=False, quiet=True)
    job.bind(model)
    loader = ThreadDataLoader(CaseDataset(runner), batch_size=1, buffer_size=1, collate_fn=CaseDataset.collate)
    evaluator = CaseEvaluator(runner, model.device, loader, model)
    evaluator.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda engine: engine.terminate())
    evaluator.run()
    reports = evaluator.summary.results
    assert [r.case.name for r in reports] == ["s0", "broken", "s1", "s2"]
    assert [r.status for r in reports] == [Status.SCORED, Status.FAILED, Status.SCORED, Status.FAILED]
    assert "broken.nii.gz" in reports[1].error and "run ended before this case" in reports[3].error
    assert evaluator.summary.exit_status == 2
    assert read_finished_case(job.outputs(reports[2].case)) is not None
    assert not job.outputs(reports[3].case)["scores"].exists()
    FolderLock(out).acquire().release()  # the run let go of the output folder
