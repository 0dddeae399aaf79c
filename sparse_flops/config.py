"""The configuration schema shared by every experiment (``ml_collections.ConfigDict``).

Each ``experiments/*.py`` starts from :func:`base_config` and overrides what it needs, so every
experiment accepts the same keys and a misspelt ``--config.x.y=`` fails under ``lock_config``.
A key added to the schema defaults to the behaviour from before it existed, so records made
without it (a sweep's finished members) stay valid.
"""

from __future__ import annotations

import ml_collections

AUGMENT_BLOCK = 1000  # exported views are augmented in seeded blocks of this many images


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.source = (
        "fashion_mnist"  # fashion_mnist | cifar100 | features | image_folder | synthetic
    )
    c.data.dir = ""  # "" = the source's default folder (Fashion-MNIST: Debian's package)
    c.data.train_split = "train"
    c.data.eval_split = "test"
    c.data.validation_size = 0  # > 0 carves a 'validation' split out of 'train'
    c.data.split_seed = 0
    c.data.train_limit = 0  # > 0 keeps only the first N training examples
    c.data.eval_limit = 0  # > 0 keeps only the first N examples of every other split
    # Inputs x -> (x - per-pixel mean of the training split, if subtract_mean) * input_scale.
    c.data.image_size = 112  # image_folder: images resized to this square
    c.data.subtract_mean = False
    c.data.input_scale = 1.0
    c.data.synthetic = ml_collections.ConfigDict(
        dict(num_classes=100, features=64, train_per_class=50, test_per_class=10, noise=0.5, seed=0)
    )

    c.augment = ml_collections.ConfigDict(dict(shift=0, flip=False, contrast=0.0, noise=0.0))

    c.model = ml_collections.ConfigDict()
    c.model.backbone = "small_convnet"  # mlp | small_convnet | cifar_convnet | resnet18 | resnet50
    c.model.backbone_kwargs = ml_collections.ConfigDict()
    c.model.dim = 1024
    c.model.activation = "relu"  # relu | soft_threshold | none
    c.model.threshold = 0.0  # soft-threshold t
    c.model.batch_norm = True
    c.model.batch_norm_scale = True  # False: the head's BatchNorm has no learned scale

    c.loss = ml_collections.ConfigDict()
    c.loss.name = "norm_softmax"  # arcface | cosface | norm_softmax | triplet | ntxent
    c.loss.scale = 16.0
    c.loss.margin = 0.0
    c.loss.temperature = 0.1

    c.regularizer = ml_collections.ConfigDict()
    c.regularizer.name = "flops"  # flops | l1 | none
    c.regularizer.weight = 1.0  # database side (and the only side of one-sided losses)
    c.regularizer.query_weight = -1.0  # >= 0: query-side weight of two-view losses; -1: same
    # What the penalty sees: "codes" = the L2-normalised embeddings (the original code's choice);
    # "activations" = the head's activations before the normalisation.
    c.regularizer.on = "codes"
    c.regularizer.schedule = "quadratic"  # quadratic | constant
    c.regularizer.warmup_steps = 1000
    # True: the original code's estimate, the mean of per-device penalties of the local batches
    # (biased upward for FLOPs); False: the penalty of the global batch.
    c.regularizer.per_device = False

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adam"  # adam | adamw | sgd
    c.optimizer.learning_rate = 1e-3
    c.optimizer.lr_schedule = "cosine"  # constant | cosine | step
    c.optimizer.warmup_steps = 0
    c.optimizer.decay_boundaries = ()  # steps, for lr_schedule=step
    c.optimizer.decay_factor = 0.1
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = False
    c.optimizer.weight_decay = 0.0  # L2 on every parameter (adamw: decoupled)
    # > 0: L2 on the kernels only (biases and BatchNorm left alone), the head's Dense kernel at
    # its own rate (the original CIFAR code: 1e-4 on convolutions, 1e-3 on the head).
    c.optimizer.kernel_decay = 0.0
    c.optimizer.head_kernel_decay = 0.0
    c.optimizer.adam_eps = 1e-8
    c.optimizer.grad_clip_norm = 0.0

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 3000
    c.train.batch_size = 256
    c.train.log_every = 100
    c.train.eval_every = 1000
    c.train.checkpoint_every = 500
    c.train.max_checkpoints = 3
    c.train.async_checkpointing = True
    c.train.compute_dtype = "float32"  # float32 | bfloat16

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # devices on the data axis; -1 = all
    c.mesh.param_sharding = "replicated"  # replicated | fsdp

    c.eval = ml_collections.ConfigDict()
    c.eval.num_queries = 1000  # first N items of the eval split query the whole split; 0 = all
    # class: items query the split, relevant = same class; instance: augmented views of the
    # items (export.instance_augment / instance_seed) query the originals, relevant = own one.
    c.eval.regime = "class"
    c.eval.batch_size = 1000
    c.eval.ks = (1, 10)

    c.export = ml_collections.ConfigDict()
    c.export.database_split = "train"
    c.export.query_split = "test"
    c.export.instance_queries = 1000  # augmented views of held-out items; 0 = no instance regime
    # One seed for the views whatever the model's seed, so every model sees the same queries.
    c.export.instance_seed = 1
    c.export.instance_augment = ml_collections.ConfigDict(
        dict(shift=1, flip=False, contrast=0.2, noise=0.05)
    )
    # Open-set retrieval at scale: this many distractors (seeded augmented views of the database
    # split's images, cycling through them) embedded in chunks without keeping the images; the
    # open_set regime searches them followed by the held-out originals. 0 = none.
    c.export.distractors = 0
    c.export.distractor_seed = 2
    c.export.distractor_chunk = 20_000  # images augmented and embedded at a time
    c.export.jsonl = False  # also write <set>.jsonl for learned-sparse retrieval engines
    c.export.jsonl_quantize = 0  # > 0: integer weights round(w * Q / max|w|)

    # --mode=benchmark: which methods, and the parameters each sweeps (sparse_flops.bench.tradeoff)
    c.benchmark = ml_collections.ConfigDict()
    c.benchmark.k = 100
    c.benchmark.ks = (1, 10, 100)
    c.benchmark.num_queries = 1000
    c.benchmark.timing_queries = 0  # > 0: ms/query timed on the first N queries; 0 = all
    # () = every regime the exports hold (class, instance, open_set); "probe": face exports
    c.benchmark.regimes = ()
    c.benchmark.repeats = 5
    c.benchmark.threads = 0  # 0 = all
    c.benchmark.methods = ("sparse", "scipy", "dense", "faiss", "pca", "lsh", "pq", "ivfpq")
    c.benchmark.methods += ("two_stage",)
    c.benchmark.sparse_thresholds = ()  # extra sparse-index rows with a score threshold
    c.benchmark.pca_dims = (16, 32, 64)  # PCA of the baseline dense export to k dimensions
    c.benchmark.lsh_bits = (64, 256, 1024)  # sign random projections
    c.benchmark.lsh_rerank = 0  # > 0: re-rank that many Hamming candidates exactly
    c.benchmark.pq_m = (8, 16, 32)  # faiss IndexPQ sub-quantisers
    c.benchmark.pq_bits = 8
    c.benchmark.ivf_nlist = 256  # faiss IndexIVFPQ cells (capped at database size / 39)
    c.benchmark.ivf_m = 16
    c.benchmark.ivf_nprobe = (4, 16)
    c.benchmark.two_stage_candidates = (100, 1000)  # K sparse candidates re-ranked densely
    c.benchmark.two_stage_threshold = -1.0  # >= 0: sparse score threshold (the paper: 0.25)
    c.benchmark.rerank_workdir = ""  # dense export of the re-ranker; "" = largest dense one
    c.benchmark.baseline_workdir = ""  # dense export PCA/LSH/PQ use; "" = largest dense one
    return c


