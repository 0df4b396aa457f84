"""The training panel's work in the engine worker: the methods and their options, the
layout check before Start, the project's unlabeled images as a list file."""
from __future__ import annotations

from pathlib import Path

from fewshot_gui.jobs import project_of
from fewshot_gui.worker import EngineContext, JobHandle

LIST_FILE = "unlabeled-images.txt"


def panel_setup(ctx: EngineContext, h: JobHandle) -> tuple[list[dict], str]:
    """Every method's options, and the device 'auto' picks here (in words)."""
    from engine.runtime import describe_device, pick_device
    from engine.training.layout import method_specs
    return method_specs(), describe_device(pick_device("auto"))


def check_layout(ctx: EngineContext, h: JobHandle, kind: str, root: str, split: str) -> str:
    from engine.training.layout import check_layout as check
    return check(kind, root, split)


def project_image_list(ctx: EngineContext, h: JobHandle, folder: str) -> tuple[str, int]:
    """Write the paths of the open project's images that carry no person's label into
    ``folder/unlabeled-images.txt``; CACTUs reads that list as its data."""
    from engine.errors import FewShotError
    project = project_of(ctx)
    paths = [r.path for r in project.iter_images() if r.status in ("unlabeled", "predicted")]
    if not paths:
        raise FewShotError("this project has no unlabeled images; add a folder to label first (File menu)")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    target = out / LIST_FILE
    target.write_text("\n".join(paths) + "\n", encoding="utf-8")
    return str(target), len(paths)
