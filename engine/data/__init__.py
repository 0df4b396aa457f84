"""Image decoding, dataset layouts and episode sampling (no Qt here)."""
from engine.data.class_dataset import ClassDataset, LazyClassDataset, TensorClassDataset
from engine.data.decode import decode_image, to_mode
from engine.data.episodes import Episode
from engine.data.folder import IMAGE_EXTENSIONS, find_class_images, load_folder
from engine.data.lake_runs import LakeRun, load_lake_runs
from engine.data.miniimagenet import load_miniimagenet, miniimagenet_preprocessing
from engine.data.omniglot import OmniglotArchive, load_omniglot, omniglot_preprocessing
from engine.data.preprocessing import Preprocessing
from engine.data.sampler import EpisodeSampler
from engine.data.transforms import image_to_uint8, load_uint8, normalize, resize_uint8

__all__ = [
    "ClassDataset", "Episode", "EpisodeSampler", "IMAGE_EXTENSIONS", "LakeRun", "LazyClassDataset",
    "OmniglotArchive", "Preprocessing", "TensorClassDataset", "decode_image", "find_class_images",
    "image_to_uint8", "load_folder", "load_lake_runs", "load_miniimagenet", "load_omniglot", "load_uint8",
    "miniimagenet_preprocessing", "normalize", "omniglot_preprocessing", "resize_uint8", "to_mode",
]
