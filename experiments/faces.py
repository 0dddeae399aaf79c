"""Faces as in the paper's main experiment: ArcFace (s = 64, m = 0.5) on 1024-dimensional ReLU
codes with the FLOPs penalty warmed up quadratically, then identification among distractors
(the MegaFace protocol): recall@{1, 10, 100} of each probe image's mate, no self-match.

    python launch.py --config=experiments/faces.py --workdir=runs/faces --mode=all \\
        --config.data.dir=/path/to/faces
    python launch.py --config=experiments/faces.py:features --workdir=runs/faces_f --mode=all \\
        --config.data.dir=/path/to/features     # precomputed face features instead of images

Data (nothing is shipped or downloaded):
- images: ``<dir>/train/<identity>/*.jpg`` (training identities, e.g. MS-Celeb-1M aligned to
  112x112), ``<dir>/test/<identity>/*`` (the probe set, e.g. FaceScrub) and
  ``<dir>/distractors/<any>/*`` (e.g. MegaFace's distractors); a ResNet-18 for 112x112 inputs;
- features (``:features``): ``train.npz``, ``test.npz`` and ``distractors.npz`` with ``inputs``
  ``(n, f)`` and ``labels``; a two-layer MLP learns the codes on top.

Protocol (``benchmark.regimes = probe``): the first image of each probe identity joins the
distractors as its mate; every other image of that identity queries for it. The database split
of the export is the distractors, its query split the probe set. The paper used MobileFaceNet and
ResNet-100 trained on MS-Celeb-1M with 85k identities and MegaFace's million distractors; the
step counts here suit a single accelerator and must be scaled to the data.
"""

from sparse_flops.config import base_config, smoke


def get_config(arg: str | None = None):
    c = base_config()
    c.data.source = "image_folder"
    c.data.image_size = 112
    c.augment.flip = True
    c.model.backbone = "resnet18"
    c.model.backbone_kwargs.small_images = False
    c.model.dim = 1024
    c.model.activation = "relu"
    c.loss.name = "arcface"
    c.loss.scale = 64.0
    c.loss.margin = 0.5
    c.regularizer.name = "flops"
    c.regularizer.weight = 100.0  # the authors' face scripts: 100 to 300 (their schedule)
    c.regularizer.schedule = "quadratic"
    c.regularizer.warmup_steps = 20000
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.1
    c.optimizer.momentum = 0.9
    c.optimizer.lr_schedule = "step"
    c.optimizer.decay_boundaries = (60000, 90000)
    c.optimizer.weight_decay = 5e-4
    c.train.num_steps = 100000
    c.train.batch_size = 256
    c.train.eval_every = 10000
    c.train.checkpoint_every = 2500
    c.eval.ks = (1, 10, 100)
    c.export.database_split = "distractors"
    c.export.query_split = "test"
    c.export.instance_queries = 0
    c.benchmark.regimes = ("probe",)
    c.benchmark.num_queries = 0  # every probe image but the mates
    if arg == "features":
        c.data.source = "features"
        c.augment.flip = False
        c.model.backbone = "mlp"
        c.model.backbone_kwargs = dict(hidden=(1024, 1024))
    elif arg == "smoke":
        smoke(c)
        c.data.image_size = 16
        c.model.backbone_kwargs.width = 4
        c.model.backbone_kwargs.small_images = True
        c.model.dim = 64
        c.benchmark.num_queries = 0
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'features', 'smoke' or nothing")
    return c
