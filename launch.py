"""Command-line entry point: flags, mode dispatch, ``app.run``. All logic lives in sparse_flops.

    python launch.py --config=experiments/fashion_mnist.py --workdir=runs/fmnist
    python launch.py --config=experiments/fashion_mnist.py --workdir=runs/fmnist \\
        --config.regularizer.weight=3 --config.train.num_steps=5000
"""

from absl import app, flags
from ml_collections import config_flags

from sparse_flops import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics, codes and reports.")
flags.DEFINE_enum("mode", "train", ["train"], "What to run on the workdir.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.mode == "train":
        train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
