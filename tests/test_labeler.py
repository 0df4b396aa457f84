"""Embedding (decode pool + batched forward), the cache-driven labeler and fast refresh."""
from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import engine.data.decode_worker as decode_worker_mod
import engine.data.fast_png as fast_png_mod
import engine.labeling.embedder as embedder_mod
from engine.data.pixels import decode_into
from engine.data.preprocessing import Preprocessing
from engine.data.transforms import load_uint8
from engine.errors import FewShotError
from engine.labeling.embedder import (BatchDecoder, ImageItem, RunPlan, embed_items,
                                      embed_missing)
from engine.labeling.runners import TorchRunner
from engine.labeling.labeler import Labeler, label_project, refresh_predictions
from engine.labeling.progress import CancelToken, ProgressMeter
from engine.labeling.scoring import CachedScorer, EmbeddingTable, PredictionArrays
from engine.labeling.store import Project
from engine.methods.base import MetaLearner
from engine.methods.protonet import ProtoHead, ProtoNet, prototypes_of, support_spread
from engine.model_store import LoadedModel, load_model
from engine.models.conv4 import Conv4
from labeling_data import extract_omniglot

WAY = 5


@pytest.fixture(scope="module")
def omniglot_model() -> LoadedModel:
    return load_model("omniglot")


@pytest.fixture(scope="module")
def characters(tmp_path_factory) -> dict[str, list[Path]]:
    return extract_omniglot(tmp_path_factory.mktemp("omniglot"), WAY, per_character=20)


def new_project(tmp_path: Path, characters: dict[str, list[Path]], shots: int = 1) -> Project:
    """One class per character with its first ``shots`` drawings as examples; all drawings to label."""
    project = Project.create(tmp_path / "p.fewshot")
    for key, files in characters.items():
        cid = project.add_class(key.replace("/", " "))
        project.add_examples(cid, files[:shots])
    root = next(iter(characters.values()))[0].parents[1]
    project.add_images([root])
    return project


def accuracy(project: Project, characters: dict[str, list[Path]]) -> float:
    name_of = {c.id: c.name for c in project.classes()}
    hits = total = 0
    for rec in project.iter_images():
        if rec.label_source == "model":
            total += 1
            hits += name_of[rec.predicted_class_id] == " ".join(Path(rec.path).parts[-3:-1])
    return hits / total


# ---------------------------------------------------------------- decoding and the forward pass

def test_decode_into_gives_the_pixels_of_load_uint8(tmp_path, characters):
    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(photo, quality=90)
    rgba = tmp_path / "alpha.png"
    Image.fromarray(rng.integers(0, 256, (50, 70, 4), dtype=np.uint8), "RGBA").save(rgba)
    char = next(iter(characters.values()))[0]
    gray_inverted = Preprocessing(size=(28, 28), channels=1, invert=True)
    photos = Preprocessing(size=(224, 224), channels=3, mean=(0.5,) * 3, std=(0.5,) * 3,
                           resize="shorter_side_center_crop")
    for path, prep in [(char, gray_inverted), (photo, photos), (rgba, photos), (rgba, gray_inverted)]:
        out = np.empty((prep.channels, *prep.size), dtype=np.uint8)
        decode_into(str(path), prep, out)
        assert torch.equal(torch.from_numpy(out), load_uint8(path, prep)), path.name


def test_batch_decoder_keeps_order_and_reports_bad_files(tmp_path, characters, omniglot_model):
    files = [f for fs in characters.values() for f in fs[:4]]
    bad = tmp_path / "cut.png"
    bad.write_bytes(files[0].read_bytes()[:60])
    items = [ImageItem(i, str(p), f"h{i}") for i, p in enumerate(files[:7] + [bad] + files[7:])]
    decoder = BatchDecoder(omniglot_model.preprocessing, batch_size=6, workers=2)
    batches = list(decoder.batches(items))
    assert [len(b.items) + len(b.failures) for b in batches] == [6, 6, 6, 3]
    got = [it for b in batches for it in b.items]
    assert got == [it for it in items if it.path != str(bad)]
    failures = [f for b in batches for f in b.failures]
    assert [it.path for it, _ in failures] == [str(bad)] and "truncated" in failures[0][1]
    pixels = torch.cat([b.pixels for b in batches])
    for k in (0, 7, len(got) - 1):
        assert torch.equal(pixels[k], load_uint8(got[k].path, omniglot_model.preprocessing))


