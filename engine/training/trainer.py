"""Episodic meta-training with validation, best-checkpoint keeping and exact resume.

Episode i depends only on (seed, i), and the optimiser, schedule and weights
are saved together, so a run stopped at episode e and resumed ends with the
same weights as one that never stopped.
"""
from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from engine.data.sampler import EpisodeSampler
from engine.errors import CheckpointError, EpisodeError, FewShotError
from engine.methods.registry import build_method
from engine.runtime import describe_device, pick_device
from engine.training.checkpoint import load_resume, read_meta, save_model, save_resume
from engine.training.config import TrainConfig
from engine.training.datasets import open_dataset
from engine.training.distributed import AveragingOptimizer, Group
from engine.training.evaluate import evaluate_episodes
from engine.training.events import RUN_FILE, EventLog
from engine.version import __version__

log = logging.getLogger(__name__)
Events = Callable[[dict], None]

DATASET_CHANNELS = {"omniglot": 1, "miniimagenet": 3, "folder": 3, "unlabeled": 3}
DATASET_SIZES = {"omniglot": 28, "miniimagenet": 84}
BACKBONE_SIZES = {"lite0": 224}


def input_shape(cfg: TrainConfig) -> tuple[int, int]:
    channels = cfg.channels or DATASET_CHANNELS.get(cfg.dataset, 3)
    if cfg.backbone == "lite0":
        channels = 3
    size = cfg.image_size or BACKBONE_SIZES.get(cfg.backbone) or DATASET_SIZES.get(cfg.dataset, 84)
    return channels, size


