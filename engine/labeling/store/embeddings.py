"""The embedding cache: backbone features per (backbone id, content hash), so re-adapting
never decodes an image again."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from engine.labeling.store.base import IN_CHUNK, locked


class EmbeddingsPart:
    @locked
    def images_to_embed(self, backbone_id: str) -> list[tuple[int, str, str]]:
        """(image_id, path, hash) of usable images with no cached embedding for the backbone."""
        return [tuple(r) for r in self._conn.execute(
            "SELECT i.id, i.path, i.hash FROM images i WHERE i.error IS NULL AND i.hash IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM embeddings e WHERE e.backbone_id = ? AND e.hash = i.hash) ORDER BY i.id", (backbone_id,))]

    @locked
    def put_embeddings(self, backbone_id: str, items: Sequence[tuple[str, np.ndarray]]) -> None:
        """Cache embeddings (content hash, float32 vector), all in one transaction."""
        if not items:
            return
        vectors = [np.ascontiguousarray(v, dtype=np.float32).reshape(-1) for _, v in items]
        if not all(np.isfinite(v).all() for v in vectors):
            raise ValueError("an embedding holds NaN or infinite values; such embeddings are never cached")
        dims = {v.size for v in vectors}
        with self._tx(durable=False):
            row = self._conn.execute("SELECT dim FROM embeddings WHERE backbone_id = ? LIMIT 1",
                                     (backbone_id,)).fetchone()
            if row is not None:
                dims.add(row[0])
            if len(dims) != 1:
                raise ValueError(f"embeddings for backbone {backbone_id!r} must all have one size, got {sorted(dims)}")
            self._conn.executemany(
                "INSERT INTO embeddings(backbone_id, hash, dim, vector) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(backbone_id, hash) DO UPDATE SET dim = excluded.dim, vector = excluded.vector",
                [(backbone_id, h, v.size, v.tobytes()) for (h, _), v in zip(items, vectors)])

    @locked
    def get_embeddings(self, backbone_id: str, hashes: Sequence[str] | None = None
                       ) -> tuple[list[str], np.ndarray]:
        """Cached embeddings: (hashes, (n, d) float32 matrix). With ``hashes``, those that
        are cached, in the order asked; with None, all of the backbone's."""
        if hashes is None:
            rows = self._conn.execute("SELECT hash, vector, dim FROM embeddings WHERE backbone_id = ? ORDER BY id",
                                      (backbone_id,)).fetchall()
        else:
            found: dict[str, tuple] = {}
            wanted = list(dict.fromkeys(hashes))
            for start in range(0, len(wanted), IN_CHUNK):
                part = wanted[start:start + IN_CHUNK]
                for r in self._conn.execute(f"SELECT hash, vector, dim FROM embeddings WHERE backbone_id = ? AND hash "
                                            f"IN ({','.join('?' * len(part))})", (backbone_id, *part)):
                    found[r[0]] = r
            rows = [found[h] for h in wanted if h in found]
        if not rows:
            row = self._conn.execute("SELECT dim FROM embeddings WHERE backbone_id = ? LIMIT 1",
                                     (backbone_id,)).fetchone()
            return [], np.zeros((0, row[0] if row else 0), dtype=np.float32)
        dim = rows[0][2]
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim).copy()
        return [r[0] for r in rows], matrix


