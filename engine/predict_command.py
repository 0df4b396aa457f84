"""``fewshot predict``: run a model made by ``fewshot export`` on images, with onnxruntime only.

    fewshot predict --model model.onnx IMAGE_OR_DIR... [--csv FILE] [--json]
        [--batch-size N] [--threads N] [--cpu]

Nothing on this path imports torch: the class names and the preprocessing come
from the model's metadata (:func:`engine.onnx_session.read_contract`), pixels
from :mod:`engine.data.pixels` (Pillow + NumPy, pixel-identical to what the
labeler feeds PyTorch), and the forward pass from onnxruntime. Folders are
searched recursively for image files; files named on the command line are read
whatever their extension. Files that cannot be read are listed with the reason
and do not fail the run (exit status 0); bad input (no model, a file that is not
a fewshot ONNX export, an existing --csv target) prints ``error: ...`` and exits 2.
``--model`` also takes the ``.zip`` that ``fewshot export --bundle`` writes.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, TextIO

import numpy as np

from engine.errors import FewShotError, ImageDecodeError, ModelInputError
from engine.paths import check_new_output

if TYPE_CHECKING:
    import onnxruntime

    from engine.data.preprocessing import Preprocessing

log = logging.getLogger(__name__)

DEFAULT_BATCH = 32
BUNDLE_MODEL = "model.onnx"


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="the .onnx file (or --bundle .zip) written by 'fewshot export'")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                   help="image files, and folders searched recursively for images")
    p.add_argument("--csv", metavar="FILE", help="write one row per image to this CSV file (must not exist)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help=f"images per batch (default {DEFAULT_BATCH})")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for onnxruntime (default: all cores)")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even when CUDA is available")


@dataclass
class PredictedImage:
    path: str
    label: str
    confidence: float
    probs: np.ndarray  # (C,), in class_names order
    scores: dict[str, float] = field(default_factory=dict)  # the model's uncertainty outputs, by name

    @property
    def entropy(self) -> float | None:
        return self.scores.get("entropy")

    @property
    def ood_score(self) -> float | None:
        return self.scores.get("ood_score")


@dataclass
class PredictResult:
    model: str
    provider: str
    class_names: list[str]
    score_names: tuple[str, ...] = ()  # the uncertainty outputs the model gives, in registry order
    images: list[PredictedImage] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "provider": self.provider,
            "classes": self.class_names,
            "count": len(self.images),
            "scores": list(self.score_names),
            "images": [{"path": r.path, "label": r.label, "confidence": r.confidence, **r.scores,
                        "probs": {n: float(p) for n, p in zip(self.class_names, r.probs.tolist())}}
                       for r in self.images],
            "errors": [{"path": p, "reason": reason} for p, reason in self.errors],
            "seconds": round(self.seconds, 3),
        }


def find_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Files named directly (any extension) and image files under folders (recursive,
    sorted, hidden entries skipped), each once, in the order given."""
    from engine.data.decode import IMAGE_EXTENSIONS

    seen: set[str] = set()
    out: list[Path] = []

    def add(p: Path) -> None:
        key = os.path.normcase(os.path.abspath(p))
        if key not in seen:
            seen.add(key)
            out.append(p)

    for entry in inputs:
        path = Path(entry)
        if not path.is_dir():
            add(path)  # a missing or unreadable file is reported with its reason later
            continue
        for folder, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                    add(Path(folder) / name)
    return out


