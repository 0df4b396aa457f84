"""How raw pixels become a model's input: the contract shared by training,
labeling and the ONNX export (its ``preprocessing`` metadata is ``to_dict()``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Preprocessing:
    """``mean``/``std`` apply to pixel values scaled to 0..1, per channel.

    ``resize``: ``"stretch"`` resizes to ``size`` ignoring aspect ratio (characters,
    small crops); ``"shorter_side_center_crop"`` scales the shorter side to the
    target and crops the centre (photos). ``alpha``: transparent pixels are
    composited on ``"white"``. ``invert`` flips intensities before
    normalising (dark strokes on white paper become bright on black).
    """

    size: tuple[int, int]
    channels: int
    mean: tuple[float, ...] = field(default=(0.0,))
    std: tuple[float, ...] = field(default=(1.0,))
    resize: str = "stretch"
    alpha: str = "white"
    invert: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(
            size=(int(d["size"][0]), int(d["size"][1])),
            channels=int(d["channels"]),
            mean=tuple(float(v) for v in d.get("mean", (0.0,))),
            std=tuple(float(v) for v in d.get("std", (1.0,))),
            resize=d.get("resize", "stretch"),
            alpha=d.get("alpha", "white"),
            invert=bool(d.get("invert", False)),
        )