def as_tuple(value, cast=str) -> tuple:
    """A tuple setting as given in a file or on the command line: ``("a", "b")``, ``[3, 4]``,
    ``"a"``, ``3``, or comma-separated strings such as ``"a,b"`` or ``("a,b",)`` (what a flag
    override of a tuple gives); each item passed through ``cast``."""
    if isinstance(value, str | int | float):
        value = (value,)
    items = []
    for v in value:
        if isinstance(v, str):
            items += [x.strip().strip("'\"") for x in v.strip("()[]").split(",") if x.strip()]
        else:
            items.append(v)
    return tuple(cast(v) for v in items)


def require_positive(section, keys: tuple[str, ...], where: str) -> None:
    """Raises ``ValueError`` naming ``config.<where>.<key>`` for each key not > 0."""
    for key in keys:
        if section[key] <= 0:
            raise ValueError(f"config.{where}.{key} must be positive, got {section[key]}")


def _one_of(value, choices, key: str) -> None:
    if value not in choices:
        raise ValueError(f"config.{key}={value!r}; choose one of {tuple(choices)}")


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks every setting of a training config before any work starts; raises ``ValueError``
    naming the key, the bad value and what is allowed.

    The registries (losses, penalties, schedules, backbones, activations, optimisers) are the
    JAX side's: they are imported here, not at module import, so the retrieval side reads configs
    without JAX.
    """
    from sparse_flops import data, losses, models, optim, regularizers, sharding

    if config.seed < 0:
        raise ValueError(f"config.seed must be >= 0, got {config.seed}")
    _one_of(config.data.source, data.SOURCES, "data.source")
    for key in ("validation_size", "train_limit", "eval_limit"):
        if config.data[key] < 0:
            raise ValueError(f"config.data.{key} must be >= 0, got {config.data[key]}")
    _one_of(config.loss.name, losses.LOSSES, "loss.name")
    require_positive(config.loss, ("scale", "temperature"), "loss")
    if config.loss.margin < 0:
        raise ValueError(f"config.loss.margin must be >= 0, got {config.loss.margin}")
    reg = config.regularizer
    _one_of(reg.name, regularizers.PENALTIES, "regularizer.name")
    _one_of(reg.schedule, regularizers.SCHEDULES, "regularizer.schedule")
    _one_of(reg.on, regularizers.INPUTS, "regularizer.on")
    for key in ("weight", "warmup_steps"):
        if reg[key] < 0:
            raise ValueError(f"config.regularizer.{key} must be >= 0, got {reg[key]}")
    if reg.query_weight >= 0 and config.loss.name not in losses.TWO_VIEW_LOSSES:
        raise ValueError(
            "config.regularizer.query_weight applies only to losses with a query side and a "
            f"database side {losses.TWO_VIEW_LOSSES}, not {config.loss.name!r}; leave it at -1"
        )
    if reg.query_weight > 0 and reg.weight == 0:
        raise ValueError(
            "a query-side weight needs a positive database-side config.regularizer.weight"
        )
    _one_of(config.model.backbone, models.BACKBONES, "model.backbone")
    _one_of(config.model.activation, models.ACTIVATIONS, "model.activation")
    require_positive(config.model, ("dim",), "model")
    if config.model.threshold < 0:
        raise ValueError(f"config.model.threshold must be >= 0, got {config.model.threshold}")
    _one_of(config.optimizer.name, optim.OPTIMIZERS, "optimizer.name")
    _one_of(config.optimizer.lr_schedule, optim.LR_SCHEDULES, "optimizer.lr_schedule")
    require_positive(config.optimizer, ("learning_rate",), "optimizer")
    for key in ("weight_decay", "grad_clip_norm", "warmup_steps", "momentum"):
        if config.optimizer[key] < 0:
            raise ValueError(f"config.optimizer.{key} must be >= 0, got {config.optimizer[key]}")
    require_positive(
        config.train,
        ("num_steps", "batch_size", "log_every", "eval_every", "checkpoint_every"),
        "train",
    )
    # Below 1 a finished run would keep no checkpoint at all.
    require_positive(config.train, ("max_checkpoints",), "train")
    _one_of(config.train.compute_dtype, ("float32", "bfloat16"), "train.compute_dtype")
    _one_of(config.mesh.param_sharding, sharding.PARAM_SHARDINGS, "mesh.param_sharding")
    if config.mesh.data == 0 or config.mesh.data < -1:
        raise ValueError(
            f"config.mesh.data must be -1 (all devices) or positive, got {config.mesh.data}"
        )
    require_positive(config.eval, ("batch_size",), "eval")
    _one_of(config.eval.regime, ("class", "instance"), "eval.regime")
    if config.eval.num_queries < 0 or not all(k > 0 for k in config.eval.ks):
        raise ValueError(
            f"config.eval.num_queries must be >= 0 and config.eval.ks positive, got "
            f"{config.eval.num_queries} and {tuple(config.eval.ks)}"
        )
    for key in ("distractors", "distractor_seed"):
        if config.export[key] < 0:
            raise ValueError(f"config.export.{key} must be >= 0, got {config.export[key]}")
    if config.export.distractor_chunk < AUGMENT_BLOCK:
        raise ValueError(
            f"config.export.distractor_chunk must be >= {AUGMENT_BLOCK}, got "
            f"{config.export.distractor_chunk}"
        )
    if config.export.distractors and not config.export.instance_queries:
        raise ValueError(
            "config.export.distractors needs config.export.instance_queries > 0: the open-set "
            "regime's queries are the instance queries"
        )
    if config.export.instance_queries < 0:
        raise ValueError(
            f"config.export.instance_queries must be >= 0, got {config.export.instance_queries}"
        )
    require_positive(config.benchmark, ("k", "repeats"), "benchmark")


def load_workdir_config(workdir: str) -> ml_collections.ConfigDict:
    """The ``config.json`` a training run saved in ``workdir``, laid over :func:`base_config`."""
    import json
    import os

    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} is missing: train in that workdir first, or pass --config=..."
        )
    with open(path) as f:
        saved = json.load(f)
    c = base_config()
    c.update_from_flattened_dict(_flatten(saved), strip_prefix="")
    return c


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = tuple(v) if isinstance(v, list) else v
    return out


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks ``c`` in place to train in seconds (tests, CI): few steps, small data and eval."""
    c.train.num_steps = 12
    c.train.batch_size = 32
    c.train.log_every = 4
    c.train.eval_every = 6
    c.train.checkpoint_every = 6
    c.data.train_limit = 512
    c.data.eval_limit = 256
    c.eval.num_queries = 64
    c.eval.batch_size = 128
    c.regularizer.warmup_steps = 6
    c.export.instance_queries = 32
    c.benchmark.num_queries = 64
    c.benchmark.k = 10
    c.benchmark.ks = (1, 10)
    c.benchmark.repeats = 2
    c.benchmark.pca_dims = (8,)
    c.benchmark.lsh_bits = (64,)
    c.benchmark.pq_m = (8,)
    c.benchmark.ivf_nlist = 8
    c.benchmark.ivf_m = 8
    c.benchmark.ivf_nprobe = (2,)
    c.benchmark.two_stage_candidates = (20,)
    return c