def open_model(model: str | Path, *, threads: int | None = None,
               prefer_gpu: bool = True) -> tuple["onnxruntime.InferenceSession", str, dict[str, Any], "Preprocessing"]:
    """(session, provider, contract, preprocessing) for a fewshot ONNX export or bundle zip."""
    from engine.data.pixels import check_preprocessing
    from engine.data.preprocessing import Preprocessing
    from engine.onnx_session import make_session, read_contract

    path = Path(model)
    if not path.exists():
        raise ModelInputError(f"model file {path} does not exist; give the .onnx file written by 'fewshot export'")
    source: Path | bytes = path
    if path.is_file() and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                source = zf.read(BUNDLE_MODEL)
        except KeyError:
            raise ModelInputError(f"{path} is a zip without {BUNDLE_MODEL}; give the .onnx file or the bundle "
                                  "written by 'fewshot export --bundle'") from None
        except (zipfile.BadZipFile, OSError) as e:
            raise ModelInputError(f"cannot read the bundle {path} ({e}); export it again") from None
    session, provider = make_session(source, threads=threads, prefer_gpu=prefer_gpu, self_contained=True)
    contract = read_contract(session)
    outputs = [o.name for o in session.get_outputs()]
    if "probs" not in outputs:
        raise ModelInputError(f"{path} has no 'probs' output (it has {outputs}); it is not a model made by "
                              "'fewshot export'. Export the model again")
    width = session.get_outputs()[outputs.index("probs")].shape
    if len(width) != 2 or (isinstance(width[1], int) and width[1] != len(contract["class_names"])):
        raise ModelInputError(f"{path}: its 'probs' output is shaped {width} but it names "
                              f"{len(contract['class_names'])} classes; export the model again")
    try:
        prep = Preprocessing.from_dict(contract["preprocessing"])
        check_preprocessing(prep)
    except (KeyError, TypeError, ValueError, FewShotError) as e:
        raise ModelInputError(f"{path}: its preprocessing metadata cannot be used ({e}); export the model again") from None
    inputs = session.get_inputs()
    names = [i.name for i in inputs]
    if names != ["pixels"]:
        raise ModelInputError(f"{path} takes inputs {names}, not one input 'pixels'; export the model again")
    shape = inputs[0].shape
    if len(shape) != 4 or any(isinstance(d, int) and d != want
                              for d, want in zip(shape[1:], (prep.channels, *prep.size))):
        raise ModelInputError(f"{path}: input shape {shape} does not fit its preprocessing "
                              f"({prep.channels}x{prep.size[0]}x{prep.size[1]}); export the model again")
    return session, provider, contract, prep


def score_outputs(session: "onnxruntime.InferenceSession") -> tuple[str, ...]:
    """The uncertainty scores (engine.methods.uncertainty) among the session's outputs, in registry order."""
    from engine.methods.uncertainty import ONNX_OUTPUTS
    present = {o.name for o in session.get_outputs()}
    return tuple(n for n in ONNX_OUTPUTS if n in present)


def predict_images(session: "onnxruntime.InferenceSession", class_names: list[str], prep: "Preprocessing",
                   files: list[Path], *, batch_size: int = DEFAULT_BATCH, decode_workers: int | None = None,
                   progress: Callable[[int], None] | None = None) -> tuple[list[PredictedImage], list[tuple[str, str]]]:
    """Decode ``files`` under ``prep`` (in threads) and run them through ``session`` in
    batches; returns (predictions, (path, reason) of files that could not be read)."""
    scores = score_outputs(session)
    from engine.data.pixels import load_array, normalize_array

    if batch_size < 1:
        raise FewShotError(f"--batch-size must be at least 1 (got {batch_size})")
    workers = decode_workers or max(1, min(4, os.cpu_count() or 1))
    results: list[PredictedImage] = []
    errors: list[tuple[str, str]] = []

    def load(path: Path) -> np.ndarray | str:
        try:
            return load_array(path, prep)
        except ImageDecodeError as e:
            return e.reason
        except Exception as e:  # noqa: BLE001 - a bug on one odd file must not stop the whole run
            log.warning("unexpected error preparing %s", path, exc_info=True)
            return f"cannot prepare its pixels ({type(e).__name__}: {e})"

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="predict-decode") as pool:
        for start in range(0, len(files), batch_size):
            chunk = files[start:start + batch_size]
            good: list[tuple[Path, np.ndarray]] = []
            for path, arr in zip(chunk, pool.map(load, chunk)):
                if isinstance(arr, str):
                    errors.append((str(path), arr))
                else:
                    good.append((path, arr))
            if good:
                x = normalize_array(np.stack([a for _, a in good]), prep)
                probs, values = run_checked(session, x, scores, len(class_names))
                top = probs.argmax(axis=1)
                finite = np.isfinite(probs).all(axis=1)
                for k, (path, _) in enumerate(good):
                    if not finite[k]:
                        errors.append((str(path), "the model gave NaN or infinite probabilities for it"))
                        continue
                    results.append(PredictedImage(str(path), class_names[int(top[k])], float(probs[k, top[k]]),
                                                  probs[k].astype(np.float64),
                                                  {n: float(v[k]) for n, v in zip(scores, values)}))
            if progress is not None:
                progress(len(chunk))
    return results, errors


