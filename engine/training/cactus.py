"""Meta-training without labels: CACTUs (Hsu, Levine & Finn, ICLR 2019).

Every image of a folder is embedded by a model that never saw its labels, the
embeddings are clustered P times by k-means (each time under another random
scaling of the dimensions, so the partitions differ), and a task takes all its
classes from the clusters of one partition. Folder names are never read: an
image is a path and nothing else, so a folder sorted by class teaches nothing
the clusters do not find.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from engine.data.cache import TensorCache, cache_key
from engine.data.class_dataset import TensorClassDataset, decode_pool
from engine.data.folder import image_files, is_image_file
from engine.data.preprocessing import Preprocessing
from engine.data.sampler import EpisodeSampler
from engine.data.transforms import load_uint8, normalize
from engine.errors import DatasetLayoutError, ImageDecodeError

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]


def find_images(root: str | Path) -> list[Path]:
    """Every image under the folder ``root``, at any depth, sorted (hidden files and folders are
    ignored); or, when ``root`` is a ``.txt`` file, the image paths it lists, one per line."""
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".txt":
        lines = [line.strip() for line in root.read_text(encoding="utf-8", errors="replace").splitlines()]
        found = sorted({Path(line) for line in lines if line and is_image_file(Path(line).name)})
        missing = [p for p in found if not p.is_file()]
        if missing:
            log.warning("%d images listed in %s are gone (e.g. %s); using the others", len(missing), root, missing[0])
            found = [p for p in found if p.is_file()]
        if not found:
            raise DatasetLayoutError(f"{root} lists no image that exists; list one image path per line")
        return found
    if not root.is_dir():
        raise DatasetLayoutError(f"{root} is not a folder; give the folder that holds the unlabeled images "
                                 "(or a .txt file listing them)")
    found = image_files(root)
    if not found:
        raise DatasetLayoutError(f"{root} holds no images; put the unlabeled images in it (any sub-folders)")
    return found


def _decode(paths: list[Path], prep: Preprocessing) -> tuple[list[int], torch.Tensor, list[tuple[str, str]]]:
    """The images that decode (their positions in ``paths``, uint8 pixels) and those that did not."""
    def load(path: Path):
        try:
            return load_uint8(path, prep)
        except ImageDecodeError as e:
            return e
    kept, pixels, skipped = [], [], []
    for i, r in enumerate(decode_pool().map(load, paths)):
        if isinstance(r, ImageDecodeError):
            skipped.append((str(paths[i]), r.reason))
        else:
            kept.append(i)
            pixels.append(r)
    h, w = prep.size
    images = torch.stack(pixels) if pixels else torch.empty((0, prep.channels, h, w), dtype=torch.uint8)
    return kept, images, skipped


def embed_images(paths: list[Path], embedder: str, device: torch.device, batch: int = 64,
                 progress: Progress | None = None) -> tuple[list[int], torch.Tensor]:
    """Embeddings (N, D) of the images that decode, cached by file, size, time and embedder."""
    from engine.model_store import load_model
    model = load_model(embedder, device)
    stats = [p.stat() for p in paths]
    key = cache_key({"kind": "cactus-embeddings", "embedder": model.backbone_id,
                     "prep": model.preprocessing.to_dict(),
                     "files": [[str(p), s.st_size, s.st_mtime_ns] for p, s in zip(paths, stats)]})
    cache = TensorCache(namespace="embeddings")
    hit = cache.load(key, lambda o: {"kept", "z"} <= set(o))
    if hit is not None:
        return [int(i) for i in hit["kept"]], hit["z"]
    kept: list[int] = []
    parts: list[torch.Tensor] = []
    t0 = time.perf_counter()
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        ok, images, skipped = _decode(chunk, model.preprocessing)
        for path, reason in skipped:
            log.warning("skipping image %s: %s", path, reason)
        if ok:
            x = normalize(images, model.preprocessing).to(device)
            parts.append(model.learner.embed(x).float().cpu())
            kept.extend(start + i for i in ok)
        if progress is not None:
            progress("embedding", min(start + batch, len(paths)), len(paths))
    if not kept:
        raise DatasetLayoutError("none of the unlabeled images can be decoded; check the folder")
    z = torch.cat(parts)
    log.info("embedded %d images in %.0f s", len(kept), time.perf_counter() - t0)
    cache.save(key, {"kept": torch.tensor(kept), "z": z})
    return kept, z


def kmeans(x: torch.Tensor, k: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """Lloyd's k-means from a k-means++ start; the cluster of each row (N,)."""
    n = x.shape[0]
    sq = (x * x).sum(1)
    centres = x[torch.randint(n, (1,), generator=generator)]
    nearest = torch.full((n,), float("inf"))
    for _ in range(1, k):  # k-means++: each next centre drawn in proportion to its squared distance
        d = (sq - 2 * x @ centres[-1] + centres[-1] @ centres[-1]).clamp_min(0)
        nearest = torch.minimum(nearest, d)
        pick = torch.multinomial(nearest + 1e-12, 1, generator=generator)
        centres = torch.cat([centres, x[pick]])
    labels = torch.zeros(n, dtype=torch.long)
    for _ in range(iterations):
        d = sq[:, None] - 2 * x @ centres.T + (centres * centres).sum(1)[None]
        labels = d.argmin(1)
        counts = torch.bincount(labels, minlength=k).float()
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        moved = counts > 0  # an emptied centre stays where it was
        centres[moved] = sums[moved] / counts[moved, None]
    return labels