class Trainer:
    def __init__(self, cfg: TrainConfig, events: Events | None = None, resume_from: str | Path | None = None):
        from engine.models.registry import build_backbone, default_preprocessing

        self.cfg = cfg
        self.out = Path(cfg.out)
        self.device = pick_device(cfg.device)
        self.group = Group.join(self.device)
        if self.device.type == "cuda" and self.group.world_size > 1:
            import os
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(self.device)
        # Only rank 0 reports and writes; the run folder keeps every event for drawing its curves later.
        self.events = EventLog(self.out, events) if self.group.is_main else (lambda e: None)
        channels, size = input_shape(cfg)
        self.channels, self.size = channels, size
        self.prep = default_preprocessing(cfg.backbone, channels=channels, image_size=size)
        if cfg.dataset == "unlabeled":
            self.train_set, self.sampler = self._unlabeled_tasks()
        else:
            self.train_set = open_dataset(cfg.dataset, cfg.data_root, cfg.split, self.prep, rotations=cfg.rotations)
            self.sampler = EpisodeSampler(self.train_set, cfg.way, cfg.shot, cfg.query, seed=cfg.seed)
        self.val_sampler = None
        if cfg.val_split:
            val_set = open_dataset(cfg.dataset, cfg.data_root, cfg.val_split, self.prep)
            # A seed apart from training's, fixed for the whole run: every validation sees the same episodes.
            try:
                self.val_sampler = EpisodeSampler(val_set, cfg.val_way, cfg.val_shot, cfg.val_query,
                                                  seed=cfg.seed + 10_007)
            except EpisodeError as e:  # say which episodes: the training split may well be large enough
                raise EpisodeError(f"validation on {cfg.val_split}: {e}") from None
        torch.manual_seed(cfg.seed)  # the same on every rank: all start from the same weights
        backbone = build_backbone(cfg.backbone, channels=channels, image_size=size)
        self.learner = build_method(cfg.method, backbone, cfg.method_config, who="the method options").to(self.device)
        if self.group.world_size > 1:
            torch.manual_seed(cfg.seed + 7919 * self.group.rank)  # but a stochastic method's draws differ per rank
        if cfg.dataset != "unlabeled":
            self.sampler.outside = self.learner.outside_per_episode(cfg.way, cfg.query)
        if cfg.init_from and resume_from is None:
            self._init_backbone(cfg.init_from)
        if self.device.type == "cpu":
            # oneDNN's convolutions run about 1.6x faster on channels-last weights here (docs/PERFORMANCE.md).
            self.learner.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.learner.optimizer_groups(cfg.lr), lr=cfg.lr)
        if cfg.lr_schedule == "cosine":
            self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=cfg.episodes)
        elif cfg.lr_schedule == "step":
            self.schedule = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
        else:
            raise FewShotError(f"unknown learning-rate schedule '{cfg.lr_schedule}'; choose step or cosine")
        self.episode = 0
        self.best: dict | None = None
        self.history: list[dict] = []
        self._stop = False
        self._stop_all = False
        if resume_from is not None:
            self._restore(Path(resume_from))

    def _unlabeled_tasks(self):
        """CACTUs: tasks from k-means clusters of the images' embeddings (engine/training/cactus.py)."""
        from engine.training.cactus import cactus_dataset
        cfg = self.cfg
        if not cfg.embedder:
            raise FewShotError("--dataset unlabeled needs --embedder MODEL (e.g. photos): the model whose "
                               "embeddings are clustered into tasks")
        if cfg.val_split:
            raise FewShotError("unlabeled images have no classes to validate on; leave out --val-split and "
                               "evaluate the model on labeled images afterwards (fewshot evaluate)")
        def report(stage: str, done: int, total: int) -> None:
            self.events({"event": "preparing", "stage": stage, "done": done, "total": total})
        return cactus_dataset(cfg.data_root, self.prep, embedder=cfg.embedder, way=cfg.way, shot=cfg.shot,
                              query=cfg.query, partition_count=cfg.partitions, clusters=cfg.clusters,
                              seed=cfg.seed, device=self.device, progress=report)

    def _init_backbone(self, spec: str) -> None:
        """The backbone's weights from a trained model of the same backbone and input."""
        from engine.model_store import load_model
        source = load_model(spec, "cpu")
        meta = source.meta
        if (meta.get("backbone"), meta.get("channels"), meta.get("image_size")) != (self.cfg.backbone, self.channels,
                                                                                   self.size):
            raise FewShotError(f"--init-from {spec}: its backbone is {meta.get('backbone')} on "
                               f"{meta.get('channels')}-channel {meta.get('image_size')} px images, this run's "
                               f"{self.cfg.backbone} on {self.channels}-channel {self.size} px; they must match")
        self.learner.backbone.load_state_dict(source.learner.backbone.state_dict())
        self.learner.backbone_replaced()  # a method holding copies of the backbone (particles) renews them
        log.info("backbone initialized from %s", spec)

    def _restore(self, folder: Path) -> None:
        state = load_resume(folder)
        try:
            self.learner.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.schedule.load_state_dict(state["schedule"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"cannot resume from {folder}: its state does not fit this configuration ({e})") from e
        self.episode = int(state["episode"])
        self.best = state.get("best")
        self.history = list(state.get("history", []))
        if self.best is not None and self.out.resolve() != folder.resolve():
            # Carry the best weights over so the new folder is complete on its own.
            from engine.training.checkpoint import load_weights
            save_model(self.out, load_weights(folder), read_meta(folder))

    def request_stop(self) -> None:
        """Ask the loop to stop after the current episode (signal-safe: only sets a flag)."""
        self._stop = True

    def meta(self, metrics: dict | None) -> dict:
        return {
            "method": self.cfg.method, "method_config": self.learner.saved_config().to_dict(),
            "backbone": self.cfg.backbone, "channels": self.channels, "image_size": self.size,
            "preprocessing": self.prep.to_dict(), "training": self.cfg.to_dict(),
            "validation": metrics, "episode": self.episode, "project_version": __version__,
            "device": describe_device(self.device), "world_size": self.group.world_size,
        }

    def _save_resume(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        save_resume(self.out, {
            "model": self.learner.state_dict(), "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(), "episode": self.episode,
            "best": self.best, "history": self.history,
        })

    def _checkpoint(self) -> None:
        """Validate and save on rank 0 while the others wait (every rank calls it)."""
        self.group.average_buffers(self.learner)
        if self.group.is_main:
            if self.val_sampler is not None:
                self.validate()
            self._save_resume()
        self.group.barrier()

    def validate(self) -> dict:
        t0 = time.perf_counter()
        score = evaluate_episodes(self.learner, self.val_sampler, self.cfg.val_episodes, self.device)
        self.learner.train()
        metrics = {"episode": self.episode, **score.to_dict(), "split": self.cfg.val_split,
                   "seconds": round(time.perf_counter() - t0, 2)}
        improved = self.best is None or score.accuracy > self.best["accuracy"]
        if improved:
            self.best = metrics
            save_model(self.out, self.learner.state_dict(), self.meta(metrics))
        self.history.append(metrics)
        self.events({"event": "validation", **metrics, "best": improved, "best_accuracy": self.best["accuracy"]})
        return metrics

    def run(self) -> dict:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        if self.group.is_main:  # what `fewshot train --resume DIR` alone needs to go on
            from engine.json_file import write_json_atomic
            write_json_atomic(self.out / RUN_FILE, {"training": cfg.to_dict(), "world_size": self.group.world_size})
        self.events({"event": "start", "episode": self.episode, "episodes": cfg.episodes,
                     "device": describe_device(self.device), "classes": len(self.train_set),
                     "world_size": self.group.world_size, "config": cfg.to_dict(), "out": str(self.out)})
        self.learner.train()
        window: list[tuple[float, float]] = []
        t_last = time.perf_counter()
        waited = 0.0
        batch = max(1, cfg.meta_batch)
        world, rank = self.group.world_size, self.group.rank
        # Outer step s uses global episodes s*W*B .. s*W*B+W*B-1, rank r those of index i*W + r: a resumed
        # run sees the same ones, and W ranks together see what one process with meta-batch W*B would.
        episodes = self.sampler.iter_from(self.episode * world * batch + rank, (cfg.episodes - self.episode) * batch,
                                          step=world)
        optimizer = AveragingOptimizer(self.optimizer, self.group, lambda: self._stop)
        while self.episode < cfg.episodes and not self._stop_all:
            if world == 1 and self._stop:  # alone, a stop needs no agreement: leave before the next step
                self._stop_all = True
                break
            t_wait = time.perf_counter()
            tasks = [ep.to(self.device) for ep in itertools.islice(episodes, batch)]
            waited += time.perf_counter() - t_wait
            if len(tasks) < batch:
                break
            stats = self.learner.outer_step(tasks, optimizer)
            self._stop_all = optimizer.stop_everywhere  # the same on every rank: all leave after this step
            self.schedule.step()
            self.episode += 1
            window.append((stats["loss"], stats["acc"]))
            if self.episode % cfg.log_every == 0 or self.episode == cfg.episodes:
                now = time.perf_counter()
                per_step = (now - t_last) / len(window)
                self.events({"event": "episode", "episode": self.episode, "episodes": cfg.episodes,
                             "loss": sum(w[0] for w in window) / len(window),
                             "acc": sum(w[1] for w in window) / len(window),
                             "lr": self.optimizer.param_groups[0]["lr"],
                             "seconds_per_episode": per_step, "episodes_per_s": 1.0 / max(per_step, 1e-9),
                             "eta_s": per_step * (cfg.episodes - self.episode),
                             "wait_fraction": waited / max(now - t_last, 1e-9)})
                window.clear()
                t_last, waited = now, 0.0
            if cfg.val_every and self.episode % cfg.val_every == 0:  # a checkpoint even without validation
                self._checkpoint()
        if hasattr(episodes, "close"):
            episodes.close()
        stopped = self._stop_all and self.episode < cfg.episodes
        self.group.average_buffers(self.learner)
        if self.group.is_main:
            if self.val_sampler is not None and not stopped and (not self.history
                                                                 or self.history[-1]["episode"] != self.episode):
                self.validate()
            if self.best is None:
                # Without a validation the last weights are the result, so the folder is usable.
                save_model(self.out, self.learner.state_dict(), self.meta(None))
            self._save_resume()
        self.group.barrier()
        result = {"event": "stopped" if stopped else "done", "episode": self.episode,
                  "best": self.best, "out": str(self.out)}
        self.events(result)
        return result


def train(cfg: TrainConfig, events: Events | None = None, resume_from: str | Path | None = None) -> dict:
    if cfg.episodes < 1:
        raise FewShotError("--episodes must be at least 1")
    return Trainer(cfg, events, resume_from).run()
