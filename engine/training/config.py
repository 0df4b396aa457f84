"""Meta-training configuration: everything needed to reproduce a run."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class TrainConfig:
    dataset: str
    data_root: str
    split: str
    out: str
    method: str = "protonet"
    backbone: str = "conv4"
    distance: str = "euclidean"
    way: int = 60
    shot: int = 5
    query: int = 5
    episodes: int = 10_000
    val_split: str | None = None
    val_way: int = 5
    val_shot: int = 1
    val_query: int = 15
    val_episodes: int = 600
    val_every: int = 500
    # Adam with the step schedule of Snell et al.: halve the rate every 2,000 episodes.
    lr: float = 1e-3
    lr_step: int = 2000
    lr_gamma: float = 0.5
    image_size: int | None = None
    rotations: bool = False
    device: str = "auto"
    seed: int = 0
    log_every: int = 10

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
