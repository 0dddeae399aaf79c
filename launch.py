"""Command-line entry point: flags, mode dispatch, ``app.run``. All logic lives in sparse_flops.

    python launch.py --config=experiments/fashion_mnist.py --workdir=runs/fmnist
    python launch.py --config=experiments/fashion_mnist.py --workdir=runs/fmnist \\
        --config.regularizer.weight=3 --config.train.num_steps=5000
    python launch.py --mode=export --workdir=runs/fmnist
    python launch.py --mode=benchmark --workdir=runs/fmnist --compare=runs/fmnist_dense
    python launch.py --mode=scale --config=experiments/scale.py --workdir=runs/scale
    python launch.py --mode=throughput --config=experiments/throughput.py --workdir=runs/tp
    python launch.py --mode=sweep --config=experiments/study_fashion_mnist.py --workdir=runs/study
    python launch.py --mode=collect --config=experiments/study_fashion_mnist.py --workdir=runs/study

Every mode's settings live in its config; ``--mode=benchmark`` (and the scale benchmark) run on
the NumPy side and never import JAX.

Multi-host (one command per host; process 0's address first):
    python launch.py --config=... --workdir=SHARED_DIR --coordinator_address=host0:1234 \\
        --num_processes=2 --process_id=0
"""

from absl import app, flags
from ml_collections import config_flags

from sparse_flops import logs

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config",
    None,
    "Experiment config file (export and benchmark default to the workdir's).",
    lock_config=True,
)
flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics, codes and reports.")
flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "export", "benchmark", "all", "scale", "throughput", "sweep", "collect"],
    "train; export codes; benchmark exported codes; all = the three in turn; scale = the "
    "synthetic 1M-item retrieval benchmark (experiments/scale.py); throughput = training "
    "examples/s per backbone (experiments/throughput.py); sweep = train, export and "
    "benchmark every member of a sweep config, resumably (experiments/study_*.py); collect = "
    "gather every finished member of a sweep into its sweep.json, running nothing (after a "
    "sweep run in parts, e.g. one seed per --config.sweep.seeds).",
)
flags.DEFINE_list("compare", [], "Other exported workdirs to benchmark beside --workdir.")
flags.DEFINE_bool(
    "distributed",
    False,
    "Start JAX's multi-host runtime; the cluster is "
    "detected unless the three flags below are given.",
)
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
flags.mark_flag_as_required("workdir")

JAX_MODES = ("train", "export", "all", "throughput", "sweep")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    mode = FLAGS.mode
    logs.quiet_third_party(verbose=FLAGS.verbosity > 0)
    if mode in ("scale", "throughput", "train", "all", "sweep", "collect") and FLAGS.config is None:
        raise app.UsageError(f"--mode={mode} needs --config (see the experiments/ folder)")
    if mode in JAX_MODES and (FLAGS.distributed or FLAGS.coordinator_address):
        from sparse_flops import sharding

        sharding.initialize_distributed(
            FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
        )
    if mode == "scale":
        from sparse_flops.bench import scale

        scale.run(FLAGS.config, FLAGS.workdir)
        return
    if mode == "throughput":
        from sparse_flops.bench import throughput

        throughput.run_config(FLAGS.config, FLAGS.workdir)
        return
    if mode == "sweep":
        from sparse_flops import sweep

        sweep.run(FLAGS.config, FLAGS.workdir)
        return
    if mode == "collect":
        from sparse_flops import sweep

        sweep.validate(FLAGS.config)
        sweep.collect(FLAGS.config, FLAGS.workdir)
        return
    from sparse_flops.config import load_workdir_config

    config = FLAGS.config if FLAGS.config is not None else load_workdir_config(FLAGS.workdir)
    if mode in ("train", "all"):
        from sparse_flops import train

        train.train_and_evaluate(config, FLAGS.workdir)
    if mode in ("export", "all"):
        from sparse_flops import export

        export.export_workdir(config, FLAGS.workdir)
    if mode in ("benchmark", "all"):
        from sparse_flops.bench import tradeoff

        tradeoff.benchmark_from_config(config, FLAGS.workdir, FLAGS.compare)


if __name__ == "__main__":
    app.run(main)
