"""``fewshot train``: meta-training from the command line, for people (a tqdm bar) and for
programs (``--events``: one JSON line per event, engine/training/events.py).

With ``--events``, a line ``stop`` on standard input stops the run after the current
outer step, checkpointed (the training panel's Stop, on every OS); SIGINT and SIGTERM
do the same. A user error is reported as an ``error`` event as well as the one
``error:`` line, so a program reading the events sees why the run ended.
"""
from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

from engine.errors import FewShotError
from engine.training.events import stamped

STOP_LINE = "stop"


def _events_writer(target: str | None):
    if target is None:
        return None, None
    if target == "-":
        stream = sys.stdout
    else:
        stream = open(target, "a", encoding="utf-8")  # noqa: SIM115 - closed in cmd_train

    lock = threading.Lock()  # the stdin watcher may report too

    def emit(event: dict) -> None:
        with lock:
            stream.write(json.dumps(stamped(event)) + "\n")
            stream.flush()
    return emit, stream


def _config(args):
    from engine.methods.options import method_options
    from engine.training.config import TrainConfig

    out = args.out or args.resume
    if out is None:
        raise FewShotError("give --out DIR (where the model is saved), or --resume DIR")
    if args.dataset is None:
        if args.resume is None:
            raise FewShotError("give --dataset (omniglot, miniimagenet, folder or unlabeled) and --data-root")
        return _saved_config(args.resume, out)
    if args.data_root is None:
        raise FewShotError("give --data-root: the folder that holds the dataset")
    return TrainConfig(
        dataset=args.dataset, data_root=args.data_root, split=args.split, out=out,
        method=args.method, backbone=args.backbone, method_config=method_options(args, args.method),
        way=args.way, shot=args.shot, query=args.query, episodes=args.episodes, meta_batch=args.meta_batch,
        val_split=args.val_split, val_way=args.val_way, val_shot=args.val_shot, val_query=args.val_query,
        val_episodes=args.val_episodes, val_every=args.val_every, lr=args.lr, lr_step=args.lr_step,
        lr_gamma=args.lr_gamma, lr_schedule=args.lr_schedule, image_size=args.image_size, rotations=args.rotations,
        device=args.device, seed=args.seed, init_from=args.init_from, log_every=max(1, args.log_every),
        embedder=args.embedder, partitions=args.partitions, clusters=args.clusters, channels=args.channels,
    )


def _saved_config(folder: str, out: str):
    """The configuration a run was started with (its run.json), to go on with ``--resume DIR`` alone."""
    from engine.errors import CheckpointError
    from engine.json_file import read_json_dict
    from engine.training.config import TrainConfig
    from engine.training.events import RUN_FILE
    path = Path(folder) / RUN_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {RUN_FILE}; it was not made by this version's 'fewshot train', "
                              "so give the run's options (--dataset, --data-root, ...) with --resume")
    try:
        cfg = TrainConfig.from_dict(read_json_dict(path)["training"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} is damaged ({e}); give the run's options with --resume") from e
    cfg.out = out
    return cfg


def watch_stdin(stop) -> None:
    """Call ``stop`` when a line ``stop`` arrives on stdin. End of input is not a stop: a run
    started with stdin closed (nohup, </dev/null) must go on."""
    def read() -> None:
        try:
            for line in sys.stdin:
                if line.strip().lower() == STOP_LINE:
                    stop()
                    return
        except (OSError, ValueError):  # stdin closed under us
            return
    if sys.stdin is not None and not sys.stdin.isatty():
        threading.Thread(target=read, name="stop-on-stdin", daemon=True).start()


def _progress_printer():
    """A tqdm bar over episodes for people; the JSON events are for programs."""
    from tqdm import tqdm
    bar = None

    def emit(event: dict) -> None:
        nonlocal bar
        kind = event["event"]
        if kind == "start":
            bar = tqdm(total=event["episodes"], initial=event["episode"], unit="episode",
                       desc=f"training on {event['device']}", file=sys.stderr)
        elif kind == "episode" and bar is not None:
            bar.update(event["episode"] - bar.n)
            bar.set_postfix(loss=f"{event['loss']:.3f}", acc=f"{event['acc']:.3f}")
        elif kind == "validation":
            msg = (f"episode {event['episode']}: validation {100 * event['accuracy']:.2f}% "
                   f"± {100 * event['ci95']:.2f}{' (best)' if event['best'] else ''}")
            (bar.write if bar is not None else print)(msg, file=sys.stderr)
        elif kind in ("done", "stopped") and bar is not None:
            bar.close()
    return emit


def run_train(args) -> int:
    from engine.data.sampler import check_task_shape
    from engine.training.trainer import Trainer

    emit, stream = _events_writer(args.events)
    try:
        try:
            cfg = _config(args)
            if not Path(cfg.data_root).exists():
                raise FewShotError(f"--data-root {cfg.data_root} does not exist; give the folder that holds the data")
            if cfg.dataset in ("omniglot", "miniimagenet") and not cfg.split:
                raise FewShotError(f"give --split for {cfg.dataset} (omniglot: background, evaluation, small1, "
                                   "vinyals-train, ...; miniimagenet: train, val, test)")
            if cfg.episodes < 1:
                raise FewShotError("--episodes must be at least 1")
            check_task_shape(cfg.way, cfg.shot, cfg.query, "training episodes")
            if cfg.val_split:
                check_task_shape(cfg.val_way, cfg.val_shot, cfg.val_query, "validation episodes")
            if cfg.meta_batch < 1:
                raise FewShotError("--meta-batch must be at least 1")
            trainer = Trainer(cfg, emit or _progress_printer(), resume_from=args.resume)
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: trainer.request_stop())
            if emit is not None:
                watch_stdin(trainer.request_stop)
            try:
                result = trainer.run()
            finally:
                trainer.group.close()
        except FewShotError as e:
            if emit is not None:
                emit({"event": "error", "message": str(e), "kind": type(e).__name__})
            raise
    finally:
        if stream not in (None, sys.stdout):
            stream.close()
    if emit is None:
        best = result.get("best")
        summary = f"{result['event']} at episode {result['episode']}; model saved in {result['out']}"
        if best:
            summary += f" (best validation {100 * best['accuracy']:.2f}% ± {100 * best['ci95']:.2f} at episode {best['episode']})"
        print(summary)
    return 130 if result["event"] == "stopped" else 0


