"""Resumable, chunk-independent sampling: a SIGKILLed run resumes to byte-identical latents.npy / scores.npy."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests.training.boundaries.tiny_models import STYLE_DIM, write_classifier, write_generator
from training.boundaries.sampling import (
    SamplingPlan,
    chunk_done,
    chunk_paths,
    concatenate_chunks,
    load_models,
    prepare_folder,
    sample,
)
from training.classifier.model import ATTRIBUTES

PROJECT = Path(__file__).resolve().parents[3]


def plan(n: int = 24, chunk_size: int = 4, batch_size: int = 2, **extra) -> SamplingPlan:
    return SamplingPlan(n_samples=n, chunk_size=chunk_size, batch_size=batch_size, truncation=0.7,
                        noise_mode=extra.pop("noise_mode", "const"), seed=extra.pop("seed", 0), style_dim=STYLE_DIM,
                        attributes=ATTRIBUTES, **extra)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("models")
    return str(write_generator(folder / "g.pt")), str(write_classifier(folder / "c.pt"))


def run_all(folder: Path, models: tuple[str, str], the_plan: SamplingPlan) -> tuple[bytes, bytes]:
    sample(folder, the_plan, generator=models[0], classifier=models[1])
    latents, scores = concatenate_chunks(folder, the_plan)
    return latents.read_bytes(), scores.read_bytes()


def test_outputs_have_the_expected_shapes_and_match_a_direct_computation(tmp_path: Path, models) -> None:
    the_plan = plan(n=10, chunk_size=4)
    run_all(tmp_path, models, the_plan)
    latents, scores = np.load(tmp_path / "latents.npy"), np.load(tmp_path / "scores.npy")
    assert latents.shape == (10, STYLE_DIM) and scores.shape == (10, len(ATTRIBUTES))
    assert latents.dtype == scores.dtype == np.float32
    handle, scorer = load_models(models[0], models[1], "cpu", 2)
    w = handle.z_to_w(handle.z([4, 5]))  # samples 4 and 5 form one batch of the global grid
    np.testing.assert_array_equal(latents[4:6], w.numpy())
    expected = scorer.logits(handle.synthesize(w, truncation=0.7, batch_size=2)).numpy()
    np.testing.assert_array_equal(scores[4:6], expected)


@pytest.mark.parametrize(("batch_size", "chunks"), [(1, (3, 7)), (2, (4, 6))])
def test_chunk_size_does_not_change_a_byte(tmp_path: Path, models, batch_size: int, chunks: tuple[int, int]) -> None:
    outputs = [run_all(tmp_path / str(size), models, plan(n=21, chunk_size=size, batch_size=batch_size))
               for size in chunks]
    assert outputs[0] == outputs[1]


def test_random_noise_is_seeded_per_sample(tmp_path: Path, models) -> None:
    first = run_all(tmp_path / "a", models, plan(n=8, chunk_size=2, noise_mode="random"))
    again = run_all(tmp_path / "b", models, plan(n=8, chunk_size=4, noise_mode="random"))
    const = run_all(tmp_path / "c", models, plan(n=8, chunk_size=4))
    assert first == again and first[0] == const[0] and first[1] != const[1]


def test_a_lone_latents_file_or_a_temp_file_is_not_a_done_chunk(tmp_path: Path, models) -> None:
    the_plan = plan(n=8, chunk_size=4)
    reference = run_all(tmp_path / "ref", models, the_plan)
    folder = tmp_path / "run"
    prepare_folder(folder, the_plan)
    latents, _ = chunk_paths(folder, 1)
    np.save(latents, np.zeros((4, STYLE_DIM), np.float32))  # scores of chunk 1 never written
    (latents.parent / ".tmp-0123-scores-00001.npy").write_bytes(b"half")
    assert not chunk_done(folder, the_plan, 1)
    assert run_all(folder, models, the_plan) == reference
    assert not list(latents.parent.glob(".tmp-*"))


def test_a_changed_plan_restarts_the_chunks(tmp_path: Path, models) -> None:
    run_all(tmp_path, models, plan(n=8, chunk_size=4, seed=0))
    other = plan(n=8, chunk_size=4, seed=100)
    counts = sample(tmp_path, other, generator=models[0], classifier=models[1])
    assert counts["chunks_before"] == 0 and counts["chunks_now"] == 2


def test_sharding_by_rank_covers_every_chunk_once(tmp_path: Path, models) -> None:
    the_plan = plan(n=20, chunk_size=4)
    reference = run_all(tmp_path / "ref", models, the_plan)
    folder = tmp_path / "ranks"
    prepare_folder(folder, the_plan)
    seen = [sample(folder, the_plan, generator=models[0], classifier=models[1], rank=rank, world_size=2,
                   prepare=False)["chunks_now"] for rank in (0, 1)]
    assert seen == [3, 2]
    assert tuple(p.read_bytes() for p in concatenate_chunks(folder, the_plan)) == reference


def test_fan_out_through_map_batches(tmp_path: Path, models) -> None:
    the_plan = plan(n=12, chunk_size=4)
    reference = run_all(tmp_path / "ref", models, the_plan)
    calls = []

    def mapper(fn, items):
        calls.append(len(items))
        return [fn(item) for item in reversed(items)]  # any order, as a task runner may

    sample(tmp_path / "fan", the_plan, generator=models[0], classifier=models[1], map_batches=mapper)
    assert calls == [3]
    assert tuple(p.read_bytes() for p in concatenate_chunks(tmp_path / "fan", the_plan)) == reference


SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {project!r})
    from training.boundaries.sampling import SamplingPlan, sample, concatenate_chunks
    plan = SamplingPlan(n_samples=40, chunk_size=4, batch_size=2, truncation=0.7, noise_mode="const", seed=0,
                        style_dim={style_dim}, attributes=tuple({attributes!r}))
    def slow(fraction, line):
        print(line, flush=True)
        time.sleep(0.4)  # leaves the parent time to kill us between chunks, and within one
    sample(Path(sys.argv[1]), plan, generator={generator!r}, classifier={classifier!r}, progress=slow)
    concatenate_chunks(Path(sys.argv[1]), plan)
""")


def test_sigkill_then_rerun_is_byte_identical_to_an_uninterrupted_run(tmp_path: Path, models) -> None:
    the_plan = plan(n=40, chunk_size=4)
    reference = run_all(tmp_path / "ref", models, the_plan)
    script = tmp_path / "sample.py"
    script.write_text(SCRIPT.format(project=str(PROJECT), style_dim=STYLE_DIM, attributes=list(ATTRIBUTES),
                                    generator=models[0], classifier=models[1]))
    folder = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, str(script), str(folder)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)  # same thread count as ours: CPU kernels round by it
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            done = sum(chunk_done(folder, the_plan, i) for i in range(the_plan.n_chunks))
            if done >= 3:
                break
            assert process.poll() is None, process.stdout.read().decode()
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    before = sum(chunk_done(folder, the_plan, i) for i in range(the_plan.n_chunks))
    assert 3 <= before < the_plan.n_chunks and not (folder / "latents.npy").exists()
    counts = sample(folder, the_plan, generator=models[0], classifier=models[1])
    assert counts["chunks_before"] == before and counts["chunks_now"] == the_plan.n_chunks - before
    assert tuple(p.read_bytes() for p in concatenate_chunks(folder, the_plan)) == reference
