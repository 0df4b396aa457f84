"""Meta-training configuration: everything needed to reproduce a run."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class TrainConfig:
    dataset: str
    data_root: str
    split: str
    out: str
    method: str = "protonet"
    backbone: str = "conv4"
    #: The method's own options (its Config dataclass as a dict; model.json's method_config).
    method_config: dict = field(default_factory=dict)
    way: int = 60
    shot: int = 5
    query: int = 5
    #: Outer steps (meta-iterations); each draws ``meta_batch`` episodes.
    episodes: int = 10_000
    meta_batch: int = 1
    val_split: str | None = None
    val_way: int = 5
    val_shot: int = 1
    val_query: int = 15
    val_episodes: int = 600
    val_every: int = 500
    # Adam with the step schedule of Snell et al.: halve the rate every 2,000 outer steps.
    lr: float = 1e-3
    lr_step: int = 2000
    lr_gamma: float = 0.5
    #: "step" (the schedule above) or "cosine": annealed from lr to 0 over the run (MAML++).
    lr_schedule: str = "step"
    #: A trained model (folder or bundled name) whose backbone weights the run starts from.
    init_from: str | None = None
    #: dataset "unlabeled" (CACTUs): the model whose embeddings are clustered, partitions, clusters each.
    embedder: str | None = None
    partitions: int = 50
    clusters: int = 500
    image_size: int | None = None
    #: 1 (grayscale) or 3 (RGB); by default the dataset's own (Omniglot 1, photos 3).
    channels: int | None = None
    rotations: bool = False
    device: str = "auto"
    seed: int = 0
    log_every: int = 10

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        if "distance" in d and "method_config" not in d:  # written before methods had their own options
            d["method_config"] = {"distance": d.pop("distance")}
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
