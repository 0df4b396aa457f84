"""Live curves of a meta-training run (pyqtgraph): training loss and accuracy (raw faint,
smoothed bold), validation accuracy with its 95% confidence band and the best
checkpoint marked, and the learning rate. Fed the run's events, live or from its
folder's events.jsonl."""
from __future__ import annotations

import os

os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")
import pyqtgraph as pg  # noqa: E402 - after choosing its Qt binding
from PySide6.QtWidgets import QVBoxLayout, QWidget  # noqa: E402

SMOOTHING = 0.9  # exponential moving average weight of the past: about the last 10 points
RAW = (120, 120, 120, 90)


class TrainingCurves(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        pg.setConfigOptions(antialias=True, background="w", foreground="k")
        self.view = pg.GraphicsLayoutWidget()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view)
        self.loss_plot = self._plot(0, "Training loss (query cross-entropy)", "loss")
        self.acc_plot = self._plot(1, "Accuracy on the episodes' queries", "accuracy (%)")
        self.lr_plot = self._plot(3, "Learning rate", "rate")
        # The key sits in a row of its own under the accuracy plot: inside it, it covered the curves.
        self.legend = pg.LegendItem(colCount=3)
        self.view.addItem(self.legend, row=2, col=0)
        self.loss_raw = self.loss_plot.plot(pen=pg.mkPen(RAW, width=1))
        self.loss_smooth = self.loss_plot.plot(pen=pg.mkPen("#1f77b4", width=2))
        self.acc_raw = self.acc_plot.plot(pen=pg.mkPen(RAW, width=1))
        self.acc_smooth = self.acc_plot.plot(pen=pg.mkPen("#1f77b4", width=2))
        self.val_hi = pg.PlotDataItem(pen=pg.mkPen(None))
        self.val_lo = pg.PlotDataItem(pen=pg.mkPen(None))
        self.val_band = pg.FillBetweenItem(self.val_lo, self.val_hi, brush=pg.mkBrush(214, 39, 40, 50))
        self.acc_plot.addItem(self.val_band)
        self.val_line = self.acc_plot.plot(pen=pg.mkPen("#d62728", width=2), symbol="o", symbolSize=5,
                                           symbolBrush="#d62728")
        self.best = pg.ScatterPlotItem(symbol="star", size=16, brush=pg.mkBrush("#ff9f1c"), pen=pg.mkPen("k"))
        self.acc_plot.addItem(self.best)
        self.legend.addItem(self.acc_smooth, "training (smoothed)")
        self.legend.addItem(self.val_line, "validation, 95% CI")
        self.legend.addItem(self.best, "best (the saved model)")
        self.lr_curve = self.lr_plot.plot(pen=pg.mkPen("#2ca02c", width=2))
        self.clear()

    def _plot(self, row: int, title: str, unit: str) -> pg.PlotItem:
        plot = self.view.addPlot(row=row, col=0, title=title)
        plot.setLabel("bottom", "outer step")
        plot.setLabel("left", unit)
        plot.showGrid(x=True, y=True, alpha=0.2)
        for side in ("left", "bottom"):
            # Grid lines at the major ticks only: the minor ones made a repaint of the panel
            # take 45 ms instead of 13 (and a main-thread stall over 100 ms on a busy machine).
            plot.getAxis(side).setStyle(maxTickLevel=0)
        return plot

    def clear(self) -> None:
        self.steps: list[float] = []
        self.loss: list[float] = []
        self.acc: list[float] = []
        self.lr: list[float] = []
        self.val: list[tuple[float, float, float]] = []
        self.best_point: tuple[float, float] | None = None
        self._ema: tuple[float, float] | None = None
        self.loss_ema: list[float] = []
        self.acc_ema: list[float] = []
        self._redraw()

    def add(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "start" and event.get("episode", 0) == 0:
            self.clear()
        elif kind == "episode":
            step, loss, acc = float(event["episode"]), float(event["loss"]), 100.0 * float(event["acc"])
            if self.steps and step <= self.steps[-1]:  # a resumed run repeats nothing it already drew
                return
            self.steps.append(step)
            self.loss.append(loss)
            self.acc.append(acc)
            self.lr.append(float(event["lr"]))
            prev = self._ema or (loss, acc)
            self._ema = (SMOOTHING * prev[0] + (1 - SMOOTHING) * loss, SMOOTHING * prev[1] + (1 - SMOOTHING) * acc)
            self.loss_ema.append(self._ema[0])
            self.acc_ema.append(self._ema[1])
            self._redraw(validation=False)
        elif kind == "validation":
            self.val.append((float(event["episode"]), 100.0 * float(event["accuracy"]), 100.0 * float(event["ci95"])))
            if event.get("best"):
                self.best_point = (float(event["episode"]), 100.0 * float(event["accuracy"]))
            self._redraw()

    def _redraw(self, validation: bool = True) -> None:
        if not self.steps:  # empty axes read 0-100 %, not pyqtgraph's arbitrary default around zero
            self.acc_plot.setRange(xRange=(0, 1), yRange=(0, 100), padding=0)
        elif len(self.steps) == 1:
            self.acc_plot.enableAutoRange()
        self.loss_raw.setData(self.steps, self.loss)
        self.loss_smooth.setData(self.steps, self.loss_ema)
        self.acc_raw.setData(self.steps, self.acc)
        self.acc_smooth.setData(self.steps, self.acc_ema)
        self.lr_curve.setData(self.steps, self.lr)
        if self.lr:  # from zero: a constant rate is a flat line, not an axis around one value
            self.lr_plot.setYRange(0, 1.1 * max(self.lr), padding=0)
        if validation:
            xs = [v[0] for v in self.val]
            self.val_line.setData(xs, [v[1] for v in self.val])
            self.val_hi.setData(xs, [v[1] + v[2] for v in self.val])
            self.val_lo.setData(xs, [v[1] - v[2] for v in self.val])
            # The band keeps its last path when its curves empty: a new run showed the old one's.
            self.val_band.setVisible(bool(xs))
            self.val_band.updatePath()
            self.best.setData([self.best_point[0]] if self.best_point else [],
                              [self.best_point[1]] if self.best_point else [])
