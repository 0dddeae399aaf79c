import glob
import importlib
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from helpers import (
    codes_workdir,
    read_tensorboard_scalars,
    smoke_config,
    write_fake_fashion_mnist,
)

from sparse_flops import config as config_lib
from sparse_flops import io_utils, sweep, train
from sparse_flops.bench import scale, throughput

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, JAX_PLATFORMS="cpu")


def launch(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "launch.py", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


EXPERIMENTS = sorted(
    os.path.splitext(os.path.basename(p))[0]
    for p in glob.glob(os.path.join(ROOT, "experiments", "*.py"))
    if not p.endswith("__init__.py")
)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_config_loads_full_and_smoke(name):
    module = importlib.import_module(f"experiments.{name}")
    assert f"--config=experiments/{name}.py" in module.__doc__
    for arg in (None, "smoke"):
        c = module.get_config(arg)
        if "scale" in c:
            scale.validate(c)
        elif "throughput" in c:
            throughput.validate(c)
        elif "sweep" in c:
            sweep.validate(c)
        else:
            config_lib.validate(c)
    with pytest.raises(ValueError, match="unknown config argument"):
        module.get_config("huge")


def test_scale_and_throughput_modes_write_reports(tmp_path):
    r = launch(
        "--mode=scale",
        "--config=experiments/scale.py:smoke",
        f"--workdir={tmp_path / 'scale'}",
        "--config.scale.profiles=zipf",
        "--config.scale.block_size=1000",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.load(open(tmp_path / "scale" / "report.json"))
    assert [(row["profile"], row["n"]) for row in report["rows"]] == [("zipf", 3000)]
    assert report["rows"][0]["block_size"] == 1000
    r = launch(
        "--mode=throughput",
        "--config=experiments/throughput.py:smoke",
        f"--workdir={tmp_path / 'tp'}",
        "--config.throughput.penalties=none,flops",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "examples_per_s" in (tmp_path / "tp" / "throughput.md").read_text()
    # a mode given the wrong kind of config says which one it needs
    r = launch("--mode=scale", "--config=experiments/synthetic.py", f"--workdir={tmp_path}")
    assert r.returncode != 0 and "experiments/scale.py" in r.stderr
    r = launch("--mode=scale", f"--workdir={tmp_path}")
    assert r.returncode != 0 and "needs --config" in r.stderr


def test_collect_mode_gathers_a_sweep_without_running_it(tmp_path):
    r = launch(
        "--mode=collect",
        "--config=experiments/study_fashion_mnist.py:smoke",
        f"--workdir={tmp_path / 'study'}",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    with open(tmp_path / "study" / "sweep.json") as f:
        out = json.load(f)
    assert out["members"] == [] and "flops-weight5.0-seed1" in out["missing"]
    assert not os.path.exists(tmp_path / "study" / "dense-dim64-seed0")  # nothing trained
    r = launch("--mode=collect", f"--workdir={tmp_path / 'study'}")
    assert r.returncode != 0 and "--mode=collect needs --config" in r.stderr


def test_launcher_has_at_most_eight_flags():
    r = subprocess.run(
        [sys.executable, "launch.py", "--helpfull"], cwd=ROOT, capture_output=True, text=True
    )
    own = r.stdout.split("\nlaunch.py:\n")[1].split("\n\n")[0]
    names = {line.split(":")[0].strip() for line in own.splitlines() if line.startswith("  --")}
    assert "--workdir" in names and "--mode" in names
    assert len(names) <= 8, names


def test_benchmark_mode_and_retrieval_side_never_import_jax(tmp_path):
    codes_workdir(str(tmp_path / "w"), np.random.default_rng(0))
    (tmp_path / "w" / "config.json").write_text(smoke_config().to_json_best_effort())
    probe = (
        "import runpy, sys\n"
        "import sparse_flops, sparse_flops.codes, sparse_flops.retrieval, sparse_flops.metrics\n"
        "import sparse_flops.bench.tradeoff, sparse_flops.bench.scale\n"
        "sparse_flops.SparseIndex, sparse_flops.cost_summary\n"
        f"sys.argv = ['launch.py', '--mode=benchmark', '--workdir={tmp_path / 'w'}']\n"
        "try:\n"
        "    runpy.run_path('launch.py', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "heavy = sorted(m for m in ('jax', 'flax', 'optax', 'orbax') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "HEAVY []" in r.stdout
    assert (tmp_path / "w" / "report.json").exists()


def test_default_run_is_quiet_and_writes_tensorboard_events(tmp_path):
    env = {k: v for k, v in ENV.items() if k != "JAX_PLATFORMS"}  # as a user runs it
    r = subprocess.run(
        [
            sys.executable,
            "launch.py",
            "--config=experiments/synthetic.py:smoke",
            f"--workdir={tmp_path}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines and all("train.py" in line for line in lines[:4]), lines[:4]
    for noise in ("Unable to initialize backend", "xla_bridge", "orbax", "is illegal"):
        assert noise not in r.stderr
    scalars = read_tensorboard_scalars(str(tmp_path))
    for tag in (
        "train/loss",
        "train/penalty",
        "train/penalty_weight",
        "train/learning_rate",
        "train/mean_nonzeros",
        "train/r_sub",
        "eval/precision_at_1",
        "eval/map",
        "eval/sum_p_squared",
        "steps_per_sec",
    ):
        assert tag in scalars, sorted(scalars)
    assert [s for s, _ in scalars["train/loss"]] == [4, 6, 8, 12]
    assert [s for s, _ in scalars["eval/map"]] == [6, 12]
    jsonl = [x for x in io_utils.read_jsonl(str(tmp_path / "metrics.jsonl")) if "train/loss" in x]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([x["train/loss"] for x in jsonl])


def test_failed_resume_ends_with_our_error_not_background_tracebacks(tmp_path):
    r = launch("--config=experiments/synthetic.py:smoke", f"--workdir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    config_before = (tmp_path / "config.json").read_text()
    r = launch(
        "--config=experiments/synthetic.py:smoke",
        f"--workdir={tmp_path}",
        "--config.model.dim=64",
        "--config.train.num_steps=20",
    )
    assert r.returncode != 0
    assert "Event loop is closed" not in r.stderr and "cannot schedule" not in r.stderr
    tail = "\n".join(r.stderr.strip().splitlines()[-4:])
    assert "restores into this config's model" in tail or "does not fit the model" in tail
    assert (tmp_path / "config.json").read_text() == config_before


def test_unknown_config_key_fails_clearly(tmp_path):
    r = launch(
        "--config=experiments/synthetic.py:smoke",
        f"--workdir={tmp_path}",
        "--config.regularizer.wieght=3",
    )
    assert r.returncode != 0
    assert "wieght" in r.stderr
    assert not os.path.exists(tmp_path / "checkpoints")


def test_missing_data_folder_names_the_fix(tmp_path):
    r = launch(
        "--config=experiments/fashion_mnist.py:smoke",
        f"--workdir={tmp_path / 'w'}",
        f"--config.data.dir={tmp_path / 'absent'}",
    )
    assert r.returncode != 0
    assert "apt-get install dataset-fashion-mnist" in r.stderr and "absent" in r.stderr


@pytest.mark.slow
def test_fashion_mnist_smoke_train_export_benchmark_on_idx_files(tmp_path):
    folder = write_fake_fashion_mnist(str(tmp_path / "fm"), n_train=600, n_test=200)
    work = tmp_path / "w"
    r = launch(
        "--config=experiments/fashion_mnist.py:smoke",
        f"--workdir={work}",
        "--mode=all",
        f"--config.data.dir={folder}",
        "--config.regularizer.weight=2",
        "--config.export.jsonl=True",
        "--config.export.jsonl_quantize=255",
        "--config.export.distractors=1200",
        "--config.export.distractor_chunk=1000",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    records = io_utils.read_jsonl(str(work / "metrics.jsonl"))
    final = [r for r in records if "eval/precision@1" in r][-1]
    assert final["step"] == 12
    assert "step 12/12" in r.stderr and "steps/s" in r.stderr and "ETA" in r.stderr
    meta = json.load(open(work / "codes" / "metadata.json"))
    assert meta["step"] == 12 and meta["kind"] == "sparse" and meta["dim"] == 256
    assert meta["sets"]["database"]["n"] == 512 and meta["sets"]["queries"]["n"] == 200
    assert meta["sets"]["instance_queries"]["n"] == 32 and meta["sets"]["distractors"]["n"] == 1200
    first = json.loads(open(work / "codes" / "database.jsonl").readline())
    assert all(isinstance(v, int) for v in first["vector"].values())
    report = json.load(open(work / "report.json"))
    methods = {(row["regime"], row["method"]) for row in report["rows"]}
    assert ("class", "sparse index (ours)") in methods
    assert ("instance", "dense exact (BLAS)") in methods
    assert ("open_set", "sparse index (ours)") in methods  # 1,200 distractors + 200 originals
    assert (work / "tradeoff.png").exists() and "sparse index (ours)" in r.stdout

    # each stage on its own, with the config read back from the workdir
    (work / "report.json").unlink()
    (work / "codes" / "metadata.json").unlink()
    for mode in ("export", "benchmark"):
        r = launch(f"--workdir={work}", f"--mode={mode}")
        assert r.returncode == 0, r.stderr[-3000:]
    assert (work / "codes" / "metadata.json").exists() and (work / "report.json").exists()


@pytest.mark.slow
def test_sigkill_midway_then_relaunch_finishes_like_an_uninterrupted_run(tmp_path):
    args = [
        "--config=experiments/synthetic.py:smoke",
        "--config.train.num_steps=1500",
        "--config.train.checkpoint_every=100",
        "--config.train.log_every=50",
        "--config.train.eval_every=750",
        "--config.optimizer.lr_schedule=constant",
    ]
    work = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "launch.py", *args, f"--workdir={work}"],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while time.time() < deadline and not os.path.isdir(work / "checkpoints" / "200"):
        assert proc.poll() is None, "run ended before it could be killed"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    steps = [int(s) for s in os.listdir(work / "checkpoints") if s.isdigit()]
    assert 200 <= max(steps) < 1500
    r = launch(*args, f"--workdir={work}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from step" in r.stderr
    records = io_utils.read_jsonl(str(work / "metrics.jsonl"))
    logged = [rec["step"] for rec in records if "train/loss" in rec]
    assert logged == list(range(50, 1501, 50))
    r = launch(*args, f"--workdir={tmp_path / 'straight'}")
    assert r.returncode == 0

    from experiments import synthetic

    c = synthetic.get_config("smoke")
    c.train.num_steps, c.optimizer.lr_schedule = 1500, "constant"
    a, _, _ = train.load_trained_state(c, str(work))
    b, _, _ = train.load_trained_state(c, str(tmp_path / "straight"))
    assert int(a.step) == int(b.step) == 1500
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_hosts_train_resume_and_match_one_host(tmp_path):
    """Two processes with 2 CPU devices each (a 2-host run on loopback) against one process
    with 4 devices: same global batch, same result; then the 2-host run resumes."""
    common = ["--config=experiments/synthetic.py:smoke", "--config.optimizer.lr_schedule=constant"]
    env2 = dict(ENV, XLA_FLAGS="--xla_force_host_platform_device_count=2")

    def two_hosts(workdir, *extra):
        port = free_port()
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "launch.py",
                    *common,
                    *extra,
                    f"--workdir={workdir}",
                    f"--coordinator_address=127.0.0.1:{port}",
                    "--num_processes=2",
                    f"--process_id={i}",
                ],
                cwd=ROOT,
                env=env2,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        outs = [p.communicate(timeout=300) for p in procs]
        for p, (_, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err[-3000:]
        return outs

    two_hosts(tmp_path / "multi", "--config.train.num_steps=6")
    outs = two_hosts(tmp_path / "multi")
    assert "resuming from step 6" in outs[0][1]
    r = launch(
        *common, f"--workdir={tmp_path / 'single'}", "--config.mesh.data=4"
    )  # the suite's 4 fake devices
    assert r.returncode == 0, r.stderr[-3000:]

    from experiments import synthetic

    c = synthetic.get_config("smoke")
    c.optimizer.lr_schedule = "constant"
    a, _, _ = train.load_trained_state(c, str(tmp_path / "multi"))
    b, _, _ = train.load_trained_state(c, str(tmp_path / "single"))
    assert int(a.step) == int(b.step) == 12
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_allclose(
            np.asarray(x),
            np.asarray(y),
            rtol=1e-4,
            atol=1e-4 * float(np.max(np.abs(np.asarray(y)))),
        )
    records = io_utils.read_jsonl(str(tmp_path / "multi" / "metrics.jsonl"))
    assert [r["step"] for r in records if "train/loss" in r] == [4, 6, 8, 12]


@pytest.mark.slow
def test_faces_smoke_trains_arcface_and_identifies_probes_among_distractors(tmp_path):
    from helpers import write_fake_faces

    root = write_fake_faces(str(tmp_path / "faces"), identities=(12, 4, 5), per_identity=3)
    work = tmp_path / "w"
    r = launch(
        "--config=experiments/faces.py:smoke",
        f"--workdir={work}",
        "--mode=all",
        f"--config.data.dir={root}",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.load(open(work / "codes" / "metadata.json"))
    assert meta["sets"]["database"]["n"] == 15 and meta["sets"]["queries"]["n"] == 12
    rows = json.load(open(work / "report.json"))["rows"]
    assert {r["regime"] for r in rows} == {"probe"}
    # 15 distractors + 4 mates; the 8 other probe images query for their mate.
    assert {(r["n"], r["queries"]) for r in rows} == {(19, 8)}
    assert all(0.0 <= r["recall@1"] <= r["recall@10"] <= 1.0 for r in rows)