def partitions(z: torch.Tensor, count: int, clusters: int, seed: int, dims: int = 256,
               iterations: int = 20, progress: Progress | None = None) -> list[torch.Tensor]:
    """``count`` k-means partitions of the embeddings, each under a random per-dimension scaling."""
    if clusters >= z.shape[0]:
        raise DatasetLayoutError(f"{z.shape[0]} images cannot make {clusters} clusters; use fewer --clusters "
                                 "or more images")
    x = z - z.mean(0)
    if x.shape[1] > dims:  # PCA first: k-means costs N*k*D per step, and the top directions carry the structure
        _, _, v = torch.pca_lowrank(x, q=dims, center=False, niter=4)
        x = x @ v
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-8)
    g = torch.Generator().manual_seed(seed)
    out = []
    for p in range(count):
        # Partition 0 clusters the embeddings as they are; the others scale each dimension by U(0, 1),
        # CACTUs' way of seeing the same images through different features.
        scale = torch.ones(x.shape[1]) if p == 0 else torch.rand(x.shape[1], generator=g)
        out.append(kmeans(x * scale, clusters, iterations, g))
        if progress is not None:
            progress("clustering", p + 1, count)
    return out


class PartitionSampler(EpisodeSampler):
    """Episodes whose ``way`` classes are clusters of one partition (drawn first, by episode)."""

    def __init__(self, dataset: TensorClassDataset, partition_of: list[int], way: int, shot: int, query: int,
                 seed: int = 0):
        self._groups = [np.flatnonzero(np.asarray(partition_of) == p) for p in sorted(set(partition_of))]
        self._groups = [g for g in self._groups if len(g) >= way]
        if not self._groups:
            raise DatasetLayoutError(f"no partition has {way} clusters of at least {shot + query} images; use "
                                     "fewer --way, fewer --shot/--query, or fewer --clusters")
        super().__init__(dataset, way, shot, query, seed)

    def indices(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i < 0:
            raise IndexError(f"episode index must be >= 0, got {i}")
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed % 2**63, i])))
        group = self._groups[rng.integers(len(self._groups))]
        classes = rng.choice(group, size=self.way, replace=False)
        n = self.shot + self.query
        idx = np.stack([rng.choice(int(self._sizes[c]), size=n, replace=False) for c in classes])
        return classes, idx


def cactus_dataset(root: str, prep: Preprocessing, *, embedder: str, way: int, shot: int, query: int,
                   partition_count: int, clusters: int, seed: int, device: torch.device,
                   progress: Progress | None = None) -> tuple[TensorClassDataset, PartitionSampler]:
    """The training set (every usable cluster of every partition as a class) and its task sampler."""
    paths = find_images(root)
    kept, z = embed_images(paths, embedder, device, progress=progress)
    parts = partitions(z, partition_count, clusters, seed, progress=progress)
    ok, images, skipped = _decode([paths[i] for i in kept], prep)
    if len(ok) != len(kept):
        raise DatasetLayoutError("some images changed while they were read; run again")
    need = shot + query
    members, names, partition_of = [], [], []
    for p, labels in enumerate(parts):
        for c in range(clusters):
            rows = torch.nonzero(labels == c).flatten()
            if len(rows) >= need:
                members.append(rows)
                names.append(f"partition {p} cluster {c}")
                partition_of.append(p)
    log.info("%d images, %d partitions: %d clusters of >= %d images", len(kept), partition_count, len(members), need)
    dataset = TensorClassDataset(images, members, names, prep, skipped=skipped)
    return dataset, PartitionSampler(dataset, partition_of, way, shot, query, seed)
