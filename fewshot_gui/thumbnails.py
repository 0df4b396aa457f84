"""Thumbnails decoded off the main thread into a bounded cache.

Tiles ask for a thumbnail when they are painted, so only visible images are
ever decoded. Decoding runs in a small thread pool (QImageReader scales while
it decodes, which is cheap for JPEG and fine for PNG); the main thread turns
the QImage into a QPixmap and keeps it in QPixmapCache, whose size is bounded
in kilobytes, so scrolling 20,000 images keeps memory flat.

When the user scrolls fast, requests for tiles long gone pile up; when more
than ``MAX_QUEUED`` wait, the queue is dropped (tiles still on screen ask again
on their next paint).
"""
from __future__ import annotations

from PySide6.QtCore import QObject, QRunnable, QSize, Qt, QThreadPool, Signal
from PySide6.QtGui import QImage, QImageReader, QPixmap, QPixmapCache

MAX_QUEUED = 300
CACHE_KB = 96 * 1024  # ~3,000 thumbnails of 128 px at 2x device pixel ratio


class _Signals(QObject):
    loaded = Signal(str, int, QImage)  # path, size, image (null when it could not be read)


class _LoadJob(QRunnable):
    def __init__(self, path: str, size: int, signals: _Signals):
        super().__init__()
        self.path, self.size, self.signals = path, size, signals

    def run(self) -> None:
        reader = QImageReader(self.path)
        reader.setAutoTransform(True)
        src = reader.size()
        if src.isValid() and (src.width() > self.size or src.height() > self.size):
            reader.setScaledSize(src.scaled(QSize(self.size, self.size), Qt.AspectRatioMode.KeepAspectRatio))
        image = reader.read()
        if not image.isNull() and image.format() == QImage.Format.Format_Mono:
            # 1-bit PNGs (Omniglot) paint slowly and scale badly; grey scales smoothly.
            image = image.convertToFormat(QImage.Format.Format_Grayscale8)
        if not image.isNull() and image.width() < self.size and image.height() < self.size:
            # Smaller than asked: enlarged here, smoothly and once, so that painting it is a
            # plain copy (a smooth enlargement in every paint tripled a tile's paint time).
            image = image.scaled(self.size, self.size, Qt.AspectRatioMode.KeepAspectRatio,
                                 Qt.TransformationMode.SmoothTransformation)
        self.signals.loaded.emit(self.path, self.size, image)


class ThumbnailLoader(QObject):
    """``pixmap(path, size)`` answers at once from the cache, or None and loads it;
    ``ready(path)`` fires when it arrives."""

    ready = Signal(str)

    def __init__(self, parent: QObject | None = None, threads: int = 2):
        super().__init__(parent)
        QPixmapCache.setCacheLimit(max(QPixmapCache.cacheLimit(), CACHE_KB))
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(threads)
        self._pending: set[tuple[str, int]] = set()
        self._failed: set[str] = set()
        self._signals = _Signals()
        self._signals.loaded.connect(self._on_loaded)

    @staticmethod
    def _key(path: str, size: int) -> str:
        return f"fs-thumb:{size}:{path}"

    def pixmap(self, path: str, size: int) -> QPixmap | None:
        pm = QPixmapCache.find(self._key(path, size))
        if pm is not None and not pm.isNull():
            return pm
        if path in self._failed or (path, size) in self._pending:
            return None
        if len(self._pending) >= MAX_QUEUED:
            self._pool.clear()  # drop requests not yet started: their tiles scrolled away
            self._pending.clear()
        self._pending.add((path, size))
        self._pool.start(_LoadJob(path, size, self._signals))
        return None

    def failed(self, path: str) -> bool:
        return path in self._failed

    def _on_loaded(self, path: str, size: int, image: QImage) -> None:
        self._pending.discard((path, size))
        if image.isNull():
            self._failed.add(path)
        else:
            QPixmapCache.insert(self._key(path, size), QPixmap.fromImage(image))
        self.ready.emit(path)

    def wait_idle(self, msecs: int = 5000) -> bool:
        return self._pool.waitForDone(msecs)

    def shutdown(self) -> None:
        self._pool.clear()
        self._pool.waitForDone(2000)
