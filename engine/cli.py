"""The ``fewshot`` command: everything the GUI does, headless.

Bad input (a missing path, a wrong layout, a damaged model) prints one line
starting with ``error:`` and exits with status 2; Ctrl+C stops training
cleanly with a checkpoint that ``--resume`` continues from.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

from engine.errors import FewShotError, os_error_text

EXIT_USER_ERROR = 2
NICE_ENV = "FEWSHOT_NICE"


def cmd_train(args) -> int:
    from engine.train_command import run_train
    return run_train(args)


def _check_dir(path: str, flag: str) -> None:
    if not Path(path).exists():
        raise FewShotError(f"{flag} {path} does not exist; give the folder that holds the data")


def cmd_evaluate(args) -> int:
    from engine.model_store import load_model
    from engine.runtime import pick_device

    from engine.method_choice import with_method
    from engine.paths import check_new_output
    device = pick_device(args.device)
    if args.reliability_plot:
        if Path(args.reliability_plot).suffix.lower() != ".png":
            raise FewShotError(f"--reliability-plot writes a PNG image: give a file name ending in .png, not "
                               f"{Path(args.reliability_plot).name}")
        check_new_output(Path(args.reliability_plot), "--reliability-plot")
    model = with_method(load_model(args.model, device), args.method)
    if args.lake_runs:
        from engine.training.lake import evaluate_lake_runs
        _check_dir(args.lake_runs, "--lake-runs")
        result = evaluate_lake_runs(model, args.lake_runs, device)
        if args.json:
            print(json.dumps(result))
        else:
            for run in result["runs"]:
                print(f"{run['run']}: error {100 * run['error_rate']:.1f}%")
            print(f"overall error rate: {100 * result['error_rate']:.2f}% over {len(result['runs'])} runs")
        return 0
    if not (args.dataset and args.data_root and args.split):
        raise FewShotError("give --dataset, --data-root and --split (or --lake-runs DIR)")
    _check_dir(args.data_root, "--data-root")
    from tqdm import tqdm

    from engine.data.sampler import EpisodeSampler, check_task_shape
    from engine.training.datasets import open_dataset
    from engine.training.evaluate import evaluate_episodes
    check_task_shape(args.way, args.shot, args.query)
    dataset = open_dataset(args.dataset, args.data_root, args.split, model.preprocessing)
    sampler = EpisodeSampler(dataset, args.way, args.shot, args.query, seed=args.seed)
    with tqdm(total=args.episodes, unit="episode", desc="evaluating", file=sys.stderr,
              disable=args.json and not sys.stderr.isatty()) as bar:
        score = evaluate_episodes(model.learner, sampler, args.episodes, device,
                                  progress=lambda done, total: bar.update(done - bar.n), ood=args.ood)
    result = {**score.to_dict(), "model": args.model, "method": model.meta["method"], "dataset": args.dataset,
              "split": args.split, "seed": args.seed}
    if args.reliability_plot and score.tally is not None:
        from engine.training.reliability_plot import draw_reliability
        title = (f"{model.meta['method']} on {args.model}: {args.way}-way {args.shot}-shot {args.dataset}/"
                 f"{args.split}, {args.episodes} episodes, ECE {score.ece:.3f}")
        result["reliability_plot"] = str(draw_reliability(*score.tally.reliability(), title, args.reliability_plot))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.way}-way {args.shot}-shot on {args.dataset}/{args.split}: "
              f"{100 * score.accuracy:.2f}% ± {100 * score.ci95:.2f} (95% CI, {score.episodes} episodes)")
        print(f"calibration: ECE {score.ece:.4f} ± {score.ece_ci95:.4f} (15 bins), NLL {score.nll:.4f} ± "
              f"{score.nll_ci95:.4f}, Brier {score.brier:.4f} ± {score.brier_ci95:.4f}")
        if score.ood:
            ranked = sorted(score.ood.items(), key=lambda kv: -kv[1][0])
            print("out-of-episode detection, AUROC (0.5 chance, 1 perfect): "
                  + ", ".join(f"{k} {m:.3f} ± {c:.3f}" for k, (m, c) in ranked))
        if args.reliability_plot:
            print(f"reliability diagram: {result['reliability_plot']}")
    return 0


def cmd_info(args) -> int:
    from engine.model_store import describe
    meta = describe(args.model)
    if args.json:
        print(json.dumps(meta, indent=2))
        return 0
    print(f"model:        {args.model}")
    print(f"method:       {meta['method']} {meta.get('method_config', {})}")
    size = meta.get("image_size")
    size = "x".join(map(str, size)) if isinstance(size, list) else size
    shape = f"{meta.get('channels')} channels, {size} px" if size else "input size not set yet"
    print(f"backbone:     {meta['backbone']} ({shape})")
    if "parameters" in meta:
        print(f"parameters:   {meta['parameters']:,}")
    if meta.get("classes"):
        print(f"classes:      {', '.join(meta['classes'])}")
        print(f"outputs:      {', '.join(meta['outputs'])}")
        print(f"exported:     from {meta['exported_from']} at {meta['exported_at']} (contract {meta['contract']}); "
              "run it with 'fewshot predict'")
    print(f"preprocessing: {json.dumps(meta['preprocessing'])}")
    if meta.get("validation"):
        v = meta["validation"]
        print(f"validation:   {100 * v['accuracy']:.2f}% ± {100 * v['ci95']:.2f} "
              f"({v['way']}-way {v['shot']}-shot, {v['episodes']} episodes, episode {v['episode']})")
    if meta.get("training"):
        t = meta["training"]
        print(f"trained on:   {t['dataset']}/{t['split']}, {t['way']}-way {t['shot']}-shot, {t['episodes']} episodes")
    if meta.get("project_version"):
        print(f"made by:      fewshot-labeler {meta['project_version']}")
    return 0


def cmd_label(args) -> int:
    from engine.label_command import run_label
    return run_label(args)


def cmd_export(args) -> int:
    from engine.export.onnx_model import export_project

    report = export_project(args.project, args.out, model_spec=args.model, method=args.method, bundle=args.bundle,
                            force=args.force)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print(f"exported {report.path}{' (bundle)' if report.bundle else ''}: {len(report.classes)} classes "
              f"({', '.join(report.classes)}), model {report.model}, in {report.seconds:.1f} s")
        print(f"parity with PyTorch: max |p_onnx - p_torch| = {report.parity_max_abs_diff:.3g} on "
              f"{report.parity_images} example images (onnxruntime {report.provider})")
    return 0


def cmd_predict(args) -> int:
    from engine.predict_command import run_predict  # onnxruntime only: no torch on this path
    return run_predict(args)


def build_parser(methods: bool = True) -> argparse.ArgumentParser:
    """The parser. ``methods``: list every method's options under ``train`` (imports torch,
    since methods are torch modules; ``main`` asks for it only when the command is train)."""
    p = argparse.ArgumentParser(prog="fewshot", description="Few-shot image labeling: train, evaluate, inspect models.")
    from engine.version import __version__  # the installed distribution's metadata: pyproject.toml's version
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="meta-train a model on episodes", description="Episodic meta-training.")
    t.add_argument("--dataset", choices=["omniglot", "miniimagenet", "folder", "unlabeled"],
                   help="unlabeled: every image under --data-root, no classes; tasks come from clusters (CACTUs)")
    t.add_argument("--data-root", help="folder holding the dataset (zips or extracted folders)")
    t.add_argument("--embedder", help="unlabeled: the model whose embeddings are clustered (e.g. photos)")
    t.add_argument("--partitions", type=int, default=50, help="unlabeled: k-means partitions (different scalings)")
    t.add_argument("--clusters", type=int, default=500, help="unlabeled: clusters per partition")
    t.add_argument("--split", default="", help="omniglot: background, evaluation, small1, small2, vinyals-{train,val,trainval,test}; miniimagenet: train, val, test")
    if methods:
        from engine.methods.registry import METHODS
        t.add_argument("--method", default="protonet", choices=sorted(METHODS),
                       help="the meta-learning method; its options are listed below")
    else:
        t.add_argument("--method", default="protonet")
    t.add_argument("--backbone", default="conv4", choices=["conv4", "resnet12", "lite0"])
    t.add_argument("--way", type=int, default=60)
    t.add_argument("--shot", type=int, default=5)
    t.add_argument("--query", type=int, default=5)
    t.add_argument("--episodes", type=int, default=10_000,
                   help="number of outer steps (meta-iterations); each uses --meta-batch episodes")
    t.add_argument("--meta-batch", type=int, default=1, help="episodes (tasks) per outer step")
    t.add_argument("--out", help="folder for the model and its checkpoints")
    t.add_argument("--val-split")
    t.add_argument("--val-way", type=int, default=5)
    t.add_argument("--val-shot", type=int, default=1)
    t.add_argument("--val-query", type=int, default=15)
    t.add_argument("--val-episodes", type=int, default=600)
    t.add_argument("--val-every", type=int, default=500)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--lr-step", type=int, default=2000, help="halve (x --lr-gamma) the learning rate every this many episodes")
    t.add_argument("--lr-gamma", type=float, default=0.5)
    t.add_argument("--lr-schedule", default="step", choices=["step", "cosine"],
                   help="step: x --lr-gamma every --lr-step; cosine: annealed to 0 over the run (MAML++)")
    t.add_argument("--init-from", help="start the backbone from a trained model's (a folder, or a bundled name such "
                                       "as omniglot); the head and the method's own parameters start fresh")
    t.add_argument("--image-size", type=int)
    t.add_argument("--channels", type=int, choices=[1, 3],
                   help="1 (grayscale) or 3 (colour); by default the dataset's own (omniglot 1, others 3)")
    t.add_argument("--rotations", action="store_true", help="add 90/180/270-degree rotations of every class as new classes")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--log-every", type=int, default=10, help="report loss and accuracy every this many outer steps")
    t.add_argument("--events", help="write one JSON line per event to this file ('-' for stdout)")
    t.add_argument("--resume", help="continue the run saved in this folder (alone: with the options it was "
                                    "started with; --out DIR continues it in another folder)")
    if methods:
        from engine.methods.options import add_method_options
        add_method_options(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="few-shot accuracy on episodes, or Lake et al.'s one-shot runs")
    e.add_argument("--model", required=True, help="checkpoint folder, or a bundled name: omniglot, photos")
    e.add_argument("--dataset", choices=["omniglot", "miniimagenet", "folder"])
    e.add_argument("--data-root")
    e.add_argument("--split")
    e.add_argument("--way", type=int, default=5)
    e.add_argument("--shot", type=int, default=1)
    e.add_argument("--query", type=int, default=15)
    e.add_argument("--episodes", type=int, default=600)
    e.add_argument("--lake-runs", help="folder of runNN/ one-shot runs (Lake et al. 2015)")
    e.add_argument("--device", default="auto")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--method", default=None,
                   help="evaluate with another head on the model's backbone: protonet or bayes-proto")
    e.add_argument("--no-ood", dest="ood", action="store_false",
                   help="skip out-of-episode detection (by default each episode also draws as many queries from "
                        "classes outside it, and every uncertainty score's AUROC at telling them apart is reported)")
    e.add_argument("--reliability-plot", metavar="FILE.png",
                   help="draw the reliability diagram (confidence against accuracy per bin, with counts)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=cmd_evaluate)

    from engine.label_command import add_label_arguments  # no torch import: --help stays fast
    lb = sub.add_parser("label", help="label a folder of images from a few examples per class",
                        description="Label every image of --images from the examples in --examples/<class>/.")
    add_label_arguments(lb)
    lb.set_defaults(func=cmd_label)

    x = sub.add_parser("export", help="export a project's adapted model to ONNX (docs/EXPORT.md)",
                       description="Export the project's adapted model (backbone + head) to ONNX, checked "
                                   "against PyTorch on the project's examples.")
    x.add_argument("--project", required=True, help="project file (.fewshot)")
    x.add_argument("--out", required=True, help="the .onnx file to write (with --bundle: a .zip)")
    x.add_argument("--bundle", action="store_true",
                   help="write a .zip with model.onnx, labels.json, preprocessing.json and README.txt")
    x.add_argument("--model", default=None,
                   help="model to adapt (default: the project's current model): omniglot, photos or a folder")
    x.add_argument("--method", default=None,
                   help="the head to export: protonet or bayes-proto on any model, or the model's own method "
                        "(default: the one the project was labeled with)")
    x.add_argument("--force", action="store_true", help="replace --out if it exists")
    x.add_argument("--json", action="store_true", help="print the report as one JSON object")
    x.set_defaults(func=cmd_export)

    from engine.predict_command import add_predict_arguments  # no torch import
    pr = sub.add_parser("predict", help="label images with an exported ONNX model (onnxruntime only)",
                        description="Run a model written by 'fewshot export' on images and folders.")
    add_predict_arguments(pr)
    pr.set_defaults(func=cmd_predict, needs_torch=False)

    from engine.check_command import add_check_arguments, run_check  # no torch import
    c = sub.add_parser("check", help="check that a project file is intact (or restore its backup)",
                       description="SQLite's full integrity check of a project, read-only; --restore-backup puts "
                                   "the backup kept at its last close in place of a damaged project.")
    add_check_arguments(c)
    c.set_defaults(func=run_check, needs_torch=False)

    i = sub.add_parser("info", help="what a model is and how it was trained")
    i.add_argument("model", help="checkpoint folder, or a bundled name: omniglot, photos")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)
    return p


def main(argv: list[str] | None = None, torch_available: bool | None = None) -> int:
    """``torch_available``: False in the `predict` build (packaging/entry_predict.py), which
    has no PyTorch; None looks for it."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    lower_priority_from_env()
    argv = sys.argv[1:] if argv is None else list(argv)
    if torch_available is None:
        torch_available = importlib.util.find_spec("torch") is not None
    # --help and usage errors answer without importing torch, except for train's method options.
    parser = build_parser(methods=argv[:1] == ["train"] and torch_available)
    refusal = None if torch_available else _needs_torch(parser, argv)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return EXIT_USER_ERROR
    args = parser.parse_args(argv)
    if getattr(args, "needs_torch", True):  # `predict` runs on onnxruntime alone and must not load torch
        from engine.runtime import tune_cpu_allocator
        tune_cpu_allocator()  # before torch allocates: doubles eager CPU speed here (docs/PERFORMANCE.md)
    try:
        return args.func(args)
    except FewShotError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the edge: a disk, a path or a permission the commands did not foresee
        print(f"error: {os_error_text(e)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except MemoryError:
        print("error: this machine ran out of memory; use a smaller --batch-size, fewer images at once, or a "
              "smaller model", file=sys.stderr)
        return EXIT_USER_ERROR


def _needs_torch(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """Without PyTorch: why the command argv names cannot run (before its arguments are
    checked, so the answer is about what is missing), or None when it can."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in commands or commands[command].get_default("needs_torch") is False:
        return None
    free = [name for name, sp in commands.items() if sp.get_default("needs_torch") is False]
    return (f"'fewshot {command}' needs PyTorch, which this installation lacks (without it fewshot runs "
            f"exported models only: {', '.join(free)}); use the app build (make package) or install the full "
            "one (`pip install fewshot-labeler`)")


def lower_priority_from_env() -> None:
    """FEWSHOT_NICE=N runs this process at nice N: the app's training panel sets it so that a
    child using every core still leaves the window's thread scheduled first. Called before
    torch starts its threads, which inherit the value (nice is per thread on Linux)."""
    value = os.environ.get(NICE_ENV, "").strip()
    if not value:
        return
    try:
        os.nice(max(0, int(value)))
    except (ValueError, AttributeError, OSError):  # not a number, not POSIX, or not permitted: run as is
        pass


if __name__ == "__main__":
    sys.exit(main())
