"""Command-line entry point: flags, mode dispatch, ``app.run``. All logic lives in sparse_flops.

    python launch.py --config=experiments/fashion_mnist.py --workdir=runs/fmnist
    python launch.py --config=experiments/fashion_mnist.py --workdir=runs/fmnist \\
        --config.regularizer.weight=3 --config.train.num_steps=5000
    python launch.py --mode=export --workdir=runs/fmnist
    python launch.py --mode=benchmark --workdir=runs/fmnist --compare=runs/fmnist_dense
    python launch.py --mode=scale --workdir=runs/scale

Multi-host (one command per host; process 0's address first):
    python launch.py --config=... --workdir=SHARED_DIR --coordinator_address=host0:1234 \
        --num_processes=2 --process_id=0
"""

from absl import app, flags
from ml_collections import config_flags

from sparse_flops import benchmark, export, sharding, throughput, train
from sparse_flops.config import load_workdir_config

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
    ["train", "export", "benchmark", "all", "scale", "throughput"],
    "train; export codes; benchmark exported codes; all = the three in turn; scale = the "
    "synthetic 1M-item retrieval benchmark; throughput = training examples/s per backbone "
    "(both write their reports to --workdir).",
)
flags.DEFINE_list("compare", [], "Other exported workdirs to benchmark beside --workdir.")
flags.DEFINE_integer("scale_items", 1_000_000, "Database size of --mode=scale.")
flags.DEFINE_integer("scale_queries", 1000, "Queries of --mode=scale.")
flags.DEFINE_list("scale_nonzeros", ["8", "32", "64"], "Mean non-zeros of --mode=scale.")
flags.DEFINE_list(
    "throughput_backbones",
    ["small_convnet", "cifar_convnet", "resnet18"],
    "Backbones of --mode=throughput.",
)
flags.DEFINE_integer("throughput_batch", 256, "Global batch size of --mode=throughput.")
flags.DEFINE_integer("throughput_steps", 20, "Timed steps per measurement of --mode=throughput.")
flags.DEFINE_enum(
    "throughput_dtype", "float32", ["float32", "bfloat16"], "Compute dtype of --mode=throughput."
)
flags.DEFINE_float("peak_tflops", None, "The device's peak TFLOP/s, to report the fraction.")
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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.distributed or FLAGS.coordinator_address:
        sharding.initialize_distributed(
            FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
        )
    if FLAGS.mode == "scale":
        benchmark.scale_benchmark(
            FLAGS.workdir,
            n=FLAGS.scale_items,
            num_queries=FLAGS.scale_queries,
            mean_nnz=[int(s) for s in FLAGS.scale_nonzeros],
        )
        return
    if FLAGS.mode == "throughput":
        throughput.run(
            FLAGS.workdir,
            FLAGS.throughput_backbones,
            batch_size=FLAGS.throughput_batch,
            steps=FLAGS.throughput_steps,
            compute_dtype=FLAGS.throughput_dtype,
            peak_tflops=FLAGS.peak_tflops,
        )
        return
    if FLAGS.config is None and FLAGS.mode in ("train", "all"):
        raise app.UsageError("--config is required to train")
    config = FLAGS.config if FLAGS.config is not None else load_workdir_config(FLAGS.workdir)
    if FLAGS.mode in ("train", "all"):
        train.train_and_evaluate(config, FLAGS.workdir)
    if FLAGS.mode in ("export", "all"):
        export.export_workdir(config, FLAGS.workdir)
    if FLAGS.mode in ("benchmark", "all"):
        bc = config.benchmark
        benchmark.benchmark_workdirs(
            [FLAGS.workdir, *FLAGS.compare],
            FLAGS.workdir,
            k=bc.k,
            ks=tuple(bc.ks),
            num_queries=bc.num_queries,
            repeats=bc.repeats,
            threads=bc.threads or None,
        )


if __name__ == "__main__":
    app.run(main)