def run_checked(session: "onnxruntime.InferenceSession", x: np.ndarray, scores: tuple[str, ...],
                classes: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """One batch through the session, its outputs checked against the contract: a model
    that fails, or gives outputs of other shapes, is a ModelInputError (never truncated)."""
    try:
        probs, *values = session.run(["probs", *scores], {"pixels": x})
    except MemoryError:
        raise ModelInputError("the model asked for more memory than this machine has while running; it is "
                              "not a model this program made") from None
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types (Fail, RuntimeException ...)
        raise ModelInputError(f"onnxruntime could not run the model ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:300] if str(e) else ''}); export it again") from None
    n = x.shape[0]
    if probs.shape != (n, classes):
        raise ModelInputError(f"the model gave probabilities shaped {tuple(probs.shape)} for {n} images of "
                              f"{classes} classes; it does not fit its own class list, export it again")
    for name, v in zip(scores, values):
        if v.shape != (n,):
            raise ModelInputError(f"the model's {name} output is shaped {tuple(v.shape)} for {n} images; "
                                  "export it again")
    return probs, values


def write_csv(fh: TextIO, result: PredictResult) -> None:
    """``path,label,confidence,<the model's scores>,error,p_<class>...``."""
    from engine.export.labels import csv_cell  # torch-free
    out = csv.writer(fh)
    names = result.score_names
    out.writerow([csv_cell(c) for c in ("path", "label", "confidence", *names, "error",
                                        *(f"p_{n}" for n in result.class_names))])
    for r in result.images:
        out.writerow([csv_cell(r.path), csv_cell(r.label), _num(r.confidence),
                      *(_num(r.scores[n]) for n in names), "", *(_num(p) for p in r.probs.tolist())])
    for path, reason in result.errors:
        out.writerow([csv_cell(path), "", "", *([""] * len(names)), csv_cell(reason),
                      *([""] * len(result.class_names))])


def _num(value: float) -> str:
    return format(value, ".8g")


def run_predict(args: argparse.Namespace) -> int:
    """The whole command; returns the exit status (bad input raises FewShotError)."""
    from engine.export.labels import write_file  # atomic, never overwrites (torch-free)

    if args.batch_size < 1:
        raise FewShotError(f"--batch-size must be at least 1 (got {args.batch_size})")
    if args.threads is not None and args.threads < 1:
        raise FewShotError(f"--threads must be at least 1 (got {args.threads})")
    csv_path = Path(args.csv) if args.csv else None
    if csv_path is not None:
        check_new_output(csv_path, "--csv")
    t0 = time.perf_counter()
    # A missing path among others is listed with the files that could not be read; when
    # nothing given exists, or holds an image, there is nothing to predict: a run that
    # exited 0 would hide the typo.
    existing = [p for p in args.inputs if os.path.lexists(p)]
    if not existing:
        raise FewShotError(f"{args.inputs[0]} does not exist; give image files or folders of images")
    files = find_images(args.inputs)
    if len(files) == len(args.inputs) - len(existing):
        raise FewShotError(f"no image files in {', '.join(map(str, existing))} or its sub-folders; give image "
                           "files or folders that hold them")
    session, provider, contract, prep = open_model(args.model, threads=args.threads, prefer_gpu=not args.cpu)
    print(f"onnxruntime provider: {provider}", file=sys.stderr)
    result = PredictResult(str(args.model), provider, contract["class_names"], score_outputs(session))
    bar = None
    if sys.stderr.isatty() and len(files) > args.batch_size:
        from tqdm import tqdm
        bar = tqdm(total=len(files), desc="predicting", unit="img", file=sys.stderr, dynamic_ncols=True)
    try:
        result.images, result.errors = predict_images(session, result.class_names, prep, files,
                                                      batch_size=args.batch_size,
                                                      progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    result.seconds = time.perf_counter() - t0
    if csv_path is not None:
        write_file(csv_path, False, lambda fh: write_csv(fh, result))
    if args.json:
        out = result.to_dict()
        out["csv"] = str(csv_path) if csv_path is not None else None
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(format_result(result, csv_path, listing=csv_path is None))
    return 0


def format_result(r: PredictResult, csv_path: Path | None, listing: bool) -> str:
    lines = []
    if listing and r.images:
        width, label_width = max(len(i.path) for i in r.images), max(len(i.label) for i in r.images)
        lines += [f"{i.path:<{width}}  {i.label:<{label_width}}  {i.confidence:.3f}" for i in r.images]
    lines.append(f"{len(r.images)} images predicted with {r.model} on {r.provider} in {r.seconds:.1f} s"
                 + (f"; written to {csv_path}" if csv_path is not None else ""))
    if r.errors:
        lines.append(f"{len(r.errors)} file{'s' if len(r.errors) != 1 else ''} could not be read:")
        lines += [f"  {p}: {reason}" for p, reason in r.errors]
    return "\n".join(lines)
