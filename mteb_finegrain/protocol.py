"""The scoring protocol: every default in one place, with a version that results report.

Bump ``PROTOCOL_VERSION`` whenever a default or a scoring rule changes: scores are comparable only
between results that carry the same version.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from mteb_finegrain.errors import FineGrainError

PROTOCOL_VERSION = "4.0"
# Cache keys name the protocol version that last changed what they cache, not PROTOCOL_VERSION, so
# that a version that changes only the probes (3.0) or only what results record (3.1) reuses the
# coarse-tuned checkpoints (and with them the cached embeddings) and the clustering scores made
# under the one before. Set one to the new PROTOCOL_VERSION whenever a change of a default
# touches coarse training, respectively clustering.
COARSE_TRAINING_PROTOCOL = "2.0"
CLUSTERING_PROTOCOL = "4.0"
STAGES = ("pretrained", "coarse_tuned")

# The names a result file uses, in one place (the leaderboard reads them without importing torch).
MAIN_SCORE = "selected_layer_probe_accuracy"
EVAL_SPLIT = "test"  # the MTEB-facing split name; the card says which of its splits it is

SEED_PAPER_BIBTEX = """@inproceedings{anjum-krestel-2024-finetuning,
  title = {Fine-Tuning {BERT} On Coarse-Grained Labels: Exploring Hidden States For Fine-Grained Classification},
  author = {Anjum, Aftab and Krestel, Ralf},
  booktitle = {Natural Language Processing and Information Systems (NLDB 2024)},
  series = {Lecture Notes in Computer Science},
  publisher = {Springer},
  year = {2024},
}"""
# AMI: adjusted mutual information, arithmetic normalisation (scikit-learn's default). NMI, recorded
# up to protocol 3.1, is gone: on the 3.1 board it differed from V-measure (which is NMI with the
# arithmetic mean) by at most 0.005 in all 621 record pairs, the same number stored twice.
CLUSTERING_METRICS = ("v_measure", "ami", "ari", "cluster_accuracy")
# Scored inside each class of the next coarser level: every level but the coarsest has it.
WITHIN_PARENT_METRICS = ("within_coarse_v_measure", "within_coarse_ami")
PROBE_METRICS = ("probe_accuracy", "probe_f1_macro")
SETFIT_METRICS = ("setfit_accuracy", "setfit_f1_macro")
KNOWN_METRICS = CLUSTERING_METRICS + WITHIN_PARENT_METRICS + PROBE_METRICS + SETFIT_METRICS
# Per-layer numbers that are not scores against labels (``SubsetScores.representation``): drift
# from the pretrained model (coarse_tuned stage) and label-free signals (both stages).
DRIFT_METRICS = ("cka_to_pretrained", "cka_to_pretrained_permuted")
SIGNAL_METRICS = ("effective_rank", "dataset_entropy")
INTERVAL_LEVEL = 0.95
FEWSHOT_MODES = ("probe", "setfit")

MAIN_SCORE_DEFINITION = (
    "probe_accuracy at the finest level with {shots} examples per class, on the evaluation split "
    "(probe seeds {scoring_seeds}), at the layer with the best {shots}-shot finest-level probe "
    "accuracy on the validation split (disjoint probe seeds {validation_seeds}), of stage '{stage}' "
    "(coarse_tuned when it was run, else pretrained){runs}"
)


# The Protocol fields that change the clustering scores, respectively the probes, besides seeds.
CLUSTERING_OPTIONS = ("kmeans_l2_normalize", "kmeans_n_init", "kmeans_max_iter", "kmeans_tol")
PROBE_OPTIONS = ("probe_max_iter", "probe_tol", "probe_c", "probe_standardize")


@dataclass(frozen=True)
class CoarseTraining:
    """Fine-tuning on coarse labels: a linear head on the pooled output, cross-entropy, AdamW."""

    epochs: int = 1
    learning_rate: float = 5e-5
    batch_size: int = 32
    max_length: int = 128
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0  # gradients are clipped to this total L2 norm before each step
    # Seed of the first training run (head initialisation, dropout, batch order); run r uses
    # seed + r. Separate from Protocol.seed, so that training can vary alone.
    seed: int = 42


@dataclass(frozen=True)
class SetFitSettings:
    """SetFit contrastive fine-tuning of the encoder truncated after a layer.

    ``num_iterations`` pairs per example and side are generated; training stops after
    ``num_epochs`` passes over them or ``max_steps`` steps of ``batch_size`` pairs (-1: no
    limit), whichever comes first. The step cap keeps a SetFit run of TREC with a 6-layer MiniLM
    (2 layers x 3 seeds x 2 stages) under 15 minutes on a 2-core CPU (under a minute a
    training). Cap and learning rate were chosen on TREC's validation split (MiniLM layer 6,
    seeds 42-44): 60 steps at 4e-5 reach a validation accuracy of 0.670, against 0.676 for twice
    the steps at 2e-5 and 0.588 for 60 steps at 2e-5. The head is the probe's logistic
    regression (``Protocol.probe_max_iter``, ``probe_tol``, ``probe_c``) on raw embeddings.
    """

    shots: int = 8
    seeds: int = 3
    num_iterations: int = 3
    max_steps: int = 60
    batch_size: int = 16
    learning_rate: float = 4e-5
    num_epochs: int = 1


@dataclass(frozen=True)
class Protocol:
    """All settings of a FineGrainHidden run (recorded in full in every result).

    Attributes
    ----------
    seed : int
        Base seed; clustering uses ``seed .. seed+clustering_seeds-1``, probes likewise.
    stages : tuple of str
        ``pretrained`` and/or ``coarse_tuned``.
    layers : tuple of int or None
        Layers to score; None scores every layer.
    pooling : {"mean", "cls", "model"}
        ``model``: each model's own sentence-transformers pooling, applied to every layer; the
        default ``mean`` is one fixed choice, so that scores of different models compare.
    shots : tuple of int
        Examples per fine class for the probe.
    main_shots : int
        Shots of the main score and of the validation-based layer choice.
    probe_warm_start : bool
        True: each n-shot probe's L-BFGS starts from the same seed's probe with the largest power
        of two below n shots (fitted on a subset of its examples), which reaches the same optimum
        in fewer iterations. False: every probe starts from zero.
    probe_max_iter : int
        L-BFGS iterations at most per probe (``LogisticRegression(max_iter=...)``); a probe that
        stops there is counted in the results' ``convergence_warnings``.
    probe_tol : float
        L-BFGS stopping tolerance of the probe (``LogisticRegression(tol=...)``).
    probe_c : float
        Inverse L2 regularisation strength of the probe (``LogisticRegression(C=...)``).
    probe_standardize : bool
        Standardise each feature on the few-shot examples before the probe (hidden states have
        a few huge dimensions, which make L-BFGS crawl without it).
    kmeans_l2_normalize : bool
        Scale each embedding to unit length before k-means (cosine geometry for every layer:
        raw hidden-state norms differ a lot between layers).
    kmeans_n_init : int
        k-means runs per seed, the best kept (``KMeans(n_init=...)``).
    kmeans_max_iter : int
        Lloyd iterations at most per k-means run.
    kmeans_tol : float
        k-means convergence tolerance (``KMeans(tol=...)``).
    validation_fraction : float
        Share of each fine class carved from the few-shot pool as the validation split when a
        card has none (see ``data.carve_validation``).
    coarse_seeds : int
        Coarse-training runs of the ``coarse_tuned`` stage, with training seeds
        ``coarse_training.seed .. + coarse_seeds - 1``. Every run is scored; the layer is chosen on
        the validation accuracy averaged over runs, and every coarse_tuned score is the mean over
        runs. 3 by default: one run's seed moved TREC's main score by 0.013 (sd over 5 seeds),
        0.63 of its item-and-support-set standard error (``benchmarks/coarse_seed_spread.py``).
    train_level : int
        The hierarchy level the ``coarse_tuned`` stage is trained on: 0 is the coarsest level of
        the card, 1 the next one, ...; negative counts from the finest (-1).
    """

    seed: int = 42
    stages: tuple[str, ...] = STAGES
    layers: tuple[int, ...] | None = None
    pooling: str = "mean"
    clustering_seeds: int = 5
    shots: tuple[int, ...] = (1, 2, 4, 8, 16)
    probe_seeds: int = 5
    main_shots: int = 8
    probe_warm_start: bool = True
    probe_max_iter: int = 100
    probe_tol: float = 1e-4
    probe_c: float = 1.0
    probe_standardize: bool = True
    kmeans_l2_normalize: bool = True
    kmeans_n_init: int = 1
    kmeans_max_iter: int = 300
    kmeans_tol: float = 1e-4
    validation_fraction: float = 0.1
    fewshot: str = "probe"
    batch_size: int = 32
    train_level: int = 0
    coarse_seeds: int = 3
    coarse_training: CoarseTraining = field(default_factory=CoarseTraining)
    setfit: SetFitSettings = field(default_factory=SetFitSettings)

    def __post_init__(self) -> None:
        bad = [s for s in self.stages if s not in STAGES]
        if bad or not self.stages:
            raise FineGrainError(f"stages must be a non-empty subset of {STAGES}, got {list(self.stages)}")
        if self.pooling not in ("mean", "cls", "model"):
            raise FineGrainError(f"pooling must be 'mean', 'cls' or 'model', got {self.pooling!r}")
        if self.fewshot not in FEWSHOT_MODES:
            raise FineGrainError(f"fewshot must be one of {FEWSHOT_MODES}, got {self.fewshot!r}")
        if not self.shots or any(not isinstance(n, int) or n < 1 for n in self.shots):
            raise FineGrainError(f"shots must be positive integers, got {list(self.shots)}")
        if self.main_shots not in self.shots:
            raise FineGrainError(f"main_shots {self.main_shots} must be one of shots {list(self.shots)}")
        for name in ("probe_warm_start", "probe_standardize", "kmeans_l2_normalize"):
            if not isinstance(getattr(self, name), bool):
                raise FineGrainError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("clustering_seeds", "probe_seeds", "coarse_seeds", "batch_size", "probe_max_iter", "kmeans_n_init", "kmeans_max_iter"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise FineGrainError(f"{name} must be a positive integer, got {value!r}")
        for name in ("probe_tol", "probe_c", "kmeans_tol"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise FineGrainError(f"{name} must be a positive number, got {value!r}")
        if not isinstance(self.validation_fraction, (int, float)) or isinstance(self.validation_fraction, bool) or not 0 < self.validation_fraction < 1:
            raise FineGrainError(f"validation_fraction must be a number between 0 and 1 (exclusive), got {self.validation_fraction!r}")
        if not isinstance(self.train_level, int) or isinstance(self.train_level, bool):
            raise FineGrainError(f"train_level must be an integer level index (0 = coarsest), got {self.train_level!r}")
        if isinstance(self.coarse_training.seed, bool) or not isinstance(self.coarse_training.seed, int):
            raise FineGrainError(f"coarse_training.seed must be an integer, got {self.coarse_training.seed!r}")
        if self.coarse_training.epochs < 1:
            raise FineGrainError(f"epochs must be at least 1, got {self.coarse_training.epochs}")
        if not self.coarse_training.max_grad_norm > 0:
            raise FineGrainError(f"coarse_training.max_grad_norm must be positive, got {self.coarse_training.max_grad_norm!r}")

    @property
    def clustering_seed_list(self) -> list[int]:
        return [self.seed + i for i in range(self.clustering_seeds)]

    @property
    def probe_seed_list(self) -> list[int]:
        """Seeds of the probes scored on the evaluation split (and recorded)."""
        return [self.seed + i for i in range(self.probe_seeds)]

    @property
    def validation_probe_seed_list(self) -> list[int]:
        """Seeds of the probes that choose the layer on the validation split.

        Disjoint from ``probe_seed_list``: the support sets that win the layer choice do not
        also score the evaluation split, so the reported score is not the lucky one that won.
        """
        return [self.seed + self.probe_seeds + i for i in range(self.probe_seeds)]

    @property
    def coarse_seed_list(self) -> list[int]:
        """Training seeds of the coarse-training runs."""
        return [self.coarse_training.seed + i for i in range(self.coarse_seeds)]

    @property
    def main_stage(self) -> str:
        return "coarse_tuned" if "coarse_tuned" in self.stages else "pretrained"

    def train_level_name(self, level_names: list[str]) -> str:
        """The name of the level the coarse_tuned stage trains on, for a card with these levels."""
        if not -len(level_names) <= self.train_level < len(level_names):
            raise FineGrainError(
                f"train_level {self.train_level} is out of range for a card with {len(level_names)} levels "
                f"({', '.join(level_names)}): use 0..{len(level_names) - 1} (0 = coarsest) or -1 (finest)"
            )
        return level_names[self.train_level]

    def clustering_options(self) -> dict:
        """The settings k-means runs with (``scoring.layer_level.LevelJob`` takes them as fields)."""
        return {name: getattr(self, name) for name in CLUSTERING_OPTIONS}

    def probe_options(self) -> dict:
        """The settings each probe is fitted with (``LevelJob`` takes them as fields)."""
        return {name: getattr(self, name) for name in PROBE_OPTIONS}

    def main_score_definition(self) -> str:
        runs = f", mean over {self.coarse_seeds} coarse-training runs (seeds {self.coarse_seed_list})" if self.main_stage == "coarse_tuned" else ""
        return MAIN_SCORE_DEFINITION.format(
            shots=self.main_shots, stage=self.main_stage, scoring_seeds=self.probe_seed_list, validation_seeds=self.validation_probe_seed_list, runs=runs
        )

    def to_dict(self) -> dict:
        settings = asdict(self)
        settings["layers"] = "all" if self.layers is None else list(self.layers)
        settings["stages"] = list(self.stages)
        settings["shots"] = list(self.shots)
        settings["clustering_seed_list"] = self.clustering_seed_list
        settings["probe_seed_list"] = self.probe_seed_list
        settings["validation_probe_seed_list"] = self.validation_probe_seed_list
        settings["coarse_seed_list"] = self.coarse_seed_list
        return settings