class _OutOfMemoryAbove(torch.nn.Module):
    """A backbone that runs out of memory on batches above ``limit`` (as a GPU would)."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit
        self.sizes: list[int] = []
        self.proj = torch.nn.Linear(28 * 28, 8)

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (batch of {x.shape[0]})")
        self.sizes.append(x.shape[0])
        return self.proj(x.flatten(1))


def test_backbone_runner_halves_the_batch_on_out_of_memory():
    prep = Preprocessing(size=(28, 28), channels=1)
    backbone = _OutOfMemoryAbove(limit=20)
    model = LoadedModel("oom", ProtoNet(backbone), prep, {"backbone": "oom"})
    runner = TorchRunner(model, batch_size=64)
    pixels = torch.randint(0, 256, (100, 1, 28, 28), dtype=torch.uint8)
    z = runner(pixels)
    assert runner.batch_size == 16 and set(backbone.sizes) <= {16, 4}
    with torch.no_grad():
        expected = backbone.proj((pixels.float() / 255).flatten(1))
    assert torch.allclose(z, expected, atol=1e-5)

    def always_oom(x):
        raise torch.OutOfMemoryError("out of memory")
    backbone.forward = always_oom
    with pytest.raises(torch.OutOfMemoryError):
        runner(pixels[:3])


def test_run_plan_gives_decoding_its_share_of_the_cores():
    # Conv4 characters on 2 cores: decoding is a third of the work -> two forward streams.
    assert RunPlan.plan(2, 0.15e-3, 0.3e-3) == RunPlan(decode_workers=1, torch_threads=1, streams=2)
    # Lite0 photos: PyTorch keeps both threads, decoding runs between forward passes on both cores.
    assert RunPlan.plan(2, 2.5e-3, 24e-3) == RunPlan(decode_workers=2, torch_threads=2, streams=1, overlap=False)
    assert RunPlan.plan(8, 1e-3, 1e-3) == RunPlan(4, 1, 8)
    # 12-megapixel JPEGs at 1/8 scale: decoding wants 1.3 of the 2 cores, so two decode threads.
    assert RunPlan.plan(2, 19e-3, 10e-3, prefer_streams=True) == RunPlan(2, 1, 2)
    assert RunPlan.plan(16, 1e-3, 1e-5, on_cpu=False) == RunPlan(4, 16, 1)  # a GPU forward; the GIL caps decoding
    assert RunPlan.plan(1, 1e-3, 1e-3) == RunPlan(1, 1, 1)


@pytest.mark.parametrize("plan", [RunPlan(1, 1, 2), RunPlan(2, 1, 1), RunPlan(2, 2, 1, overlap=False)],
                         ids=["two-streams", "two-decoders", "decode-between-passes"])
def test_every_way_of_sharing_the_cores_caches_the_same_embeddings(tmp_path, characters, omniglot_model, plan):
    threads = torch.get_num_threads()
    with new_project(tmp_path, characters) as project:
        items = [ImageItem(int(i), str(p), str(h)) for i, p, h in project.images_to_embed(omniglot_model.backbone_id)]
        runner = TorchRunner(omniglot_model, batch_size=16)
        report = embed_items(project, omniglot_model, items, runner=runner, plan=plan)
        assert report.embedded == len(items) == WAY * 20 and report.plan == plan
        assert torch.get_num_threads() == threads
        hashes, z = project.get_embeddings(omniglot_model.backbone_id)
        path_of = {it.hash: it.path for it in items}
        pixels = torch.stack([load_uint8(path_of[h], omniglot_model.preprocessing) for h in hashes])
        assert torch.allclose(torch.from_numpy(z), TorchRunner(omniglot_model)(pixels), atol=1e-4)


def test_a_first_run_measures_its_plan_while_running_a_stream_per_core(tmp_path, characters, omniglot_model,
                                                                         monkeypatch):
    monkeypatch.setattr(embedder_mod, "_PLANS", {})
    threads = torch.get_num_threads()
    seen_threads = set()
    runner = TorchRunner(omniglot_model, batch_size=8)
    call = runner._run
    runner._run = lambda pixels: (seen_threads.add(torch.get_num_threads()), call(pixels))[1]
    with new_project(tmp_path, characters) as project:
        items = [ImageItem(int(i), str(p), str(h)) for i, p, h in project.images_to_embed(omniglot_model.backbone_id)]
        report = embed_items(project, omniglot_model, items, runner=runner)
        assert report.embedded == len(items)
    assert torch.get_num_threads() == threads
    # No batch ran with every thread while measuring: PyTorch never had more than the plan gives it.
    assert report.plan is not None and seen_threads <= {1, report.plan.torch_threads}
    assert [plan for plan, _forward in embedder_mod._PLANS.values()] == [report.plan], \
        "the measured plan is kept for later runs"


@pytest.mark.skipif(embedder_mod.available_cores() < 2, reason="one core has one way to split")
def test_a_later_run_whose_decoding_costs_more_plans_again(tmp_path, characters, omniglot_model, monkeypatch):
    """A plan kept from small, cheap files is checked against the next run's own decoding:
    files that cost far more to decode than the forward pass get more decode threads."""
    runner = TorchRunner(omniglot_model, batch_size=8)
    key = (omniglot_model.backbone_id, runner.backend, str(runner.device), runner.get_threads(), runner.batch_size)
    cheap = RunPlan(1, 1, 2)
    monkeypatch.setattr(embedder_mod, "_PLANS", {key: (cheap, 1e-5)})
    real = fast_png_mod.decode_rows_fast

    def costly(paths, prep, buf):  # 5 ms of CPU per image, like a 12-megapixel JPEG's 19 ms
        reasons, cpu = real(paths, prep, buf)
        end = time.thread_time() + 5e-3 * len(paths)
        while time.thread_time() < end:
            pass
        return reasons, cpu + 5e-3 * len(paths)
    monkeypatch.setattr(fast_png_mod, "decode_rows_fast", costly)
    with new_project(tmp_path, characters) as project:
        items = [ImageItem(int(i), str(p), str(h)) for i, p, h in project.images_to_embed(omniglot_model.backbone_id)]
        report = embed_items(project, omniglot_model, items[:40], runner=runner)
    assert report.embedded == 40
    assert report.plan.decode_workers == min(embedder_mod.available_cores(), embedder_mod.MAX_DECODE_WORKERS)
    assert embedder_mod._PLANS[key] == (report.plan, 1e-5)  # the forward cost stays the one measured


def test_an_explicit_number_of_decode_workers_is_kept(tmp_path, characters, omniglot_model, monkeypatch):
    pools = []
    real_pool = embedder_mod.ThreadPoolExecutor

    def recording(max_workers, thread_name_prefix="", **kw):
        pools.append((thread_name_prefix, max_workers))
        return real_pool(max_workers, thread_name_prefix=thread_name_prefix, **kw)

    monkeypatch.setattr(embedder_mod, "ThreadPoolExecutor", recording)
    with new_project(tmp_path, characters) as project:
        items = [ImageItem(int(i), str(p), str(h)) for i, p, h in project.images_to_embed(omniglot_model.backbone_id)]
        report = embed_items(project, omniglot_model, items, runner=TorchRunner(omniglot_model, batch_size=8),
                             workers=3)
        assert report.embedded == len(items)
    assert pools == [("decode", 3)]


def test_progress_meter_reports_rate_and_eta():
    now = [0.0]
    seen = []
    meter = ProgressMeter("embedding", 300, seen.append, clock=lambda: now[0])
    meter.start()
    now[0] = 1.0
    meter.advance(100)
    now[0] = 2.0
    last = meter.advance(100)
    assert seen[0].done == 0 and seen[0].eta_s is None
    assert last.done == 200 and last.images_per_s == pytest.approx(100.0) and last.eta_s == pytest.approx(1.0)
    assert last.fraction == pytest.approx(2 / 3)


# ---------------------------------------------------------------- labeling a project

def test_label_project_labels_every_image_from_one_example(tmp_path, characters, omniglot_model):
    threads = torch.get_num_threads()
    with new_project(tmp_path, characters) as project:
        stages = set()
        summary = label_project(project, omniglot_model, progress=lambda p: stages.add(p.stage))
        assert torch.get_num_threads() == threads  # the run's split of the cores is undone
        usable = project.count() - project.count(status="error")
        assert usable == WAY * 20
        assert summary.embedded == usable and not summary.failed and not summary.cancelled
        assert project.count(status="unlabeled") == 0
        assert project.count(status="confirmed") == WAY and project.count(status="predicted") == usable - WAY
        assert summary.class_ids == [c.id for c in project.classes()]
        assert accuracy(project, characters) >= 0.9
        assert {"embedding examples", "labeling"} <= stages
        rec = project.query(status="predicted", limit=1)[0]
        assert sum(rec.probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert rec.ood_score > 0 and 0 <= rec.margin <= 1 and rec.mutual_info is None

        again = label_project(project, omniglot_model)  # nothing new: nothing decoded, nothing rewritten
        assert (again.embedded, again.predicted) == (0, 0)
        assert again.model_id == summary.model_id


def test_cancel_keeps_finished_batches_and_the_next_run_resumes(tmp_path, characters, omniglot_model, monkeypatch):
    decoded: list[str] = []
    real_decode = fast_png_mod.decode_rows_fast  # what labeling decodes every file with
    monkeypatch.setattr(fast_png_mod, "decode_rows_fast", lambda paths, prep, buf: (decoded.extend(paths),
                                                                                 real_decode(paths, prep, buf))[1])
    with new_project(tmp_path, characters) as project:
        cancel = CancelToken()

        def stop_after_two_batches(p):
            if p.stage == "labeling" and p.done >= 32:
                cancel.cancel()
        first = Labeler(project, omniglot_model, batch_size=16).label(stop_after_two_batches, cancel)
        # The batch the other forward stream was running when the cancel came is kept too.
        streams = min(torch.get_num_threads(), embedder_mod.MEASURING_STREAMS)
        assert first.cancelled and WAY + 32 <= first.embedded <= WAY + 32 + 16 * (streams - 1)
        assert len(project.predicted_image_ids(first.model_id)) == first.embedded
        cached, _ = project.get_embeddings(omniglot_model.backbone_id)
        assert len(cached) == first.embedded
        cached_paths = {r.path for r in project.iter_images() if r.hash in set(cached)}
        assert cached_paths <= set(decoded)
        decoded.clear()

        second = Labeler(project, omniglot_model, batch_size=16).label()
        assert not second.cancelled and second.model_id == first.model_id
        assert second.embedded == WAY * 20 - first.embedded and second.from_cache == 0
        assert not cached_paths & set(decoded), "an image embedded before the cancel was decoded again"
        assert project.count(status="unlabeled") == 0


def test_after_a_cancel_a_correction_renews_what_was_labeled_and_the_rest_waits(tmp_path, characters,
                                                                                 omniglot_model):
    """The app refreshes after a correction; after a cancelled run that must not become the
    rest of the run (under "Updating predictions"): the cancel holds until the person labels."""
    with new_project(tmp_path, characters) as project:
        cancel = CancelToken()

        def stop_after_two_batches(p):
            if p.stage == "labeling" and p.done >= 32:
                cancel.cancel()
        labeler = Labeler(project, omniglot_model, batch_size=16)
        first = labeler.label(stop_after_two_batches, cancel)
        waiting = {r.id for r in project.iter_images() if r.status == "unlabeled"}
        assert first.cancelled and waiting
        assert labeler.refresh_covers_predictions()  # what the app's refresh job decides on

        corrected = next(r for r in project.iter_images() if r.status == "predicted")
        other = next(c for c in project.classes() if c.id != corrected.predicted_class_id)
        project.add_examples(other.id, [corrected.id])
        report = labeler.refresh()
        cached, _ = project.get_embeddings(omniglot_model.backbone_id)
        assert report.images == len(cached) == first.embedded
        assert {r.id for r in project.iter_images() if r.status == "unlabeled"} == waiting
        assert project.predicted_image_ids(report.model_id) == {r.id for r in project.iter_images()} - waiting

        second = labeler.label()  # the person labels again: the run goes on where it stopped
        assert second.model_id == report.model_id and second.embedded == len(waiting)
        assert project.count(status="unlabeled") == 0


def test_predictions_without_cached_embeddings_need_a_label_run(tmp_path, characters, omniglot_model):
    with new_project(tmp_path, characters) as project:
        Labeler(project, omniglot_model).label()
        with project._tx():
            project._conn.execute("DELETE FROM embeddings")  # a cache emptied, the predictions kept
        labeler = Labeler(project, omniglot_model)
        assert not labeler.refresh_covers_predictions() and not labeler.warm()
        labeler.label()
        assert labeler.refresh_covers_predictions()


def test_refresh_after_a_new_example_reads_only_the_cache(tmp_path, characters, omniglot_model, monkeypatch):
    with new_project(tmp_path, characters) as project:
        labeler = Labeler(project, omniglot_model)
        first = labeler.label()
        warm = labeler.refresh()  # what the GUI has done by the time a user corrects anything
        assert warm.model_id == first.model_id and warm.recomputed_classes == WAY

        def no_decoding(*args, **kwargs):
            raise AssertionError("refresh decoded an image")
        monkeypatch.setattr(decode_worker_mod, "decode_into", no_decoding)
        monkeypatch.setattr(fast_png_mod, "decode_rows_fast", no_decoding)
        key, files = next(iter(characters.items()))
        cls = project.class_by_name(key.replace("/", " "))
        new_example = next(r for r in project.iter_images() if r.path == str(files[5]))
        project.add_examples(cls.id, [new_example.id])

        report = labeler.refresh()
        assert report.model_id != first.model_id  # another support set, another model
        assert report.images == WAY * 20 and report.classes == WAY
        assert report.recomputed_classes == 1  # only the changed prototype
        assert project.predicted_image_ids(report.model_id) == {r.id for r in project.iter_images()}

        # Stored predictions are those of the ProtoNet head on the cached embeddings.
        task = labeler.adapt()
        hashes, z = project.get_embeddings(omniglot_model.backbone_id)
        expected = task.predictor.predict_embeddings(torch.from_numpy(z))
        by_hash = {r.hash: r for r in project.iter_images()}
        for k in (0, 17, 63):
            rec = by_hash[hashes[k]]
            probs = [rec.probs[cid] for cid in task.class_ids]
            assert np.allclose(probs, expected.probs[k].numpy(), atol=1e-5)
            assert rec.entropy == pytest.approx(float(expected.entropy[k]), abs=1e-4)
            assert rec.ood_score == pytest.approx(float(expected.ood_score[k]), rel=1e-4)

        # The module-level call works on a fresh labeler too.
        assert refresh_predictions(project, omniglot_model).model_id == report.model_id


def test_classes_without_examples_are_left_out(tmp_path, characters, omniglot_model):
    with new_project(tmp_path, characters) as project:
        empty = project.add_class("no examples yet")
        summary = label_project(project, omniglot_model)
        assert summary.skipped_classes == ["no examples yet"] and empty not in summary.class_ids
        assert project.count(class_id=empty) == 0


def test_no_examples_at_all_is_a_user_error(tmp_path, characters, omniglot_model):
    with Project.create(tmp_path / "p.fewshot") as project:
        project.add_images([next(iter(characters.values()))[0].parent])
        with pytest.raises(FewShotError, match="no classes"):
            label_project(project, omniglot_model)
        project.add_class("a")
        with pytest.raises(FewShotError, match="no class has a usable example"):
            label_project(project, omniglot_model)


def test_an_image_that_fails_to_decode_is_recorded_and_the_run_goes_on(tmp_path, characters, omniglot_model):
    broken_dir = tmp_path / "extra"
    broken_dir.mkdir()
    good = next(iter(characters.values()))[3]
    # The header reads fine at scan time; the pixel data stops half-way.
    data = good.read_bytes()
    (broken_dir / "half.png").write_bytes(data[: len(data) * 2 // 3])
    with new_project(tmp_path, characters) as project:
        project.add_images([broken_dir])
        summary = label_project(project, omniglot_model)
        assert [Path(p).name for _, p, _ in summary.failed] == ["half.png"]
        errors = project.query(status="error")
        assert [Path(r.path).name for r in errors] == ["half.png"] and "truncated" in errors[0].error
        assert project.count(status="unlabeled") == 0
        assert embed_missing(project, omniglot_model).total == 0  # not retried on the next run


# ---------------------------------------------------------------- fast scoring

@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_cached_scorer_matches_the_protonet_head(distance):
    torch.manual_seed(0)
    z = torch.randn(600, 32).abs()
    y = torch.arange(6).repeat(2)
    learner = ProtoNet(Conv4(), distance=distance)
    head = learner.adapt_embeddings(z[:12], y, 6)
    table = EmbeddingTable(np.arange(600), [f"h{i}" for i in range(600)], z)
    scorer = CachedScorer(table)
    ids = [10, 11, 12, 13, 14, 15]
    got = scorer.score(head, ids)
    want = PredictionArrays.from_prediction(head.predict_embeddings(z))
    assert np.allclose(got.probs, want.probs, atol=1e-5)
    assert np.allclose(got.entropy, want.entropy, atol=1e-5)
    assert np.allclose(got.margin, want.margin, atol=1e-5)
    assert np.allclose(got.ood_score, want.ood_score, rtol=1e-4, atol=1e-6)
    assert scorer.recomputed_classes == 6

    # One more example of class index 2: only that prototype (and the spread) changes.
    head2 = learner.adapt_embeddings(torch.cat([z[:12], z[100:101]]), torch.cat([y, torch.tensor([2])]), 6)
    got2 = scorer.score(head2, ids)
    assert scorer.recomputed_classes == 1
    assert np.allclose(got2.probs, head2.predict_embeddings(z).probs.numpy(), atol=1e-5)

    # A deleted class drops its row; a head over the rest needs nothing recomputed.
    keep = [0, 1, 3, 4, 5]
    protos = head2.prototypes[keep]
    head3 = ProtoHead(protos, head2.spread, distance, head2.temperature)
    got3 = scorer.score(head3, [ids[k] for k in keep])
    assert scorer.recomputed_classes == 0 and got3.probs.shape == (600, 5)
    assert np.allclose(got3.probs, head3.predict_embeddings(z).probs.numpy(), atol=1e-5)


def test_margin_of_exact_ties_is_zero():
    z = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    head = ProtoHead(torch.tensor([[1.0, 1.0], [1.0, -1.0]]), torch.tensor(1.0), "euclidean", 1.0)
    got = CachedScorer(EmbeddingTable(np.arange(2), ["a", "b"], z)).score(head, [1, 2])
    assert got.margin[0] == 0.0 and got.margin[1] == 0.0
    assert np.allclose(got.probs, 0.5)


# ---------------------------------------------------------------- methods that adapt the backbone

class _FineTuned(MetaLearner):
    """Test stand-in for a MAML-style method: adapting yields its own copy of the backbone."""

    name = "finetune-test"
    adapts_backbone = True

    def adapt(self, support_x, support_y, n_classes=None):
        backbone = copy.deepcopy(self.backbone).eval()
        with torch.no_grad():
            z = backbone(support_x)
        n = int(support_y.max()) + 1
        protos = prototypes_of(z, support_y, n)
        head = ProtoHead(protos, support_spread(z, support_y, protos, "euclidean"), "euclidean", 1.0,
                         backbone=backbone)
        head.adapts_backbone = True
        return head


def test_a_method_that_adapts_the_backbone_labels_from_pixels(tmp_path, characters, omniglot_model):
    learner = _FineTuned(copy.deepcopy(omniglot_model.learner.backbone))
    model = LoadedModel("finetune", learner, omniglot_model.preprocessing, {"backbone": "conv4"})
    with new_project(tmp_path, characters) as project:
        summary = label_project(project, model)
        assert summary.embedded == WAY * 20 and summary.predicted == WAY * 20
        assert project.count(status="unlabeled") == 0
        assert accuracy(project, characters) >= 0.9
        # The cache holds the meta-learned start's embeddings (not the adapted network's), for
        # provisional refreshes; exact predictions never read it.
        hashes, matrix = project.get_embeddings(model.backbone_id)
        assert len(hashes) == WAY * 20
        with pytest.raises(FewShotError, match="adapts the whole network"):
            Labeler(project, model).refresh()
        assert label_project(project, model).predicted == 0  # resumed: all done

        # A correction: provisional predictions at once from that cache, then the exact run replaces them.
        exact_id = project.current_model()[0]
        rec = next(r for r in project.iter_images() if r.label_source != "human")
        project.add_examples(rec.label_class_id, [rec.id])
        report = Labeler(project, model).provisional_refresh()
        assert report is not None and report.images == WAY * 20
        current = project.current_model()
        assert current[2]["provisional"] is True and current[0] != exact_id
        assert accuracy(project, characters) >= 0.85
        # An exact run cancelled before it finished leaves the provisional model current: most
        # tiles still show provisional predictions, and the app must keep saying so.
        stop = CancelToken()
        stop.cancel()
        assert Labeler(project, model, batch_size=8).label(cancel=stop).cancelled  # stops after one batch
        assert project.current_model()[2]["provisional"] is True
        again = label_project(project, model)
        assert again.predicted == WAY * 20 - 8  # resumed after the cancelled run's first batch
        exact = project.current_model()
        assert "provisional" not in exact[2] and len(project.predicted_image_ids(exact[0])) == WAY * 20
